import type { Priority } from './daemon-api.js';

/** Queue order, most urgent first. */
export const PRIORITY_ORDER: readonly Priority[] = ['URGENT', 'HIGH', 'MEDIUM', 'LOW'];

const DEFAULT_LIMITS: Record<TransferKind, number> = { upload: 4, download: 4 };

const PRIORITY_RANK: Record<Priority, number> = { LOW: 0, MEDIUM: 1, HIGH: 2, URGENT: 3 };

export type TransferKind = 'upload' | 'download';

export interface TransferJob<K extends string = TransferKind> {
  kind: K;
  priority: Priority;
  /**
   * Does the transfer. `signal` aborts when the job is cancelled while running; the job
   * keeps its slot until the returned promise settles.
   */
  run: (signal: AbortSignal) => Promise<void>;
}

export type JobState = 'queued' | 'running';

/** What `enqueue` did: queued a new job, changed a queued one, or left a running one alone. */
export type EnqueueResult = 'queued' | 'updated' | 'running';

export interface JobStartInfo<K extends string = TransferKind> {
  key: string;
  kind: K;
  priority: Priority;
}

/** Reported for every job that started (a job cancelled while queued never started). */
export interface JobEndInfo<K extends string = TransferKind> extends JobStartInfo<K> {
  /** Set when `run` rejected (or threw). */
  error?: unknown;
  /** True when the job was cancelled while it ran. */
  cancelled: boolean;
  ms: number;
}

export interface TransferSchedulerOptions<K extends string = TransferKind> {
  /**
   * Jobs of each kind allowed to run at once; kinds not named use `defaultLimit`. Default
   * `{ upload: 4, download: 4 }`. The kinds named here always appear in `counts()`.
   */
  limits?: Partial<Record<NoInfer<K>, number>>;
  /** Default 4. */
  defaultLimit?: number;
  /** Starts paused: nothing runs until `resume()`. */
  paused?: boolean;
  onStart?: (info: JobStartInfo<K>) => void;
  onEnd?: (info: JobEndInfo<K>) => void;
}

export interface KindCounts {
  queued: number;
  running: number;
}

interface QueuedJob<K extends string> {
  key: string;
  job: TransferJob<K>;
}

interface RunningJob<K extends string> {
  key: string;
  job: TransferJob<K>;
  controller: AbortController;
  startedAt: number;
}

interface KindLane<K extends string> {
  limit: number;
  running: number;
  /** One FIFO per priority; a Map keeps insertion order and removes from the middle in O(1). */
  queues: Record<Priority, Map<string, QueuedJob<K>>>;
}

/**
 * A priority queue of transfer jobs keyed by a caller-chosen key (a blob id), with a
 * concurrency limit per kind. Higher priority runs first, FIFO within one priority. A key
 * is queued at most once and never runs twice at once. Pure logic over promises; its one timer paces probes while `throttle`d.
 */
export class TransferScheduler<K extends string = TransferKind> {
  readonly #defaultLimit: number;
  readonly #limits: Partial<Record<K, number>>;
  readonly #lanes = new Map<K, KindLane<K>>();
  readonly #queued = new Map<string, QueuedJob<K>>();
  readonly #running = new Map<string, RunningJob<K>>();
  /** Running jobs that were cancelled: they hold their slot until `run` settles. */
  readonly #cancelled = new Set<RunningJob<K>>();
  readonly #onStart: ((info: JobStartInfo<K>) => void) | undefined;
  readonly #onEnd: ((info: JobEndInfo<K>) => void) | undefined;
  #idleWaiters: (() => void)[] = [];
  #paused: boolean;
  /** Set while throttled: at most one job at a time, one start per this many ms. */
  #probeMs: number | null = null;
  #nextProbeAt = 0;
  #probeTimer: NodeJS.Timeout | undefined;

