import { EventEmitter } from 'node:events';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { type EndpointResolver, RpcTransport } from './client-transport.js';
import type {
  AttachmentInfo,
  DaemonEvent,
  DaemonStatus,
  DocRecord,
  EventsAfter,
  GapNotice,
  PublicState,
  Subscribed,
  SyncResult,
  TransferProgress,
} from './methods.js';
import {
  DEFAULT_RPC_URL,
  defaultConfigDir,
  RPC_INFO_FILE,
  RPC_TOKEN_FILE,
  readRpcInfo,
} from './rpc-paths.js';
import { readToken } from './rpc-token.js';
import { SoledadError } from './soledad-error.js';

const RENEW_RETRY_MS = 1000;

export type {
  AttachmentInfo,
  DaemonEvent,
  DaemonStatus,
  DocRecord,
  GapNotice,
  Subscribed,
  SyncResult,
  TransferProgress,
} from './methods.js';
export { SoledadError } from './soledad-error.js';

/** Public attachment states: bit flags, SYNCED = LOCAL | REMOTE. */
export const AttachmentState = { NONE: 0, LOCAL: 1, REMOTE: 2, SYNCED: 3 } as const;
export type AttachmentState = PublicState;

/** What an attachment can be read from: a stream, bytes, or the path of a file. */
export type AttachmentSource = Readable | AsyncIterable<Uint8Array> | Uint8Array | string;

export interface ConnectOptions {
  /** Default: `url` from `rpc.json` in the config folder, else ws://127.0.0.1:2426. */
  url?: string;
  /** Default: read from `tokenFile`. */
  token?: string;
  /** Default: `rpc-token` in the config folder. */
  tokenFile?: string;
  /** Default: `$XDG_CONFIG_HOME/soledad` or `~/.config/soledad`. */
  configDir?: string;
  /** Reconnect (and resubscribe) after the connection drops. Default true. */
  reconnect?: boolean;
}

export interface SubscribeOptions {
  /** Replay the kept events after this seq first; default: only events from now on. */
  after?: number;
  /** The epoch `after` belongs to; a different daemon epoch means a `reset` gap. */
  epoch?: string;
  /** Also receive ephemeral transfer progress. Default false. */
  progress?: boolean;
}

export interface SoledadEvents {
  /** A numbered state or document change, in seq order, never twice. */
  event: [event: DaemonEvent];
  progress: [progress: TransferProgress];
  /** Events were lost (`trimmed` or `reset`): re-read the state you care about. */
  gap: [notice: GapNotice];
  disconnect: [error: SoledadError];
  /** Connected again; a subscription has been renewed from the last seq seen. */
  reconnect: [];
  /** Renewing a subscription failed; it is retried while connected. */
  renewError: [error: SoledadError];
}

/**
 * A connection to the Soledad daemon: documents, their attachments and events.
 *
 * @example
 * const soledad = await Soledad.connect();
 * const doc = await soledad.createDoc({});
 * await doc.putAttachment(createReadStream('hackers.txt'));
 * await soledad.putDoc(doc);
 * await doc.uploadAttachment(); // AttachmentState.SYNCED
 */
export class Soledad extends EventEmitter<SoledadEvents> {
  readonly #transport: RpcTransport;
  #subscription: { progress: boolean } | undefined;
  #lastSeq: number | undefined;
  #epoch: string | undefined;
  #renewing: Promise<void> | undefined;

