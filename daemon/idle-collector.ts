/**
 * Gives memory back after a burst: once the daemon is quiet (no API call in flight or in
 * the last `quietMs`, no transfer running) and the V8 heap has grown by `growthBytes`
 * since the last collection, it runs two full garbage collections: the first frees the
 * garbage, the second returns the emptied heap pages to the system. V8 otherwise keeps a heap it grew for a
 * burst of small puts long after the garbage in it is dead.
 *
 * The check runs `quietMs` after each API call or transfer ends (`settle`), and every
 * second besides. Needs `gc` (node `--expose-gc`, one of `NODE_FLAGS`); without it this
 * does nothing.
 */
export class IdleCollector {
  readonly #gc: (() => void) | undefined;
  readonly #quietMs: number;
  readonly #growthBytes: number;
  readonly #busy: () => boolean;
  #calls = 0;
  #lastActivity = performance.now();
  #heapAfterLast = process.memoryUsage().heapTotal;
  #interval: NodeJS.Timeout | undefined;
  #soon: NodeJS.Timeout | undefined;
  collections = 0;

  constructor(options: {
    /** Transfers running. */
    busy: () => boolean;
    quietMs?: number;
    growthBytes?: number;
    /** Default: the global `gc` of `--expose-gc`. */
    gc?: () => void;
  }) {
    const gc = options.gc ?? (globalThis as { gc?: () => void }).gc;
    this.#gc = typeof gc === 'function' ? gc : undefined;
    this.#busy = options.busy;
    this.#quietMs = options.quietMs ?? 50;
    this.#growthBytes = options.growthBytes ?? 24 * 1024 * 1024;
  }

  start(): void {
    if (this.#gc === undefined || this.#interval !== undefined) return;
    this.#interval = setInterval(() => this.#check(), 1000).unref();
  }

  stop(): void {
    clearInterval(this.#interval);
    clearTimeout(this.#soon);
    this.#interval = undefined;
    this.#soon = undefined;
  }

  /** An API call starts. */
  enter(): void {
    this.#calls += 1;
    this.#lastActivity = performance.now();
  }

  /** An API call ended. */
  leave(): void {
    this.#calls -= 1;
    this.#lastActivity = performance.now();
    this.settle();
  }

  /** Something ended (a call, a transfer): check once the daemon has been quiet a while. */
  settle(): void {
    if (this.#interval === undefined || this.#soon !== undefined) return;
    this.#soon = setTimeout(() => {
      this.#soon = undefined;
      this.#check();
    }, this.#quietMs).unref();
  }

  #check(): void {
    if (this.#calls > 0 || this.#busy()) return;
    if (performance.now() - this.#lastActivity < this.#quietMs) {
      this.settle();
      return;
    }
    const { heapTotal } = process.memoryUsage();
    if (heapTotal - this.#heapAfterLast < this.#growthBytes) return;
    this.#gc!();
    this.#gc!();
    this.collections += 1;
    this.#heapAfterLast = process.memoryUsage().heapTotal;
  }
}
