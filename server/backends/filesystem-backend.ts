/**
 * The embedded blobs backend: blob bytes in plain files, everything else in a LevelDB
 * index, both under one ROOT that a single server process owns.
 *
 * ```
 * ROOT/.index/                 LevelDB index; its LOCK is the process lock
 * ROOT/.tmp/                   uploads in progress; emptied at open
 * ROOT/.clean                  usage and clock, left by a clean close; removed at open
 * ROOT/.layout                 the layout version; older trees are moved into place at open
 * ROOT/{user}/{ns}/{id}        blob bytes, mtime = upload time
 * ROOT/{user}/{ns}/{id}.flags  JSON array of flags; absent = []
 * ```
 *
 * The index (see blob-index.ts) is the authority on what is live: a blob is visible once
 * its entry is committed, and a write goes temp file → fsync → `link(2)` into place (EEXIST
 * if the name exists; never a rename over a blob) → fsync of the folder together with the
 * synced index batch. Deletes commit the tombstone first and unlink after. `close()` leaves
 * ROOT/.clean; an open that finds none (a crash) first runs `reconcile`, which repairs
 * whatever a crash left between those steps. docs/filesystem-backend.md has the details.
 */
import { closeSync, fsync, futimesSync, linkSync, openSync, unlinkSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { link, mkdir, open, readdir, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type Logger, pino } from 'pino';
import type { BlobFlag } from '../../wire/flags.js';
import { BlobsError } from '../errors.js';
import { BlobIndex, type LiveEntry, refKey } from './blob-index.js';
import type {
  BlobRef,
  BlobsBackend,
  ByteRange,
  ListOptions,
  OpenedBlob,
  WriteOptions,
} from './blobs-backend.js';
import { takeCleanState, writeCleanState } from './clean-shutdown.js';
import {
  AlignedPool,
  DIRECT_ALIGN,
  DIRECT_MIN_BYTES,
  DIRECT_READ_BUFFERS,
  DIRECT_WRITE_BUFFERS,
  openDirectForWrite,
  probeDirectIo,
  reopenDirectForRead,
  writeFullyAt,
} from './direct-io.js';
import {
  blobPath,
  DirSyncer,
  errorCode,
  flagsPath,
  INDEX_DIR,
  leafDir,
  TMP_DIR,
  tempPath,
  unlinkIfExists,
  writeAll,
  writeAllSync,
  writeFileAtomic,
} from './filesystem-layout.js';
import { migrateLayout } from './filesystem-migrate.js';
import { reconcile, repairFlagsFiles } from './filesystem-reconcile.js';
import { KeyMutex } from './key-mutex.js';
import { noteReceived } from './received-bytes.js';

/** Read size of blob streams; large reads are what makes big downloads fast. */
const READ_CHUNK = 1024 * 1024;
/** Bytes (or chunks) gathered before one `writev` while the next ones are read. */
const WRITE_BATCH_BYTES = 1024 * 1024;
const WRITE_BATCH_CHUNKS = 256;
/** Bytes written between the background `fdatasync` calls of a large upload. */
const EARLY_SYNC_BYTES = 64 * 1024 * 1024;
const FILE_MODE = 0o600;
/**
 * Bodies announced at this size or less are gathered in memory, then created, written,
 * linked and unlinked with synchronous calls: each takes microseconds against the page
 * cache, while on libuv's pool (four threads) it would queue behind the fsyncs of a burst
 * of uploads and wait a disk round trip. Only their fsync goes to the pool.
 */
const SMALL_BODY_BYTES = 64 * 1024;

/** Real paths of the roots this process has open; LevelDB's lock only guards other processes. */
const openRoots = new Set<string>();

/** Another `FilesystemBackend`, in this process or another one, has this ROOT open. */
export class RootInUseError extends Error {
  readonly code = 'root_in_use';

  constructor(root: string, holder: string, options?: { cause?: unknown }) {
    super(
      `blob storage ${root} is already open in ${holder}; one server process per ROOT`,
      options,
    );
    this.name = 'RootInUseError';
  }
}

interface Reservation {
  user: string;
  bytes: number;
}

function notFound(ref: BlobRef): BlobsError {
  return new BlobsError('not_found', `no blob ${ref.id} in namespace ${ref.namespace}`);
}

function isLocked(error: unknown): boolean {
  return (
    errorCode(error) === 'LEVEL_LOCKED' || errorCode((error as Error).cause) === 'LEVEL_LOCKED'
  );
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) =>
    fsync(fd, (error) => (error ? reject(error) : resolve())),
  );
}

