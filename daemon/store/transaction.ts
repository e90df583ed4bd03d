import { randomUUID } from 'node:crypto';
import {
  AttachmentState,
  asPersistedAttachmentSnapshot,
  isPriority,
  isSettled,
  publicStateOf,
  statePath,
} from '../../machines/index.js';
import { parseRevision } from '../revision.js';
import {
  type AttachmentRecord,
  assertKey,
  type DocContent,
  type EventInput,
  isPlainObject,
  SUBLEVELS,
  type SublevelName,
  toJson,
  type WatchEntry,
} from './records.js';

/** A raw write into one sublevel; values are JSON text. */
/** The `meta` key a clean stop leaves for the next open to take. */
export const META_CLEAN_STOP = 'cleanStop';

export type StoreOp =
  /** `state`: an attachment record's machine state, which the store counts. */
  | { type: 'put'; sublevel: SublevelName; key: string; value: string; state?: string }
  | { type: 'put'; sublevel: typeof SUBLEVELS.envelopes; key: string; value: Uint8Array }
  /** `ifValue`: delete only if the stored value is this one (checked in the group write). */
  | { type: 'del'; sublevel: SublevelName; key: string; ifValue?: string };

/** A document change, checked and sealed when its group is written. */
export type DocIntent =
  | { kind: 'create'; id: string; json: string }
  | { kind: 'put'; id: string; json: string; baseRev: string }
  | { kind: 'delete'; id: string; baseRev: string }
  | { kind: 'generation'; id: string; generation: number };

/** @internal One recorded step of a transaction, applied in order. */
export type TxStep =
  | { doc: DocIntent }
  | { op: StoreOp }
  | { event: EventInput }
  | { resetEvents: true };

/**
 * The changes of one `store.commit(tx => ...)`, all written in one atomic batch. Every
 * method validates its arguments at once and throws `TypeError` (or `RevisionError`) on
 * bad input, which rejects the whole commit with nothing written. Document checks against
 * stored revisions happen when the group is written; a failed check rejects this
 * transaction alone (`ConflictError`, `DocumentNotFoundError`, `AlreadyDeletedError`).
 *
 * Document changes add a `{ kind: 'doc', docId, rev, deleted }` event and attachment
 * changes a `{ kind: 'attachment', blobId, docId, state, publicState }` event (unless
 * `event: false`); `event()` adds any other.
 */
export class Transaction {
  /** @internal */
  readonly steps: TxStep[] = [];
  readonly #now: number;
  #closed = false;

  /** @internal Created by the store; `now` stamps `updatedAt`. */
  constructor(now: number) {
    this.#now = now;
  }

  /** @internal Called once the build callback returns; later calls throw. */
  close(): void {
    this.#closed = true;
  }

  /**
   * Creates a document (revision `<device>:1`) and returns its id, a random UUID unless
   * given. Conflicts if the id exists, even as a tombstone.
   */
  createDoc(content: DocContent, id: string = randomUUID()): string {
    this.#open();
    assertKey(id, 'document id');
    this.#push({ doc: { kind: 'create', id, json: contentJson(content) } });
    return id;
  }

  /**
   * Replaces a document's content. `baseRev` must be the stored revision ('' creates a
   * document that does not exist); the new revision increments this device's counter.
   * Putting a tombstone at its revision undeletes it.
   */
  putDoc(id: string, content: DocContent, baseRev: string): void {
    this.#open();
    assertKey(id, 'document id');
    parseRevision(baseRev);
    this.#push({ doc: { kind: 'put', id, json: contentJson(content), baseRev } });
  }

  // TODO: document sync needs a put that stores a pulled version under its own revision
  // and keeps both versions of a conflict; only local edits exist so far.

  /** Turns a document into a tombstone (content dropped, `deleted` set, revision bumped). */
  deleteDoc(id: string, baseRev: string): void {
    this.#open();
    assertKey(id, 'document id');
    parseRevision(baseRev);
    this.#push({ doc: { kind: 'delete', id, baseRev } });
  }

  /** Records the server generation last seen for a document; no revision change, no event. */
  setDocGeneration(id: string, generation: number): void {
    this.#open();
    assertKey(id, 'document id');
    if (!Number.isSafeInteger(generation) || generation < 0) {
      throw new TypeError('generation must be a non-negative integer');
    }
    this.#push({ doc: { kind: 'generation', id, generation } });
  }

