import type { Readable } from 'node:stream';
import type { BlobFlag } from '../../wire/flags.js';

/** Addresses one blob. Every field has already passed `isValidId`. */
export interface BlobRef {
  user: string;
  namespace: string;
  id: string;
}

/** An inclusive byte range, already clamped to the blob's size. */
export interface ByteRange {
  start: number;
  end: number;
}

export type ListOrder = 'date' | '+date' | '-date';

export interface ListOptions {
  namespace: string;
  /** Upload time, oldest first for `date`/`+date`; ties broken by id. Unordered when absent. */
  orderBy?: ListOrder;
  /** List tombstones instead of live blobs. */
  deleted?: boolean;
  /** Only blobs whose flag set contains this flag. */
  filterFlag?: BlobFlag;
}

export interface WriteOptions {
  /** The user's quota in bytes; the write fails with `quota_exceeded` rather than pass it. */
  quota: number;
  /** Largest blob accepted; the write fails with `too_large` past it. */
  maxSize: number;
  /** When known (Content-Length, stream framing), lets the backend refuse early. */
  expectedSize?: number;
  /** Flags the blob carries from the moment it becomes visible (incoming box: PENDING). */
  flags?: BlobFlag[];
}

/**
 * An open blob: its size, and its requested bytes read in one of two ways, once. The caller
 * reads it with `pipeTo` or `stream()`, or releases it with `close()`.
 */
export interface OpenedBlob {
  size: number;
  /**
   * Hands the requested bytes to `sink` in order and resolves after the last one; rejects
   * with the sink's or the storage's error. A chunk is only valid until the promise `sink`
   * returned for it settles, since the backend may read the next bytes into the same
   * memory: a sink that keeps bytes must copy them. Releases the blob on every path.
   */
  pipeTo(sink: (chunk: Buffer) => Promise<void>): Promise<void>;
  /** The requested bytes as a stream, which owns the blob from then on (consume or destroy it). */
  stream(): Readable;
  /** Releases a blob that is not read. */
  close(): Promise<void>;
}

/**
 * Storage of blobs, flags and tombstones for many users. Routes talk only to this
 * interface, so that another implementation (S3-compatible storage with a database for
 * metadata) can replace the filesystem one. Failures are `BlobsError`s with the wire codes
 * `not_found`, `blob_exists`, `blob_deleted`, `quota_exceeded` and `too_large`; a body
 * stream that errors or ends early is rethrown as it is, after the write left nothing.
 *
 * Implementations must be safe under concurrent calls on the same blob: of concurrent
 * writes of one id exactly one succeeds, and a blob is invisible until its write completed.
 */
export interface BlobsBackend {
  /** Opens a live blob, optionally only the byte range `range`. */
  open(ref: BlobRef, range?: ByteRange): Promise<OpenedBlob>;
  /** Stores a new blob from `body`; atomic: on any failure nothing is stored or charged. */
  write(
    ref: BlobRef,
    body: AsyncIterable<Buffer>,
    options: WriteOptions,
  ): Promise<{ size: number }>;
  /**
   * Deletes a live blob and leaves a tombstone; frees its bytes at once. An id that is not
   * live but announced (`announceUploads`) is tombstoned too, so that its upload fails
   * with `blob_deleted` however late its body arrives; any other missing id is `not_found`.
   */
  delete(ref: BlobRef): Promise<void>;
  /**
   * Announces uploads on their way (a PUT, or every id of a `/stream` manifest) before
   * their bodies arrive; call the returned function once they are over. A deletion is
   * thus never overtaken by an upload that was already in flight when it came.
   */
  announceUploads(refs: readonly BlobRef[]): () => void;
  /** Size in bytes of a live blob. */
  size(ref: BlobRef): Promise<number>;
  /** Number of live blobs (or tombstones) matching `options`. */
  count(user: string, options: ListOptions): Promise<number>;
  /** Ids of live blobs (or tombstones) matching `options`. */
  list(user: string, options: ListOptions): Promise<string[]>;
  getFlags(ref: BlobRef): Promise<BlobFlag[]>;
  /** Replaces the flag set of a live blob. */
  setFlags(ref: BlobRef, flags: BlobFlag[]): Promise<void>;
  /** Exact byte count of the user's live blobs, in every namespace. */
  usage(user: string): Promise<number>;
  /** Waits for in-flight writes to finish or roll back, then releases every resource. */
  close(): Promise<void>;
}