function ignore(): void {}

/**
 * A blob file open for reading bytes `start..end` (inclusive; `end` < `start` for none).
 * `pipeTo` reads into two buffers in turn, each refilled only once the sink is done with
 * it, so a large read allocates 2 × READ_CHUNK however big the blob: while one buffer goes
 * to the sink, the next bytes are read into the other.
 */
/**
 * Reads whole `align`-byte blocks from `from` into `buffer` and resolves with the `count`
 * bytes after the first `skip`; fails if the file ends before them.
 */
async function readExactly(
  handle: FileHandle,
  buffer: Buffer,
  from: number,
  skip: number,
  count: number,
  align: number,
): Promise<Buffer> {
  const length = Math.ceil((skip + count) / align) * align;
  let got = 0;
  while (got < skip + count) {
    const { bytesRead } = await handle.read(buffer, got, length - got, from + got);
    if (bytesRead === 0) throw new Error('the blob file is shorter than its size');
    got += bytesRead;
  }
  return buffer.subarray(skip, skip + count);
}

class OpenedFile implements OpenedBlob {
  readonly size: number;
  readonly #handle: FileHandle;
  readonly #start: number;
  readonly #end: number;
  readonly #direct: AlignedPool | undefined;
  #used = false;

  constructor(
    handle: FileHandle,
    size: number,
    start: number,
    end: number,
    direct: AlignedPool | undefined,
  ) {
    this.#handle = handle;
    this.#direct = direct;
    this.size = size;
    this.#start = start;
    this.#end = end;
  }

  #take(): void {
    if (this.#used) throw new Error('an opened blob is read once');
    this.#used = true;
  }

  async pipeTo(sink: (chunk: Buffer) => Promise<void>): Promise<void> {
    this.#take();
    try {
      const length = Math.max(this.#end - this.#start + 1, 0);
      const buffers =
        length >= DIRECT_MIN_BYTES ? this.#direct?.acquire(DIRECT_READ_BUFFERS) : undefined;
      if (buffers !== undefined) {
        try {
          const direct = await reopenDirectForRead(this.#handle);
          if (direct !== undefined) {
            try {
              await this.#pump(buffers, DIRECT_ALIGN, direct, sink);
              return;
            } finally {
              await direct.close();
            }
          }
        } finally {
          this.#direct!.release(buffers);
        }
      }
      const size = Math.min(READ_CHUNK, length);
      const pair = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)];
      await this.#pump(pair, 1, this.#handle, sink);
    } finally {
      await this.#handle.close();
    }
  }