  constructor(options: TransferSchedulerOptions<K> = {}) {
    this.#defaultLimit = checkLimit(options.defaultLimit ?? 4);
    this.#limits = { ...(options.limits ?? DEFAULT_LIMITS) } as Partial<Record<K, number>>;
    for (const limit of Object.values(this.#limits)) checkLimit(limit as number);
    this.#paused = options.paused ?? false;
    this.#onStart = options.onStart;
    this.#onEnd = options.onEnd;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /**
   * Queues `job` under `key`. If `key` is already queued, no second job is added: its
   * priority is raised to `job.priority` when that is higher (use `reprioritize` to lower
   * it) and its `run` stays the first one. If `key` is running, nothing changes. Throws a
   * TypeError when a queued key is enqueued again with another kind.
   */
  enqueue(key: string, job: TransferJob<K>): EnqueueResult {
    checkPriority(job.priority);
    const queued = this.#queued.get(key);
    if (queued) {
      if (queued.job.kind !== job.kind) {
        throw new TypeError(`job ${key} is queued as ${queued.job.kind}, not ${job.kind}`);
      }
      if (PRIORITY_RANK[job.priority] > PRIORITY_RANK[queued.job.priority]) {
        this.#move(queued, job.priority);
      }
      return 'updated';
    }
    const running = this.#running.get(key);
    if (running && !this.#cancelled.has(running)) return 'running';

    const entry: QueuedJob<K> = { key, job: { ...job } };
    this.#queued.set(key, entry);
    this.#lane(job.kind).queues[job.priority].set(key, entry);
    this.#pump(job.kind);
    return 'queued';
  }

  /** Sets the priority of a queued job, up or down; false when `key` is not queued. */
  reprioritize(key: string, priority: Priority): boolean {
    checkPriority(priority);
    const queued = this.#queued.get(key);
    if (!queued) return false;
    if (queued.job.priority !== priority) this.#move(queued, priority);
    return true;
  }

  /**
   * Removes a queued job, or aborts the signal of a running one (which keeps its slot until
   * its `run` settles). Returns false when `key` is neither queued nor running.
   */
  cancel(key: string): boolean {
    const queued = this.#queued.get(key);
    if (queued) {
      this.#queued.delete(key);
      this.#lane(queued.job.kind).queues[queued.job.priority].delete(key);
      this.#checkIdle();
      return true;
    }
    const running = this.#running.get(key);
    if (running && !this.#cancelled.has(running)) {
      this.#cancelled.add(running);
      running.controller.abort(new CancelledError(key));
      return true;
    }
    return false;
  }

  /** Nothing new starts until `resume()`; running jobs go on to the end. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    for (const kind of this.#lanes.keys()) this.#pump(kind);
  }

  /**
   * Throttles to probing (`intervalMs`) or back to normal (`null`): while throttled, a job
   * starts only when no job of any kind runs and `intervalMs` have passed since the last
   * start, so an unreachable server sees one attempt per interval instead of every queued
   * transfer failing in turn. URGENT jobs (an explicit request) are not held back.
   */
  throttle(intervalMs: number | null): void {
    if (intervalMs !== null && (!Number.isFinite(intervalMs) || intervalMs < 0)) {
      throw new TypeError(`a probe interval must be a non-negative number, got ${intervalMs}`);
    }
    if (intervalMs === this.#probeMs) return;
    const wasThrottled = this.#probeMs !== null;
    this.#probeMs = intervalMs;
    if (intervalMs === null) {
      clearTimeout(this.#probeTimer);
      this.#probeTimer = undefined;
      for (const kind of this.#lanes.keys()) this.#pump(kind);
    } else if (!wasThrottled) {
      // The failure that throttled us was the last attempt: the next waits a full interval.
      this.#nextProbeAt = Date.now() + intervalMs;
    }
  }

  get throttled(): boolean {
    return this.#probeMs !== null;
  }

  /** Changes the concurrency limit of a kind; a lower limit lets running jobs finish. */
  setLimit(kind: K, limit: number): void {
    this.#limits[kind] = checkLimit(limit);
    const lane = this.#lanes.get(kind);
    if (lane) {
      lane.limit = limit;
      this.#pump(kind);
    }
  }

  /** `queued`, `running`, or undefined; a cancelled job still settling reads as undefined. */
  state(key: string): JobState | undefined {
    if (this.#queued.has(key)) return 'queued';
    const running = this.#running.get(key);
    return running && !this.#cancelled.has(running) ? 'running' : undefined;
  }

  /** Queued and running jobs per kind (every kind configured or seen so far). */
  counts(): Record<K, KindCounts> {
    const counts = {} as Record<K, KindCounts>;
    for (const kind of Object.keys(this.#limits) as K[]) counts[kind] = { queued: 0, running: 0 };
    for (const [kind, lane] of this.#lanes) {
      let queued = 0;
      for (const priority of PRIORITY_ORDER) queued += lane.queues[priority].size;
      counts[kind] = { queued, running: lane.running };
    }
    return counts;
  }

  /**
   * Resolves once nothing is queued and nothing runs (cancelled jobs included). While
   * paused with jobs queued, it stays pending until they ran or were cancelled.
   */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #lane(kind: K): KindLane<K> {
    let lane = this.#lanes.get(kind);
    if (!lane) {
      lane = {
        limit: this.#limits[kind] ?? this.#defaultLimit,
        running: 0,
        queues: { URGENT: new Map(), HIGH: new Map(), MEDIUM: new Map(), LOW: new Map() },
      };
      this.#lanes.set(kind, lane);
    }
    return lane;
  }

  /** Puts a queued job at the back of another priority's FIFO. */
  #move(entry: QueuedJob<K>, priority: Priority): void {
    const lane = this.#lane(entry.job.kind);
    lane.queues[entry.job.priority].delete(entry.key);
    entry.job.priority = priority;
    lane.queues[priority].set(entry.key, entry);
  }

  #pump(kind: K): void {
    const lane = this.#lane(kind);
    while (!this.#paused && lane.running < lane.limit) {
      const next = this.#next(lane);
      if (!next) break;
      if (this.#probeMs !== null && next.job.priority !== 'URGENT' && !this.#mayProbe()) break;
      this.#start(lane, next);
    }
  }

  /** While throttled: whether a probe may start now; if not, a pump is timed for when it may. */
  #mayProbe(): boolean {
    if (this.#running.size > 0) return false;
    const wait = this.#nextProbeAt - Date.now();
    if (wait <= 0) {
      this.#nextProbeAt = Date.now() + (this.#probeMs ?? 0);
      return true;
    }
    if (this.#probeTimer === undefined) {
      this.#probeTimer = setTimeout(() => {
        this.#probeTimer = undefined;
        for (const kind of this.#lanes.keys()) this.#pump(kind);
      }, wait);
      this.#probeTimer.unref();
    }
    return false;
  }

  /** The first queued job in priority order whose key is not still settling from a cancel. */
  #next(lane: KindLane<K>): QueuedJob<K> | undefined {
    for (const priority of PRIORITY_ORDER) {
      for (const entry of lane.queues[priority].values()) {
        if (!this.#running.has(entry.key)) return entry;
      }
    }
    return undefined;
  }

  #start(lane: KindLane<K>, entry: QueuedJob<K>): void {
    const { key, job } = entry;
    this.#queued.delete(key);
    lane.queues[job.priority].delete(key);
    const running: RunningJob<K> = {
      key,
      job,
      controller: new AbortController(),
      startedAt: performance.now(),
    };
    this.#running.set(key, running);
    lane.running += 1;
    const info = { key, kind: job.kind, priority: job.priority };
    callListener(this.#onStart, info);

    // `run` starts on a microtask, so a job that enqueues or cancels synchronously never
    // re-enters the pump while it is walking a queue. A job cancelled before that microtask
    // never runs.
    const { signal } = running.controller;
    Promise.resolve()
      .then(() => (signal.aborted ? undefined : job.run(signal)))
      .then(
        () => this.#finish(lane, running, undefined, false),
        (error: unknown) => this.#finish(lane, running, error, true),
      );
  }

  #finish(lane: KindLane<K>, running: RunningJob<K>, error: unknown, failed: boolean): void {
    const cancelled = this.#cancelled.delete(running);
    if (this.#running.get(running.key) === running) this.#running.delete(running.key);
    lane.running -= 1;
    const { key, job } = running;
    const end: JobEndInfo<K> = {
      key,
      kind: job.kind,
      priority: job.priority,
      cancelled,
      ms: performance.now() - running.startedAt,
    };
    if (failed) end.error = error;
    callListener(this.#onEnd, end);
    // A job queued again under a cancelled key may have been held back: any lane may now run.
    for (const kind of this.#lanes.keys()) this.#pump(kind);
    this.#checkIdle();
  }

  #isIdle(): boolean {
    return this.#queued.size === 0 && this.#running.size === 0;
  }

  #checkIdle(): void {
    if (!this.#isIdle() || this.#idleWaiters.length === 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** The abort reason of a job cancelled while it ran. */
export class CancelledError extends Error {
  readonly code = 'cancelled';

  constructor(key: string) {
    super(`transfer ${key} was cancelled`);
    this.name = 'CancelledError';
  }
}

/** A throwing listener is a bug in the caller; it must not corrupt the queue's bookkeeping. */
function callListener<T>(listener: ((info: T) => void) | undefined, info: T): void {
  if (!listener) return;
  try {
    listener(info);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}

function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`concurrency limit must be a positive integer, got ${limit}`);
  }
  return limit;
}

function checkPriority(priority: Priority): void {
  if (!Object.hasOwn(PRIORITY_RANK, priority)) {
    throw new RangeError(`unknown priority ${String(priority)}`);
  }
}