  private constructor(transport: RpcTransport) {
    super();
    this.#transport = transport;
    transport.on('notification', (method, params) => this.#onNotification(method, params));
    transport.on('disconnect', (error) => this.emit('disconnect', error));
    transport.on('reconnect', () => {
      this.#renew().then(() => this.emit('reconnect'));
    });
  }

  /**
   * Connects to the daemon. Rejects with a `SoledadError`: `daemon_not_running`,
   * `rpc_unauthorized` (wrong token) or `rpc_forbidden`.
   */
  static async connect(options: ConnectOptions = {}): Promise<Soledad> {
    const transport = await RpcTransport.connect({
      endpoint: endpointResolver(options),
      reconnect: options.reconnect ?? true,
    });
    return new Soledad(transport);
  }

  get url(): string {
    return this.#transport.url;
  }

  /** The seq of the last event delivered (or skipped past by a gap). */
  get lastSeq(): number | undefined {
    return this.#lastSeq;
  }

  get epoch(): string | undefined {
    return this.#epoch;
  }

  async createDoc(content: Record<string, unknown> = {}, id?: string): Promise<Document> {
    const record = await this.#transport.request('doc.create', {
      content,
      ...(id === undefined ? {} : { id }),
    });
    return new Document(this, record);
  }

  /** The stored document, deleted or not; undefined when there is none. */
  async getDoc(id: string): Promise<Document | undefined> {
    const record = await this.#transport.request('doc.get', { id });
    return record === null ? undefined : new Document(this, record);
  }

  /** Stores `doc.content` on top of `doc.rev`; updates and returns the new revision. */
  async putDoc(doc: Document): Promise<string> {
    const record = await this.#transport.request('doc.put', {
      id: doc.id,
      rev: doc.rev,
      content: doc.content,
    });
    doc._update(record);
    return record.rev;
  }

  async deleteDoc(doc: Document): Promise<string> {
    const record = await this.#transport.request('doc.delete', { id: doc.id, rev: doc.rev });
    doc._update(record);
    return record.rev;
  }

  async listDocs(options: { includeDeleted?: boolean } = {}): Promise<Document[]> {
    const records = await this.#transport.request('doc.list', options);
    return records.map((record) => new Document(this, record));
  }

  /** Streams `source` into the local store as the attachment of `docId`. */
  async storeAttachment(docId: string, source: AttachmentSource): Promise<AttachmentInfo> {
    return this.#transport.upload(docId, toAsyncIterable(source));
  }

  /** The plaintext of an attachment; fetched from the server first when only remote. */
  async openAttachment(blobId: string): Promise<Readable> {
    return (await this.#transport.download(blobId)).stream;
  }

  /** Like `openAttachment`, with the plaintext size when the daemon knows it. */
  async openAttachmentWithSize(blobId: string): Promise<{ stream: Readable; size: number | null }> {
    return this.#transport.download(blobId);
  }

  async getAttachmentInfo(blobId: string): Promise<AttachmentInfo | undefined> {
    return (await this.#transport.request('attachment.info', { blobId })) ?? undefined;
  }

  uploadAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#transport.request('attachment.upload', { blobId });
  }

  downloadAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#transport.request('attachment.download', { blobId });
  }

  evictAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#transport.request('attachment.evict', { blobId });
  }

  pinAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#transport.request('attachment.pin', { blobId });
  }

  unpinAttachment(blobId: string): Promise<AttachmentInfo> {
    return this.#transport.request('attachment.unpin', { blobId });
  }

  /** Removes the attachment of the stored document `docId` at revision `rev`. */
  deleteAttachment(docId: string, rev: string): Promise<DocRecord> {
    return this.#transport.request('attachment.delete', { docId, rev });
  }

  listAttachments(): Promise<AttachmentInfo[]> {
    return this.#transport.request('attachment.list', {});
  }

  sync(): Promise<SyncResult> {
    return this.#transport.request('sync.run', {});
  }

  status(): Promise<DaemonStatus> {
    return this.#transport.request('daemon.status', {});
  }

  readEventsAfter(after: number, limit?: number): Promise<EventsAfter> {
    return this.#transport.request('events.after', {
      after,
      ...(limit === undefined ? {} : { limit }),
    });
  }

  /**
   * Starts receiving `event` (and `progress`) emits. After a reconnect, or when the
   * daemon cut this client off for reading too slowly, the subscription is renewed from
   * the last seq seen, so no event is missed or repeated; when the daemon no longer keeps
   * them, `gap` is emitted instead.
   */
  async subscribe(options: SubscribeOptions = {}): Promise<Subscribed> {
    this.#subscription = { progress: options.progress ?? false };
    this.#transport.holdOpen = true;
    if (options.after !== undefined) this.#lastSeq = options.after;
    if (options.epoch !== undefined) this.#epoch = options.epoch;
    const result = await this.#transport.request('events.subscribe', {
      progress: this.#subscription.progress,
      ...(options.after === undefined ? {} : { after: options.after }),
      ...(options.epoch === undefined ? {} : { epoch: options.epoch }),
    });
    this.#accept(result);
    return result;
  }

  async unsubscribe(): Promise<void> {
    this.#subscription = undefined;
    this.#transport.holdOpen = false;
    if (this.#transport.connected) await this.#transport.request('events.unsubscribe', {});
  }

  /** Closes the connection; pending calls reject with `disconnected`. */
  async close(): Promise<void> {
    this.#subscription = undefined;
    this.#transport.holdOpen = false;
    await this.#transport.close();
  }

  /** Events that arrived before the response may already be past `latestSeq`. */
  #accept(result: Subscribed): void {
    this.#epoch = result.epoch;
    this.#lastSeq = Math.max(this.#lastSeq ?? result.latestSeq, result.latestSeq);
  }

  /** Renews the subscription from the last seq seen; one renewal at a time. */
  #renew(): Promise<void> {
    this.#renewing ??= (async () => {
      try {
        const subscription = this.#subscription;
        if (subscription === undefined || !this.#transport.connected) return;
        const result = await this.#transport.request('events.subscribe', {
          progress: subscription.progress,
          ...(this.#lastSeq === undefined ? {} : { after: this.#lastSeq }),
          ...(this.#epoch === undefined ? {} : { epoch: this.#epoch }),
        });
        this.#accept(result);
      } catch (err) {
        this.emit('renewError', err as SoledadError);
        if (this.#transport.connected) {
          setTimeout(() => void this.#renew(), RENEW_RETRY_MS).unref();
        }
      } finally {
        this.#renewing = undefined;
      }
    })();
    return this.#renewing;
  }

  #onNotification(method: string, params: unknown): void {
    if (this.#subscription === undefined) return;
    if (method === 'events.event') {
      const event = params as DaemonEvent;
      if (this.#lastSeq !== undefined && event.seq <= this.#lastSeq) return;
      this.#lastSeq = event.seq;
      this.emit('event', event);
    } else if (method === 'events.progress') {
      this.emit('progress', params as TransferProgress);
    } else if (method === 'events.gap') {
      const gap = params as GapNotice;
      if (gap.reason === 'overflow') {
        void this.#renew();
        return;
      }
      this.#epoch = gap.epoch;
      this.#lastSeq = gap.latestSeq;
      this.emit('gap', gap);
    }
  }
}

