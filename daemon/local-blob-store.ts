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

/**
 * Where envelopes of at most `maxBytes` live instead of in files of their own: the daemon
 * keeps them in its LevelDB, where a write costs a share of a group commit instead of a
 * file's create, two fsyncs and a link. `put` resolves once the bytes are durable.
 */
export interface SmallEnvelopeStore {
  readonly maxBytes: number;
  get(id: string): Promise<Uint8Array | undefined>;
  put(id: string, bytes: Uint8Array): Promise<void>;
  delete(id: string): Promise<void>;
  ids(): AsyncIterable<string>;
}

export interface WriteOptions {
  /**
   * The caller made `id` just now (a random UUID), so no stored blob can have it: the
   * existence checks are skipped (`link` still never replaces a file).
   */
  fresh?: boolean;
  /**
   * A small envelope is not stored but handed back (`WriteResult.small`): the caller stores
   * it in the same commit as its record (`Transaction.putEnvelope`), which saves a commit
   * and makes the two atomic. Only with `fresh`, since nothing then checks the id.
   */
  deferSmall?: boolean;
}

export interface WriteResult {
  size: number;
  /** With `deferSmall`: the bytes of a small envelope, which the caller must store. */
  small?: Uint8Array;
}

export interface LocalBlobStoreOptions {
  /** Keeps envelopes up to its `maxBytes` there; without it every envelope is a file. */
  small?: SmallEnvelopeStore;
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
 * envelope chunks and 16-byte tags, and one write each made large blobs slow; 256 KiB is
 * about as fast as 1 MiB and holds a quarter of the memory per writer.
 */
const WRITE_GATHER_BYTES = 256 * 1024;

/**
 * The device's store of blob envelopes: `DIR/{id[0..2]}/{id}`, and envelopes small enough
 * for the `small` store there instead. It stores the bytes it is given and never looks
 * inside them.
 *
 * A blob becomes visible only complete and durable. A large one goes to a temporary file
 * in `DIR/.tmp`, which is fsynced and then published with `link(2)`. Unlike `rename`,
 * `link` fails when the name exists, so of two writers of one id exactly one wins and a
 * stored blob is never replaced. The folder is fsynced before a write reports success. A
 * small one is gathered in memory (at most `small.maxBytes`) and put in one durable write.
 * Publishing an id is exclusive within the process, and checks both places first.
 *
 * One store per folder: `open` deletes every temporary file it finds, which is only safe
 * when no other process writes there (the daemon holds its LevelDB lock for that).
 */
export class LocalBlobStore {
  readonly dir: string;
  readonly #tempDir: string;
  readonly #small: SmallEnvelopeStore | undefined;
  readonly #writers = new Set<LocalBlobWriter>();
  /** Ids being published right now, by any writer. */
  readonly #publishing = new Set<string>();
  #closing: Promise<void> | undefined;

  private constructor(dir: string, options: LocalBlobStoreOptions) {
    this.dir = dir;
    this.#tempDir = join(dir, TEMP_DIR);
    this.#small = options.small;
  }

