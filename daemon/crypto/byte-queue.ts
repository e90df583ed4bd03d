/** Pieces of one that outnumber this are copied into one buffer when taken. */
const MAX_PIECES = 8;

/**
 * A FIFO of bytes held as the caller's buffers, without copying them: `take` hands back
 * views into those buffers. A buffer pushed here must not be modified afterwards.
 */
export class ByteQueue {
  #buffers: (Buffer | undefined)[] = [];
  #head = 0;
  #offset = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(buffer: Buffer): void {
    if (buffer.length === 0) return;
    this.#buffers.push(buffer);
    this.#length += buffer.length;
  }

  /**
   * Removes the first `n` bytes and returns them as one or more views. Many small pieces
   * (from tiny writes) are merged into one buffer, so callers see at most a few.
   */
  take(n: number): Buffer[] {
    if (n > this.#length) throw new RangeError(`cannot take ${n} of ${this.#length} bytes`);
    const pieces: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const buffer = this.#buffers[this.#head]!;
      const available = buffer.length - this.#offset;
      if (available <= left) {
        pieces.push(this.#offset === 0 ? buffer : buffer.subarray(this.#offset));
        left -= available;
        this.#buffers[this.#head] = undefined;
        this.#head++;
        this.#offset = 0;
      } else {
        pieces.push(buffer.subarray(this.#offset, this.#offset + left));
        this.#offset += left;
        left = 0;
      }
    }
    this.#length -= n;
    this.#compact();
    return pieces.length > MAX_PIECES ? [Buffer.concat(pieces, n)] : pieces;
  }

  /** Removes the first `n` bytes as one buffer (a view when they lie in one piece). */
  takeContiguous(n: number): Buffer {
    const pieces = this.take(n);
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, n);
  }

  /** The first `n` bytes (at most `length`) as one buffer, without removing them. */
  peek(n: number): Buffer {
    const pieces: Buffer[] = [];
    let left = Math.min(n, this.#length);
    let offset = this.#offset;
    for (let i = this.#head; left > 0; i++) {
      const buffer = this.#buffers[i]!;
      const piece = buffer.subarray(offset, offset + left);
      pieces.push(piece);
      left -= piece.length;
      offset = 0;
    }
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
  }

  #compact(): void {
    if (this.#head === this.#buffers.length) {
      this.#buffers = [];
      this.#head = 0;
    } else if (this.#head > 64 && this.#head * 2 > this.#buffers.length) {
      this.#buffers = this.#buffers.slice(this.#head);
      this.#head = 0;
    }
  }
}
