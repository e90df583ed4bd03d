import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { type Logger, pino } from 'pino';
import { fromPromise } from 'xstate';
import {
  type AttachmentInput,
  attachmentMachine,
  publicStateOf,
  type RemoveInput,
  retryDelay,
  type TransferInput,
} from '../machines/index.js';
import { DEFAULT_NAMESPACE } from '../wire/ids.js';
import {
  daemonEvent,
  docRecord,
  downloadVerdict,
  failedError,
  failureError,
  hasLocalCopy,
  infoOf,
  liveInfo,
  pointerOf,
  recordInfo,
  uploadVerdict,
} from './api-views.js';
import {
  AttachmentRegistry,
  type DaemonClock,
  type FailureEmitted,
  type LiveAttachment,
  type PersistedChange,
  systemClock,
} from './attachment-registry.js';
import { BlobTransfers } from './blob-transfers.js';
import { createDecryptStream } from './crypto/decrypt-stream.js';
import { DocumentSealer } from './crypto/document-sealer.js';
import { createEncryptStream } from './crypto/encrypt-stream.js';
import type {
  AttachmentInfo,
  DaemonApi,
  DaemonEvent,
  DaemonStatus,
  DocRecord,
  EventsAfter,
  PublicState,
  TransferProgress,
} from './daemon-api.js';
import { DaemonError, toDaemonError } from './daemon-error.js';
import { type DaemonOptions, DEFAULT_TRANSFERS, type TransferSettings } from './daemon-options.js';
import { IdleCollector } from './idle-collector.js';
import { LocalBlobError, LocalBlobStore, type WriteResult } from './local-blob-store.js';
import { sweepOrphans } from './orphan-sweep.js';
import { BlobsClient } from './remote/blobs-client.js';
import { RemoteStatus } from './remote-status.js';
import { runRemoteSync, type SyncResult } from './remote-sync.js';
import { SMALL_ENVELOPE_MAX_BYTES, smallEnvelopesIn } from './small-envelopes.js';
import { Store, type Transaction } from './store/index.js';
import { TransferBatcher } from './transfer-batcher.js';
import { TransferQueue } from './transfer-queue.js';
import { TransferScheduler } from './transfer-scheduler.js';
import { WatchFolders } from './watch-folders.js';

export type { DaemonOptions, TransferSettings } from './daemon-options.js';

const PAGE = 1000;

type Listener<T> = (value: T) => void;

/**
 * Settings key prefix of a blob that a document change stopped pointing at, recorded in the
 * change's own commit and dropped once the attachment's deletion is durable: a crash in
 * between leaves the record, and the next start carries the deletion out.
 */
export const REPLACED_BLOB_SETTING = 'replaced-blob:';

function recordReplaced(tx: Transaction, blobId: string, docId: string): void {
  tx.putSetting(REPLACED_BLOB_SETTING + blobId, { docId });
}

/**
 * The daemon as a library (DESIGN §5): documents and attachments in a LevelDB store,
 * envelopes in a local blob store, one live attachment actor per attachment in motion,
 * transfers through a priority scheduler with small uploads batched, remote sync, and a
 * numbered event log. Open with `Daemon.open`; `close()` is idempotent.
 */
export class Daemon implements DaemonApi {
  readonly deviceId: string;
  readonly dataDir: string;
  readonly #options: DaemonOptions;
  readonly #transfers: TransferSettings;
  /** The logger given; components bind their own `component` on it. */
  readonly #rootLogger: Logger;
  readonly #logger: Logger;
  readonly #clock: DaemonClock;
  readonly #store: Store;
  readonly #local: LocalBlobStore;
  readonly #secret: Buffer;
  readonly #client: BlobsClient | undefined;
  readonly #remoteStatus = new RemoteStatus();
  readonly #scheduler: TransferScheduler;
  readonly #uploadBatcher: TransferBatcher | undefined;
  readonly #downloadBatcher: TransferBatcher | undefined;
  readonly #queue: TransferQueue;
  readonly #registry: AttachmentRegistry;
  readonly #eventListeners = new Set<Listener<DaemonEvent>>();
  readonly #progressListeners = new Set<Listener<TransferProgress>>();
  readonly #idle = new IdleCollector({ busy: () => this.#transfersRunning() });
  /** Set when an envelope may have been left without its record (a failed put's cleanup). */
  #envelopeMayBeOrphaned = false;
  /** Blobs whose envelope is being written by `putAttachment`, not yet recorded. */
  readonly #writing = new Set<string>();
  readonly #background = new Set<Promise<unknown>>();
  readonly #timers: NodeJS.Timeout[] = [];
  /** Aborted at shutdown: background requests (remote sync) stop at once. */
  readonly #stopController = new AbortController();
  #runningWaiters: (() => void)[] = [];
  #syncRunning: Promise<SyncResult> | undefined;
  #syncAgain: Promise<SyncResult> | undefined;
  #lastSync: { at: number; ok: boolean } | null = null;
  #watchFolders: WatchFolders | undefined;
  #stopping = false;
  #closing: Promise<void> | undefined;

