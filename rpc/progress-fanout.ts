import type { DaemonApi, TransferProgress } from '../daemon/daemon-api.js';

export type ProgressListener = (progress: TransferProgress) => void;

/**
 * One daemon progress listener shared by every subscribed connection. Progress is
 * coalesced per blob and delivered at most every `intervalMs`, except the final report of
 * a transfer (bytes === total), which goes out at once. Listens to the daemon only while
 * someone listens here.
 */
export class ProgressFanout {
  readonly #daemon: Pick<DaemonApi, 'onProgress'>;
  readonly #intervalMs: number;
  readonly #listeners = new Set<ProgressListener>();
  readonly #latest = new Map<string, TransferProgress>();
  #stopListening: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(daemon: Pick<DaemonApi, 'onProgress'>, intervalMs = 100) {
    this.#daemon = daemon;
    this.#intervalMs = intervalMs;
  }

  /** Adds a listener; returns the function that removes it. */
  add(listener: ProgressListener): () => void {
    this.#listeners.add(listener);
    this.#stopListening ??= this.#daemon.onProgress((progress) => this.#onProgress(progress));
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) this.close();
    };
  }

  close(): void {
    this.#stopListening?.();
    this.#stopListening = undefined;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#latest.clear();
  }

  #onProgress(progress: TransferProgress): void {
    if (progress.bytes >= progress.total) {
      this.#latest.delete(progress.blobId);
      this.#deliver(progress);
      return;
    }
    this.#latest.set(progress.blobId, progress);
    this.#timer ??= setTimeout(() => this.#flush(), this.#intervalMs);
  }

  #flush(): void {
    this.#timer = undefined;
    const batch = [...this.#latest.values()];
    this.#latest.clear();
    for (const progress of batch) this.#deliver(progress);
  }

  #deliver(progress: TransferProgress): void {
    for (const listener of this.#listeners) listener(progress);
  }
}
