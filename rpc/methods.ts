import { z } from 'zod';
import type {
  AttachmentInfo,
  DaemonEvent,
  DaemonStatus,
  DocRecord,
  EventsAfter,
  TransferProgress,
} from '../daemon/daemon-api.js';
import { ID_PATTERN } from '../wire/ids.js';
import { MAX_STREAM_WINDOW, MIN_STREAM_WINDOW } from './stream-frames.js';

export type {
  AttachmentInfo,
  DaemonEvent,
  DaemonStatus,
  DocRecord,
  EventsAfter,
  PublicState,
  TransferProgress,
} from '../daemon/daemon-api.js';

/**
 * One entry of the method table: the zod schema of the by-name params and, as a
 * compile-time marker only, the type of the result.
 */
export interface MethodSpec<P extends z.ZodType = z.ZodType, R = unknown> {
  readonly summary: string;
  readonly params: P;
  /** Never set at runtime; carries the result type for both ends. */
  readonly result?: R;
}

function method<P extends z.ZodType, R>(summary: string, params: P, _result: R): MethodSpec<P, R> {
  return { summary, params };
}

/** A phantom value standing for a result type in the table below. */
function returns<T>(): T {
  return undefined as T;
}

const id = z.string().regex(ID_PATTERN, 'must be 1 to 128 letters, digits, "-" or "_"');
const rev = z.string().min(1).max(4096);
const content = z.record(z.string(), z.unknown());
const seq = z.number().int().min(0);
const streamId = z.number().int().min(1).max(0xffff_ffff);
const byteCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const blobParams = z.strictObject({ blobId: id });
const none = z.strictObject({});

/** Result of `attachment.get`, sent before the first byte of the stream. */
export interface DownloadOpened {
  /** Plaintext size in bytes when the daemon knows it. */
  size: number | null;
}

/** Result of `events.subscribe`: where the live stream starts. */
export interface Subscribed {
  epoch: string;
  /** The last seq delivered (or skipped by a gap notice) before this response. */
  latestSeq: number;
}

export interface SyncResult {
  uploaded: number;
  markedRemote: number;
  deleted: number;
}

/**
 * Every JSON-RPC method the daemon serves, grouped by noun. The client library and the
 * daemon binding both read this table; it depends on nothing but zod and wire/.
 */
