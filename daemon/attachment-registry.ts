import type { Logger } from 'pino';
import { createActor, type Subscription } from 'xstate';
import {
  type AttachmentActor,
  type AttachmentEmitted,
  type AttachmentEvent,
  type AttachmentInput,
  type AttachmentMachine,
  type AttachmentSnapshot,
  attachmentStatePath,
  isSettled,
  restoreAttachmentActor,
} from '../machines/index.js';
import { DaemonError } from './daemon-error.js';
import type { AttachmentRecord, Store, Transaction } from './store/index.js';

/** The daemon's time source: XState's timer clock plus `now()` for back-off deadlines. */
export interface DaemonClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export const systemClock: DaemonClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout),
};

export type FailureEmitted = Extract<AttachmentEmitted, { type: 'failure' }>;
export type RefusedEmitted = Extract<AttachmentEmitted, { type: 'refused' }>;

/** What a waiter decides on each durable change: keep waiting, done, or fail with an error. */
export type WaitVerdict = 'wait' | 'done' | Error;

/** A committed attachment change, as the registry reports it. */
export interface PersistedChange {
  blobId: string;
  docId: string;
  /** Dotted machine state now durable (`deleted` when the record was removed). */
  state: string;
  /** The durable state before this change; null for a new record. */
  previous: string | null;
  /** Seq of the event written with it, when the state changed. */
  seq: number | undefined;
  snapshot: AttachmentSnapshot;
}

export interface RegistryHooks {
  /** Every new snapshot of a live actor, before it is durable: drives the transfer queue. */
  onSnapshot(live: LiveAttachment): void;
  /** A change is durable. */
  onPersisted(change: PersistedChange): void;
  /** An actor reported a failed attempt. */
  onFailure(live: LiveAttachment, failure: FailureEmitted): void;
  /** Persistence failed; the daemon logs it. */
  onPersistError(blobId: string, error: unknown): void;
}

export interface RegistryOptions {
  store: Store;
  /**
   * Attachments in motion but idle (queued for a slot, or waiting to retry) keep a live
   * actor while there are at most this many live actors; past that they are passivated:
   * the actor is dropped (its snapshot is on disk) and restored when a slot or its retry
   * time comes. Default 1000.
   */
  maxLiveIdle?: number;
  /** The attachment machine with the daemon's effects provided. */
  machine: AttachmentMachine;
  clock: DaemonClock;
  logger: Logger;
  hooks: RegistryHooks;
}

interface Waiter {
  check(live: LiveAttachment): WaitVerdict;
  settle(verdict: Exclude<WaitVerdict, 'wait'>): void;
}

/** States in which an actor only waits: for a transfer slot, or for its retry time. */
const IDLE_IN_MOTION = new Set([
  'local.queued',
  'remote.queued',
  'local.retrying',
  'remote.retrying',
  'deleting.retrying',
]);

const DEFAULT_MAX_LIVE_IDLE = 1000;
/** A retry due sooner than this is not worth passivating. */
const MIN_PASSIVE_WAIT_MS = 1000;

/** One attachment with a live actor. */
export class LiveAttachment {
  readonly blobId: string;
  readonly actor: AttachmentActor;
  /** The last snapshot handled (submitted for commit); undefined before the first. */
  seen: AttachmentSnapshot | undefined;
  /** State of the last commit submitted, to tell state changes from context changes. */
  submittedState: string;
  /** The state (and the snapshot) whose commit is durable. */
  durableState: string | null;
  durableSnapshot: AttachmentSnapshot | undefined;
  /** Commits in flight. */
  pending = 0;
  /** Callers working with this actor; it is not dropped while any holds it. */
  holds = 0;
  readonly waiters = new Set<Waiter>();
  readonly subscriptions: Subscription[] = [];

  constructor(blobId: string, actor: AttachmentActor, durableState: string | null) {
    this.blobId = blobId;
    this.actor = actor;
    this.submittedState = durableState ?? '';
    this.durableState = durableState;
  }

  /** The current (not necessarily durable) snapshot. */
  get snapshot(): AttachmentSnapshot {
    return this.actor.getSnapshot();
  }

