/**
 * Gives memory back after a burst: when the daemon has been idle for `idleMs` (no API call
 * and no transfer) and the V8 heap has grown by `growthBytes` since the last collection,
 * it runs a full garbage collection, which returns the emptied heap pages to the system.
 * V8 keeps a heap it grew for a burst of small puts long after the garbage is dead.
 *
 * Needs `gc` (node `--expose-gc`, one of `NODE_FLAGS`); without it this does nothing.
 */
export class IdleCollector {
  readonly #gc: (() => void) | undefined;
  readonly #idleMs: number;
  readonly #growthBytes: number;
  readonly #busy: () => boolean;
  #lastActivity = performance.now();
  #heapAfterLast = process.memoryUsage().heapTotal;
  #timer: NodeJS.Timeout | undefined;
  collections = 0;

  constructor(options: {
    busy: () => boolean;
    idleMs?: number;
    growthBytes?: number;
    /** Default: the global `gc` of `--expose-gc`. */
    gc?: () => void;
  }) {
    const gc = options.gc ?? (globalThis as { gc?: () => void }).gc;
    this.#gc = typeof gc === 'function' ? gc : undefined;
    this.#busy = options.busy;
    this.#idleMs = options.idleMs ?? 500;
    this.#growthBytes = options.growthBytes ?? 24 * 1024 * 1024;
  }

  start(): void {
    if (this.#gc === undefined || this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.#check(), this.#idleMs).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Something happened: idleness starts counting again. */
  touch(): void {
    this.#lastActivity = performance.now();
  }

  #check(): void {
    if (this.#busy()) {
      this.touch();
      return;
    }
    if (performance.now() - this.#lastActivity < this.#idleMs) return;
    const { heapTotal } = process.memoryUsage();
    if (heapTotal - this.#heapAfterLast < this.#growthBytes) return;
    this.#gc!();
    this.collections += 1;
    this.#heapAfterLast = process.memoryUsage().heapTotal;
  }
}