export const METHODS = {
  'doc.create': method(
    'Creates a document; a new random id unless `id` is given.',
    z.strictObject({ content: content.default({}), id: id.optional() }),
    returns<DocRecord>(),
  ),
  'doc.get': method(
    'Reads a document (deleted ones too); null when there is none.',
    z.strictObject({ id }),
    returns<DocRecord | null>(),
  ),
  'doc.put': method(
    'Replaces the content of a document; `rev` is the revision the change is based on.',
    z.strictObject({ id, rev, content }),
    returns<DocRecord>(),
  ),
  'doc.delete': method(
    'Marks a document deleted; `rev` is the revision the change is based on.',
    z.strictObject({ id, rev }),
    returns<DocRecord>(),
  ),
  'doc.list': method(
    'Lists documents, without deleted ones unless asked.',
    z.strictObject({ includeDeleted: z.boolean().default(false) }),
    returns<DocRecord[]>(),
  ),

  'attachment.put': method(
    'Opens an upload stream (see "Streams"); resolves once the daemon stored the bytes.',
    z.strictObject({ docId: id, streamId }),
    returns<AttachmentInfo>(),
  ),
  'attachment.get': method(
    'Opens a download stream of the plaintext, fetching the blob first if only remote.',
    z.strictObject({
      blobId: id,
      streamId,
      window: z.number().int().min(MIN_STREAM_WINDOW).max(MAX_STREAM_WINDOW),
    }),
    returns<DownloadOpened>(),
  ),
  'attachment.info': method(
    'Reads what the daemon knows about one attachment; null when nothing.',
    blobParams,
    returns<AttachmentInfo | null>(),
  ),
  'attachment.upload': method(
    'Uploads now (URGENT); resolves when the server holds the blob.',
    blobParams,
    returns<AttachmentInfo>(),
  ),
  'attachment.download': method(
    'Downloads now (URGENT); resolves when a verified local copy exists.',
    blobParams,
    returns<AttachmentInfo>(),
  ),
  'attachment.evict': method(
    'Drops the local copy; refused unless the server holds the blob, or when pinned.',
    blobParams,
    returns<AttachmentInfo>(),
  ),
  'attachment.pin': method(
    'Keeps a local copy, downloading it if needed.',
    blobParams,
    returns<AttachmentInfo>(),
  ),
  'attachment.unpin': method('Removes the pin.', blobParams, returns<AttachmentInfo>()),
  'attachment.delete': method(
    'Removes the pointer from the document and deletes the blob locally and remotely.',
    z.strictObject({ docId: id, rev }),
    returns<DocRecord>(),
  ),
  'attachment.list': method('Lists every attachment record.', none, returns<AttachmentInfo[]>()),

  'sync.run': method('Runs remote sync now.', none, returns<SyncResult>()),
  'daemon.status': method('Summarises the daemon.', none, returns<DaemonStatus>()),

  'events.subscribe': method(
    'Subscribes this connection to events; with `after`, first replays the kept ones.',
    z.strictObject({
      after: seq.optional(),
      epoch: z.string().min(1).max(256).optional(),
      progress: z.boolean().default(false),
    }),
    returns<Subscribed>(),
  ),
  'events.unsubscribe': method('Ends the subscription of this connection.', none, returns<true>()),
  'events.after': method(
    'Reads kept events after `after` (at most `limit`), or a gap.',
    z.strictObject({ after: seq, limit: z.number().int().min(1).max(10_000).default(1000) }),
    returns<EventsAfter>(),
  ),

  'stream.credit': method(
    'Receiver of a download: the sender may have sent up to `limit` bytes in all.',
    z.strictObject({ streamId, limit: byteCount }),
    returns<true>(),
  ),
  'stream.end': method(
    'Sender of an upload: every byte has been sent.',
    z.strictObject({ streamId }),
    returns<true>(),
  ),
  'stream.cancel': method(
    'Abandons a stream in either direction; the daemon stores nothing of an upload.',
    z.strictObject({ streamId, reason: z.string().max(1000).optional() }),
    returns<true>(),
  ),
} as const;

export type Methods = typeof METHODS;
export type MethodName = keyof Methods;
/** Params as a caller writes them (defaults optional). */
export type ParamsIn<M extends MethodName> = z.input<Methods[M]['params']>;
/** Params after validation (defaults filled in). */
export type ParamsOut<M extends MethodName> = z.output<Methods[M]['params']>;
export type ResultOf<M extends MethodName> =
  Methods[M] extends MethodSpec<z.ZodType, infer R> ? R : never;

export function isMethodName(name: string): name is MethodName {
  return Object.hasOwn(METHODS, name);
}

/** Why a subscriber is told it may have missed events. */
export type GapReason = 'overflow' | 'trimmed' | 'reset';

/**
 * `overflow`: this connection fell too far behind; its live stream has stopped after
 * `afterSeq`. Subscribe again with `after: afterSeq` to resume without loss.
 * `trimmed` / `reset`: events after `afterSeq` up to `latestSeq` are no longer kept (the
 * log was trimmed, or reset under a new `epoch`): re-read state. Live events after
 * `latestSeq` follow on the same subscription.
 */
export interface GapNotice {
  reason: GapReason;
  epoch: string;
  afterSeq: number;
  latestSeq: number;
}

/** Payload of `stream.error`. */
export interface StreamErrorNotice {
  streamId: number;
  error: { code: string; message: string };
}

/** Notifications the daemon sends; clients send none of these. */
export interface Notifications {
  'events.event': DaemonEvent;
  'events.progress': TransferProgress;
  'events.gap': GapNotice;
  /** Receiver of an upload (the daemon): the client may have sent up to `limit` bytes. */
  'stream.credit': { streamId: number; limit: number };
  /** Sender of a download: the last byte went out before this notice. */
  'stream.end': { streamId: number; bytes: number };
  /** The stream failed on the daemon's side; no more bytes follow. */
  'stream.error': StreamErrorNotice;
}

export type NotificationName = keyof Notifications;
