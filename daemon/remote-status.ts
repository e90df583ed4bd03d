import { RemoteError } from './remote/remote-error.js';

/**
 * What the daemon last learnt about the blobs server from its own calls: whether it
 * answered, and the last failure (its code and message; never a token).
 */
export class RemoteStatus {
  /** Null until the first call settles. */
  reachable: boolean | null = null;
  lastError: string | null = null;
  #lastCode: string | null = null;
  readonly #listeners = new Set<(reachable: boolean) => void>();

  /** Calls `listener` whenever `reachable` turns true or false; returns an unsubscribe. */
  onChange(listener: (reachable: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #set(reachable: boolean): void {
    if (this.reachable === reachable) return;
    this.reachable = reachable;
    for (const listener of this.#listeners) listener(reachable);
  }

  /** A call got an answer it could use. */
  succeeded(): void {
    this.lastError = null;
    this.#lastCode = null;
    this.#set(true);
  }

  /**
   * Records a failed call. Returns true when the failure differs from the previous one,
   * so that the caller logs a failure when it begins or changes, not on every repeat.
   */
  failed(error: unknown): boolean {
    const code = error instanceof RemoteError ? error.code : 'unknown';
    const message = error instanceof Error ? error.message : String(error);
    this.lastError = `${code}: ${message}`;
    const changed = code !== this.#lastCode;
    this.#lastCode = code;
    if (error instanceof RemoteError) this.#set(code !== 'network');
    return changed;
  }

  /** Runs a remote call and records how it went. */
  async track<T>(call: Promise<T>): Promise<T> {
    try {
      const value = await call;
      this.succeeded();
      return value;
    } catch (error) {
      if (error instanceof RemoteError) {
        // An answer that refuses one blob (409, 404, 413) still proves the server is up.
        const auth = error.code === 'unauthorized' || error.code === 'forbidden';
        if (error.status !== undefined && error.status < 500 && !auth) {
          this.succeeded();
        } else {
          this.failed(error);
        }
      }
      throw error;
    }
  }
}
