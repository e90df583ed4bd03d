import { encodeFrame, FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD } from './stream-frames.js';

/** Sends one frame; a returned promise means "wait before sending the next one". */
export type FrameWriter = (frame: Buffer) => Promise<void> | undefined;

/**
 * The sending end of one stream: cuts the source into frames and sends them only within
 * the credit the receiver granted. Holds one source chunk and one frame in memory.
 */
export class CreditSender {
  readonly streamId: number;
  readonly #write: FrameWriter;
  #limit: number;
  #sent = 0;
  #error: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(streamId: number, initialLimit: number, write: FrameWriter) {
    this.streamId = streamId;
    this.#limit = initialLimit;
    this.#write = write;
  }

  get sent(): number {
    return this.#sent;
  }

  /** The error the sender was aborted with, if it was. */
  get abortedWith(): Error | undefined {
    return this.#error;
  }

  /** The receiver allows up to `limit` bytes in all; a smaller limit than before is ignored. */
  credit(limit: number): void {
    if (limit <= this.#limit) return;
    this.#limit = limit;
    this.#wakeUp();
  }

  /** Stops the pump: it rejects with `error` and destroys its source. */
  abort(error: Error): void {
    if (this.#error !== undefined) return;
    this.#error = error;
    this.#wakeUp();
  }

  /**
   * Sends every byte of `source`; resolves with the byte count. Small chunks are gathered
   * into frames of up to `MAX_FRAME_PAYLOAD` bytes. Rejects when aborted or when the
   * source fails; leaving the loop early destroys a Readable source.
   */
  async pump(source: AsyncIterable<unknown>): Promise<number> {
    let frame = newFrame(this.streamId);
    let filled = 0;
    for await (const item of source) {
      const chunk = toBytes(item);
      let offset = 0;
      while (offset < chunk.byteLength) {
        const size = Math.min(MAX_FRAME_PAYLOAD - filled, chunk.byteLength - offset);
        frame.set(chunk.subarray(offset, offset + size), FRAME_HEADER_BYTES + filled);
        filled += size;
        offset += size;
        if (filled === MAX_FRAME_PAYLOAD) {
          await this.#flush(frame, filled);
          frame = newFrame(this.streamId);
          filled = 0;
        }
      }
    }
    if (filled > 0) await this.#flush(frame, filled);
    if (this.#error !== undefined) throw this.#error;
    return this.#sent;
  }

  /** Sends the first `filled` payload bytes of `frame`, in pieces when credit is short. */
  async #flush(frame: Buffer, filled: number): Promise<void> {
    let offset = 0;
    while (offset < filled) {
      await this.#waitForCredit();
      const size = Math.min(this.#limit - this.#sent, filled - offset);
      const whole = offset === 0 && size === filled;
      const out = whole
        ? frame.subarray(0, FRAME_HEADER_BYTES + size)
        : encodeFrame(
            this.streamId,
            frame.subarray(FRAME_HEADER_BYTES + offset, FRAME_HEADER_BYTES + offset + size),
          );
      const pending = this.#write(out);
      this.#sent += size;
      offset += size;
      if (pending !== undefined) await pending;
    }
  }

  async #waitForCredit(): Promise<void> {
    for (;;) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#sent < this.#limit) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** A frame buffer for one full payload, its header already written. */
function newFrame(streamId: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + MAX_FRAME_PAYLOAD);
  frame.writeUInt32BE(streamId, 0);
  return frame;
}

function toBytes(item: unknown): Uint8Array {
  if (item instanceof Uint8Array) return item;
  if (typeof item === 'string') return Buffer.from(item, 'utf8');
  throw new TypeError(`an attachment source must yield bytes, got ${typeof item}`);
}