  /**
   * Reads the range through `buffers` in turn and hands each chunk to `sink`: one buffer is
   * with the sink while the others are being read into, so up to `buffers.length - 1` reads
   * are in flight. Each read covers whole blocks of `align` bytes (1 for a buffered handle,
   * `DIRECT_ALIGN` for a direct one); what lies before or after the range is left out.
   */
  async #pump(
    buffers: readonly Buffer[],
    align: number,
    handle: FileHandle,
    sink: (chunk: Buffer) => Promise<void>,
  ): Promise<void> {
    let position = this.#start;
    let left = this.#end - this.#start + 1;
    let turn = 0;
    const reads: Promise<Buffer>[] = [];
    const issue = (): void => {
      while (left > 0 && reads.length < buffers.length - 1) {
        const buffer = buffers[turn]!;
        const skip = position % align;
        const count = Math.min(buffer.length - skip, left);
        const reading = readExactly(handle, buffer, position - skip, skip, count, align);
        // Awaited in turn; a failure meanwhile must not count as unhandled.
        reading.catch(ignore);
        reads.push(reading);
        position += count;
        left -= count;
        turn = (turn + 1) % buffers.length;
      }
    };
    let sinking: Promise<void> = Promise.resolve();
    try {
      issue();
      for (let reading = reads.shift(); reading !== undefined; reading = reads.shift()) {
        const chunk = await reading;
        // The buffer of the chunk before is free once the sink is done with it.
        await sinking;
        issue();
        sinking = sink(chunk);
        sinking.catch(ignore);
      }
      await sinking;
    } finally {
      await Promise.allSettled([...reads, sinking]);
    }
  }

  stream(): Readable {
    this.#take();
    // The stream owns the handle from here and closes it at its end or destroy.
    return this.#handle.createReadStream({
      start: this.#start,
      end: this.#end >= this.#start ? this.#end : undefined,
      highWaterMark: READ_CHUNK,
    });
  }

  async close(): Promise<void> {
    if (this.#used) return;
    this.#used = true;
    await this.#handle.close();
  }
}

export class FilesystemBackend implements BlobsBackend {
  private readonly root: string;
  private readonly index: BlobIndex;
  private readonly logger: Logger;
  private readonly usageBytes: Map<string, number>;
  private readonly reservedBytes = new Map<string, number>();
  private readonly mutex = new KeyMutex();
  private readonly dirs = new DirSyncer();
  /** Buffers for direct I/O of large bodies (direct-io.ts); undefined where it is off. */
  private readonly direct: AlignedPool | undefined;

  /** Whether bodies of `DIRECT_MIN_BYTES` or more bypass the page cache (direct-io.ts). */
  get directIo(): boolean {
    return this.direct !== undefined;
  }
  /** Ids with an upload on its way (`announceUploads`): ref key → how many. */
  private readonly announced = new Map<string, number>();
  private readonly inflight = new Set<Promise<unknown>>();
  private closing: Promise<void> | undefined;
  private lastTime: number;

  private constructor(
    root: string,
    index: BlobIndex,
    logger: Logger,
    usage: Map<string, number>,
    lastTime: number,
    direct: AlignedPool | undefined,
  ) {
    this.direct = direct;
    this.root = root;
    this.index = index;
    this.logger = logger;
    this.usageBytes = usage;
    this.lastTime = lastTime;
  }

  /**
   * Opens the storage under `root`, creating it if needed. Fails with `RootInUseError` while
   * another backend (this process or another) has it open. Removes stale temp files; when
   * the last run did not close cleanly, also reconciles the index with every blob file
   * first, which takes time proportional to the number of blobs (seconds per 100,000).
   * Large bodies use direct I/O where the filesystem supports it, unless `directIo` is false.
   */
  static async open(
    root: string,
    options?: { logger?: Logger; directIo?: boolean },
  ): Promise<FilesystemBackend> {
    const logger = (options?.logger ?? pino({ enabled: false })).child({
      component: 'filesystem-backend',
    });
    await mkdir(root, { recursive: true });
    const real = await realpath(root);
    if (openRoots.has(real)) throw new RootInUseError(real, 'this process');
    openRoots.add(real);
    let index: BlobIndex | undefined;
    try {
      try {
        index = await BlobIndex.open(join(real, INDEX_DIR));
      } catch (error) {
        if (isLocked(error)) throw new RootInUseError(real, 'another process', { cause: error });
        throw error;
      }
      const started = performance.now();
      const stale = await FilesystemBackend.clearTemp(real);
      await migrateLayout(real, logger);
      let direct: AlignedPool | undefined;
      if (options?.directIo !== false) {
        const pool = new AlignedPool();
        if (await probeDirectIo(join(real, TMP_DIR), pool)) direct = pool;
      }
      const clean = await takeCleanState(real, logger);
      if (clean !== undefined) {
        const flagsRewritten = await repairFlagsFiles(real, index);
        logger.info(
          {
            path: real,
            ms: Math.round(performance.now() - started),
            staleTempFiles: stale,
            flagsRewritten,
            directIo: direct !== undefined,
          },
          'opened blob storage after a clean close',
        );
        return new FilesystemBackend(real, index, logger, clean.usage, clean.latestTime, direct);
      }
      const state = await reconcile(real, index, logger);
      logger.info(
        {
          path: real,
          ms: Math.round(performance.now() - started),
          staleTempFiles: stale,
          indexed: state.indexed,
          dropped: state.dropped,
          removed: state.removed,
          flagsRewritten: state.flagsRewritten,
          directIo: direct !== undefined,
        },
        'opened blob storage after checking every blob file (no clean close recorded)',
      );
      return new FilesystemBackend(real, index, logger, state.usage, state.latestTime, direct);
    } catch (error) {
      await index?.close().catch(ignore);
      openRoots.delete(real);
      throw error;
    }
  }