  /**
   * Stores an attachment's persisted machine snapshot, with the fields the daemon reads
   * without restoring it, and keeps the `active` index in step: unsettled states are in
   * it, settled ones are not. A snapshot in the final `deleted` state deletes the record.
   * Returns the record written (or `undefined` for a deletion).
   */
  putAttachment(snapshot: unknown, { event = true } = {}): AttachmentRecord | undefined {
    this.#open();
    const persisted = asPersistedAttachmentSnapshot(snapshot);
    const { context } = persisted;
    assertKey(context.blobId, 'blobId');
    assertKey(context.docId, 'docId');
    if (typeof context.namespace !== 'string') throw new TypeError('snapshot has no namespace');
    if (!Number.isSafeInteger(context.size) || context.size < 0) {
      throw new TypeError('snapshot has a bad size');
    }
    const state = statePath(persisted.value);
    if (state === 'deleted') {
      this.deleteAttachment(context.blobId, { docId: context.docId, event });
      return undefined;
    }
    if (!isPriority(context.priority)) throw new TypeError('snapshot has a bad priority');
    const record: AttachmentRecord = {
      blobId: context.blobId,
      docId: context.docId,
      namespace: context.namespace,
      size: context.size,
      state,
      publicState: publicStateOf(state),
      priority: context.priority,
      attempts: context.attempts,
      pinned: context.pinned,
      updatedAt: this.#now,
      snapshot: persisted,
    };
    const key = record.blobId;
    this.#push({
      op: {
        type: 'put',
        sublevel: SUBLEVELS.attachments,
        key,
        value: toJson(record, 'attachment snapshot'),
        state,
      },
    });
    if (isSettled(state)) this.#del(SUBLEVELS.active, key);
    else this.#put(SUBLEVELS.active, key, toJson(state, 'state'));
    if (event) {
      this.event({
        kind: 'attachment',
        blobId: key,
        docId: record.docId,
        state,
        publicState: record.publicState,
      });
    }
    return record;
  }

  /** Removes an attachment record and its `active` entry; `docId` only goes into the event. */
  deleteAttachment(
    blobId: string,
    { docId = null, event = true }: { docId?: string | null; event?: boolean } = {},
  ): void {
    this.#open();
    assertKey(blobId, 'blobId');
    this.#del(SUBLEVELS.attachments, blobId);
    this.#del(SUBLEVELS.active, blobId);
    if (event) {
      this.event({
        kind: 'attachment',
        blobId,
        docId,
        state: 'deleted',
        publicState: AttachmentState.NONE,
      });
    }
  }

  putSetting(key: string, value: unknown): void {
    this.#open();
    assertKey(key, 'setting key');
    this.#put(SUBLEVELS.settings, key, toJson(value, `setting ${key}`));
  }

  deleteSetting(key: string): void {
    this.#open();
    assertKey(key, 'setting key');
    this.#del(SUBLEVELS.settings, key);
  }

  putWatchEntry(path: string, entry: WatchEntry): void {
    this.#open();
    assertKey(path, 'path');
    assertKey(entry.docId, 'docId');
    if (entry.blobId !== null) assertKey(entry.blobId, 'blobId');
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) {
      throw new TypeError('size must be a non-negative integer');
    }
    if (!Number.isFinite(entry.mtimeMs)) throw new TypeError('mtimeMs must be a finite number');
    const { docId, blobId, size, mtimeMs } = entry;
    this.#put(SUBLEVELS.watch, path, toJson({ docId, blobId, size, mtimeMs }, 'watch entry'));
  }

  deleteWatchEntry(path: string): void {
    this.#open();
    assertKey(path, 'path');
    this.#del(SUBLEVELS.watch, path);
  }

  /**
   * Stores the bytes of a small blob envelope (the local blob store keeps envelopes of at
   * most one chunk here instead of in files of their own). No event.
   */
  putEnvelope(blobId: string, bytes: Uint8Array): void {
    this.#open();
    assertKey(blobId, 'blobId');
    if (!(bytes instanceof Uint8Array)) throw new TypeError('envelope bytes must be a Uint8Array');
    this.#push({ op: { type: 'put', sublevel: SUBLEVELS.envelopes, key: blobId, value: bytes } });
  }

  deleteEnvelope(blobId: string): void {
    this.#open();
    assertKey(blobId, 'blobId');
    this.#del(SUBLEVELS.envelopes, blobId);
  }

  /**
   * Ends the orphan candidacy of `blobId` made at `at` (the sweep found its document
   * pointing at it, or no record); see `Store.listUnclaimed`.
   */
  claim(blobId: string, at: number): void {
    this.#open();
    assertKey(blobId, 'blobId');
    if (!Number.isSafeInteger(at)) throw new TypeError('at must be an integer');
    // Conditional: a document that stopped pointing at it since made it a candidate anew.
    this.#push({
      op: { type: 'del', sublevel: SUBLEVELS.unclaimed, key: blobId, ifValue: String(at) },
    });
  }

  /** Records that the daemon stopped cleanly; see `Store.openedAfterCleanStop`. */
  markCleanStop(): void {
    this.#open();
    this.#put(SUBLEVELS.meta, META_CLEAN_STOP, 'true');
  }

  /** Adds a numbered event; `seq` and `at` are assigned by the store. */
  event(data: EventInput): void {
    this.#open();
    if (!isPlainObject(data) || typeof data.kind !== 'string' || data.kind === '') {
      throw new TypeError('an event must be a plain object with a string kind');
    }
    const copy = JSON.parse(toJson(data, 'event')) as EventInput;
    this.#push({ event: copy });
  }

  /**
   * Drops every event kept so far (including earlier ones of this commit's group) and
   * starts a new epoch; seqs keep counting up.
   */
  resetEventLog(): void {
    this.#open();
    this.#push({ resetEvents: true });
  }

  #put(sublevel: SublevelName, key: string, value: string): void {
    this.#push({ op: { type: 'put', sublevel, key, value } });
  }

  #del(sublevel: SublevelName, key: string): void {
    this.#push({ op: { type: 'del', sublevel, key } });
  }

  #push(step: TxStep): void {
    this.steps.push(step);
  }

  #open(): void {
    if (this.#closed) throw new TypeError('the transaction is already committed');
  }
}

function contentJson(content: DocContent): string {
  if (!isPlainObject(content)) throw new TypeError('document content must be a plain object');
  return toJson(content, 'document content');
}