  /** The current dotted state. */
  get state(): string {
    return attachmentStatePath(this.actor.getSnapshot());
  }
}

/**
 * Keeps one live actor per attachment in motion and persists every snapshot it takes
 * (`tx.putAttachment(actor.getPersistedSnapshot())`, coalesced by the store's group
 * commit). A settled actor is stopped and dropped once its last change is durable and
 * nobody holds it; its record is restored into a new actor when a command needs it.
 * Waiters are told only about durable changes, so nothing is reported done before it is
 * on disk.
 */
export class AttachmentRegistry {
  readonly #store: Store;
  readonly #machine: AttachmentMachine;
  readonly #clock: DaemonClock;
  readonly #logger: Logger;
  readonly #hooks: RegistryHooks;
  readonly #live = new Map<string, LiveAttachment>();
  readonly #loading = new Map<string, Promise<LiveAttachment | undefined>>();
  /** Blobs whose record is being replaced: loads wait until the lock is gone. */
  readonly #locks = new Map<string, Promise<void>>();
  readonly #commits = new Set<Promise<unknown>>();
  readonly #maxLiveIdle: number;
  /** Passivated attachments waiting to retry: the timer that restores each at its time. */
  readonly #wakeTimers = new Map<string, unknown>();
  #stopped = false;

  constructor(options: RegistryOptions) {
    this.#store = options.store;
    this.#maxLiveIdle = options.maxLiveIdle ?? DEFAULT_MAX_LIVE_IDLE;
    this.#machine = options.machine;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#hooks = options.hooks;
  }

  /** Attachments with a live actor. */
  get liveCount(): number {
    return this.#live.size;
  }

  /** Attachments in motion whose actor is passivated until their retry time. */
  get passivatedRetries(): number {
    return this.#wakeTimers.size;
  }

  live(blobId: string): LiveAttachment | undefined {
    return this.#live.get(blobId);
  }

  /**
   * Restores an actor for every unsettled record (the small `active` index) and returns
   * how many. Interrupted transfers come back queued.
   */
  async restoreActive(): Promise<number> {
    const active = await this.#store.listActiveAttachments();
    let restored = 0;
    for (let i = 0; i < active.length; i += 1000) {
      const ids = active.slice(i, i + 1000).map((entry) => entry.blobId);
      const records = await this.#store.getAttachments(ids);
      for (const record of records) {
        if (record === undefined || this.#live.has(record.blobId)) continue;
        // Past the live limit, an idle one is passivated again at once.
        this.#maybeDrop(this.#restore(record));
        restored += 1;
      }
    }
    return restored;
  }

  /**
   * Creates the actor of a new attachment, sends it `event` (`STORED` or `REMOTE_FOUND`)
   * and resolves once its record is durable. A live actor for the same blob is refused.
   */
  async create(
    input: AttachmentInput,
    event: AttachmentEvent,
    withFirst?: (tx: Transaction) => void,
  ): Promise<LiveAttachment> {
    this.#checkRunning();
    if (this.#busy(input.blobId)) {
      throw new DaemonError('invalid_state', `attachment ${input.blobId} is in motion`);
    }
    return this.#untilFirstDurable(this.#spawn(input, event, null, withFirst));
  }

  /**
   * Replaces the record of a settled attachment with a fresh actor: `plan` sees the
   * current record (read under a per-blob lock, so no command restores it meanwhile) and
   * returns the new actor's input and first event, or undefined to leave it. Remote sync
   * uses it when the server lost a blob we believed synced. Returns false when nothing
   * was replaced (no record, in motion, or `plan` declined).
   */
  async replaceSettled(
    blobId: string,
    plan: (
      record: AttachmentRecord,
    ) => { input: AttachmentInput; event: AttachmentEvent } | undefined,
  ): Promise<boolean> {
    this.#checkRunning();
    if (this.#busy(blobId)) return false;
    let unlock!: () => void;
    this.#locks.set(
      blobId,
      new Promise<void>((resolve) => {
        unlock = resolve;
      }),
    );
    let live: LiveAttachment;
    try {
      const record = await this.#store.getAttachment(blobId);
      this.#checkRunning();
      if (record === undefined || this.#live.has(blobId) || this.#loading.has(blobId)) {
        return false;
      }
      const next = plan(record);
      if (next === undefined) return false;
      live = this.#spawn(next.input, next.event, record.state);
    } finally {
      this.#locks.delete(blobId);
      unlock();
    }
    await this.#untilFirstDurable(live);
    return true;
  }

  /** Creates, starts and adopts a new actor, then sends it `event`; held for the caller. */
  /** `withFirst` adds its changes to the commit of the first record (its envelope, say). */
  #spawn(
    input: AttachmentInput,
    event: AttachmentEvent,
    previousState: string | null,
    withFirst?: (tx: Transaction) => void,
  ): LiveAttachment {
    const actor = createActor(this.#machine, { input, clock: this.#clock });
    actor.start();
    actor.send(event);
    const live = new LiveAttachment(input.blobId, actor, previousState);
    this.#adopt(live);
    live.holds += 1;
    this.#changed(live, actor.getSnapshot(), withFirst);
    return live;
  }

  async #untilFirstDurable(live: LiveAttachment): Promise<LiveAttachment> {
    try {
      await this.waitDurable(live, (entry) =>
        entry.durableSnapshot === undefined ? 'wait' : 'done',
      );
      return live;
    } finally {
      this.release(live);
    }
  }