  private constructor(options: DaemonOptions, store: Store, local: LocalBlobStore) {
    this.#options = options;
    this.deviceId = store.deviceId;
    this.dataDir = options.dataDir;
    this.#transfers = { ...DEFAULT_TRANSFERS, ...options.transfers };
    const root = options.logger ?? pino({ level: 'silent' });
    this.#rootLogger = root;
    this.#logger = root.child({ component: 'daemon' });
    this.#clock = options.clock ?? systemClock;
    this.#store = store;
    this.#local = local;
    this.#secret = Buffer.from(options.secret);
    this.#client =
      options.remote === undefined
        ? undefined
        : new BlobsClient({
            url: options.remote.url,
            uuid: options.remote.uuid,
            token: options.remote.token,
          });

    const transfers = this.#transfers;
    this.#scheduler = new TransferScheduler({
      limits: { upload: transfers.uploads, download: transfers.downloads },
      onEnd: (info) => {
        this.#queue.jobEnded(info.key);
        this.#checkRunningIdle();
        this.#idle.settle();
      },
    });
    // While the server does not answer, queued transfers wait and one attempt per first
    // retry delay probes it, instead of every one of them failing in turn.
    this.#remoteStatus.onChange((reachable) => {
      this.#scheduler.throttle(reachable ? null : (transfers.retryDelaysMs[0] ?? 10_000));
    });
    const emitProgress = (progress: TransferProgress) => this.#emitProgress(progress);
    const batching = this.#client !== undefined && transfers.smallBlobBytes > 0;
    const batcher = (kind: 'upload' | 'download', queuedState: string): TransferBatcher =>
      new TransferBatcher({
        kind,
        scheduler: this.#scheduler,
        start: (blobId, beforeStart) => this.#queue.startBatched(blobId, queuedState, beforeStart),
        send: (members, signal): Promise<void> =>
          kind === 'upload'
            ? effects.uploadBatch(members, signal)
            : effects.downloadBatch(members, signal),
        maxBlobs: transfers.batchMaxBlobs,
        maxBytes: transfers.batchMaxBytes,
        lingerMs: transfers.batchLingerMs,
        logger: this.#rootLogger.child({ component: `${kind}-batcher` }),
      });
    this.#uploadBatcher = batching ? batcher('upload', 'local.queued') : undefined;
    this.#downloadBatcher = batching ? batcher('download', 'remote.queued') : undefined;
    const effects: BlobTransfers = new BlobTransfers({
      client: this.#client,
      local,
      secret: this.#secret,
      remoteStatus: this.#remoteStatus,
      uploads: this.#uploadBatcher,
      downloads: this.#downloadBatcher,
      // A put's small envelope is stored with its first record (see putAttachment).
      stored: (blobId) => this.#registry.whenDurable(blobId, () => true),
      emitProgress,
      logger: this.#rootLogger.child({ component: 'transfers' }),
    });
    const machine = attachmentMachine.provide({
      actors: {
        upload: fromPromise<void, TransferInput>(({ input, signal }) =>
          effects.upload(input, signal),
        ),
        download: fromPromise<void, TransferInput>(({ input, signal }) =>
          effects.download(input, signal),
        ),
        // Effects that drop data start only once their state is durable.
        evict: fromPromise<void, TransferInput>(async ({ input, signal }) => {
          await this.#registry.whenDurable(input.blobId, (state) => state === 'evicting');
          signal.throwIfAborted();
          return effects.evict(input, signal);
        }),
        remove: fromPromise<void, RemoveInput>(async ({ input, signal }) => {
          await this.#registry.whenDurable(input.blobId, (state) => state.startsWith('deleting'));
          signal.throwIfAborted();
          return effects.remove(input, signal);
        }),
      },
    });
    this.#registry = new AttachmentRegistry({
      store,
      maxLiveIdle: options.maxLiveIdle,
      machine,
      clock: this.#clock,
      logger: this.#logger,
      hooks: {
        onSnapshot: (live) => this.#queue.update(live),
        onPersisted: (change) => this.#persisted(change),
        onFailure: (live, failure) => this.#failed(live, failure),
        onPersistError: (blobId, error) => {
          const level = this.#stopping ? 'debug' : 'error';
          this.#logger[level]({ err: error, blobId }, 'attachment state not persisted');
        },
      },
    });
    this.#queue = new TransferQueue({
      scheduler: this.#scheduler,
      registry: this.#registry,
      uploadBatcher: this.#uploadBatcher,
      downloadBatcher: this.#downloadBatcher,
      smallBlobBytes: transfers.smallBlobBytes,
      enabled: this.#client !== undefined,
      logger: this.#logger,
    });
  }

  /**
   * Opens the store and the local blob store in `options.dataDir`, restores the actors of
   * unsettled attachments and re-queues their transfers, then starts the background work
   * (orphan sweep, remote sync). Settled records are not read before ready.
   */
  static async open(options: DaemonOptions): Promise<Daemon> {
    if (!Buffer.isBuffer(options.secret) || options.secret.length !== 32) {
      throw new TypeError('the storage secret must be 32 bytes');
    }
    const started = performance.now();
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    const store = await Store.open(join(options.dataDir, 'db'), {
      sealer: new DocumentSealer(options.secret),
      deviceId: options.deviceId,
      maxEvents: options.eventLogSize ?? 10_000,
      now: () => (options.clock ?? systemClock).now(),
    });
    let local: LocalBlobStore;
    try {
      local = await LocalBlobStore.open(join(options.dataDir, 'blobs'), {
        small: smallEnvelopesIn(store, SMALL_ENVELOPE_MAX_BYTES),
      });
    } catch (error) {
      await store.close();
      throw error;
    }
    const daemon = new Daemon(options, store, local);
    try {
      await daemon.#start(started);
    } catch (error) {
      await daemon.close().catch(() => undefined);
      throw error;
    }
    return daemon;
  }

  async #start(started: number): Promise<void> {
    const restored = await this.#registry.restoreActive();
    this.#logger.info(
      {
        deviceId: this.deviceId,
        dataDir: this.dataDir,
        server: this.#options.remote?.url ?? null,
        restored,
        ms: Math.round(performance.now() - started),
      },
      'daemon ready',
    );
    // Envelopes without a record can only be left by a crash: after a clean stop the
    // sweep skips the pass over every local envelope.
    this.#inBackground(this.#finishReplacedAfterCrash());
    this.#inBackground(this.sweepOrphans({ files: !this.#store.openedAfterCleanStop }));
    this.#idle.start();
    const watch = this.#options.watch;
    if (watch !== undefined && watch.folders.length > 0) {
      this.#watchFolders = new WatchFolders({
        daemon: this,
        index: this.#store,
        folders: watch.folders,
        logger: this.#rootLogger,
        ...(watch.stabilityMs === undefined ? {} : { stabilityMs: watch.stabilityMs }),
      });
      this.#inBackground(this.#watchFolders.start());
    }
    if (this.#client === undefined) return;
    const initial = this.#options.initialSyncDelayMs ?? 1000;
    if (initial >= 0) {
      this.#timers.push(setTimeout(() => this.#backgroundSync(), initial).unref());
    }
    const interval = this.#options.syncIntervalMs ?? 60_000;
    if (interval > 0) {
      this.#timers.push(setInterval(() => this.#backgroundSync(), interval).unref());
    }
  }

  /** The local envelopes (files and small ones in LevelDB); for tests and tools. */
  get localBlobs(): LocalBlobStore {
    return this.#local;
  }

  /** Attachments with a live actor: the ones in motion (and any a caller holds right now). */
  get liveAttachmentCount(): number {
    return this.#registry.liveCount;
  }

  // Documents

  createDoc(content: Record<string, unknown>, id?: string): Promise<DocRecord> {
    return this.#api(async () => {
      let docId = '';
      const result = await this.#store.commit((tx) => {
        docId = tx.createDoc(content, id);
      });
      const change = result.docs[0]!;
      this.#docEvent(result.seqs[0], change);
      return { id: docId, rev: change.rev, content: structuredClone(content), deleted: false };
    });
  }

  getDoc(id: string): Promise<DocRecord | undefined> {
    return this.#api(async () => {
      const doc = await this.#store.getDoc(id);
      return doc === undefined ? undefined : docRecord(doc);
    });
  }

  /**
   * With `keepReplacedBlob`, a blob the change stops pointing at is kept; deleting it is
   * then the caller's (`deleteOrphanBlob`), or the orphan sweep's after its grace period.
   */
  putDoc(
    id: string,
    content: Record<string, unknown>,
    rev: string,
    options: { keepReplacedBlob?: boolean } = {},
  ): Promise<DocRecord> {
    return this.#api(async () => {
      // The commit checks `rev`, so `before` is the version it replaces.
      const before = await this.#store.getDoc(id);
      const old = before && !before.deleted ? pointerOf(before.content) : undefined;
      const replaced =
        old !== undefined && old !== pointerOf(content) && options.keepReplacedBlob !== true
          ? old
          : undefined;
      const result = await this.#store.commit((tx) => {
        tx.putDoc(id, content, rev);
        if (replaced !== undefined) recordReplaced(tx, replaced, id);
      });
      const change = result.docs[0]!;
      this.#docEvent(result.seqs[0], change);
      if (replaced !== undefined) await this.#finishReplaced(replaced, id);
      return { id, rev: change.rev, content: structuredClone(content), deleted: false };
    });
  }

  deleteDoc(id: string, rev: string): Promise<DocRecord> {
    return this.#api(async () => {
      const before = await this.#store.getDoc(id);
      const old = before && !before.deleted ? pointerOf(before.content) : undefined;
      const result = await this.#store.commit((tx) => {
        tx.deleteDoc(id, rev);
        if (old !== undefined) recordReplaced(tx, old, id);
      });
      const change = result.docs[0]!;
      this.#docEvent(result.seqs[0], change);
      if (old !== undefined) await this.#finishReplaced(old, id);
      return { id, rev: change.rev, content: {}, deleted: true };
    });
  }

  listDocs(options: { includeDeleted?: boolean } = {}): Promise<DocRecord[]> {
    return this.#api(async () => {
      const ids = await this.#store.listDocIds({ includeDeleted: options.includeDeleted });
      const records: DocRecord[] = [];
      for (let i = 0; i < ids.length; i += PAGE) {
        const docs = await this.#store.getDocs(ids.slice(i, i + PAGE));
        for (const doc of docs) if (doc !== undefined) records.push(docRecord(doc));
      }
      return records;
    });
  }

  // Attachments

  putAttachment(docId: string, source: Readable): Promise<AttachmentInfo> {
    return this.#api(async () => {
      const doc = await this.#store.getDoc(docId).catch((error: unknown) => {
        source.destroy();
        throw error;
      });
      if (doc === undefined || doc.deleted) {
        source.destroy();
        throw new DaemonError('not_found', `no document ${docId}`);
      }
      const blobId = randomUUID();
      this.#writing.add(blobId);
      try {
        const { size, small } = await this.#writeEnvelope(blobId, source);
        let live: LiveAttachment;
        try {
          // A small envelope is stored in the commit of its first record.
          live = await this.#registry.create(
            this.#input({ blobId, docId, size }),
            { type: 'STORED', size },
            small === undefined ? undefined : (tx) => tx.putEnvelope(blobId, small),
          );
        } catch (error) {
          // No record: the envelope goes too (or the next start's sweep takes it).
          if (small === undefined) {
            await this.#local.delete(blobId).catch(() => {
              this.#envelopeMayBeOrphaned = true;
            });
          }
          throw error;
        }
        return infoOf(live.durableSnapshot!.context, live.durableState!);
      } finally {
        this.#writing.delete(blobId);
      }
    });
  }

  getAttachmentInfo(blobId: string): Promise<AttachmentInfo | undefined> {
    return this.#api(async () => {
      // An attachment in motion answers from its durable snapshot, without a store read.
      const live = this.#registry.live(blobId);
      if (live?.durableSnapshot !== undefined && live.durableState !== 'deleted') {
        return liveInfo(live);
      }
      const record = await this.#store.getAttachment(blobId);
      return record === undefined ? undefined : recordInfo(record);
    });
  }

  listAttachments(): Promise<AttachmentInfo[]> {
    return this.#api(async () => {
      const infos: AttachmentInfo[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await this.#store.listAttachments(
          after === undefined ? { limit: PAGE } : { after, limit: PAGE },
        );
        for (const record of page) infos.push(recordInfo(record));
        if (page.length < PAGE) return infos;
        after = page.at(-1)!.blobId;
      }
    });
  }

  openAttachment(blobId: string): Promise<Readable> {
    return this.#api(async () => {
      for (let attempt = 0; ; attempt++) {
        await this.#registry.with(blobId, async (live) => {
          // An eviction under way may not have dropped the copy yet: try it first.
          if (attempt === 0 && (live.durableState ?? live.state) === 'evicting') return;
          const state = await this.#pastEviction(live);
          if (state === 'failed') throw failedError(live);
          if (hasLocalCopy(state)) return;
          if (!state.startsWith('remote.')) {
            throw new DaemonError('not_found', `attachment ${blobId} is being deleted`);
          }
          await this.#fetch(live);
        });
        try {
          return await this.#openLocal(blobId);
        } catch (error) {
          // Evicted between the check and the open: fetch it again, once.
          if (!(error instanceof LocalBlobError && error.code === 'not_found') || attempt > 0) {
            throw error;
          }
        }
      }
    });
  }

  uploadAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#api(() =>
      this.#registry.with(blobId, async (live) => {
        const state = live.durableState ?? live.state;
        if (state.startsWith('deleting')) {
          throw new DaemonError('not_found', `attachment ${blobId} is being deleted`);
        }
        if (state.startsWith('local.')) {
          this.#requireRemote();
          if (live.state === 'local.rejected') this.#registry.send(live, { type: 'RETRY' });
          this.#urgent(live, 'local.retrying');
          await this.#registry.waitDurable(
            live,
            (entry) => uploadVerdict(entry),
            (failure) => (failure.operation === 'upload' ? failureError(failure) : undefined),
          );
        }
        return liveInfo(live);
      }),
    );
  }

  downloadAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#api(() =>
      this.#registry.with(blobId, async (live) => {
        const state = live.durableState ?? live.state;
        if (state.startsWith('deleting')) {
          throw new DaemonError('not_found', `attachment ${blobId} is being deleted`);
        }
        if (state === 'failed') {
          this.#requireRemote();
          this.#registry.send(live, { type: 'DOWNLOAD' });
        }
        if (!hasLocalCopy(await this.#pastEviction(live))) await this.#fetch(live);
        return liveInfo(live);
      }),
    );
  }

  evictAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#api(() =>
      this.#registry.with(blobId, async (live) => {
        const state = live.state;
        if (state === 'remote.idle' || state === 'remote.queued' || state === 'failed') {
          if (!live.snapshot.context.pinned) return liveInfo(live);
        }
        const refused = this.#registry.send(live, { type: 'EVICT' });
        if (refused !== undefined) {
          const why =
            refused.reason === 'pinned'
              ? 'it is pinned'
              : 'the server does not hold it yet (not synced)';
          throw new DaemonError('invalid_state', `attachment ${blobId} cannot be evicted: ${why}`);
        }
        await this.#registry.waitDurable(
          live,
          (entry) => {
            if (entry.durableState === 'remote.idle') return 'done';
            if (entry.durableState?.startsWith('deleting')) {
              return new DaemonError('blob_deleted', `attachment ${blobId} was deleted`);
            }
            return 'wait';
          },
          (failure) => {
            if (failure.operation !== 'evict') return undefined;
            if (failure.kind === 'lost') {
              return new DaemonError(
                'invalid_state',
                `the server no longer holds ${blobId}; it is queued for upload again`,
              );
            }
            return failureError(failure);
          },
        );
        return liveInfo(live);
      }),
    );
  }

  pinAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#setPinned(blobId, true);
  }

  unpinAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#setPinned(blobId, false);
  }

  deleteAttachment(docId: string, rev: string): Promise<DocRecord> {
    return this.#api(async () => {
      const doc = await this.#store.getDoc(docId);
      if (doc === undefined || doc.deleted || doc.content === null) {
        throw new DaemonError('not_found', `no document ${docId}`);
      }
      if (pointerOf(doc.content) === undefined) {
        throw new DaemonError('invalid_state', `document ${docId} has no attachment`);
      }
      const { blob_id: _pointer, ...content } = doc.content;
      return this.putDoc(docId, content, rev);
    });
  }

  /**
   * Deletes an attachment that its document no longer points at, locally and on the
   * server. `not_found` when there is no such attachment; `invalid_state` when a stored
   * document still points at it. Resolves once the deletion is queued.
   */
  deleteOrphanBlob(blobId: string): Promise<void> {
    return this.#api(async () => {
      const live = await this.#registry.hold(blobId);
      if (live === undefined) throw new DaemonError('not_found', `no attachment ${blobId}`);
      try {
        const { docId } = live.snapshot.context;
        if (await this.#pointsAt(docId, blobId)) {
          throw new DaemonError(
            'invalid_state',
            `attachment ${blobId} is still the attachment of document ${docId}`,
          );
        }
        if (!live.state.startsWith('deleting')) this.#registry.send(live, { type: 'DELETE' });
      } finally {
        this.#registry.release(live);
      }
    });
  }

  // Remote sync, status, events

  /**
   * Runs a remote sync pass now. A call made while one runs waits for the next pass
   * (calls made meanwhile share it), so its result reflects the server after the call.
   */
  sync(): Promise<SyncResult> {
    return this.#api(() => {
      this.#requireRemote();
      if (this.#syncRunning === undefined) {
        this.#syncRunning = this.#runSync();
        return this.#syncRunning;
      }
      this.#syncAgain ??= this.#syncRunning
        .catch(() => undefined)
        .then(() => {
          this.#syncAgain = undefined;
          this.#syncRunning = this.#runSync();
          return this.#syncRunning;
        });
      return this.#syncAgain;
    });
  }

  status(): Promise<DaemonStatus> {
    return this.#api(async () => {
      const log = this.#store.eventLog;
      return {
        deviceId: this.deviceId,
        server: {
          url: this.#options.remote?.url ?? null,
          reachable: this.#remoteStatus.reachable,
          paused: this.#queue.paused,
          lastError: this.#remoteStatus.lastError,
        },
        queues: this.#queue.counts(),
        attachments: this.#store.attachmentCounts,
        lastSync: this.#lastSync,
        events: { epoch: log.epoch, latestSeq: log.lastSeq },
        watch: this.#watchFolders?.folders() ?? [],
      };
    });
  }

  readEventsAfter(seq: number, limit?: number): Promise<EventsAfter> {
    return this.#api(async () => {
      const result = await this.#store.readEventsAfter(seq, limit === undefined ? {} : { limit });
      if (result.gap) {
        return {
          kind: 'gap',
          epoch: result.epoch,
          oldestSeq: result.oldestSeq,
          latestSeq: result.lastSeq,
        };
      }
      const events: DaemonEvent[] = [];
      for (const event of result.events) {
        const mapped = daemonEvent(event);
        if (mapped !== undefined) events.push(mapped);
      }
      return { kind: 'events', epoch: result.epoch, events };
    });
  }

  onEvent(listener: (event: DaemonEvent) => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  onProgress(listener: (progress: TransferProgress) => void): () => void {
    this.#progressListeners.add(listener);
    return () => this.#progressListeners.delete(listener);
  }

  /**
   * One pass deleting attachments no stored document points at (older than
   * `orphanGraceMs`) and, unless `files` is false, local envelopes without a record. Runs
   * once in the background after start (with `files` only after an unclean stop);
   * exposed for tests and tools.
   */
  sweepOrphans(options: { files?: boolean } = {}): Promise<{ records: number; files: number }> {
    return this.#api(() =>
      sweepOrphans(
        {
          store: this.#store,
          local: this.#local,
          registry: this.#registry,
          graceMs: this.#options.orphanGraceMs ?? 24 * 3600 * 1000,
          now: () => this.#clock.now(),
          isWriting: (blobId) => this.#writing.has(blobId),
          stopped: () => this.#stopping,
          logger: this.#logger,
        },
        options,
      ),
    );
  }

  /**
   * Stops taking work, lets transfers in flight finish for up to `stopTimeoutMs` (then
   * aborts them; they resume at the next start), writes what is pending and closes the
   * stores. Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#stopping = true;
    const started = performance.now();
    // Imports in flight end (a half-done one is found again at the next start).
    await this.#watchFolders?.close().catch((error: unknown) => {
      this.#logger.warn({ err: error }, 'closing watch folders failed');
    });
    for (const timer of this.#timers) clearTimeout(timer);
    this.#idle.stop();
    this.#scheduler.pause();
    this.#uploadBatcher?.hurry();
    this.#downloadBatcher?.hurry();
    const timeoutMs = this.#options.stopTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const inFlight = this.#runningIdle();
    const timedOut = await Promise.race([
      inFlight.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) this.#logger.warn({ timeoutMs }, 'transfers aborted at stop');
    this.#uploadBatcher?.close();
    this.#downloadBatcher?.close();
    this.#stopController.abort(new DaemonError('shutting_down', 'the daemon is stopping'));
    this.#registry.stopAll();
    await Promise.allSettled([...this.#background]);
    await this.#registry.flush();
    // Nothing half-written is left behind (no envelope without its record): the next
    // start may skip the sweep over every local envelope.
    if (this.#writing.size === 0 && !this.#envelopeMayBeOrphaned) {
      await this.#store
        .commit((tx) => tx.markCleanStop())
        .catch((error: unknown) => {
          this.#logger.warn({ err: error }, 'could not record the clean stop');
        });
    }
    const results = await Promise.allSettled([
      this.#store.close(),
      this.#local.close(),
      this.#client?.close(),
    ]);
    this.#eventListeners.clear();
    this.#progressListeners.clear();
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    this.#logger.info({ ms: Math.round(performance.now() - started) }, 'daemon stopped');
    if (failed.length > 0) {
      throw new AggregateError(
        failed.map((r) => r.reason),
        'the daemon did not close cleanly',
      );
    }
  }

  // Internals

  async #api<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#stopping) throw new DaemonError('shutting_down', 'the daemon is stopping');
    this.#idle.enter();
    try {
      return await fn();
    } catch (error) {
      throw toDaemonError(error);
    } finally {
      this.#idle.leave();
    }
  }

  #input(
    fields: Pick<AttachmentInput, 'blobId' | 'docId' | 'size'> & Partial<AttachmentInput>,
  ): AttachmentInput {
    return {
      namespace: DEFAULT_NAMESPACE,
      priority: 'MEDIUM',
      ...fields,
      retryDelaysMs: this.#transfers.retryDelaysMs,
      maxCorruptions: this.#transfers.maxVerificationFailures,
    };
  }

  /** Encrypts `source` into the local store; a source that fails leaves nothing. */
  async #writeEnvelope(blobId: string, source: Readable): Promise<WriteResult> {
    const encrypt = createEncryptStream({ secret: this.#secret, blobId });
    let sourceError: unknown;
    // Registered before the pipeline's own listeners, so it is set when the write fails.
    source.once('error', (error) => {
      sourceError = error;
    });
    pipeline(source, encrypt, () => undefined);
    try {
      return await this.#local.write(blobId, encrypt, { fresh: true, deferSmall: true });
    } catch (error) {
      source.destroy();
      if (sourceError !== undefined) {
        throw new DaemonError('source_failed', 'reading the attachment failed', {
          cause: error,
        });
      }
      throw error;
    }
  }

  #openLocal(blobId: string): Promise<Readable> {
    return this.#local.createReadStream(blobId).then((file) => {
      const decrypt = createDecryptStream({ secret: this.#secret, blobId });
      // Errors reach the reader through `decrypt`; the callback only ends the pipeline.
      return pipeline(file, decrypt, () => undefined) as unknown as Readable;
    });
  }

  /** Downloads a REMOTE attachment at URGENT priority; rejects at its first failure. */
  /**
   * Waits until an eviction under way is over (its local copy may go at any moment), and
   * resolves with the state from then.
   */
  async #pastEviction(live: LiveAttachment): Promise<string> {
    const stateOf = (entry: LiveAttachment) => entry.durableState ?? entry.state;
    if (stateOf(live) === 'evicting') {
      await this.#registry.waitDurable(live, (entry) =>
        stateOf(entry) === 'evicting' ? 'wait' : 'done',
      );
    }
    return stateOf(live);
  }

  async #fetch(live: LiveAttachment): Promise<void> {
    this.#requireRemote();
    if (live.state === 'remote.idle') this.#registry.send(live, { type: 'DOWNLOAD' });
    this.#urgent(live, 'remote.retrying');
    await this.#registry.waitDurable(
      live,
      (entry) => downloadVerdict(entry),
      (failure) => (failure.operation === 'download' ? failureError(failure) : undefined),
    );
  }

  /** Raises a transfer to URGENT, skips a back-off wait and resumes paused transfers. */
  #urgent(live: LiveAttachment, retrying: string): void {
    if (live.snapshot.context.priority !== 'URGENT') {
      this.#registry.send(live, { type: 'PRIORITIZE', priority: 'URGENT' });
    }
    if (live.state === retrying) this.#registry.send(live, { type: 'RETRY' });
    // An explicit request is a reason to try the server again after refused credentials.
    this.#queue.resume();
  }

  #setPinned(blobId: string, pinned: boolean): Promise<AttachmentInfo> {
    return this.#api(() =>
      this.#registry.with(blobId, async (live) => {
        if (live.state.startsWith('deleting')) {
          throw new DaemonError('not_found', `attachment ${blobId} is being deleted`);
        }
        this.#registry.send(live, { type: pinned ? 'PIN' : 'UNPIN' });
        await this.#registry.waitDurable(live, (entry) =>
          entry.durableSnapshot?.context.pinned === pinned ? 'done' : 'wait',
        );
        return liveInfo(live);
      }),
    );
  }

  /**
   * Deletes the blob a committed document change stopped pointing at, then drops the
   * record of that deletion that the change committed with it (`recordReplaced`).
   */
  async #finishReplaced(blobId: string, docId: string): Promise<void> {
    await this.#deleteReplaced(blobId, docId);
    await this.#store.commit((tx) => tx.deleteSetting(REPLACED_BLOB_SETTING + blobId));
  }

  /**
   * Carries out the deletions of replaced blobs that a crash cut short: the document
   * change was committed, the attachment's own `deleting` record was not.
   */
  async #finishReplacedAfterCrash(): Promise<void> {
    for (const { key, value } of await this.#store.listSettings(REPLACED_BLOB_SETTING)) {
      const blobId = key.slice(REPLACED_BLOB_SETTING.length);
      const docId = (value as { docId?: unknown } | null)?.docId;
      if (typeof docId !== 'string') {
        this.#logger.warn({ key }, 'dropping a malformed record of a replaced blob');
      } else if (await this.#pointsAt(docId, blobId)) {
        // A later change pointed the document at the blob again: nothing to delete.
      } else {
        this.#logger.info({ blobId, docId }, 'finishing the deletion of a replaced blob');
        await this.#deleteReplaced(blobId, docId);
      }
      await this.#store.commit((tx) => tx.deleteSetting(key));
    }
  }

  /** Whether the stored document `docId` points at `blobId` now. */
  async #pointsAt(docId: string, blobId: string): Promise<boolean> {
    const doc = await this.#store.getDoc(docId);
    return doc !== undefined && !doc.deleted && pointerOf(doc.content) === blobId;
  }

  /** Deletes the blob a committed document change stopped pointing at. */
  async #deleteReplaced(blobId: string, docId: string): Promise<void> {
    const live = await this.#registry.hold(blobId);
    if (live === undefined) return;
    try {
      if (live.snapshot.context.docId !== docId) return;
      if (!live.state.startsWith('deleting')) this.#registry.send(live, { type: 'DELETE' });
      // The change is acknowledged only once the deletion is durable: a crash right after
      // the answer must not leave the blob recorded as if it were still wanted.
      await this.#registry.waitDurable(live, (entry) => {
        const state = entry.durableState;
        return state === 'deleted' || state?.startsWith('deleting') ? 'done' : 'wait';
      });
    } finally {
      this.#registry.release(live);
    }
  }

  #requireRemote(): void {
    if (this.#client === undefined) {
      throw new DaemonError('remote_unavailable', 'no blobs server is configured');
    }
  }

  async #runSync(): Promise<SyncResult> {
    const started = performance.now();
    try {
      const result = await runRemoteSync({
        client: this.#client!,
        store: this.#store,
        registry: this.#registry,
        local: this.#local,
        remoteStatus: this.#remoteStatus,
        input: (fields) => this.#input(fields),
        now: () => this.#clock.now(),
        stopped: () => this.#stopping,
        signal: this.#stopController.signal,
        logger: this.#logger,
      });
      this.#lastSync = { at: this.#clock.now(), ok: true };
      // The server took our credentials again.
      this.#queue.resume();
      this.#logger.info(
        { ...result, ms: Math.round(performance.now() - started) },
        'remote sync finished',
      );
      return result;
    } catch (error) {
      this.#lastSync = { at: this.#clock.now(), ok: false };
      throw error;
    } finally {
      this.#syncRunning = undefined;
    }
  }

  #backgroundSync(): void {
    if (this.#stopping || this.#syncRunning !== undefined) return;
    const task = this.sync().catch((error: unknown) => {
      if (this.#stopping) return;
      const { code, message } = toDaemonError(error);
      this.#logger.warn({ code, err: message }, 'remote sync failed');
    });
    this.#inBackground(task);
  }

  #inBackground(task: Promise<unknown>): void {
    const tracked = task.catch((error: unknown) => {
      if (!this.#stopping) this.#logger.error({ err: error }, 'background task failed');
    });
    this.#background.add(tracked);
    void tracked.finally(() => this.#background.delete(tracked));
  }

  #persisted(change: PersistedChange): void {
    if (change.seq === undefined) return;
    this.#emitEvent({
      seq: change.seq,
      type: 'attachment.state',
      at: this.#clock.now(),
      blobId: change.blobId,
      docId: change.docId,
      state: publicStateOf(change.state) as PublicState,
      machineState: change.state,
    });
  }

  #failed(live: LiveAttachment, failure: FailureEmitted): void {
    const { operation, error, kind, attempts } = failure;
    const fields: Record<string, unknown> = {
      blobId: live.blobId,
      operation,
      code: error.code,
      err: error.message,
      kind,
      attempts,
    };
    const { context } = live.snapshot;
    if (kind === 'retry' || (kind === 'corrupt' && context.corruptions < context.maxCorruptions)) {
      fields.retryInMs = retryDelay(context.retryDelaysMs, attempts);
    }
    this.#logger.info(fields, `${operation} failed`);
    if (kind === 'pause') this.#queue.pause(live.blobId);
  }

  #docEvent(seq: number | undefined, change: { id: string; rev: string; deleted: boolean }): void {
    if (seq === undefined) return;
    this.#emitEvent({
      seq,
      type: 'doc.changed',
      at: this.#clock.now(),
      docId: change.id,
      rev: change.rev,
      deleted: change.deleted,
    });
  }

  #emitEvent(event: DaemonEvent): void {
    for (const listener of this.#eventListeners) {
      try {
        listener(event);
      } catch (error) {
        this.#logger.error({ err: error }, 'event listener threw');
      }
    }
  }

  #emitProgress(progress: TransferProgress): void {
    for (const listener of this.#progressListeners) {
      try {
        listener(progress);
      } catch (error) {
        this.#logger.error({ err: error }, 'progress listener threw');
      }
    }
  }

  #runningIdle(): Promise<void> {
    return new Promise((resolve) => {
      this.#runningWaiters.push(resolve);
      this.#checkRunningIdle();
    });
  }

  /** Transfers running now (queued ones wait, which is not activity). */
  #transfersRunning(): boolean {
    const counts = this.#scheduler.counts();
    return (counts.upload?.running ?? 0) + (counts.download?.running ?? 0) > 0;
  }

  #checkRunningIdle(): void {
    if (this.#transfersRunning() || this.#runningWaiters.length === 0) return;
    const waiters = this.#runningWaiters;
    this.#runningWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