/**
 * A document as the daemon stored it, plus local edits to `content` not yet put.
 * Attachment methods use `content.blob_id`, the pointer to the attachment.
 */
export class Document {
  readonly id: string;
  rev: string;
  content: Record<string, unknown>;
  deleted: boolean;
  readonly #soledad: Soledad;

  constructor(soledad: Soledad, record: DocRecord) {
    this.#soledad = soledad;
    this.id = record.id;
    this.rev = record.rev;
    this.content = record.content;
    this.deleted = record.deleted;
  }

  /** The attachment pointer in the (possibly unsaved) content. */
  get blobId(): string | undefined {
    const blobId = this.content.blob_id;
    return typeof blobId === 'string' ? blobId : undefined;
  }

  /**
   * Stores the bytes of `source` (a stream, bytes, or a file path) as this document's new
   * attachment and points `content.blob_id` at it. The pointer is durable only after
   * `soledad.putDoc(doc)`; until then `isDirty()` is true.
   */
  async putAttachment(source: AttachmentSource): Promise<AttachmentInfo> {
    const info = await this.#soledad.storeAttachment(this.id, source);
    this.content.blob_id = info.blobId;
    return info;
  }

  /** The attachment's plaintext; rejects with `not_found` when nothing is attached. */
  async getAttachment(): Promise<Readable> {
    return this.#soledad.openAttachment(this.#requireBlobId());
  }

