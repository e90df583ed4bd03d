import { createDecipheriv } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { ByteQueue } from './byte-queue.js';
import {
  chunkNonce,
  deriveBlobKey,
  type EnvelopeHeader,
  FIXED_HEADER_BYTES,
  headerLength,
  MAX_CHUNKS,
  parseHeader,
  TAG_BYTES,
} from './envelope-format.js';
import type { CiphertextRange } from './envelope-range.js';
import { IntegrityError } from './integrity-error.js';
import { NotDecryptableError } from './not-decryptable-error.js';

export interface DecryptStreamOptions {
  /** The 32-byte storage secret. */
  secret: Buffer;
  /** The blob id the envelope must carry in its header. */
  blobId: string;
  /** Bytes buffered on each side before backpressure applies; default 1 MiB. */
  highWaterMark?: number;
}

export interface RangeDecryptStreamOptions extends DecryptStreamOptions {
  /** The envelope's first `range.headerSize` bytes (more are ignored). */
  header: Buffer;
  /** From `mapPlaintextRange`; the stream's input is envelope bytes `start` to `end`. */
  range: CiphertextRange;
}

/**
 * A Transform from a whole blob envelope to its plaintext. Each chunk's plaintext is
 * released only after its tag verified; the stream fails with `IntegrityError` at the first
 * chunk that does not (or earlier: bad header, other blob id, wrong size), and with
 * `NotDecryptableError` for an `external` envelope. It emits `'header'` with the parsed
 * `EnvelopeHeader` once the header is read. It holds at most one sealed chunk plus the
 * current write.
 */
export function createDecryptStream(options: DecryptStreamOptions): Transform {
  return new DecryptStream(options, undefined);
}

/**
 * A Transform from the envelope bytes `range.start`..`range.end` to exactly the plaintext
 * bytes `range.plaintextStart`..`range.plaintextEnd`, verified chunk by chunk. Throws
 * `IntegrityError` at once when `header` does not match the blob id or the range's layout.
 */
export function createRangeDecryptStream(options: RangeDecryptStreamOptions): Transform {
  return new DecryptStream(options, options.range);
}

class DecryptStream extends Transform {
  readonly #secret: Buffer;
  readonly #blobId: string;
  readonly #range: CiphertextRange | undefined;
  readonly #queue = new ByteQueue();
  #header: EnvelopeHeader | undefined;
  #headerLength: number | undefined;
  #key: Buffer | undefined;
  #sealedChunk = 0;
  #index = 0;
  #skip = 0;
  #remaining = Number.POSITIVE_INFINITY;

  constructor(options: DecryptStreamOptions, range: CiphertextRange | undefined) {
    const highWaterMark = options.highWaterMark ?? 1024 * 1024;
    super({ readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    this.#secret = options.secret;
    this.#blobId = options.blobId;
    this.#range = range;
    if (range) {
      const { header } = options as RangeDecryptStreamOptions;
      if (header.length < range.headerSize) {
        throw new IntegrityError(`envelope header of blob ${this.#blobId} is incomplete`);
      }
      const parsed = parseHeader(header.subarray(0, range.headerSize));
      this.#start(parsed);
      if (parsed.chunkSize !== range.chunkSize) {
        const sizes = `${parsed.chunkSize} bytes, not ${range.chunkSize}`;
        throw new IntegrityError(`blob ${this.#blobId} has chunks of ${sizes}`);
      }
      this.#index = range.firstChunk;
      this.#skip = range.skip;
      this.#remaining = range.length;
    }
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#queue.push(chunk);
    try {
      if (!this.#header && !this.#readHeader()) {
        callback();
        return;
      }
      if (this.#range) this.#openRangeChunks();
      else while (this.#queue.length > this.#sealedChunk) this.#open(this.#sealedChunk, false);
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#finish();
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }

  #readHeader(): boolean {
    if (this.#headerLength === undefined) {
      if (this.#queue.length < FIXED_HEADER_BYTES) return false;
      this.#headerLength = headerLength(this.#queue.peek(FIXED_HEADER_BYTES));
    }
    if (this.#queue.length < this.#headerLength!) return false;
    this.#start(parseHeader(this.#queue.takeContiguous(this.#headerLength!)));
    this.emit('header', this.#header);
    return true;
  }

  #start(header: EnvelopeHeader): void {
    if (header.blobId !== this.#blobId) {
      const other = JSON.stringify(header.blobId);
      throw new IntegrityError(`envelope belongs to blob ${other}, not ${this.#blobId}`);
    }
    if (header.scheme === 'external') {
      throw new NotDecryptableError(`blob ${this.#blobId} was sealed by someone else`);
    }
    this.#header = header;
    this.#sealedChunk = header.chunkSize + TAG_BYTES;
    this.#key = deriveBlobKey(this.#secret, header.salt, header.blobId);
  }

  #openRangeChunks(): void {
    const range = this.#range!;
    while (this.#index <= range.lastChunk) {
      const last = this.#index === range.lastChunk;
      const size = last ? range.lastChunkBytes : this.#sealedChunk;
      if (this.#queue.length < size) return;
      this.#open(size, last && range.includesFinalChunk);
    }
    if (this.#queue.length > 0) {
      throw new IntegrityError(`more bytes than the range of blob ${this.#blobId} covers`);
    }
  }

  #finish(): void {
    if (!this.#header) {
      throw new IntegrityError(`envelope of blob ${this.#blobId} ends inside its header`);
    }
    if (this.#range) {
      if (this.#index <= this.#range.lastChunk) {
        throw new IntegrityError(`range of blob ${this.#blobId} ends before chunk ${this.#index}`);
      }
      return;
    }
    const length = this.#queue.length;
    if (length < TAG_BYTES || (length === TAG_BYTES && this.#index > 0)) {
      throw new IntegrityError(
        `envelope of blob ${this.#blobId} is truncated: no final chunk at ${this.#index}`,
      );
    }
    this.#open(length, true);
  }

  #open(size: number, final: boolean): void {
    if (this.#index >= MAX_CHUNKS) {
      throw new IntegrityError(`envelope of blob ${this.#blobId} has too many chunks`);
    }
    const decipher = createDecipheriv('aes-256-gcm', this.#key!, chunkNonce(this.#index, final));
    decipher.setAAD(this.#header!.bytes);
    const plaintext: Buffer[] = [];
    for (const piece of this.#queue.take(size - TAG_BYTES)) plaintext.push(decipher.update(piece));
    decipher.setAuthTag(this.#queue.takeContiguous(TAG_BYTES));
    try {
      decipher.final();
    } catch (cause) {
      throw new IntegrityError(
        `chunk ${this.#index} of blob ${this.#blobId} failed verification` +
          (final ? ' as the final chunk' : ''),
        { cause },
      );
    }
    this.#index++;
    for (const piece of plaintext) this.#release(piece);
  }

  #release(piece: Buffer): void {
    let out = piece;
    if (this.#skip > 0) {
      const dropped = Math.min(this.#skip, out.length);
      this.#skip -= dropped;
      out = out.subarray(dropped);
    }
    if (out.length > this.#remaining) out = out.subarray(0, this.#remaining);
    if (out.length === 0) return;
    this.#remaining -= out.length;
    this.push(out);
  }
}
