import { randomUUID } from 'node:crypto';
import { type BatchOperation, Level } from 'level';
import type { DocumentSealer } from '../crypto/document-sealer.js';
import { IntegrityError } from '../crypto/integrity-error.js';
import { isValidDeviceId, nextRevisionText } from '../revision.js';
import { type CountsByState, categoryOf, emptyCounts, isCounts } from './attachment-counts.js';
import {
  AlreadyDeletedError,
  ConflictError,
  DocumentNotFoundError,
  StoreClosedError,
} from './errors.js';
import { EVENT_META, EventLogPlan, type EventLogState } from './event-log.js';
import { GroupCommit } from './group-commit.js';
import {
  type ActiveAttachment,
  type AttachmentRecord,
  type CommitResult,
  type Doc,
  type DocChange,
  type DocContent,
  type EventInput,
  type ReadEventsResult,
  type StoredDoc,
  type StoreEvent,
  SUBLEVELS,
  type SublevelName,
  seqKey,
  type WatchEntry,
} from './records.js';
import { type DocIntent, META_CLEAN_STOP, type StoreOp, Transaction } from './transaction.js';

export interface StoreOptions {
  /** Seals document contents at rest; built by the daemon from the storage secret. */
  sealer: DocumentSealer;
  /**
   * This device's id in revisions. Used when the store is created; an existing store keeps
   * the id it was created with and refuses a different one. Default: a random UUID.
   */
  deviceId?: string;
  /** Events kept in the log; older ones are trimmed. Default 10,000. */
  maxEvents?: number;
  /** Clock for `updatedAt` and event `at`, in epoch ms. Default `Date.now`. */
  now?: () => number;
  /** `fsync` every group write. Default true; false only for throwaway stores. */
  sync?: boolean;
}

