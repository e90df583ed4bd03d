import { createCipheriv, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { ByteQueue } from './byte-queue.js';
import {
  chunkNonce,
  DEFAULT_CHUNK_SIZE,
  deriveBlobKey,
  encodeHeader,
  MAX_CHUNKS,
  SALT_BYTES,
} from './envelope-format.js';

export interface EncryptStreamOptions {
  /** The 32-byte storage secret. */
  secret: Buffer;
  blobId: string;
  /** Plaintext bytes per chunk, 1 to 16 MiB; default 64 KiB. */
  chunkSize?: number;
  /** The per-blob salt; random by default. Fix it only for test vectors. */
  salt?: Buffer;
  /** Bytes buffered on each side before backpressure applies; default 1 MiB. */
  highWaterMark?: number;
}

/**
 * A Transform from plaintext to a blob envelope (docs/envelope-format.md). The plaintext
 * may arrive in writes of any size; the length need not be known in advance. It holds at
 * most one chunk plus the current write.
 */
export function createEncryptStream(options: EncryptStreamOptions): Transform {
  return new EncryptStream(options);
}

class EncryptStream extends Transform {
  readonly #key: Buffer;
  readonly #header: Buffer;
  readonly #chunkSize: number;
  readonly #queue = new ByteQueue();
  #index = 0;

  constructor(options: EncryptStreamOptions) {
    const highWaterMark = options.highWaterMark ?? 1024 * 1024;
    super({ readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    const salt = options.salt ?? randomBytes(SALT_BYTES);
    this.#chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.#header = encodeHeader({ chunkSize: this.#chunkSize, blobId: options.blobId, salt });
    this.#key = deriveBlobKey(options.secret, salt, options.blobId);
    this.push(this.#header);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#queue.push(chunk);
    try {
      // A chunk is sealed only once a byte beyond it has arrived: until then it may be the last.
      while (this.#queue.length > this.#chunkSize) this.#seal(this.#chunkSize, false);
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#seal(this.#queue.length, true);
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }

  #seal(length: number, final: boolean): void {
    if (this.#index >= MAX_CHUNKS) throw new RangeError('plaintext is too large for one envelope');
    const cipher = createCipheriv('aes-256-gcm', this.#key, chunkNonce(this.#index, final));
    cipher.setAAD(this.#header);
    for (const piece of this.#queue.take(length)) this.push(cipher.update(piece));
    cipher.final();
    this.push(cipher.getAuthTag());
    this.#index++;
  }
}
