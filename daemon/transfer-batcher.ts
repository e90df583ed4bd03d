import type { Logger } from 'pino';
import type { Priority } from './daemon-api.js';
import type { BlobsClient } from './remote/blobs-client.js';
import { RemoteError } from './remote/remote-error.js';
import { PRIORITY_ORDER, type TransferKind, type TransferScheduler } from './transfer-scheduler.js';

export interface TransferBatcherOptions {
  /** The lane the batches run in: `upload` or `download`. */
  kind: TransferKind;
  scheduler: TransferScheduler;
  /**
   * Sends START to the attachment's actor if it is still queued (restoring a passivated
   * actor first), calling `beforeStart` right before; resolves with whether it did. The
   * actor's transfer effect then calls `claim` synchronously inside START.
   */
  start(blobId: string, beforeStart: () => void): Promise<boolean>;
  /** Moves one batch in one `/stream` request, settling every member. */
  send(members: BatchMember[], signal: AbortSignal): Promise<void>;
  /** Most blobs per `/stream` request. */
  maxBlobs: number;
  /** Most envelope bytes per request (a single larger blob still goes alone). */
  maxBytes: number;
  /**
   * How long a batch that got a slot waits for more blobs before it leaves, unless it is
   * full or holds an URGENT blob. Milliseconds; 0 sends at once.
   */
  lingerMs: number;
  logger: Logger;
}

interface QueuedBlob {
  blobId: string;
  size: number;
}

/** One blob of a batch: `send` settles it with the outcome of its share. */
export interface BatchMember extends QueuedBlob {
  resolve(): void;
  reject(error: unknown): void;
  promise: Promise<void>;
}

/**
 * Gathers small transfers of one direction into `/stream` requests. Small blobs wait in
 * the batcher's own priority queue, not in the scheduler; the batcher keeps one batch job
 * queued (or gathering) in the scheduler's lane of its kind at a time. When that job gets
 * a slot it lingers briefly for more blobs (not when full or URGENT), takes up to
 * `maxBlobs` / `maxBytes` of the queue in priority order, queues the next job if blobs
 * remain, STARTs the taken actors (whose transfer effects `claim` their share of the
 * request) and hands them to `send`, which makes one request. So a thousand queued 10 KB
 * blobs take about ten requests, several in flight at once within the lane's limit.
 */