  /** Creates `dir` if needed and removes temporary files left by an earlier process. */
  static async open(dir: string, options: LocalBlobStoreOptions = {}): Promise<LocalBlobStore> {
    const store = new LocalBlobStore(dir, options);
    await mkdir(dir, { recursive: true });
    await rm(store.#tempDir, { recursive: true, force: true });
    await mkdir(store.#tempDir);
    return store;
  }

  /**
   * A writer for `id`; nothing is visible until `commit()`. The temporary file is opened
   * only once the bytes outgrow the small store. Fails with `exists` when the blob is
   * already stored (and `commit()` fails the same way if another writer publishes it first).
   */
  async writer(
    id: string,
    { fresh = false, deferSmall = false }: WriteOptions = {},
  ): Promise<LocalBlobWriter> {
    this.#checkOpen();
    if (deferSmall && !fresh) throw new TypeError('deferSmall needs fresh');
    const path = this.#path(id);
    if (!fresh && (await this.has(id))) {
      throw new LocalBlobError('exists', `blob ${id} is already stored`);
    }
    const writer = new LocalBlobWriter(id, {
      path,
      tempPath: join(this.#tempDir, `${id}.${randomBytes(8).toString('hex')}`),
      smallMaxBytes: this.#small?.maxBytes ?? -1,
      deferSmall,
      publish: (kind, action) => this.#publish(id, kind, fresh, action),
      onDone: () => {
        this.#writers.delete(writer);
      },
    });
    this.#writers.add(writer);
    return writer;
  }

  /**
   * Runs `action` (which makes `id` visible) unless another writer of `id` is publishing
   * or the other kind of copy already exists.
   */
  async #publish(
    id: string,
    kind: 'file' | 'small',
    fresh: boolean,
    action: (small: SmallEnvelopeStore | undefined) => Promise<void>,
  ): Promise<void> {
    if (this.#publishing.has(id)) {
      throw new LocalBlobError('exists', `blob ${id} is being stored by another writer`);
    }
    this.#publishing.add(id);
    try {
      // A file's own name is checked by `link`; everything else here.
      const taken =
        !fresh &&
        ((await this.#small?.get(id)) !== undefined ||
          (kind === 'small' && (await exists(this.#path(id)))));
      if (taken) throw new LocalBlobError('exists', `blob ${id} is already stored`);
      await action(this.#small);
    } finally {
      this.#publishing.delete(id);
    }
  }

  /**
   * Stores `source` as blob `id`, atomically. When `source` fails, its error is rethrown
   * and nothing is left behind.
   */
  async write(
    id: string,
    source: Readable | AsyncIterable<Uint8Array | string>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    let writer: LocalBlobWriter;
    try {
      writer = await this.writer(id, options);
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
    const small = await this.#small?.get(id);
    if (small !== undefined) {
      const bytes = Buffer.from(small.buffer, small.byteOffset, small.byteLength);
      const slice = bytes.subarray(start ?? 0, end === undefined ? undefined : end + 1);
      return Readable.from(slice.length > 0 ? [slice] : [], { objectMode: false });
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
    const small = await this.#small?.get(id);
    if (small !== undefined) return small.byteLength;
    try {
      return (await stat(this.#path(id))).size;
    } catch (error) {
      throw notFoundOr(error, id);
    }
  }

  async has(id: string): Promise<boolean> {
    const path = this.#path(id);
    return (await this.#small?.get(id)) !== undefined || exists(path);
  }

  /** Removes a stored blob; true if it was there. */
  async delete(id: string): Promise<boolean> {
    const path = this.#path(id);
    if (this.#small !== undefined && (await this.#small.get(id)) !== undefined) {
      await this.#small.delete(id);
      return true;
    }
    // Not fsynced: a deletion lost in a crash leaves a blob that start-up sweeps away.
    try {
      await unlink(path);
      return true;
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return false;
      throw error;
    }
  }

  /** Ids of every stored blob, in no particular order: the small store's, then the files'. */
  async *list(): AsyncIterable<string> {
    if (this.#small !== undefined) yield* this.#small.ids();
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

/** @internal What `LocalBlobStore.writer` hands a writer. */
export interface WriterPlan {
  path: string;
  tempPath: string;
  /** Envelopes up to this size go to the small store; -1 when there is none. */
  smallMaxBytes: number;
  /** A small envelope is handed back by `commit` instead of stored (`WriteOptions.deferSmall`). */
  deferSmall?: boolean;
  publish(
    kind: 'file' | 'small',
    action: (small: SmallEnvelopeStore | undefined) => Promise<void>,
  ): Promise<void>;
  onDone(): void;
}

/**
 * A blob being written. `write` calls may overlap (each lands at its own offset); small
 * writes are gathered and written out together once 256 KiB is gathered (the caller must not
 * reuse a chunk it handed over), so the temporary file is opened only when there is that
 * much. `commit` puts a blob of at most `smallMaxBytes` in the small store; otherwise it
 * writes what is gathered, waits for every write, makes the file durable and links it into
 * place. `abort` (idempotent) removes the temporary file; a failed `commit` aborts by itself.
 */
export class LocalBlobWriter {
  readonly id: string;
  readonly #plan: WriterPlan;
  #handle: Promise<FileHandle> | undefined;
  #state: WriterState = 'open';
  #size = 0;
  #pending = new Set<Promise<void>>();
  #gathered: Uint8Array[] = [];
  #gatheredBytes = 0;
  #failure: unknown;
  #aborting: Promise<void> | undefined;

  /** @internal Made by `LocalBlobStore.writer`. */
  constructor(id: string, plan: WriterPlan) {
    this.id = id;
    this.#plan = plan;
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

  /** The temporary file, created at the first call. */
  #file(): Promise<FileHandle> {
    this.#handle ??= open(this.#plan.tempPath, 'wx', 0o600);
    return this.#handle;
  }

  /** Writes out the gathered chunks at their offset. */
  #writeGathered(): Promise<void> {
    if (this.#gatheredBytes === 0) return Promise.resolve();
    const buffers = this.#gathered;
    const position = this.#size - this.#gatheredBytes;
    this.#gathered = [];
    this.#gatheredBytes = 0;
    const done = this.#file().then((handle) => writeAllAt(handle, buffers, position));
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
  async commit(): Promise<WriteResult> {
    if (this.#state !== 'open') {
      throw new LocalBlobError('closed', `writer of ${this.id} is ${this.#state}`);
    }
    this.#state = 'committing';
    try {
      if (this.#handle === undefined && this.#size <= this.#plan.smallMaxBytes) {
        const bytes = Buffer.concat(this.#gathered, this.#gatheredBytes);
        this.#gathered = [];
        if (this.#plan.deferSmall === true) {
          this.#state = 'committed';
          this.#plan.onDone();
          return { size: this.#size, small: bytes };
        }
        await this.#plan.publish('small', (small) => small!.put(this.id, bytes));
      } else {
        await this.#commitFile();
      }
      this.#state = 'committed';
      this.#plan.onDone();
      if (this.#handle !== undefined) {
        // The published name holds the bytes now; a leftover temp name goes at next open.
        await unlink(this.#plan.tempPath).catch(() => undefined);
      }
      return { size: this.#size };
    } catch (error) {
      this.#state = 'open';
      await this.abort();
      throw error;
    }
  }

  async #commitFile(): Promise<void> {
    const { path, tempPath } = this.#plan;
    this.#writeGathered().catch(() => undefined);
    const handle = await this.#file();
    await Promise.all(this.#pending);
    if (this.#failure !== undefined) throw this.#failure;
    await handle.sync();
    await handle.close();
    const shard = join(path, '..');
    const created = await mkdir(shard, { recursive: true });
    if (created !== undefined) await syncDir(join(shard, '..'));
    await this.#plan.publish('file', async () => {
      try {
        await link(tempPath, path);
      } catch (error) {
        if (isErrno(error, 'EEXIST')) {
          throw new LocalBlobError('exists', `blob ${this.id} is already stored`, {
            cause: error,
          });
        }
        throw error;
      }
      try {
        await syncDir(shard);
      } catch (error) {
        // Published but not durable: withdraw it, report failure.
        await unlink(path).catch(() => undefined);
        throw error;
      }
    });
  }

  /** Drops the temporary file. Does nothing after a successful commit. */
  abort(): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'committing') return Promise.resolve();
    this.#aborting ??= (async () => {
      this.#state = 'aborted';
      this.#gathered = [];
      this.#gatheredBytes = 0;
      await Promise.allSettled(this.#pending);
      if (this.#handle !== undefined) {
        const handle = await this.#handle.catch(() => undefined);
        await handle?.close().catch(() => undefined);
        await rm(this.#plan.tempPath, { force: true });
      }
      this.#plan.onDone();
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
