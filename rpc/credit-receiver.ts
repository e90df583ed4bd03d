import { Readable } from 'node:stream';

export interface CreditReceiverOptions {
  /** Bytes the sender may have in flight beyond what the consumer has read. */
  window: number;
  /** Grants more credit: the sender may have sent up to `limit` bytes in all. */
  onCredit: (limit: number) => void;
  /** The consumer destroyed the readable before the stream ended. */
  onAbandon: (error: Error | null) => void;
}

/**
 * The receiving end of one stream: frames go in through `push`, the consumer reads
 * `readable`, and credit is granted only as the consumer reads, so at most `window`
 * bytes are ever buffered here.
 */
export class CreditReceiver {
  readonly readable: Readable;
  readonly #window: number;
  readonly #onCredit: (limit: number) => void;
  #received = 0;
  #granted: number;
  #finished = false;
  #failedWith: Error | undefined;

  constructor(options: CreditReceiverOptions) {
    this.#window = options.window;
    this.#granted = options.window;
    this.#onCredit = options.onCredit;
    this.readable = new Readable({
      highWaterMark: Math.max(1, Math.floor(options.window / 2)),
      // Node calls _read before it takes the bytes being read out of the buffer, so
      // what the consumer took is only known on the next tick.
      read: () => process.nextTick(() => this.#grant()),
      destroy: (error, callback) => {
        if (!this.#finished) {
          this.#finished = true;
          options.onAbandon(error);
        }
        callback(error);
      },
    });
  }

  /** Total credit granted so far (the initial window included). */
  get granted(): number {
    return this.#granted;
  }

  get received(): number {
    return this.#received;
  }

  /** The error given to `fail`, if the stream failed. */
  get failedWith(): Error | undefined {
    return this.#failedWith;
  }

  /** True once the stream ended, failed or was abandoned: later frames are ignored. */
  get finished(): boolean {
    return this.#finished;
  }

  /** Queues one payload; false when it goes past the granted credit (a protocol error). */
  push(payload: Buffer): boolean {
    if (this.#finished) return true;
    if (this.#received + payload.byteLength > this.#granted) return false;
    this.#received += payload.byteLength;
    this.readable.push(payload);
    return true;
  }

  /** The sender is done: the consumer sees the end after the buffered bytes. */
  end(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.readable.push(null);
  }

  /**
   * The stream failed: the consumer sees `error` (kept in `readable.errored` for one
   * that starts reading later, so a consumer not listening yet does not crash us).
   */
  fail(error: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#failedWith = error;
    if (this.readable.listenerCount('error') === 0) this.readable.on('error', () => {});
    this.readable.destroy(error);
  }

  /**
   * Called whenever the consumer wants more. Credit grows in steps of a quarter window,
   * except when the sender has used all of it: then any progress is granted at once, or
   * nobody would ever call this again.
   */
  #grant(): void {
    if (this.#finished) return;
    const consumed = this.#received - this.readable.readableLength;
    const limit = consumed + this.#window;
    if (limit <= this.#granted) return;
    if (limit - this.#granted < this.#window / 4 && this.#received < this.#granted) return;
    this.#granted = limit;
    this.#onCredit(limit);
  }
}
