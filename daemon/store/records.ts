import type {
  AttachmentStateFlag,
  PersistedAttachmentSnapshot,
  Priority,
} from '../../machines/index.js';

/** JSON object content of a document. A `blob_id` field is its attachment pointer. */
export type DocContent = Record<string, unknown>;

/** A document as read from the store, decrypted. */
export interface Doc {
  id: string;
  /** Canonical version-vector text (see daemon/revision.ts). */
  rev: string;
  /** `null` for a deleted document (tombstone). */
  content: DocContent | null;
  deleted: boolean;
  /** Server generation of the last version seen from document sync; `null` if never. */
  lastSeenServerGeneration: number | null;
}

/** What a commit did to one document. */
export interface DocChange {
  id: string;
  rev: string;
  deleted: boolean;
}

/** Stored value of `doc!<docId>`. */
export interface StoredDoc {
  rev: string;
  /** DocumentSealer output in base64, bound to the doc id and `rev`; `null` when deleted. */
  sealed: string | null;
  deleted: boolean;
  lastSeenServerGeneration: number | null;
}

/** Stored value of `att!<blobId>`: the persisted machine snapshot and fields copied from it. */
export interface AttachmentRecord {
  blobId: string;
  docId: string;
  namespace: string;
  size: number;
  /** Dotted machine state, e.g. `local.retrying`. */
  state: string;
  publicState: AttachmentStateFlag;
  priority: Priority;
  attempts: number;
  pinned: boolean;
  /** Epoch ms of the last write. */
  updatedAt: number;
  snapshot: PersistedAttachmentSnapshot;
}

/** One entry of the `active` index: an attachment that is not settled. */
export interface ActiveAttachment {
  blobId: string;
  state: string;
}

/** Stored value of `watch!<path>`. */
export interface WatchEntry {
  docId: string;
  blobId: string | null;
  size: number;
  mtimeMs: number;
}

/** What a caller passes to `tx.event`: any JSON object with a string `kind`. */
export interface EventInput {
  kind: string;
  [key: string]: unknown;
}

/** A numbered event as stored and read back. */
export interface StoreEvent extends EventInput {
  seq: number;
  /** Epoch ms at which it was committed. */
  at: number;
}

export type ReadEventsResult =
  | { gap: false; epoch: string; events: StoreEvent[]; lastSeq: number }
  | {
      /** The caller missed events: it must re-read state, then continue from `lastSeq`. */
      gap: true;
      epoch: string;
      /** Oldest seq still kept (`lastSeq + 1` when the log is empty). */
      oldestSeq: number;
      lastSeq: number;
    };

/** What one commit did. */
export interface CommitResult {
  /** Seqs of the events it wrote, in the order they were added. */
  seqs: number[];
  docs: DocChange[];
}

/** Sublevel names; see docs/daemon-store.md. */
export const SUBLEVELS = {
  docs: 'doc',
  attachments: 'att',
  active: 'active',
  settings: 'setting',
  watch: 'watch',
  events: 'event',
  meta: 'meta',
  envelopes: 'envelope',
  unclaimed: 'unclaimed',
} as const;

export type SublevelName = (typeof SUBLEVELS)[keyof typeof SUBLEVELS];

const SEQ_DIGITS = 16;

/** Event keys are zero-padded decimals, so key order is numeric order. */
export function seqKey(seq: number): string {
  return String(seq).padStart(SEQ_DIGITS, '0');
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Ids used as keys: non-empty strings of at most 1024 characters. */
export function assertKey(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 1024) {
    throw new TypeError(`${what} must be a non-empty string of at most 1024 characters`);
  }
}

/** JSON text of `value`, or a TypeError naming `what` when it has no JSON form. */
export function toJson(value: unknown, what: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new TypeError(`${what} is not serialisable as JSON`, { cause });
  }
  if (text === undefined) throw new TypeError(`${what} is not serialisable as JSON`);
  return text;
}
