import { randomBytes } from 'node:crypto';
import { type FileHandle, link, mkdir, open, opendir, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { isValidId } from '../wire/ids.js';

export type LocalBlobErrorCode = 'exists' | 'not_found' | 'invalid_id' | 'closed';

/** A failure of the local blob store, matched on `code`. */
export class LocalBlobError extends Error {
  readonly code: LocalBlobErrorCode;

  constructor(code: LocalBlobErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LocalBlobError';
    this.code = code;
  }
}

/** Inclusive byte offsets, as in `fs.createReadStream` and HTTP ranges. */
export interface ReadRange {
  start?: number;
  end?: number;
}

export interface ReadOptions extends ReadRange {
  /** Bytes per read; default 1 MiB (large reads stream files much faster than 64 KiB). */
  highWaterMark?: number;
}

const TEMP_DIR = '.tmp';
const DEFAULT_READ_SIZE = 1024 * 1024;
/**
 * Bytes a writer gathers before writing them out in one `writev`: callers hand it 64 KiB
 * envelope chunks and 16-byte tags, and one write each made large blobs slow.
 */
const WRITE_GATHER_BYTES = 1024 * 1024;

/**
 * The device's store of blob envelopes: `DIR/{id[0..2]}/{id}`. It stores the bytes it is
 * given and never looks inside them.
 *
 * A blob becomes visible only complete and durable: bytes go to a temporary file in
 * `DIR/.tmp`, which is fsynced and then published with `link(2)`. Unlike `rename`, `link`
 * fails when the name exists, so of two writers of one id exactly one wins and a stored
 * blob is never replaced. The folder is fsynced before a write reports success.
 *
 * One store per folder: `open` deletes every temporary file it finds, which is only safe
 * when no other process writes there (the daemon holds its LevelDB lock for that).
 */
export class LocalBlobStore {
  readonly dir: string;
  readonly #tempDir: string;
  readonly #writers = new Set<LocalBlobWriter>();
  #closing: Promise<void> | undefined;

  private constructor(dir: string) {
    this.dir = dir;
    this.#tempDir = join(dir, TEMP_DIR);
  }

  /** Creates `dir` if needed and removes temporary files left by an earlier process. */
  static async open(dir: string): Promise<LocalBlobStore> {
    const store = new LocalBlobStore(dir);
    await mkdir(dir, { recursive: true });
    await rm(store.#tempDir, { recursive: true, force: true });
    await mkdir(store.#tempDir);
    return store;
  }

  /**
   * Opens a temporary file for `id`; nothing is visible until `commit()`. Fails with
   * `exists` when the blob is already stored (and `commit()` fails the same way if another
   * writer publishes it first).
   */
  async writer(id: string): Promise<LocalBlobWriter> {
    this.#checkOpen();
    const path = this.#path(id);
    if (await exists(path)) throw new LocalBlobError('exists', `blob ${id} is already stored`);
    const tempPath = join(this.#tempDir, `${id}.${randomBytes(8).toString('hex')}`);
    const handle = await open(tempPath, 'wx', 0o600);
    const writer = new LocalBlobWriter(id, handle, tempPath, path, () => {
      this.#writers.delete(writer);
    });
    this.#writers.add(writer);
    return writer;
  }

  // TODO: every envelope is a file of its own (two fsyncs), which caps small puts near
  // 600 per second; small envelopes could live in LevelDB beside their record.
  /**
   * Stores `source` as blob `id`, atomically. When `source` fails, its error is rethrown
   * and nothing is left behind.
   */
  async write(
    id: string,
    source: Readable | AsyncIterable<Uint8Array | string>,
  ): Promise<{ size: number }> {
    let writer: LocalBlobWriter;
    try {
      writer = await this.writer(id);
    } catch (error) {
      if (source instanceof Readable) source.destroy();
      throw error;
    }
    try {
      for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
        await writer.write(chunk);
      }
      return await writer.commit();
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  /**
   * The stored bytes of `id` (or an inclusive range of them); `not_found` when absent. The
   * caller reads the stream to its end or destroys it, which closes the file.
   */
  async createReadStream(id: string, options: ReadOptions = {}): Promise<Readable> {
    const { start, end, highWaterMark = DEFAULT_READ_SIZE } = options;
    checkOffset('start', start);
    checkOffset('end', end);
    if (start !== undefined && end !== undefined && end < start) {
      throw new RangeError(`range end ${end} is before its start ${start}`);
    }
    let handle: FileHandle;
    try {
      handle = await open(this.#path(id), 'r');
    } catch (error) {
      throw notFoundOr(error, id);
    }
    try {
      return handle.createReadStream({ start, end, highWaterMark, autoClose: true });
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Size in bytes of a stored blob; `not_found` when absent. */
  async size(id: string): Promise<number> {
    try {
      return (await stat(this.#path(id))).size;
    } catch (error) {
      throw notFoundOr(error, id);
    }
  }

  async has(id: string): Promise<boolean> {
    return exists(this.#path(id));
  }

  /** Removes a stored blob; true if it was there. */
  async delete(id: string): Promise<boolean> {
    // Not fsynced: a deletion lost in a crash leaves a blob that start-up sweeps away.
    try {
      await unlink(this.#path(id));
      return true;
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return false;
      throw error;
    }
  }

  /** Ids of every stored blob, in no particular order, read folder by folder. */
  async *list(): AsyncIterable<string> {
    for await (const shard of await opendir(this.dir)) {
      if (!shard.isDirectory() || shard.name === TEMP_DIR) continue;
      for await (const entry of await opendir(join(this.dir, shard.name))) {
        if (entry.isFile() && isValidId(entry.name) && entry.name.startsWith(shard.name)) {
          yield entry.name;
        }
      }
    }
  }

  /** Aborts writers still open; later calls to `writer`/`write` fail with `closed`. */
  close(): Promise<void> {
    this.#closing ??= Promise.all([...this.#writers].map((writer) => writer.abort())).then(
      () => undefined,
    );
    return this.#closing;
  }

  #checkOpen(): void {
    if (this.#closing) throw new LocalBlobError('closed', 'the local blob store is closed');
  }

  // TODO: on a case-insensitive filesystem, ids that differ only in case collide.
  #path(id: string): string {
    if (!isValidId(id)) throw new LocalBlobError('invalid_id', `invalid blob id ${String(id)}`);
    return join(this.dir, id.slice(0, 2), id);
  }
}

type WriterState = 'open' | 'committing' | 'committed' | 'aborted';

/**
 * A blob being written. `write` calls may overlap (each lands at its own offset); small
 * writes are gathered and written out together once 1 MiB is gathered (the caller must not
 * reuse a chunk it handed over). `commit` writes what is gathered, waits for every write,
 * makes the blob durable and visible. `abort` (idempotent) removes the temporary file; a
 * failed `commit` aborts by itself.
 */
export class LocalBlobWriter {
  readonly id: string;
  readonly #handle: FileHandle;
  readonly #tempPath: string;
  readonly #path: string;
  readonly #onDone: () => void;
  #state: WriterState = 'open';
  #size = 0;
  #pending = new Set<Promise<void>>();
  #gathered: Uint8Array[] = [];
  #gatheredBytes = 0;
  #failure: unknown;
  #aborting: Promise<void> | undefined;

  /** @internal Made by `LocalBlobStore.writer`. */
  constructor(id: string, handle: FileHandle, tempPath: string, path: string, onDone: () => void) {
    this.id = id;
    this.#handle = handle;
    this.#tempPath = tempPath;
    this.#path = path;
    this.#onDone = onDone;
  }

  /** Bytes accepted so far (including writes still in flight). */
  get size(): number {
    return this.#size;
  }

  /** Resolves once the chunk is written or gathered; rejects when a write failed. */
  write(chunk: Uint8Array | string): Promise<void> {
    if (this.#state !== 'open') {
      return Promise.reject(new LocalBlobError('closed', `writer of ${this.id} is ${this.#state}`));
    }
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.#size += bytes.byteLength;
    this.#gathered.push(bytes);
    this.#gatheredBytes += bytes.byteLength;
    if (this.#gatheredBytes < WRITE_GATHER_BYTES) return Promise.resolve();
    return this.#writeGathered();
  }

  /** Writes out the gathered chunks at their offset. */
  #writeGathered(): Promise<void> {
    if (this.#gatheredBytes === 0) return Promise.resolve();
    const buffers = this.#gathered;
    const position = this.#size - this.#gatheredBytes;
    this.#gathered = [];
    this.#gatheredBytes = 0;
    const done = writeAllAt(this.#handle, buffers, position);
    this.#pending.add(done);
    done.then(
      () => this.#pending.delete(done),
      (error: unknown) => {
        this.#failure ??= error;
        this.#pending.delete(done);
      },
    );
    return done;
  }

  /**
   * A Writable over `write`, for `stream.pipeline`. Ending it does not commit; destroying
   * it does not abort: the caller decides after the pipeline settled.
   */
  writable(): Writable {
    return new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        this.write(chunk).then(() => callback(), callback);
      },
    });
  }

  /** Makes the blob durable and visible; fails with `exists` if another writer won. */
  async commit(): Promise<{ size: number }> {
    if (this.#state !== 'open') {
      throw new LocalBlobError('closed', `writer of ${this.id} is ${this.#state}`);
    }
    this.#state = 'committing';
    let linked = false;
    try {
      this.#writeGathered().catch(() => undefined);
      await Promise.all(this.#pending);
      if (this.#failure !== undefined) throw this.#failure;
      await this.#handle.sync();
      await this.#handle.close();
      const shard = join(this.#path, '..');
      const created = await mkdir(shard, { recursive: true });
      if (created !== undefined) await syncDir(join(shard, '..'));
      try {
        await link(this.#tempPath, this.#path);
      } catch (error) {
        if (isErrno(error, 'EEXIST')) {
          throw new LocalBlobError('exists', `blob ${this.id} is already stored`, {
            cause: error,
          });
        }
        throw error;
      }
      linked = true;
      await syncDir(shard);
      this.#state = 'committed';
      this.#onDone();
      // The published name holds the bytes now; a leftover temp name is removed at next open.
      await unlink(this.#tempPath).catch(() => undefined);
      return { size: this.#size };
    } catch (error) {
      // Published but not durable (the folder fsync failed): withdraw it, report failure.
      if (linked) await unlink(this.#path).catch(() => undefined);
      this.#state = 'open';
      await this.abort();
      throw error;
    }
  }

  /** Drops the temporary file. Does nothing after a successful commit. */
  abort(): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'committing') return Promise.resolve();
    this.#aborting ??= (async () => {
      this.#state = 'aborted';
      this.#gathered = [];
      this.#gatheredBytes = 0;
      await Promise.allSettled(this.#pending);
      await this.#handle.close().catch(() => undefined);
      await rm(this.#tempPath, { force: true });
      this.#onDone();
    })();
    return this.#aborting;
  }
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let offset = 0;
  while (offset < bytes.byteLength) {
    const { bytesWritten } = await handle.write(
      bytes,
      offset,
      bytes.byteLength - offset,
      position + offset,
    );
    offset += bytesWritten;
  }
}

/** Writes `buffers` back to back from `position`, in one `writev` when it takes them all. */
async function writeAllAt(handle: FileHandle, buffers: Uint8Array[], position: number) {
  if (buffers.length === 1) return writeFully(handle, buffers[0]!, position);
  const total = buffers.reduce((sum, buffer) => sum + buffer.byteLength, 0);
  const { bytesWritten } = await handle.writev(buffers, position);
  if (bytesWritten < total) {
    const rest = Buffer.concat(buffers).subarray(bytesWritten);
    await writeFully(handle, rest, position + bytesWritten);
  }
}

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
}

function notFoundOr(error: unknown, id: string): unknown {
  if (isErrno(error, 'ENOENT')) {
    return new LocalBlobError('not_found', `blob ${id} is not stored`, { cause: error });
  }
  return error;
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

function checkOffset(name: string, value: number | undefined): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}
