import type { Logger } from 'pino';
import { type AttachmentActor, attachmentStatePath } from '../machines/index.js';
import { DEFAULT_NAMESPACE } from '../wire/ids.js';
import type { AttachmentRegistry, LiveAttachment } from './attachment-registry.js';
import type { TransferBatcher } from './transfer-batcher.js';
import type { TransferKind, TransferScheduler } from './transfer-scheduler.js';

export interface TransferQueueOptions {
  scheduler: TransferScheduler;
  registry: AttachmentRegistry;
  /** Present when small transfers are batched through `/stream`. */
  uploadBatcher: TransferBatcher | undefined;
  downloadBatcher: TransferBatcher | undefined;
  /** Envelopes under this size go to a batcher. */
  smallBlobBytes: number;
  /** False without a server: queued attachments wait for one. */
  enabled: boolean;
  logger: Logger;
}

const QUEUED: Record<string, { kind: TransferKind; running: string }> = {
  'local.queued': { kind: 'upload', running: 'local.uploading' },
  'remote.queued': { kind: 'download', running: 'remote.downloading' },
};

/**
 * Keeps the scheduler in step with the actors: an actor in `local.queued` or
 * `remote.queued` has a job (or, for a small transfer, a place in a batcher); any other
 * state has none. A job sends START when it gets a slot and holds the slot until the actor
 * leaves the transfer state.
 */
export class TransferQueue {
  readonly #options: TransferQueueOptions;

  constructor(options: TransferQueueOptions) {
    this.#options = options;
  }

  get paused(): boolean {
    return this.#options.scheduler.paused;
  }

  /** Called with every new snapshot of a live actor. */
  update(live: LiveAttachment): void {
    const { scheduler, uploadBatcher, downloadBatcher, smallBlobBytes, enabled } = this.#options;
    const { blobId } = live;
    const state = live.state;
    const context = live.snapshot.context;
    const queued = QUEUED[state];
    if (queued === undefined || !enabled) {
      uploadBatcher?.remove(blobId);
      downloadBatcher?.remove(blobId);
      if (scheduler.state(blobId) === 'queued') scheduler.cancel(blobId);
      return;
    }
    const batcher = queued.kind === 'upload' ? uploadBatcher : downloadBatcher;
    const small =
      batcher !== undefined &&
      context.size < smallBlobBytes &&
      context.namespace === DEFAULT_NAMESPACE;
    if (small) {
      batcher.add(blobId, context.size, context.priority);
      return;
    }
    if (scheduler.state(blobId) === 'queued') {
      scheduler.reprioritize(blobId, context.priority);
      return;
    }
    scheduler.enqueue(blobId, {
      kind: queued.kind,
      priority: context.priority,
      run: () => this.#run(blobId, state, queued.running),
    });
  }

  /**
   * For a batcher: START a small transfer still waiting in `queuedState`, restoring its
   * actor first if it was passivated; `beforeStart` runs right before START is sent.
   */
  async startBatched(
    blobId: string,
    queuedState: string,
    beforeStart: () => void,
  ): Promise<boolean> {
    const { registry } = this.#options;
    const live = await registry.hold(blobId);
    if (live === undefined) return false;
    try {
      if (live.state !== queuedState) return false;
      beforeStart();
      registry.send(live, { type: 'START' });
      return true;
    } finally {
      registry.release(live);
    }
  }

  /** A job ended: its actor may be queued again (for example after refused credentials). */
  jobEnded(key: string): void {
    const live = this.#options.registry.live(key);
    if (live !== undefined) this.update(live);
  }

  /**
   * Pauses every transfer: the server refused our credentials. Transfers in flight go on;
   * nothing new starts until `resume()` (a successful remote sync, or an explicit request).
   */
  pause(blobId: string): void {
    const { scheduler, logger } = this.#options;
    if (scheduler.paused) return;
    scheduler.pause();
    logger.warn({ blobId }, 'transfers paused: the server refused our credentials');
  }

  resume(): void {
    const { scheduler, logger } = this.#options;
    if (!scheduler.paused) return;
    scheduler.resume();
    logger.info('transfers resumed');
  }

  counts(): {
    uploadsQueued: number;
    uploadsRunning: number;
    downloadsQueued: number;
    downloadsRunning: number;
  } {
    const counts = this.#options.scheduler.counts();
    return {
      uploadsQueued: (counts.upload?.queued ?? 0) + (this.#options.uploadBatcher?.queued ?? 0),
      uploadsRunning: counts.upload?.running ?? 0,
      downloadsQueued:
        (counts.download?.queued ?? 0) + (this.#options.downloadBatcher?.queued ?? 0),
      downloadsRunning: counts.download?.running ?? 0,
    };
  }

  async #run(blobId: string, queuedState: string, runningState: string): Promise<void> {
    const { registry } = this.#options;
    // A passivated attachment is restored from its record here.
    const live = await registry.hold(blobId);
    if (live === undefined) return;
    try {
      if (live.state !== queuedState) return;
      registry.send(live, { type: 'START' });
      await untilLeaves(live.actor, runningState);
    } finally {
      registry.release(live);
    }
  }
}

/** Resolves when the actor is no longer in `state` (or has stopped). */
function untilLeaves(actor: AttachmentActor, state: string): Promise<void> {
  return new Promise((resolve) => {
    if (attachmentStatePath(actor.getSnapshot()) !== state) {
      resolve();
      return;
    }
    const subscription = actor.subscribe({
      next: (snapshot) => {
        if (attachmentStatePath(snapshot) === state) return;
        subscription.unsubscribe();
        resolve();
      },
      complete: () => resolve(),
      error: () => resolve(),
    });
  });
}
