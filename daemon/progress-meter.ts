import type { TransferProgress } from './daemon-api.js';

/** Bytes between two progress reports of one transfer, at most. */
const STEP_BYTES = 1024 * 1024;
/** Milliseconds between two progress reports of one transfer, at most. */
const STEP_MS = 100;

/**
 * Counts the bytes of one transfer and reports them, throttled: a report when another
 * MiB went through or 100 ms passed since the last one, and always a last one from
 * `finish()`. Reports are ephemeral (`onProgress`), never logged.
 */
export class ProgressMeter {
  readonly #progress: TransferProgress;
  readonly #emit: (progress: TransferProgress) => void;
  readonly #now: () => number;
  #reportedBytes = 0;
  #reportedAt: number;

  constructor(
    blobId: string,
    direction: TransferProgress['direction'],
    total: number,
    emit: (progress: TransferProgress) => void,
    now: () => number = Date.now,
  ) {
    this.#progress = { blobId, direction, bytes: 0, total };
    this.#emit = emit;
    this.#now = now;
    this.#reportedAt = now();
  }

  get bytes(): number {
    return this.#progress.bytes;
  }

  add(bytes: number): void {
    this.#progress.bytes += bytes;
    const now = this.#now();
    if (
      this.#progress.bytes - this.#reportedBytes >= STEP_BYTES ||
      now - this.#reportedAt >= STEP_MS
    ) {
      this.#report(now);
    }
  }

  /** Reports the final count unless it was just reported. */
  finish(): void {
    if (this.#progress.bytes !== this.#reportedBytes) this.#report(this.#now());
  }

  #report(now: number): void {
    this.#reportedBytes = this.#progress.bytes;
    this.#reportedAt = now;
    this.#emit({ ...this.#progress });
  }
}

/** Passes `source` through unchanged, counting every chunk on `meter`. */
export async function* metered(
  source: AsyncIterable<Uint8Array>,
  meter: ProgressMeter,
): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const chunk of source) {
    meter.add(chunk.byteLength);
    yield chunk;
  }
  meter.finish();
}