  /** Empties ROOT/.tmp: whatever is there was an upload cut short by a crash. */
  private static async clearTemp(root: string): Promise<number> {
    const dir = join(root, TMP_DIR);
    let stale: string[] = [];
    try {
      stale = await readdir(dir);
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error;
    }
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    return stale.length;
  }

  open(ref: BlobRef, range?: ByteRange): Promise<OpenedBlob> {
    return this.track(async () => {
      if ((await this.index.getLive(ref)) === undefined) throw notFound(ref);
      let handle: FileHandle;
      try {
        handle = await open(blobPath(this.root, ref), 'r');
      } catch (error) {
        // Deleted between the index lookup and the open.
        if (errorCode(error) === 'ENOENT') throw notFound(ref);
        throw error;
      }
      try {
        const { size } = await handle.stat();
        if (
          range !== undefined &&
          !(range.start >= 0 && range.start <= range.end && range.end < size)
        ) {
          throw new BlobsError(
            'range_not_satisfiable',
            `bytes ${range.start}-${range.end} of a ${size}-byte blob`,
          );
        }
        return new OpenedFile(handle, size, range?.start ?? 0, range?.end ?? size - 1, this.direct);
      } catch (error) {
        await handle.close();
        throw error;
      }
    });
  }

  /**
   * Stores `body` as a new blob. Refuses at once (before reading `body`) an id that is live
   * or tombstoned, and an `expectedSize` over `maxSize` or over the quota. With an
   * `expectedSize`, a body of any other length fails with `invalid_request`. On failure it
   * stops reading `body` without destroying it: the caller owns the body.
   */
  write(
    ref: BlobRef,
    body: AsyncIterable<Buffer>,
    options: WriteOptions,
  ): Promise<{ size: number }> {
    return this.track(() => this.writeBlob(ref, body, options));
  }