  /** A live actor, a load in progress or a lock: the record may change meanwhile. */
  #busy(blobId: string): boolean {
    return this.#live.has(blobId) || this.#loading.has(blobId) || this.#locks.has(blobId);
  }

  /**
   * The live attachment for `blobId`, restored from its record when needed, held for the
   * caller: pass it to `release` when done. Undefined when there is no record.
   */
  async hold(blobId: string): Promise<LiveAttachment | undefined> {
    for (;;) {
      this.#checkRunning();
      const lock = this.#locks.get(blobId);
      if (lock !== undefined) {
        await lock;
        continue;
      }
      const live = this.#live.get(blobId) ?? (await this.#load(blobId));
      if (live === undefined) return undefined;
      // Another holder may have released (and dropped) it while this one was waiting.
      if (this.#live.get(blobId) !== live) continue;
      live.holds += 1;
      return live;
    }
  }

  #load(blobId: string): Promise<LiveAttachment | undefined> {
    let loading = this.#loading.get(blobId);
    if (loading === undefined) {
      loading = this.#store.getAttachment(blobId).then((record) => {
        this.#checkRunning();
        const existing = this.#live.get(blobId);
        if (existing) return existing;
        return record === undefined ? undefined : this.#restore(record);
      });
      this.#loading.set(blobId, loading);
      const clear = () => this.#loading.delete(blobId);
      loading.then(clear, clear);
    }
    return loading;
  }

  release(live: LiveAttachment): void {
    live.holds -= 1;
    this.#maybeDrop(live);
  }

  /** Runs `fn` with the held attachment; `not_found` when there is no record. */
  async with<T>(blobId: string, fn: (live: LiveAttachment) => Promise<T> | T): Promise<T> {
    const live = await this.hold(blobId);
    if (live === undefined) {
      throw new DaemonError('not_found', `no attachment ${blobId}`);
    }
    try {
      return await fn(live);
    } finally {
      this.release(live);
    }
  }

  /**
   * Sends `event`; returns the refusal the machine emitted for it, if any. The caller must
   * hold `live` (or own it through a running transfer).
   */
  send(live: LiveAttachment, event: AttachmentEvent): RefusedEmitted | undefined {
    let refused: RefusedEmitted | undefined;
    const subscription = live.actor.on('refused', (emitted) => {
      refused = emitted;
    });
    try {
      live.actor.send(event);
    } finally {
      subscription.unsubscribe();
    }
    return refused;
  }

  /**
   * Resolves when `check` says `done` about a durable state, rejects when it returns an
   * error. `check` runs at once and after every durable change; `onFailure`, when given,
   * may end the wait on an emitted failure too. Keeps the actor alive while waiting.
   */
  waitDurable(
    live: LiveAttachment,
    check: (live: LiveAttachment) => WaitVerdict,
    onFailure?: (failure: FailureEmitted) => Error | undefined,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let failureSub: Subscription | undefined;
      const waiter: Waiter = {
        check,
        settle: (verdict) => {
          live.waiters.delete(waiter);
          failureSub?.unsubscribe();
          if (verdict === 'done') resolve();
          else reject(verdict);
          queueMicrotask(() => this.#maybeDrop(live));
        },
      };
      const first = check(live);
      if (first === 'done') return resolve();
      if (first !== 'wait') return reject(first);
      live.waiters.add(waiter);
      if (onFailure) {
        failureSub = live.actor.on('failure', (failure) => {
          const error = onFailure(failure);
          if (error) waiter.settle(error);
        });
      }
    });
  }

  /**
   * Resolves once the durable state of `blobId` satisfies `accept`: an effect that drops
   * data (evict, remove) waits for its own state to be on disk first, so a crash never
   * leaves a record that claims a local copy which is gone. Resolves at once when the
   * attachment has no live actor yet (it is being restored from its durable record).
   */
  whenDurable(blobId: string, accept: (state: string) => boolean): Promise<void> {
    const live = this.#live.get(blobId);
    if (live === undefined) return Promise.resolve();
    return this.waitDurable(live, (entry) =>
      entry.durableState !== null && accept(entry.durableState) ? 'done' : 'wait',
    );
  }

  /** Resolves when every commit submitted so far has settled. */
  async flush(): Promise<void> {
    while (this.#commits.size > 0) await Promise.allSettled([...this.#commits]);
  }

  /**
   * Stops every actor (aborting effects still running) and rejects every waiter with
   * `shutting_down`. Commits already submitted still complete; see `flush`.
   */
  stopAll(): void {
    this.#stopped = true;
    for (const timer of this.#wakeTimers.values()) this.#clock.clearTimeout(timer);
    this.#wakeTimers.clear();
    for (const live of this.#live.values()) {
      for (const subscription of live.subscriptions) subscription.unsubscribe();
      for (const waiter of [...live.waiters]) {
        waiter.settle(new DaemonError('shutting_down', 'the daemon is stopping'));
      }
      live.actor.stop();
    }
    this.#live.clear();
  }

  #restore(record: AttachmentRecord): LiveAttachment {
    const wake = this.#wakeTimers.get(record.blobId);
    if (wake !== undefined) {
      this.#clock.clearTimeout(wake);
      this.#wakeTimers.delete(record.blobId);
    }
    const actor = restoreAttachmentActor(this.#machine, record.snapshot, { clock: this.#clock });
    const live = new LiveAttachment(record.blobId, actor, record.state);
    this.#adopt(live);
    const snapshot = actor.getSnapshot();
    // Restoring may have moved the state (an interrupted upload is queued again).
    if (live.state !== record.state) {
      this.#changed(live, snapshot);
    } else {
      live.seen = snapshot;
      live.durableSnapshot = snapshot;
      this.#notifySnapshot(live);
    }
    return live;
  }

  #adopt(live: LiveAttachment): void {
    this.#live.set(live.blobId, live);
    live.subscriptions.push(
      live.actor.subscribe({
        next: (snapshot) => this.#changed(live, snapshot),
        error: (error) => this.#logger.error({ err: error, blobId: live.blobId }, 'actor failed'),
      }),
      live.actor.on('failure', (failure) => {
        try {
          this.#hooks.onFailure(live, failure);
        } catch (error) {
          this.#logger.error({ err: error, blobId: live.blobId }, 'failure hook threw');
        }
      }),
    );
  }

  #changed(
    live: LiveAttachment,
    snapshot: AttachmentSnapshot,
    withFirst?: (tx: Transaction) => void,
  ): void {
    if (snapshot === live.seen) return;
    live.seen = snapshot;
    const state = attachmentStatePath(snapshot);
    if (state !== live.submittedState) {
      this.#logger.debug(
        { blobId: live.blobId, from: live.submittedState || 'none', to: state },
        'attachment transition',
      );
    }
    const event = state !== live.submittedState;
    live.submittedState = state;
    const persisted = live.actor.getPersistedSnapshot();
    live.pending += 1;
    const commit = this.#store.commit((tx) => {
      withFirst?.(tx);
      tx.putAttachment(persisted, { event });
    });
    this.#commits.add(commit);
    commit.then(
      (result) => {
        this.#commits.delete(commit);
        live.pending -= 1;
        this.#persisted(live, snapshot, state, event ? result.seqs[0] : undefined);
      },
      (error: unknown) => {
        this.#commits.delete(commit);
        live.pending -= 1;
        this.#hooks.onPersistError(live.blobId, error);
      },
    );
    this.#notifySnapshot(live);
  }

  #notifySnapshot(live: LiveAttachment): void {
    try {
      this.#hooks.onSnapshot(live);
    } catch (error) {
      this.#logger.error({ err: error, blobId: live.blobId }, 'snapshot hook threw');
    }
  }

  #persisted(
    live: LiveAttachment,
    snapshot: AttachmentSnapshot,
    state: string,
    seq: number | undefined,
  ): void {
    const previous = live.durableState;
    live.durableState = state;
    live.durableSnapshot = snapshot;
    try {
      this.#hooks.onPersisted({
        blobId: live.blobId,
        docId: snapshot.context.docId,
        state,
        previous,
        seq,
        snapshot,
      });
    } catch (error) {
      this.#logger.error({ err: error, blobId: live.blobId }, 'persist hook threw');
    }
    for (const waiter of [...live.waiters]) {
      let verdict: WaitVerdict;
      try {
        verdict = waiter.check(live);
      } catch (error) {
        verdict = error instanceof Error ? error : new Error(String(error));
      }
      if (verdict !== 'wait') waiter.settle(verdict);
    }
    this.#maybeDrop(live);
  }

  /**
   * Stops and forgets an actor whose state is durable and that nobody uses: a settled
   * one always, an idle one in motion when there are more than `maxLiveIdle` live actors.
   * A passivated retry gets a timer that restores it at its retry time; a passivated
   * queued one is restored by its transfer job (`hold`) when the job gets a slot.
   */
  #maybeDrop(live: LiveAttachment): void {
    if (this.#live.get(live.blobId) !== live) return;
    if (live.pending > 0 || live.holds > 0 || live.waiters.size > 0) return;
    const snapshot = live.actor.getSnapshot();
    if (snapshot !== live.durableSnapshot) return;
    const state = attachmentStatePath(snapshot);
    const settled = isSettled(state) || state === 'deleted';
    if (!settled && !this.#mayPassivate(state, snapshot.context.retryAt)) return;
    for (const subscription of live.subscriptions) subscription.unsubscribe();
    live.actor.stop();
    this.#live.delete(live.blobId);
    if (state.endsWith('.retrying')) this.#wakeAt(live.blobId, snapshot.context.retryAt);
  }

  #mayPassivate(state: string, retryAt: number | null): boolean {
    if (!IDLE_IN_MOTION.has(state) || this.#live.size <= this.#maxLiveIdle) return false;
    // A retry due soon keeps its actor: its own timer fires before a wake-up would help.
    return (
      !state.endsWith('.retrying') || (retryAt ?? 0) - this.#clock.now() >= MIN_PASSIVE_WAIT_MS
    );
  }

  /** Restores a passivated attachment at `retryAt`, so that its retry timer can fire. */
  #wakeAt(blobId: string, retryAt: number | null): void {
    const delay = Math.max(0, (retryAt ?? 0) - this.#clock.now());
    const timer = this.#clock.setTimeout(() => {
      if (this.#wakeTimers.get(blobId) !== timer) return;
      this.#wakeTimers.delete(blobId);
      if (this.#stopped) return;
      this.hold(blobId).then(
        (live) => {
          if (live !== undefined) this.release(live);
        },
        (error: unknown) => {
          if (!this.#stopped) this.#logger.error({ err: error, blobId }, 'waking a retry failed');
        },
      );
    }, delay);
    this.#wakeTimers.set(blobId, timer);
  }

  #checkRunning(): void {
    if (this.#stopped) throw new DaemonError('shutting_down', 'the daemon is stopping');
  }
}
