import type { Readable } from 'node:stream';

/** Public attachment states: bit flags, SYNCED = LOCAL | REMOTE. */
export type PublicState = 0 | 1 | 2 | 3;

export type Priority = 'LOW' | 'MEDIUM' | 'HIGH' | 'URGENT';

/** A stored document as callers see it: decrypted content and its canonical revision text. */
export interface DocRecord {
  id: string;
  rev: string;
  content: Record<string, unknown>;
  deleted: boolean;
}

/** What the daemon knows about one attachment. */
export interface AttachmentInfo {
  blobId: string;
  docId: string | null;
  namespace: string;
  /** Envelope size in bytes (what is stored locally and on the server). */
  size: number;
  /** Plaintext size, when known. */
  plaintextSize: number | null;
  state: PublicState;
  /** The fine-grained machine state, e.g. `local.uploading`. */
  machineState: string;
  pinned: boolean;
  priority: Priority;
  attempts: number;
  lastError: { code: string; message: string } | null;
}

/** A numbered, durable event, written in the same batch as the change it reports. */
export type DaemonEvent =
  | {
      seq: number;
      type: 'attachment.state';
      at: number;
      blobId: string;
      docId: string | null;
      state: PublicState;
      machineState: string;
    }
  | { seq: number; type: 'doc.changed'; at: number; docId: string; rev: string; deleted: boolean };

/** Ephemeral transfer progress; not numbered, not logged. */
export interface TransferProgress {
  blobId: string;
  direction: 'upload' | 'download';
  bytes: number;
  total: number;
}

export type EventsAfter =
  | { kind: 'events'; epoch: string; events: DaemonEvent[] }
  | { kind: 'gap'; epoch: string; oldestSeq: number; latestSeq: number };

export interface DaemonStatus {
  deviceId: string;
  server: {
    url: string | null;
    reachable: boolean | null;
    paused: boolean;
    lastError: string | null;
  };
  queues: {
    uploadsQueued: number;
    uploadsRunning: number;
    downloadsQueued: number;
    downloadsRunning: number;
  };
  attachments: { local: number; remote: number; synced: number; failed: number; rejected: number };
  lastSync: { at: number; ok: boolean } | null;
  events: { epoch: string; latestSeq: number };
  /** The configured watch folders; `watching` is false for one that is missing. */
  watch: { path: string; watching: boolean }[];
}

/**
 * The daemon as a library: what the RPC binding exposes to other processes. Errors are
 * `DaemonError`s with a stable string `code` (`not_found`, `conflict`, `invalid_state`,
 * `integrity_error`, `remote_unavailable`, `unauthorized`, `too_large`, ...).
 */
export interface DaemonApi {
  createDoc(content: Record<string, unknown>, id?: string): Promise<DocRecord>;
  getDoc(id: string): Promise<DocRecord | undefined>;
  /** `rev` is the revision the change is based on; a stale one is a `conflict`. */
  putDoc(id: string, content: Record<string, unknown>, rev: string): Promise<DocRecord>;
  deleteDoc(id: string, rev: string): Promise<DocRecord>;
  listDocs(options?: { includeDeleted?: boolean }): Promise<DocRecord[]>;

  /**
   * Encrypts `source` into the local store and records the attachment (LOCAL, queued for
   * upload at MEDIUM). The document's pointer (`content.blob_id`) becomes durable when the
   * caller's `putDoc` commits it.
   */
  putAttachment(docId: string, source: Readable): Promise<AttachmentInfo>;
  getAttachmentInfo(blobId: string): Promise<AttachmentInfo | undefined>;
  /** Plaintext of a verified local copy; downloads it first (URGENT) when only remote. */
  openAttachment(blobId: string): Promise<Readable>;
  /** Resolves when the server holds the blob (state SYNCED); URGENT. */
  uploadAttachment(blobId: string): Promise<AttachmentInfo>;
  downloadAttachment(blobId: string): Promise<AttachmentInfo>;
  evictAttachment(blobId: string): Promise<AttachmentInfo>;
  pinAttachment(blobId: string): Promise<AttachmentInfo>;
  unpinAttachment(blobId: string): Promise<AttachmentInfo>;
  /** Removes the pointer from its document and deletes the blob locally and remotely. */
  deleteAttachment(docId: string, rev: string): Promise<DocRecord>;
  listAttachments(): Promise<AttachmentInfo[]>;

  sync(): Promise<{ uploaded: number; markedRemote: number; deleted: number }>;
  status(): Promise<DaemonStatus>;

  readEventsAfter(seq: number, limit?: number): Promise<EventsAfter>;
  /** Live events as they are committed; returns an unsubscribe function. */
  onEvent(listener: (event: DaemonEvent) => void): () => void;
  onProgress(listener: (progress: TransferProgress) => void): () => void;

  close(): Promise<void>;
}