  announceUploads(refs: readonly BlobRef[]): () => void {
    const keys = refs.map(refKey);
    for (const key of keys) this.announced.set(key, (this.announced.get(key) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      for (const key of keys) {
        const left = (this.announced.get(key) ?? 1) - 1;
        if (left > 0) this.announced.set(key, left);
        else this.announced.delete(key);
      }
    };
  }

  delete(ref: BlobRef): Promise<void> {
    return this.track(() =>
      this.mutex.run(refKey(ref), async () => {
        const entry = await this.index.getLive(ref);
        if (entry === undefined) {
          // Published under this same mutex, so the upload cannot land in between.
          if (!this.announced.has(refKey(ref)) || (await this.index.getTomb(ref)) !== undefined) {
            throw notFound(ref);
          }
          await this.index.tombstoneUnborn(ref, this.nextTime());
          return;
        }
        await this.index.tombstone(ref, entry, this.nextTime());
        this.addUsage(ref.user, -entry.s);
        try {
          await unlinkIfExists(blobPath(this.root, ref));
          await unlinkIfExists(flagsPath(this.root, ref));
        } catch (error) {
          this.logger.error(
            { err: error, blobId: ref.id, namespace: ref.namespace },
            'could not remove the files of a deleted blob; the next open removes them',
          );
        }
      }),
    );
  }

  size(ref: BlobRef): Promise<number> {
    return this.track(async () => (await this.live(ref)).s);
  }

  count(user: string, options: ListOptions): Promise<number> {
    return this.track(() => this.index.count(user, options));
  }

  list(user: string, options: ListOptions): Promise<string[]> {
    return this.track(() => this.index.list(user, options));
  }

  getFlags(ref: BlobRef): Promise<BlobFlag[]> {
    return this.track(async () => [...(await this.live(ref)).f]);
  }

  /**
   * Replaces the flags of a live blob. The index batch (with a dirty mark) commits first,
   * then the flags file is replaced by rename; a crash between the two is repaired at open.
   */
  setFlags(ref: BlobRef, flags: BlobFlag[]): Promise<void> {
    return this.track(() =>
      this.mutex.run(refKey(ref), async () => {
        const entry = await this.live(ref);
        const next = [...flags];
        await this.index.setFlags(ref, entry, next);
        await this.writeFlagsFile(ref, next);
        await this.index.clearDirty(ref);
      }),
    );
  }

  usage(user: string): Promise<number> {
    return this.track(async () => this.usageBytes.get(user) ?? 0);
  }

  /** Waits for every call in flight (writes finish or roll back), then closes the index and releases ROOT. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
    await this.dirs.close();
    try {
      // Written while ROOT is still ours, so no other opener can see a stale one.
      await writeCleanState(this.root, { usage: this.usageBytes, latestTime: this.lastTime });
    } catch (error) {
      this.logger.error(
        { err: error },
        'could not record a clean close; the next open checks every blob',
      );
    }
    try {
      await this.index.close();
    } finally {
      openRoots.delete(this.root);
    }
    this.logger.info({ path: this.root }, 'closed blob storage');
  }

  private track<T>(task: () => Promise<T>): Promise<T> {
    if (this.closing !== undefined) {
      return Promise.reject(new BlobsError('internal', 'blob storage is closed'));
    }
    const promise = task();
    this.inflight.add(promise);
    const forget = () => this.inflight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  private async live(ref: BlobRef): Promise<LiveEntry> {
    const entry = await this.index.getLive(ref);
    if (entry === undefined) throw notFound(ref);
    return entry;
  }

  /** Upload and deletion times: wall clock in µs, strictly increasing within this process. */
  private nextTime(): number {
    this.lastTime = Math.max(Date.now() * 1000, this.lastTime + 1);
    return this.lastTime;
  }

  private refuseTaken(ref: BlobRef): void {
    const taken = this.index.takenSync(ref);
    if (taken === 'live') {
      throw new BlobsError('blob_exists', `blob ${ref.id} exists in namespace ${ref.namespace}`);
    }
    if (taken === 'deleted') {
      throw new BlobsError(
        'blob_deleted',
        `blob ${ref.id} was deleted and cannot be created again`,
      );
    }
  }

  private async writeBlob(
    ref: BlobRef,
    body: AsyncIterable<Buffer>,
    options: WriteOptions,
  ): Promise<{ size: number }> {
    const { expectedSize, maxSize } = options;
    if (expectedSize !== undefined && expectedSize > maxSize) {
      throw new BlobsError(
        'too_large',
        `${expectedSize} bytes is over the ${maxSize}-byte maximum`,
      );
    }
    this.refuseTaken(ref);
    const reservation: Reservation = { user: ref.user, bytes: 0 };
    const temp = tempPath(this.root);
    const small = expectedSize !== undefined && expectedSize <= SMALL_BODY_BYTES;
    try {
      if (expectedSize !== undefined) this.reserve(reservation, expectedSize, options.quota);
      const entry = small
        ? await this.writeSmallTemp(temp, body, reservation, options)
        : await this.writeTemp(temp, body, reservation, options);
      await this.mutex.run(refKey(ref), () => this.publish(ref, temp, entry, reservation, small));
      this.logger.debug({ blobId: ref.id, namespace: ref.namespace, bytes: entry.s }, 'stored');
      return { size: entry.s };
    } finally {
      this.release(reservation);
      const warn = (error: unknown) =>
        this.logger.warn({ err: error, path: temp }, 'could not remove a temp file');
      if (small) {
        try {
          unlinkSync(temp);
        } catch (error) {
          if (errorCode(error) !== 'ENOENT') warn(error);
        }
      } else {
        await unlinkIfExists(temp).catch(warn);
      }
    }
  }

  /** Streams `body` into the new temp file `temp`, stamps and fsyncs it; resolves with its entry. */
  private async writeTemp(
    temp: string,
    body: AsyncIterable<Buffer>,
    reservation: Reservation,
    options: WriteOptions,
  ): Promise<LiveEntry> {
    const large = (options.expectedSize ?? 0) >= DIRECT_MIN_BYTES;
    const buffers = large ? this.direct?.acquire(DIRECT_WRITE_BUFFERS) : undefined;
    if (buffers === undefined) {
      const handle = await open(temp, 'wx', FILE_MODE);
      return this.stampAndSync(handle, options, () =>
        this.receive(body, handle, reservation, options),
      );
    }
    try {
      const handle = await openDirectForWrite(temp, FILE_MODE);
      return await this.stampAndSync(handle, options, () =>
        this.receiveDirect(body, handle, buffers, reservation, options),
      );
    } finally {
      this.direct!.release(buffers);
    }
  }

  /** Waits for `fill` to write `handle`, sets the upload time as its mtime, fsyncs and closes it. */
  private async stampAndSync(
    handle: FileHandle,
    options: WriteOptions,
    fill: () => Promise<number>,
  ): Promise<LiveEntry> {
    try {
      const size = await fill();
      const entry = this.newEntry(size, options);
      await handle.utimes(entry.t / 1e6, entry.t / 1e6);
      await handle.sync();
      return entry;
    } finally {
      await handle.close();
    }
  }

  /** `writeTemp` for a body announced at `SMALL_BODY_BYTES` or less: gathered, then written. */
  private async writeSmallTemp(
    temp: string,
    body: AsyncIterable<Buffer>,
    reservation: Reservation,
    options: WriteOptions,
  ): Promise<LiveEntry> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of this.admitted(body, reservation, options)) {
      size += chunk.length;
      chunks.push(chunk);
    }
    this.checkComplete(size, options);
    const entry = this.newEntry(size, options);
    const fd = openSync(temp, 'wx', FILE_MODE);
    try {
      writeAllSync(fd, chunks);
      futimesSync(fd, entry.t / 1e6, entry.t / 1e6);
      await fsyncFd(fd);
      return entry;
    } finally {
      closeSync(fd);
    }
  }

  private newEntry(size: number, options: WriteOptions): LiveEntry {
    return { t: this.nextTime(), s: size, f: [...(options.flags ?? [])] };
  }

  /**
   * The non-empty chunks of `body`, each let through once the body so far is within its
   * limits and reserved (`admit`). `body` is iterated by hand: a write that fails early
   * must not call its `return()`, which would destroy a caller's stream.
   */
  private async *admitted(
    body: AsyncIterable<Buffer>,
    reservation: Reservation,
    options: WriteOptions,
  ): AsyncGenerator<Buffer> {
    const iterator = body[Symbol.asyncIterator]();
    let size = 0;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      if (next.value.length === 0) continue;
      size += next.value.length;
      this.admit(size, reservation, options);
      noteReceived(next.value.length);
      yield next.value;
    }
  }

  /** Checks a body that has reached `size` bytes against its limits, and reserves them. */
  private admit(size: number, reservation: Reservation, options: WriteOptions): void {
    if (size > options.maxSize) {
      throw new BlobsError('too_large', `the body is over the ${options.maxSize}-byte maximum`);
    }
    if (options.expectedSize !== undefined && size > options.expectedSize) {
      throw new BlobsError(
        'invalid_request',
        `the body is longer than ${options.expectedSize} bytes`,
      );
    }
    this.reserve(reservation, size, options.quota);
  }

  /** Fails a finished body shorter than announced. */
  private checkComplete(size: number, options: WriteOptions): void {
    if (options.expectedSize !== undefined && size !== options.expectedSize) {
      throw new BlobsError(
        'invalid_request',
        `the body has ${size} bytes, ${options.expectedSize} were announced`,
      );
    }
  }

  /** Streams `body` into `handle`, reserving quota as bytes arrive; resolves with the size. */
  private async receive(
    body: AsyncIterable<Buffer>,
    handle: FileHandle,
    reservation: Reservation,
    options: WriteOptions,
  ): Promise<number> {
    let size = 0;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let writing: Promise<void> = Promise.resolve();
    // A large body is flushed to the disk while it arrives, so the final fsync is short.
    let syncing: Promise<void> = Promise.resolve();
    let syncingNow = false;
    let unsynced = 0;
    const flush = async () => {
      await writing;
      unsynced += batchBytes;
      writing = writeAll(handle, batch);
      writing.catch(ignore);
      batch = [];
      batchBytes = 0;
      if (unsynced >= EARLY_SYNC_BYTES && !syncingNow) {
        unsynced = 0;
        syncingNow = true;
        syncing = writing
          .then(() => handle.datasync())
          .finally(() => {
            syncingNow = false;
          });
        syncing.catch(ignore);
      }
    };
    try {
      for await (const chunk of this.admitted(body, reservation, options)) {
        size += chunk.length;
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= WRITE_BATCH_BYTES || batch.length >= WRITE_BATCH_CHUNKS) await flush();
      }
      await flush();
      await writing;
      await syncing;
      this.checkComplete(size, options);
      return size;
    } finally {
      await Promise.all([writing.catch(ignore), syncing.catch(ignore)]);
    }
  }

  /**
   * `receive` with direct I/O: the body is copied into one aligned buffer while the other
   * is being written; the last partial block goes out padded and the file is truncated to
   * the body's size.
   */
  private async receiveDirect(
    body: AsyncIterable<Buffer>,
    handle: FileHandle,
    buffers: Buffer[],
    reservation: Reservation,
    options: WriteOptions,
  ): Promise<number> {
    let size = 0;
    let turn = 0;
    let filled = 0;
    let position = 0;
    // The write of each buffer, which must be done before the buffer is filled again.
    const writes: Promise<void>[] = buffers.map(() => Promise.resolve());
    try {
      for await (let chunk of this.admitted(body, reservation, options)) {
        size += chunk.length;
        while (chunk.length > 0) {
          const buffer = buffers[turn]!;
          const copied = chunk.copy(buffer, filled);
          filled += copied;
          chunk = chunk.subarray(copied);
          if (filled < buffer.length) continue;
          const writing = writeFullyAt(handle, buffer, buffer.length, position);
          writing.catch(ignore);
          writes[turn] = writing;
          position += buffer.length;
          filled = 0;
          turn = (turn + 1) % buffers.length;
          await writes[turn];
        }
      }
      await Promise.all(writes);
      this.checkComplete(size, options);
      if (filled > 0) {
        const padded = Math.ceil(filled / DIRECT_ALIGN) * DIRECT_ALIGN;
        buffers[turn]!.fill(0, filled, padded);
        await writeFullyAt(handle, buffers[turn]!, padded, position);
        if (padded !== filled) await handle.truncate(size);
      }
      return size;
    } finally {
      await Promise.allSettled(writes);
    }
  }

  /** Makes the finished temp file the blob `ref`, under the id's mutex. */
  private async publish(
    ref: BlobRef,
    temp: string,
    entry: LiveEntry,
    reservation: Reservation,
    small: boolean,
  ): Promise<void> {
    this.refuseTaken(ref);
    const dir = leafDir(this.root, ref);
    const blob = blobPath(this.root, ref);
    await this.dirs.ensureDir(dir);
    if (entry.f.length > 0) {
      await writeFileAtomic(this.root, flagsPath(this.root, ref), JSON.stringify(entry.f));
    }
    try {
      if (small) linkSync(temp, blob);
      else await link(temp, blob);
    } catch (error) {
      if (entry.f.length > 0) await unlinkIfExists(flagsPath(this.root, ref));
      if (errorCode(error) === 'EEXIST') {
        throw new BlobsError('blob_exists', `blob ${ref.id} exists in namespace ${ref.namespace}`);
      }
      throw error;
    }
    // Both must be durable before the write is acknowledged, in either order: a crash that
    // keeps the index entry but loses the name is repaired at the next open, which drops
    // the entry (nobody was told the blob was stored). Run together, the folder fsync and
    // the index commit can share one journal commit of the filesystem.
    const [synced, indexed] = await Promise.allSettled([
      this.dirs.sync(dir),
      this.index.addLive(ref, entry),
    ]);
    const failure = [synced, indexed].find((result) => result.status === 'rejected');
    if (failure !== undefined) {
      if (indexed.status === 'fulfilled' && !(await this.unindex(ref, entry))) {
        // The entry stays, so the blob stays with it: index and files agree.
        this.addUsage(ref.user, entry.s);
        throw failure.reason;
      }
      await unlinkIfExists(blob).catch(ignore);
      if (entry.f.length > 0) await unlinkIfExists(flagsPath(this.root, ref)).catch(ignore);
      throw failure.reason;
    }
    this.addUsage(ref.user, entry.s);
    this.release(reservation);
  }

  /** Takes back the index entry of a write that failed after it; false if that failed too. */
  private async unindex(ref: BlobRef, entry: LiveEntry): Promise<boolean> {
    try {
      await this.index.batch(this.index.dropOps(ref, entry));
      return true;
    } catch (error) {
      this.logger.error(
        { err: error, blobId: ref.id, namespace: ref.namespace },
        'could not take back the index entry of a failed write; the blob stays stored',
      );
      return false;
    }
  }

  private async writeFlagsFile(ref: BlobRef, flags: BlobFlag[]): Promise<void> {
    const path = flagsPath(this.root, ref);
    if (flags.length > 0) {
      await writeFileAtomic(this.root, path, JSON.stringify(flags));
      return;
    }
    await unlinkIfExists(path);
    await this.dirs.sync(leafDir(this.root, ref));
  }

  /** Grows `reservation` to `total` bytes, or fails if usage and reservations would pass `quota`. */
  private reserve(reservation: Reservation, total: number, quota: number): void {
    const extra = total - reservation.bytes;
    if (extra <= 0) return;
    const { user } = reservation;
    const reserved = this.reservedBytes.get(user) ?? 0;
    if ((this.usageBytes.get(user) ?? 0) + reserved + extra > quota) {
      throw new BlobsError(
        'quota_exceeded',
        `storing this blob would pass the ${quota}-byte quota`,
      );
    }
    this.reservedBytes.set(user, reserved + extra);
    reservation.bytes = total;
  }

  private release(reservation: Reservation): void {
    if (reservation.bytes === 0) return;
    const left = (this.reservedBytes.get(reservation.user) ?? 0) - reservation.bytes;
    if (left > 0) this.reservedBytes.set(reservation.user, left);
    else this.reservedBytes.delete(reservation.user);
    reservation.bytes = 0;
  }

  private addUsage(user: string, bytes: number): void {
    const next = (this.usageBytes.get(user) ?? 0) + bytes;
    if (next > 0) this.usageBytes.set(user, next);
    else this.usageBytes.delete(user);
  }
}