export class TransferBatcher {
  readonly #options: TransferBatcherOptions;
  readonly #queues: Record<Priority, Map<string, QueuedBlob>> = {
    URGENT: new Map(),
    HIGH: new Map(),
    MEDIUM: new Map(),
    LOW: new Map(),
  };
  readonly #priorityOf = new Map<string, Priority>();
  readonly #claims = new Map<string, Promise<void>>();
  readonly #closing = new AbortController();
  /** The batch job queued in (or gathering inside) the scheduler, if any. */
  #jobKey: string | undefined;
  #jobSeq = 0;
  #queuedBytes = 0;
  #wake: (() => void) | undefined;
  #hurry = false;

  constructor(options: TransferBatcherOptions) {
    this.#options = options;
  }

  /** Small blobs waiting for a batch. */
  get queued(): number {
    return this.#priorityOf.size;
  }

  has(blobId: string): boolean {
    return this.#priorityOf.has(blobId);
  }

  /** Queues a small blob, or changes the priority of a queued one. */
  add(blobId: string, size: number, priority: Priority): void {
    if (this.#closing.signal.aborted) return;
    const current = this.#priorityOf.get(blobId);
    if (current !== undefined) {
      if (current === priority) return;
      this.#queues[current].delete(blobId);
    } else {
      this.#queuedBytes += size;
    }
    this.#queues[priority].set(blobId, { blobId, size });
    this.#priorityOf.set(blobId, priority);
    this.#ensureJob(priority);
    if (priority === 'URGENT' || this.#full()) this.#wake?.();
  }

  /** Drops a queued blob (it left its queued state); false when it was not queued. */
  remove(blobId: string): boolean {
    const priority = this.#priorityOf.get(blobId);
    if (priority === undefined) return false;
    const entry = this.#queues[priority].get(blobId)!;
    this.#queues[priority].delete(blobId);
    this.#priorityOf.delete(blobId);
    this.#queuedBytes -= entry.size;
    return true;
  }

  /**
   * The pending result of `blobId`'s share of a batch, once: the transfer effect returns
   * it instead of sending the blob itself. Undefined when the blob is in no batch.
   */
  claim(blobId: string): Promise<void> | undefined {
    const claim = this.#claims.get(blobId);
    this.#claims.delete(blobId);
    return claim;
  }

  /** Sends a gathering batch at once and stops lingering from now on (the daemon is stopping). */
  hurry(): void {
    this.#hurry = true;
    this.#wake?.();
  }

  /** Stops gathering and aborts requests in flight; queued blobs stay with their actors. */
  close(): void {
    this.#closing.abort(new RemoteError('network', 'the daemon is stopping'));
    this.#wake?.();
  }

  #full(): boolean {
    return this.queued >= this.#options.maxBlobs || this.#queuedBytes >= this.#options.maxBytes;
  }

  #topPriority(): Priority | undefined {
    return PRIORITY_ORDER.find((priority) => this.#queues[priority].size > 0);
  }

  #ensureJob(priority: Priority): void {
    const { scheduler } = this.#options;
    if (this.#jobKey !== undefined) {
      // Raises the priority of a job still waiting for a slot; a gathering one takes all.
      if (scheduler.state(this.#jobKey) === 'queued') {
        scheduler.enqueue(this.#jobKey, {
          kind: this.#options.kind,
          priority,
          run: async () => {},
        });
      }
      return;
    }
    this.#jobSeq += 1;
    const key = `${this.#options.kind}-batch-${this.#jobSeq}`;
    this.#jobKey = key;
    scheduler.enqueue(key, {
      kind: this.#options.kind,
      priority,
      run: (signal) => this.#run(key, signal),
    });
  }

  async #run(key: string, signal: AbortSignal): Promise<void> {
    try {
      await this.#linger(signal);
    } finally {
      if (this.#jobKey === key) this.#jobKey = undefined;
    }
    const members = await this.#take();
    const next = this.#topPriority();
    if (next !== undefined && !this.#closing.signal.aborted) this.#ensureJob(next);
    if (members.length === 0) return;
    await this.#options.send(members, AbortSignal.any([signal, this.#closing.signal]));
  }

  /** Waits up to `lingerMs` for the queue to fill, unless it holds an URGENT blob. */
  async #linger(signal: AbortSignal): Promise<void> {
    const { lingerMs } = this.#options;
    if (lingerMs <= 0 || this.#hurry || this.#full() || this.#queues.URGENT.size > 0) return;
    if (signal.aborted || this.#closing.signal.aborted) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, lingerMs);
      const onAbort = () => done();
      signal.addEventListener('abort', onAbort, { once: true });
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve();
      }
      this.#wake = done;
    });
    this.#wake = undefined;
  }

  /** Takes the next batch off the queue and STARTs its actors. */
  async #take(): Promise<BatchMember[]> {
    const { maxBlobs, maxBytes } = this.#options;
    const members: BatchMember[] = [];
    let bytes = 0;
    for (const priority of PRIORITY_ORDER) {
      for (const entry of [...this.#queues[priority].values()]) {
        if (members.length >= maxBlobs) return members;
        if (members.length > 0 && bytes + entry.size > maxBytes) continue;
        // Removed (deleted, cancelled) while an earlier one was being restored.
        if (this.#priorityOf.get(entry.blobId) !== priority) continue;
        this.remove(entry.blobId);
        const member = this.#member(entry);
        // The actor's transfer effect claims its promise synchronously inside START.
        const started = await this.#options
          .start(entry.blobId, () => {
            this.#claims.set(entry.blobId, member.promise);
          })
          .catch((error: unknown) => {
            this.#options.logger.warn({ err: error, blobId: entry.blobId }, 'could not start');
            return false;
          });
        if (this.#claims.delete(entry.blobId) || !started) continue;
        members.push(member);
        bytes += entry.size;
      }
    }
    return members;
  }

  #member(entry: QueuedBlob): BatchMember {
    let resolve!: () => void;
    let reject!: (error: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { ...entry, promise, resolve, reject };
  }
}

/**
 * The server answered `blob_exists`: an earlier attempt landed. Resolves when the stored
 * blob has our size; rejects with `internal` (retried) when it does not.
 */
export async function verifyRemoteSize(
  client: BlobsClient,
  blobId: string,
  size: number,
  signal: AbortSignal,
  namespace?: string,
): Promise<void> {
  const stored = await client.size(blobId, { signal, namespace });
  if (stored !== size) {
    throw new RemoteError(
      'internal',
      `the server holds ${stored} bytes under ${blobId}, this device ${size}`,
    );
  }
}