  /**
   * Removes the attachment: the stored document loses its pointer (a new revision) and
   * the blob is deleted locally and remotely. Other unsaved edits to `content` stay
   * unsaved. An attachment put but never committed with `putDoc` is only dropped from
   * `content`.
   */
  async deleteAttachment(): Promise<void> {
    const blobId = this.#requireBlobId();
    const stored = await this.#soledad.getDoc(this.id);
    if (stored?.blobId !== blobId) {
      // TODO: an uncommitted blob is left to the daemon's start-up sweep of unreferenced blobs.
      delete this.content.blob_id;
      return;
    }
    const record = await this.#soledad.deleteAttachment(this.id, this.rev);
    this._update(record);
    delete this.content.blob_id;
  }

  /** NONE when nothing is attached (or the daemon knows nothing of it). */
  async getAttachmentState(): Promise<AttachmentState> {
    const blobId = this.blobId;
    if (blobId === undefined) return AttachmentState.NONE;
    const info = await this.#soledad.getAttachmentInfo(blobId);
    return info?.state ?? AttachmentState.NONE;
  }

  /** True when `content` differs from the stored content (or nothing is stored). */
  async isDirty(): Promise<boolean> {
    const stored = await this.#soledad.getDoc(this.id);
    return stored === undefined || !isDeepStrictEqual(stored.content, this.content);
  }

  /** Uploads now; resolves with the state (SYNCED), or NONE when nothing is attached. */
  uploadAttachment(): Promise<AttachmentState> {
    return this.#withBlob((blobId) => this.#soledad.uploadAttachment(blobId));
  }

  /** Downloads now; resolves with the state, or NONE when nothing is attached. */
  downloadAttachment(): Promise<AttachmentState> {
    return this.#withBlob((blobId) => this.#soledad.downloadAttachment(blobId));
  }

  /** Drops the local copy; refused (`invalid_state`) unless the server holds it. */
  evictAttachment(): Promise<AttachmentState> {
    return this.#withBlob((blobId) => this.#soledad.evictAttachment(blobId));
  }

  pinAttachment(): Promise<AttachmentState> {
    return this.#withBlob((blobId) => this.#soledad.pinAttachment(blobId));
  }

  unpinAttachment(): Promise<AttachmentState> {
    return this.#withBlob((blobId) => this.#soledad.unpinAttachment(blobId));
  }

  /** @internal Takes the revision and flags of a record the daemon returned. */
  _update(record: DocRecord): void {
    this.rev = record.rev;
    this.deleted = record.deleted;
  }

  async #withBlob(action: (blobId: string) => Promise<AttachmentInfo>): Promise<AttachmentState> {
    const blobId = this.blobId;
    if (blobId === undefined) return AttachmentState.NONE;
    return (await action(blobId)).state;
  }

  #requireBlobId(): string {
    const blobId = this.blobId;
    if (blobId === undefined) {
      throw new SoledadError('not_found', `document ${this.id} has no attachment`);
    }
    return blobId;
  }
}

function toAsyncIterable(source: AttachmentSource): AsyncIterable<unknown> {
  if (typeof source === 'string') return createReadStream(source, { highWaterMark: 1024 * 1024 });
  if (source instanceof Uint8Array) return Readable.from([source]);
  return source;
}

/** Explicit options first, then the config folder's files, then the defaults. */
function endpointResolver(options: ConnectOptions): EndpointResolver {
  const configDir = options.configDir ?? defaultConfigDir();
  const tokenFile = options.tokenFile ?? join(configDir, RPC_TOKEN_FILE);
  return async () => {
    const url =
      options.url ?? (await readRpcInfo(join(configDir, RPC_INFO_FILE)))?.url ?? DEFAULT_RPC_URL;
    if (options.token !== undefined) return { url, token: options.token };
    try {
      return { url, token: await readToken(tokenFile) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      throw new SoledadError(
        'daemon_not_running',
        `no RPC token at ${tokenFile}: the daemon has never started with this config folder`,
        { cause: err },
      );
    }
  };
}