function openSublevel(db: Level<string, string>, name: string) {
  return db.sublevel<string, string>(name, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
}

type Sublevel = ReturnType<typeof openSublevel>;

function openBytesSublevel(db: Level<string, string>, name: string) {
  return db.sublevel<string, Uint8Array>(name, { keyEncoding: 'utf8', valueEncoding: 'view' });
}

/**
 * A document change moving its attachment pointer, at a position of the group's ops: the
 * blob it stops pointing at becomes an orphan candidate, the one it starts pointing at
 * stops being one.
 */
interface PointerMark {
  position: number;
  blobId: string;
  kind: 'claim' | 'unpoint';
}

const META_DEVICE = 'deviceId';
/**
 * Counts by status bucket. Version 2: `evicting` counts as REMOTE (it was SYNCED), so a
 * store from before is counted afresh once, and its old key removed.
 */
const META_COUNTS = 'attachmentCounts.v2';
const META_COUNTS_V1 = 'attachmentCounts';
const DEFAULT_MAX_EVENTS = 10_000;
const DOC_ERRORS = [ConflictError, DocumentNotFoundError, AlreadyDeletedError];

/**
 * Reads `keys` with LevelDB's synchronous `getSync`. The store's reads are point lookups of
 * small, recently written values, which LevelDB answers from its memtable and caches: here
 * `getSync` took about 1.3 µs of CPU a key, where an asynchronous `get` or `getMany` took
 * 30–40 µs for the trip through libuv's threadpool and back. Under a burst of small puts
 * (several reads per put) that difference was most of the daemon's time. A lookup that
 * misses the caches blocks the event loop for the read of one table block.
 */
/** The key range of every key that starts with `prefix` (all keys for ''). */
function prefixRange(prefix: string): { gte?: string; lt?: string } {
  return prefix === '' ? {} : { gte: prefix, lt: `${prefix}\uffff` };
}

function readMany(sublevel: Sublevel, keys: readonly string[]): (string | undefined)[] {
  return keys.map((key) => sublevel.getSync(key));
}

/**
 * The daemon's LevelDB store: documents (sealed), attachment records with their machine
 * snapshots and an index of unsettled ones, settings, the watch-folder index and the
 * numbered event log. Layout: docs/daemon-store.md.
 *
 * Every change goes through `commit`, which writes one atomic batch per group of commits:
 * commits made in the same tick, or while the previous group is being written, share one
 * `sync` batch (group commit). Reads see only what is durable.
 */
export class Store {
  readonly location: string;
  readonly deviceId: string;
  readonly #db: Level<string, string>;
  readonly #subs: Record<SublevelName, Sublevel>;
  readonly #envelopes: ReturnType<typeof openBytesSublevel>;
  readonly #sealer: DocumentSealer;
  readonly #now: () => number;
  readonly #sync: boolean;
  readonly #maxEvents: number;
  readonly #group: GroupCommit<Transaction, CommitResult>;
  #events: EventLogState;
  #counts: CountsByState;
  #closing: Promise<void> | undefined;
  /**
   * True when the last process to use the store stopped cleanly (`markCleanStop` was its
   * last commit); the mark is removed, durably, by `open`, so a crash after it reads false.
   */
  readonly openedAfterCleanStop: boolean;

  private constructor(
    db: Level<string, string>,
    deviceId: string,
    events: EventLogState,
    counts: CountsByState,
    cleanStop: boolean,
    options: StoreOptions,
  ) {
    this.openedAfterCleanStop = cleanStop;
    this.location = db.location;
    this.#db = db;
    this.deviceId = deviceId;
    this.#events = events;
    this.#counts = counts;
    this.#sealer = options.sealer;
    this.#now = options.now ?? Date.now;
    this.#sync = options.sync ?? true;
    this.#maxEvents = options.maxEvents ?? DEFAULT_MAX_EVENTS;
    this.#subs = Store.#sublevels(db);
    this.#envelopes = openBytesSublevel(db, SUBLEVELS.envelopes);
    this.#group = new GroupCommit((txs) => this.#writeGroup(txs));
  }

  /** Opens (creating if needed) the store in folder `location`. */
  static async open(location: string, options: StoreOptions): Promise<Store> {
    const maxEvents = options.maxEvents ?? DEFAULT_MAX_EVENTS;
    if (!Number.isSafeInteger(maxEvents) || maxEvents < 1) {
      throw new TypeError('maxEvents must be a positive integer');
    }
    if (options.deviceId !== undefined && !isValidDeviceId(options.deviceId)) {
      throw new TypeError('deviceId must be 1 to 128 letters, digits, - or _');
    }
    const db = new Level<string, string>(location, {
      keyEncoding: 'utf8',
      valueEncoding: 'utf8',
    });
    await db.open();
    try {
      const { deviceId, events, counts, cleanStop } = await Store.#init(db, options);
      const store = new Store(db, deviceId, events, counts, cleanStop, options);
      // A new sublevel opens on a later tick; `getSync` needs it open now.
      await Promise.all([...Object.values(store.#subs), store.#envelopes].map((sub) => sub.open()));
      return store;
    } catch (error) {
      await db.close();
      throw error;
    }
  }

  static async #init(db: Level<string, string>, options: StoreOptions) {
    const subs = Store.#sublevels(db);
    const keys = [META_DEVICE, EVENT_META.epoch, EVENT_META.lastSeq];
    const [device, epoch, lastSeq] = (await subs.meta.getMany(keys)).map((v) =>
      v === undefined ? undefined : JSON.parse(v),
    );

    if (device !== undefined && options.deviceId !== undefined && device !== options.deviceId) {
      throw new TypeError(`the store at ${db.location} belongs to device ${device}`);
    }
    const deviceId: string = device ?? options.deviceId ?? randomUUID();
    const last: number = lastSeq ?? 0;
    const events: EventLogState = { epoch: epoch ?? randomUUID(), lastSeq: last, oldestSeq: 0 };

    if (device === undefined || epoch === undefined) {
      await db.batch(
        [
          { type: 'put', sublevel: subs.meta, key: META_DEVICE, value: JSON.stringify(deviceId) },
          {
            type: 'put',
            sublevel: subs.meta,
            key: EVENT_META.epoch,
            value: JSON.stringify(events.epoch),
          },
        ],
        { sync: options.sync ?? true },
      );
    }

    const [first] = await subs.event.keys({ limit: 1 }).all();
    events.oldestSeq = first === undefined ? last + 1 : Number(first);
    const counts = await Store.#loadCounts(db, subs, options.sync ?? true);
    const cleanStop = (await subs.meta.get(META_CLEAN_STOP)) !== undefined;
    if (cleanStop) {
      await db.batch([{ type: 'del', sublevel: subs.meta, key: META_CLEAN_STOP }], {
        sync: options.sync ?? true,
      });
    }
    return { deviceId, events, counts, cleanStop };
  }

  /**
   * The attachment counts kept in `meta` (written with every change of a record). A store
   * with records but no counts (made before they were kept) is counted once, here.
   */
  static async #loadCounts(
    db: Level<string, string>,
    subs: Record<SublevelName, Sublevel>,
    sync: boolean,
  ): Promise<CountsByState> {
    const stored = await subs.meta.get(META_COUNTS);
    if (stored !== undefined) {
      const parsed: unknown = JSON.parse(stored);
      if (isCounts(parsed)) return parsed;
    }
    const counts = emptyCounts();
    const [any] = await subs.att.keys({ limit: 1 }).all();
    if (any === undefined) return counts;
    for await (const value of subs.att.values()) {
      const category = categoryOf((JSON.parse(value) as AttachmentRecord).state);
      if (category !== null) counts[category] += 1;
    }
    const value = JSON.stringify(counts);
    await db.batch(
      [
        { type: 'put', sublevel: subs.meta, key: META_COUNTS, value },
        { type: 'del', sublevel: subs.meta, key: META_COUNTS_V1 },
      ],
      { sync },
    );
    return counts;
  }

  /** Attachment records per status bucket, as durable now (exact, kept with every change). */
  get attachmentCounts(): CountsByState {
    return { ...this.#counts };
  }

  static #sublevels(db: Level<string, string>): Record<SublevelName, Sublevel> {
    const entries = Object.values(SUBLEVELS).map((name) => [name, openSublevel(db, name)]);
    return Object.fromEntries(entries) as Record<SublevelName, Sublevel>;
  }

  /**
   * Writes pending commits, then closes the database. Idempotent: every call returns the
   * same promise. Commits made after the first call reject with `StoreClosedError`.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#group.drain();
      await this.#db.close();
    })();
    return this.#closing;
  }

  /**
   * Runs `build` at once to record changes, then writes them with the rest of their group
   * in one atomic `sync` batch. Resolves when they are durable, with the seqs of the
   * events written and the document changes made. If `build` throws, or a document check
   * fails, this commit writes nothing and rejects; other commits of the group are not
   * affected.
   */
  commit(build: (tx: Transaction) => void): Promise<CommitResult> {
    if (this.#closing !== undefined) return Promise.reject(new StoreClosedError());
    const tx = new Transaction(this.#now());
    try {
      build(tx);
    } catch (error) {
      return Promise.reject(error);
    } finally {
      tx.close();
    }
    return this.#group.submit(tx);
  }

  /** Group writes so far and the commits they carried. */
  get writeStats(): { batches: number; commits: number } {
    const { groups, items } = this.#group.stats;
    return { batches: groups, commits: items };
  }

  // Documents

  /** Creates a document; see `Transaction.createDoc`. */
  async createDoc(content: DocContent, id?: string): Promise<Doc> {
    let docId = '';
    const { docs } = await this.commit((tx) => {
      docId = tx.createDoc(content, id);
    });
    return {
      ...docs[0]!,
      id: docId,
      content: structuredClone(content),
      lastSeenServerGeneration: null,
    };
  }

  /** Replaces a document's content; see `Transaction.putDoc`. Resolves with the new revision. */
  async putDoc(id: string, content: DocContent, baseRev: string): Promise<DocChange> {
    const { docs } = await this.commit((tx) => tx.putDoc(id, content, baseRev));
    return docs[0]!;
  }

  /** Deletes a document (tombstone); see `Transaction.deleteDoc`. */
  async deleteDoc(id: string, baseRev: string): Promise<DocChange> {
    const { docs } = await this.commit((tx) => tx.deleteDoc(id, baseRev));
    return docs[0]!;
  }

  /** Reads and decrypts a document; `undefined` if it never existed. */
  async getDoc(id: string): Promise<Doc | undefined> {
    const [doc] = await this.getDocs([id]);
    return doc;
  }

  /** Reads many documents in one `getMany`; throws `IntegrityError` on tampered content. */
  async getDocs(ids: string[]): Promise<Array<Doc | undefined>> {
    this.#assertOpen();
    const values = readMany(this.#subs.doc, ids);
    return values.map((value, i) =>
      value === undefined ? undefined : this.#openDoc(ids[i]!, value),
    );
  }

  /** Ids of stored documents in key order, tombstones only if asked. */
  async listDocIds({ includeDeleted = false } = {}): Promise<string[]> {
    this.#assertOpen();
    if (includeDeleted) return this.#subs.doc.keys().all();
    // TODO: without tombstones this reads and parses every record; an index of deleted
    // ids would make it a key scan.
    const ids: string[] = [];
    for await (const [id, value] of this.#subs.doc.iterator()) {
      if (!(JSON.parse(value) as StoredDoc).deleted) ids.push(id);
    }
    return ids;
  }

  // Attachments

  /** Stores an attachment snapshot; see `Transaction.putAttachment`. */
  async putAttachment(snapshot: unknown): Promise<CommitResult> {
    return this.commit((tx) => {
      tx.putAttachment(snapshot);
    });
  }

  async getAttachment(blobId: string): Promise<AttachmentRecord | undefined> {
    const [record] = await this.getAttachments([blobId]);
    return record;
  }

  /** Reads many attachment records in one `getMany`. */
  async getAttachments(blobIds: string[]): Promise<Array<AttachmentRecord | undefined>> {
    this.#assertOpen();
    const values = readMany(this.#subs.att, blobIds);
    return values.map((v) => (v === undefined ? undefined : (JSON.parse(v) as AttachmentRecord)));
  }

  /**
   * One page of attachment records in blob-id order, starting after `after`. For sweeps
   * over every record; the daemon's start-up needs only `listActiveAttachments`.
   */
  async listAttachments({ after, limit = 1000 }: { after?: string; limit?: number } = {}) {
    this.#assertOpen();
    const range = after === undefined ? { limit } : { gt: after, limit };
    const values = await this.#subs.att.values(range).all();
    return values.map((v) => JSON.parse(v) as AttachmentRecord);
  }

  /** The unsettled attachments, from the small `active` index. */
  async listActiveAttachments(): Promise<ActiveAttachment[]> {
    this.#assertOpen();
    const entries = await this.#subs.active.iterator().all();
    return entries.map(([blobId, state]) => ({ blobId, state: JSON.parse(state) as string }));
  }

  // Orphan candidates

  /**
   * One page of orphan candidates in blob-id order, after `after`: blobs whose record was
   * made or whose document stopped pointing at them at `at` (epoch ms), and that no
   * document has pointed at since. The orphan sweep reads only these.
   */
  async listUnclaimed({ after, limit = 1000 }: { after?: string; limit?: number } = {}) {
    this.#assertOpen();
    const range = after === undefined ? { limit } : { gt: after, limit };
    const entries = await this.#subs.unclaimed.iterator(range).all();
    return entries.map(([blobId, at]) => ({ blobId, at: Number(at) }));
  }

  // Small envelopes (see LocalBlobStore)

  /** The stored bytes of a small envelope, or `undefined`. */
  async getEnvelope(blobId: string): Promise<Uint8Array | undefined> {
    this.#assertOpen();
    return this.#envelopes.getSync(blobId);
  }

  /** Ids of every small envelope stored, in key order. */
  async *envelopeIds(): AsyncIterable<string> {
    this.#assertOpen();
    for await (const key of this.#envelopes.keys()) yield key;
  }

  // Settings and the watch-folder index

  async getSetting(key: string): Promise<unknown> {
    this.#assertOpen();
    const value = await this.#subs.setting.get(key);
    return value === undefined ? undefined : JSON.parse(value);
  }

  /** Every setting whose key starts with `prefix`, in key order. */
  async listSettings(prefix: string): Promise<Array<{ key: string; value: unknown }>> {
    this.#assertOpen();
    const entries = await this.#subs.setting.iterator(prefixRange(prefix)).all();
    return entries.map(([key, value]) => ({ key, value: JSON.parse(value) as unknown }));
  }

  async putSetting(key: string, value: unknown): Promise<void> {
    await this.commit((tx) => tx.putSetting(key, value));
  }

  async deleteSetting(key: string): Promise<void> {
    await this.commit((tx) => tx.deleteSetting(key));
  }

  async getWatchEntry(path: string): Promise<WatchEntry | undefined> {
    this.#assertOpen();
    const value = await this.#subs.watch.get(path);
    return value === undefined ? undefined : (JSON.parse(value) as WatchEntry);
  }

  async putWatchEntry(path: string, entry: WatchEntry): Promise<void> {
    await this.commit((tx) => tx.putWatchEntry(path, entry));
  }

  async deleteWatchEntry(path: string): Promise<void> {
    await this.commit((tx) => tx.deleteWatchEntry(path));
  }

  /** Watch entries whose path starts with `prefix` (all when omitted), in path order. */
  async listWatchEntries({ prefix = '' } = {}): Promise<Array<{ path: string } & WatchEntry>> {
    this.#assertOpen();
    const entries = await this.#subs.watch.iterator(prefixRange(prefix)).all();
    return entries.map(([path, value]) => ({ path, ...(JSON.parse(value) as WatchEntry) }));
  }

  // Event log

  /** Epoch, oldest kept and last seq of the event log, as durable now. */
  get eventLog(): EventLogState {
    return { ...this.#events };
  }

  /**
   * Events with seq greater than `after`, oldest first, at most `limit` (default 1000).
   * Returns a gap instead when events after `after` were trimmed, when `after` is beyond
   * the last seq, or when `epoch` is given and is not the log's: the caller must re-read
   * state and continue from the gap's `lastSeq`.
   */
  async readEventsAfter(
    after: number,
    { limit = 1000, epoch }: { limit?: number; epoch?: string } = {},
  ): Promise<ReadEventsResult> {
    this.#assertOpen();
    if (!Number.isSafeInteger(after) || after < 0) {
      throw new TypeError('after must be a non-negative integer');
    }
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new TypeError('limit must be a positive integer');
    }
    const log = this.eventLog;
    const gap = (state: EventLogState): ReadEventsResult => ({
      gap: true,
      epoch: state.epoch,
      oldestSeq: state.oldestSeq,
      lastSeq: state.lastSeq,
    });
    if ((epoch !== undefined && epoch !== log.epoch) || after > log.lastSeq) return gap(log);
    if (after < log.oldestSeq - 1) return gap(log);

    const values = await this.#subs.event.values({ gt: seqKey(after), limit }).all();
    const events = values.map((v) => JSON.parse(v) as StoreEvent);
    // A group written meanwhile may have trimmed or reset past `after`.
    const first = events[0];
    const now = this.eventLog;
    if (now.epoch !== log.epoch) return gap(now);
    if (first === undefined ? after < log.lastSeq : first.seq !== after + 1) return gap(now);
    return { gap: false, epoch: log.epoch, events, lastSeq: now.lastSeq };
  }

  /** Appends one event on its own; see `Transaction.event`. Resolves with its seq. */
  async appendEvent(data: EventInput): Promise<number> {
    const { seqs } = await this.commit((tx) => tx.event(data));
    return seqs[0]!;
  }

  /** Drops every kept event and starts a new epoch; see `Transaction.resetEventLog`. */
  async resetEventLog(): Promise<void> {
    await this.commit((tx) => tx.resetEventLog());
  }

  // Group write

  async #writeGroup(txs: Transaction[]): Promise<Array<CommitResult | Error>> {
    const view = await this.#readDocsFor(txs);
    const plan = new EventLogPlan(this.#events, this.#maxEvents);
    const at = this.#now();
    const ops: StoreOp[] = [];
    const marks: PointerMark[] = [];

    const results = txs.map((tx): CommitResult | Error => {
      try {
        return this.#applyTx(tx, view, plan, ops, marks, at);
      } catch (error) {
        if (DOC_ERRORS.some((type) => error instanceof type)) return error as Error;
        throw error;
      }
    });
    ops.push(...plan.ops());
    const counts = await this.#attachmentBookkeeping(ops, marks, at);
    const writes = await this.#withoutIdleDeletes(ops);

    if (writes.length > 0) {
      await this.#db.batch(
        writes.map((op) => {
          const sublevel =
            op.sublevel === SUBLEVELS.envelopes ? this.#envelopes : this.#subs[op.sublevel];
          return op.type === 'put'
            ? { type: 'put' as const, sublevel, key: op.key, value: op.value }
            : { type: 'del' as const, sublevel, key: op.key };
        }) as unknown as Array<BatchOperation<Level<string, string>, string, string>>,
        { sync: this.#sync },
      );
    }
    this.#events = plan.state;
    if (counts !== undefined) this.#counts = counts;
    return results;
  }

  /**
   * Follows the group's ops in order and adds the ops that keep two things exact with
   * them: the attachment counts in `meta` (returned, for the store to adopt once the batch
   * is durable; undefined when no record changed) and the `unclaimed` index of orphan
   * candidates. A record's state before the group is read with one `getMany`. A new
   * record is a candidate unless a document of the group points at it; a blob a document
   * stops pointing at becomes one; a document starting to point at a blob, or the record's
   * removal, ends its candidacy.
   */
  async #attachmentBookkeeping(
    ops: StoreOp[],
    marks: PointerMark[],
    at: number,
  ): Promise<CountsByState | undefined> {
    const keys = new Set<string>();
    for (const op of ops) if (op.sublevel === SUBLEVELS.attachments) keys.add(op.key);
    if (keys.size === 0 && marks.length === 0) return undefined;
    const list = [...keys];
    const values = readMany(this.#subs.att, list);
    const states = new Map<string, string | null>(
      list.map((key, i) => {
        const value = values[i];
        return [key, value === undefined ? null : (JSON.parse(value) as AttachmentRecord).state];
      }),
    );
    const counts = { ...this.#counts };
    const candidates = new Map<string, 'put' | 'del'>();
    let m = 0;
    const markUpTo = (position: number) => {
      for (; m < marks.length && marks[m]!.position <= position; m++) {
        const mark = marks[m]!;
        candidates.set(mark.blobId, mark.kind === 'claim' ? 'del' : 'put');
      }
    };
    const length = ops.length;
    for (let i = 0; i < length; i++) {
      markUpTo(i);
      const op = ops[i]!;
      if (op.sublevel !== SUBLEVELS.attachments) continue;
      const next = op.type === 'put' ? (op.state ?? null) : null;
      const previous = states.get(op.key) ?? null;
      states.set(op.key, next);
      if (next === null) candidates.set(op.key, 'del');
      else if (previous === null && candidates.get(op.key) !== 'del') candidates.set(op.key, 'put');
      const before = categoryOf(previous);
      const after = categoryOf(next);
      if (before === after) continue;
      if (before !== null) counts[before] -= 1;
      if (after !== null) counts[after] += 1;
    }
    markUpTo(Number.POSITIVE_INFINITY);
    for (const [key, kind] of candidates) {
      ops.push(
        kind === 'put'
          ? { type: 'put', sublevel: SUBLEVELS.unclaimed, key, value: String(at) }
          : { type: 'del', sublevel: SUBLEVELS.unclaimed, key },
      );
    }
    if (keys.size === 0) return undefined;
    ops.push({
      type: 'put',
      sublevel: SUBLEVELS.meta,
      key: META_COUNTS,
      value: JSON.stringify(counts),
    });
    return counts;
  }

  /**
   * Drops deletions of `active` entries that do not exist. Every settled attachment write
   * deletes its `active` entry; most never had one, and a million such deletions would
   * leave tombstones that start-up's listing of the small `active` range has to skip.
   */
  async #withoutIdleDeletes(ops: StoreOp[]): Promise<StoreOp[]> {
    const indexes: SublevelName[] = [SUBLEVELS.active, SUBLEVELS.unclaimed];
    const keys = new Map<SublevelName, Set<string>>(indexes.map((name) => [name, new Set()]));
    for (const op of ops) if (op.type === 'del') keys.get(op.sublevel)?.add(op.key);
    const current = new Map<string, string | undefined>();
    for (const [name, set] of keys) {
      if (set.size === 0) continue;
      const list = [...set];
      const values = readMany(this.#subs[name], list);
      for (const [i, key] of list.entries()) current.set(`${name}!${key}`, values[i]);
    }
    if (current.size === 0) return ops;
    return ops.filter((op) => {
      if (!indexes.includes(op.sublevel)) return true;
      const id = `${op.sublevel}!${op.key}`;
      if (op.type === 'put') {
        current.set(id, op.value as string);
        return true;
      }
      const value = current.get(id);
      // A conditional delete (a claim by the sweep) loses to a newer candidacy.
      const keep = value !== undefined && (op.ifValue === undefined || op.ifValue === value);
      if (keep) current.set(id, undefined);
      return keep;
    });
  }

  /** Stored state of every document the group touches, in one `getMany`. */
  async #readDocsFor(txs: Transaction[]): Promise<Map<string, StoredDoc | null>> {
    const ids = new Set<string>();
    for (const tx of txs) {
      for (const step of tx.steps) if ('doc' in step) ids.add(step.doc.id);
    }
    const list = [...ids];
    const values = readMany(this.#subs.doc, list);
    return new Map(
      list.map((id, i) => {
        const value = values[i];
        return [id, value === undefined ? null : (JSON.parse(value) as StoredDoc)];
      }),
    );
  }

  /**
   * Checks one transaction against the group's view and, when every check passes, adds
   * its ops and events. Throws a document error before touching `view`, `plan` or `ops`.
   */
  #applyTx(
    tx: Transaction,
    view: Map<string, StoredDoc | null>,
    plan: EventLogPlan,
    ops: StoreOp[],
    marks: PointerMark[],
    at: number,
  ): CommitResult {
    const local = new Map<string, StoredDoc | null>();
    const txOps: StoreOp[] = [];
    const txMarks: PointerMark[] = [];
    const events: Array<EventInput | 'reset'> = [];
    const docs: DocChange[] = [];

    for (const step of tx.steps) {
      if ('op' in step) {
        txOps.push(step.op);
      } else if ('event' in step) {
        events.push(step.event);
      } else if ('resetEvents' in step) {
        events.push('reset');
      } else {
        const { id } = step.doc;
        const current = local.has(id) ? local.get(id)! : (view.get(id) ?? null);
        const next = this.#applyDoc(step.doc, current);
        local.set(id, next);
        if (step.doc.kind !== 'generation') {
          const from = current === null ? undefined : this.#pointerOf(id, current);
          const to = step.doc.kind === 'delete' ? undefined : pointerIn(step.doc.json);
          if (from !== to) {
            const position = ops.length + txOps.length;
            if (from !== undefined) txMarks.push({ position, blobId: from, kind: 'unpoint' });
            if (to !== undefined) txMarks.push({ position, blobId: to, kind: 'claim' });
          }
        }
        txOps.push({ type: 'put', sublevel: SUBLEVELS.docs, key: id, value: JSON.stringify(next) });
        if (step.doc.kind !== 'generation') {
          docs.push({ id, rev: next.rev, deleted: next.deleted });
          events.push({ kind: 'doc', docId: id, rev: next.rev, deleted: next.deleted });
        }
      }
    }

    for (const [id, doc] of local) view.set(id, doc);
    ops.push(...txOps);
    marks.push(...txMarks);
    const seqs: number[] = [];
    for (const event of events) {
      if (event === 'reset') plan.reset();
      else seqs.push(plan.append(event, at));
    }
    return { seqs, docs };
  }

  #applyDoc(intent: DocIntent, current: StoredDoc | null): StoredDoc {
    const { id } = intent;
    const generation = current?.lastSeenServerGeneration ?? null;
    switch (intent.kind) {
      case 'create':
        if (current !== null) {
          throw new ConflictError(id, current.rev, `document ${id} already exists`);
        }
        return this.#sealDoc(id, '', intent.json, generation);
      case 'put':
        if (current === null) {
          if (intent.baseRev !== '') throw new DocumentNotFoundError(id);
          return this.#sealDoc(id, '', intent.json, generation);
        }
        this.#checkBase(id, current, intent.baseRev);
        return this.#sealDoc(id, current.rev, intent.json, generation);
      case 'delete':
        if (current === null) throw new DocumentNotFoundError(id);
        this.#checkBase(id, current, intent.baseRev);
        if (current.deleted) throw new AlreadyDeletedError(id);
        return {
          rev: nextRevisionText(current.rev, this.deviceId),
          sealed: null,
          deleted: true,
          lastSeenServerGeneration: generation,
        };
      case 'generation':
        if (current === null) throw new DocumentNotFoundError(id);
        return { ...current, lastSeenServerGeneration: intent.generation };
    }
  }

  #checkBase(id: string, current: StoredDoc, baseRev: string): void {
    if (current.rev !== baseRev) {
      throw new ConflictError(
        id,
        current.rev,
        `document ${id} is at revision ${current.rev}, not ${baseRev || '(none)'}`,
      );
    }
  }

  #sealDoc(id: string, baseRev: string, json: string, generation: number | null): StoredDoc {
    const rev = nextRevisionText(baseRev, this.deviceId);
    const sealed = this.#sealer.seal(id, rev, Buffer.from(json, 'utf8')).toString('base64');
    return { rev, sealed, deleted: false, lastSeenServerGeneration: generation };
  }

  /**
   * The attachment pointer (`blob_id`) of a stored version; undefined for none, and for a
   * version that does not open (a change replacing it must not fail for that).
   */
  #pointerOf(id: string, stored: StoredDoc): string | undefined {
    if (stored.sealed === null || stored.deleted) return undefined;
    try {
      const json = this.#sealer.open(id, stored.rev, Buffer.from(stored.sealed, 'base64'));
      return pointerIn(json.toString('utf8'));
    } catch (error) {
      if (error instanceof IntegrityError) return undefined;
      throw error;
    }
  }

  #openDoc(id: string, value: string): Doc {
    const stored = JSON.parse(value) as StoredDoc;
    const content =
      stored.sealed === null
        ? null
        : (JSON.parse(
            this.#sealer
              .open(id, stored.rev, Buffer.from(stored.sealed, 'base64'))
              .toString('utf8'),
          ) as DocContent);
    return {
      id,
      rev: stored.rev,
      content,
      deleted: stored.deleted,
      lastSeenServerGeneration: stored.lastSeenServerGeneration,
    };
  }

  #assertOpen(): void {
    if (this.#closing !== undefined) throw new StoreClosedError();
  }
}

/** The `blob_id` of a document's JSON content, when it is a non-empty string. */
function pointerIn(json: string): string | undefined {
  const pointer = (JSON.parse(json) as DocContent).blob_id;
  return typeof pointer === 'string' && pointer !== '' ? pointer : undefined;
}
