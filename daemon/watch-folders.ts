import { once } from 'node:events';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, opendir, realpath } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { type FSWatcher, watch } from 'chokidar';
import type { Logger } from 'pino';
import { AttachmentState } from '../machines/index.js';
import type { DaemonApi, DaemonEvent, DocRecord } from './daemon-api.js';
import { IgnorePatterns } from './ignore-patterns.js';

/** A watch-index value: the file's document, its current blob and the stat it was read at. */
export interface WatchIndexEntry {
  docId: string;
  blobId: string | null;
  size: number;
  mtimeMs: number;
}

export interface WatchIndexTransaction {
  putWatchEntry(path: string, entry: WatchIndexEntry): void;
  deleteWatchEntry(path: string): void;
}

/** The store's watch-folder index, as far as `WatchFolders` uses it; `Store` satisfies it. */
export interface WatchIndex {
  getWatchEntry(path: string): Promise<WatchIndexEntry | undefined>;
  listWatchEntries(options?: {
    prefix?: string;
  }): Promise<Array<{ path: string } & WatchIndexEntry>>;
  /** Applies every change recorded by `build` in one atomic, durable batch. */
  commit(build: (tx: WatchIndexTransaction) => void): Promise<unknown>;
}

/** What `WatchFolders` needs of the daemon. */
export interface WatchDaemon
  extends Pick<
    DaemonApi,
    'createDoc' | 'getDoc' | 'putAttachment' | 'getAttachmentInfo' | 'onEvent'
  > {
  /**
   * `DaemonApi.putDoc`. With `keepReplacedBlob`, a blob that the change replaces as the
   * document's `blob_id` is kept instead of deleted at once; its deletion is then the
   * caller's (`deleteOrphanBlob`). A daemon that ignores the option deletes it at once.
   */
  putDoc(
    id: string,
    content: Record<string, unknown>,
    rev: string,
    options?: { keepReplacedBlob?: boolean },
  ): Promise<DocRecord>;
  /**
   * Deletes an attachment that its document no longer points at: the local envelope, the
   * record and the server's copy. `not_found` when there is no such attachment,
   * `invalid_state` when its document points at it. Without it, blobs that are not used
   * any more are left to the daemon's orphan sweep.
   */
  deleteOrphanBlob?(blobId: string): Promise<void>;
}

export interface WatchFolderConfig {
  /** Absolute path of the folder. */
  path: string;
  /** Patterns relative to the folder; see `IgnorePatterns`. */
  ignore: readonly string[];
}

export interface WatchFoldersOptions {
  daemon: WatchDaemon;
  index: WatchIndex;
  folders: readonly WatchFolderConfig[];
  logger: Logger;
  /** How long a file's size and mtime must stay put before it is imported; default 2000 ms. */
  stabilityMs?: number;
  /** Files imported at once over all folders; default 4. */
  concurrency?: number;
}

/** The fields a watched file's document carries; the rest of its content is kept as is. */
export type WatchedFileContent = {
  /** Path relative to the folder, `/`-separated. */
  path: string;
  /** Absolute path of the watch folder. */
  folder: string;
  /** Plaintext size in bytes. */
  size: number;
  /** Modification time, epoch milliseconds. */
  mtime: number;
  blob_id: string | null;
  /** The file is gone from the folder; the document and its attachment are kept. */
  removed: boolean;
  /** When the removal was noticed, epoch milliseconds; only on removed files. */
  removed_at?: number;
};

/**
 * Watch-index keys of pending deletions of replaced blobs. Index keys of files are
 * absolute paths, which start with `/`, so these cannot collide with them.
 */
export const REPLACED_BLOB_PREFIX = 'replaced-blob:';

/** Pending path loops beyond which the start-up scan waits before queueing more. */
const SCAN_BACKLOG = 1000;
const CONFLICT_RETRIES = 3;
const READ_BLOCK_BYTES = 1024 * 1024;
/** The store's limit on key length. */
const MAX_INDEX_KEY = 1024;

interface Folder {
  root: string;
  ignore: IgnorePatterns;
  watcher: FSWatcher | undefined;
}

type Outcome = 'done' | 'again';

/**
 * Turns the files of watch folders into documents with the file as their attachment,
 * through the same calls as any client. One serial loop per path: a burst of events on
 * a path collapses into one pending pass, and at most `concurrency` files are read at once.
 * The owner calls `close()` before closing the daemon.
 */
export class WatchFolders {
  readonly #daemon: WatchDaemon;
  readonly #index: WatchIndex;
  readonly #logger: Logger;
  readonly #stabilityMs: number;
  readonly #folders: Folder[];
  readonly #slots: Semaphore;
  readonly #paths: SerialKeys;
  readonly #sweeps: SerialKeys;
  /** Doc id → blob ids replaced in it, waiting for its current blob to be SYNCED. */
  readonly #replaced = new Map<string, Set<string>>();
  readonly #abort = new AbortController();
  #unsubscribe: (() => void) | undefined;
  #startPromise: Promise<void> | undefined;
  #closePromise: Promise<void> | undefined;

  constructor(options: WatchFoldersOptions) {
    this.#daemon = options.daemon;
    this.#index = options.index;
    this.#logger = options.logger.child({ component: 'watch-folders' });
    this.#stabilityMs = options.stabilityMs ?? 2000;
    this.#slots = new Semaphore(options.concurrency ?? 4);
    this.#folders = options.folders.map((folder) => ({
      root: stripTrailingSep(resolve(folder.path)),
      ignore: new IgnorePatterns(folder.ignore),
      watcher: undefined,
    }));
    this.#paths = new SerialKeys((path, err) => this.#logFailure({ path }, err));
    this.#sweeps = new SerialKeys((docId, err) => this.#logFailure({ docId }, err));
    for (const a of this.#folders) {
      for (const b of this.#folders) {
        if (a !== b && (a.root === b.root || isInside(b.root, a.root))) {
          throw new TypeError(`watch folder ${a.root} overlaps watch folder ${b.root}`);
        }
      }
    }
  }

  /**
   * Watches the folders, then compares each with the index: new and changed files are
   * imported, files gone since the last run are marked removed. Resolves when that scan
   * is done and the imports it started have finished; a file still being written is left
   * to the watcher. Calling it again returns the same promise.
   */
  start(): Promise<void> {
    this.#startPromise ??= this.#start();
    return this.#startPromise;
  }

  /** Each folder and whether it is being watched (false before start, and for a missing one). */
  folders(): { path: string; watching: boolean }[] {
    return this.#folders.map((folder) => ({
      path: folder.root,
      watching: folder.watcher !== undefined && !this.#closing,
    }));
  }

  /** Resolves when no import, removal or replaced-blob deletion is queued or running. */
  async idle(): Promise<void> {
    while (this.#paths.size > 0 || this.#sweeps.size > 0) {
      await Promise.all([this.#paths.idle(), this.#sweeps.idle()]);
    }
  }

  /**
   * Stops watching, gives up files still waiting to settle and waits for the imports in
   * flight. Returns the same promise on every call.
   */
  close(): Promise<void> {
    this.#closePromise ??= this.#close();
    return this.#closePromise;
  }

  get #closing(): boolean {
    return this.#abort.signal.aborted;
  }

  async #start(): Promise<void> {
    const pending = await this.#index.listWatchEntries({ prefix: REPLACED_BLOB_PREFIX });
    for (const entry of pending) {
      if (entry.blobId !== null) this.#addReplaced(entry.docId, entry.blobId);
    }
    this.#unsubscribe = this.#daemon.onEvent((event) => this.#onDaemonEvent(event));

    for (const folder of this.#folders) {
      if (this.#closing) return;
      await this.#watch(folder);
    }
    const started = Date.now();
    const results = await Promise.all(this.#folders.map((folder) => this.#scan(folder)));
    for (const docId of this.#replaced.keys()) this.#sweepReplaced(docId);
    const queued = results.reduce((sum, n) => sum + n, 0);
    this.#logger.info(
      { folders: this.#folders.length, queued, ms: Date.now() - started },
      'watch folders scanned',
    );
  }

  async #close(): Promise<void> {
    this.#abort.abort();
    this.#unsubscribe?.();
    // Every wait of start() ends on the abort, so after it no watcher is made any more.
    await this.#startPromise?.catch(() => {});
    const results = await Promise.allSettled([
      ...this.#folders.map((folder) => folder.watcher?.close()),
      this.#paths.idle(),
      this.#sweeps.idle(),
    ]);
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []));
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'closing watch folders failed');
  }

  async #watch(folder: Folder): Promise<void> {
    let root: string;
    try {
      root = await realpath(folder.root);
      if (!(await lstat(root)).isDirectory()) throw new Error('not a folder');
    } catch (err) {
      // TODO: a watch folder that is missing at start-up is not watched until a restart.
      this.#logger.warn({ err, folder: folder.root }, 'watch folder is not there; not watched');
      return;
    }
    folder.root = root;
    const watcher = watch(root, {
      ignoreInitial: true,
      followSymlinks: false,
      awaitWriteFinish: {
        stabilityThreshold: this.#stabilityMs,
        pollInterval: Math.max(10, Math.min(100, Math.floor(this.#stabilityMs / 4))),
      },
      ignored: (path: string, stats?: Stats) => this.#ignoredByWatcher(folder, path, stats),
    });
    folder.watcher = watcher;
    const onPath = (path: string) => this.#schedule(folder, path);
    watcher.on('add', onPath);
    watcher.on('change', onPath);
    watcher.on('unlink', onPath);
    watcher.on('unlinkDir', (path: string) => {
      void this.#scheduleUnder(folder, path).catch((err) => this.#logFailure({ path }, err));
    });
    // A file made in a new folder before the watcher of that folder is set up gets no
    // `add` event, so a new folder is walked once (what the events also report is
    // reconciled twice, which changes nothing the second time).
    watcher.on('addDir', (path: string) => {
      void this.#scheduleNewFolder(folder, path).catch((err) => this.#logFailure({ path }, err));
    });
    watcher.on('error', (err: unknown) => {
      this.#logger.warn({ err, folder: root }, 'watching failed');
    });
    try {
      await once(watcher, 'ready', { signal: this.#abort.signal });
    } catch {
      return;
    }
    this.#logger.info({ folder: root }, 'watching folder');
  }

  #ignoredByWatcher(folder: Folder, path: string, stats: Stats | undefined): boolean {
    const rel = relativePath(folder.root, path);
    if (rel === '') return false;
    if (stats === undefined) {
      return folder.ignore.ignores(rel, false) && folder.ignore.ignores(rel, true);
    }
    if (!stats.isFile() && !stats.isDirectory()) return true;
    return folder.ignore.ignores(rel, stats.isDirectory());
  }

  /** Walks the folder and queues every file that differs from the index; returns how many. */
  async #scan(folder: Folder): Promise<number> {
    if (folder.watcher === undefined) return 0;
    // TODO: the folder's index entries are held in memory for the scan (~100 bytes each).
    const known = new Map<string, WatchIndexEntry>();
    for (const entry of await this.#index.listWatchEntries({ prefix: folder.root + sep })) {
      known.set(entry.path, entry);
    }
    const loops: Promise<void>[] = [];
    let queued = 0;
    const queue = async (path: string, settled: boolean) => {
      while (this.#paths.size >= SCAN_BACKLOG && !this.#closing) await this.#paths.drained();
      if (this.#closing) return;
      queued += 1;
      const loop = this.#schedule(folder, path);
      // A file still being written is the watcher's; start() does not wait for it.
      if (settled) loops.push(loop);
    };

    const walk = async (dir: string): Promise<void> => {
      let handle: Awaited<ReturnType<typeof opendir>>;
      try {
        handle = await opendir(dir);
      } catch (err) {
        this.#logger.warn({ err, path: relativePath(folder.root, dir) }, 'cannot list folder');
        // Keep what the index knows under it rather than mark it removed.
        for (const path of known.keys()) if (isInside(path, dir)) known.delete(path);
        return;
      }
      for await (const dirent of handle) {
        if (this.#closing) return;
        const path = join(dir, dirent.name);
        const rel = relativePath(folder.root, path);
        if (dirent.isDirectory()) {
          if (!folder.ignore.matchesOwn(rel, true)) await walk(path);
          continue;
        }
        if (!dirent.isFile() || folder.ignore.matchesOwn(rel, false)) continue;
        const entry = known.get(path);
        known.delete(path);
        const stats = await lstatOrUndefined(path);
        if (stats === undefined) {
          if (entry !== undefined) await queue(path, true);
          continue;
        }
        if (entry !== undefined && entry.blobId !== null && sameStat(entry, stats)) continue;
        await queue(path, Date.now() - stats.mtimeMs >= this.#stabilityMs);
      }
    };
    await walk(folder.root);
    // Whatever the index knows that the walk did not find is gone (or now ignored).
    for (const path of known.keys()) await queue(path, true);
    await Promise.all(loops);
    return queued;
  }

  async #scheduleNewFolder(folder: Folder, dir: string): Promise<void> {
    let handle: Awaited<ReturnType<typeof opendir>>;
    try {
      handle = await opendir(dir);
    } catch {
      return; // Gone again, or unreadable: its own events (or the next scan) tell.
    }
    for await (const dirent of handle) {
      if (this.#closing) return;
      const path = join(dir, dirent.name);
      const rel = relativePath(folder.root, path);
      if (dirent.isDirectory()) {
        if (!folder.ignore.matchesOwn(rel, true)) await this.#scheduleNewFolder(folder, path);
      } else if (dirent.isFile() && !folder.ignore.matchesOwn(rel, false)) {
        void this.#schedule(folder, path);
      }
    }
  }

  async #scheduleUnder(folder: Folder, dir: string): Promise<void> {
    for (const entry of await this.#index.listWatchEntries({ prefix: dir + sep })) {
      this.#schedule(folder, entry.path);
    }
  }

  #schedule(folder: Folder, path: string): Promise<void> {
    if (this.#closing) return Promise.resolve();
    return this.#paths.run(path, () => this.#reconcile(folder, path));
  }

  /** Brings the index and the file's document in line with the file as it is now. */
  async #reconcile(folder: Folder, path: string): Promise<Outcome> {
    if (this.#closing) return 'done';
    const rel = relativePath(folder.root, path);
    if (path.length > MAX_INDEX_KEY) {
      // TODO: files whose absolute path is longer than the store's key limit are skipped.
      this.#logger.warn({ path: rel, folder: folder.root }, 'path too long to watch; skipped');
      return 'done';
    }
    let stats = await this.#fileStats(folder, path, rel);
    const entry = await this.#index.getWatchEntry(path);
    if (stats === undefined) {
      // A folder that is gone as a whole (an unmounted disk) is not a removal of its files.
      if (entry !== undefined && (await lstatOrUndefined(folder.root))?.isDirectory()) {
        await this.#markRemoved(folder, path, rel, entry);
      }
      return 'done';
    }
    if (entry !== undefined && entry.blobId !== null && sameStat(entry, stats)) return 'done';

    stats = await this.#awaitStable(path, stats);
    if (stats === undefined) return this.#closing ? 'done' : 'again';
    const settled = stats;
    return this.#slots.run(() => this.#import(folder, path, rel, entry, settled));
  }

  async #fileStats(folder: Folder, path: string, rel: string): Promise<Stats | undefined> {
    if (rel === '' || folder.ignore.ignores(rel, false)) return undefined;
    const stats = await lstatOrUndefined(path);
    return stats?.isFile() ? stats : undefined;
  }

  /**
   * Waits until the file's mtime is at least `stabilityMs` old (a file with an mtime in
   * the future must keep its size and mtime for `stabilityMs`). Undefined when the file
   * went away or the watcher is closing.
   */
  async #awaitStable(path: string, first: Stats): Promise<Stats | undefined> {
    let stats = first;
    for (;;) {
      const age = Date.now() - stats.mtimeMs;
      if (age >= this.#stabilityMs) return stats;
      const wait = age < 0 ? this.#stabilityMs : this.#stabilityMs - age;
      try {
        await delay(wait, undefined, { signal: this.#abort.signal });
      } catch {
        return undefined;
      }
      const next = await lstatOrUndefined(path);
      if (next === undefined || !next.isFile()) return undefined;
      if (age < 0 && next.size === stats.size && next.mtimeMs === stats.mtimeMs) return next;
      stats = next;
    }
  }

  async #import(
    folder: Folder,
    path: string,
    rel: string,
    entry: WatchIndexEntry | undefined,
    stats: Stats,
  ): Promise<Outcome> {
    if (this.#closing) return 'done';
    const started = Date.now();
    let doc = entry === undefined ? undefined : await this.#daemon.getDoc(entry.docId);
    if (doc === undefined || doc.deleted) {
      doc = await this.#daemon.createDoc(fileContent(folder, rel, stats, null));
      const docId = doc.id;
      await this.#index.commit((tx) =>
        tx.putWatchEntry(path, { docId, blobId: null, size: stats.size, mtimeMs: stats.mtimeMs }),
      );
    }

    const source = createReadStream(path, {
      highWaterMark: READ_BLOCK_BYTES,
      ...(stats.size > 0 ? { end: stats.size - 1 } : {}),
    });
    let blobId: string;
    try {
      blobId = (await this.#daemon.putAttachment(doc.id, source)).blobId;
    } finally {
      source.destroy();
    }

    const after = await lstatOrUndefined(path);
    if (after === undefined || !sameStat({ size: stats.size, mtimeMs: stats.mtimeMs }, after)) {
      // The file changed while it was read: this blob may mix two versions.
      this.#logger.debug({ path: rel }, 'watched file changed while read; reading it again');
      await this.#deleteBlob(blobId, doc.id);
      return 'again';
    }

    // The version the put replaced: the last one `change` saw (after a conflict, re-read).
    let base = doc.content;
    doc = await this.#updateDoc(
      doc,
      (content) => {
        base = content;
        return { ...content, ...fileContent(folder, rel, stats, blobId) };
      },
      { keepReplacedBlob: true },
    );
    const replaced = new Set<string>();
    for (const old of [entry?.blobId, base.blob_id]) {
      if (typeof old === 'string' && old !== blobId) replaced.add(old);
    }
    const docId = doc.id;
    await this.#index.commit((tx) => {
      tx.putWatchEntry(path, { docId, blobId, size: stats.size, mtimeMs: stats.mtimeMs });
      for (const old of replaced) {
        tx.putWatchEntry(REPLACED_BLOB_PREFIX + old, {
          docId,
          blobId: old,
          size: 0,
          mtimeMs: Date.now(),
        });
      }
    });
    this.#logger.info(
      {
        path: rel,
        folder: folder.root,
        bytes: stats.size,
        ms: Date.now() - started,
        docId,
        blobId,
      },
      'imported watched file',
    );
    if (replaced.size > 0) {
      for (const old of replaced) this.#addReplaced(docId, old);
      // Its upload may already be done: the event went by before the deletion was recorded.
      this.#sweepReplaced(docId);
    }
    return 'done';
  }

  async #markRemoved(
    folder: Folder,
    path: string,
    rel: string,
    entry: WatchIndexEntry,
  ): Promise<void> {
    const doc = await this.#daemon.getDoc(entry.docId);
    if (doc !== undefined && !doc.deleted && doc.content.removed !== true) {
      await this.#updateDoc(doc, (content) => ({
        ...content,
        removed: true,
        removed_at: Date.now(),
      }));
    }
    await this.#index.commit((tx) => tx.deleteWatchEntry(path));
    this.#logger.info(
      { path: rel, folder: folder.root, docId: entry.docId },
      'watched file removed; its document is kept',
    );
  }

  /** Puts `change(content)` on the latest revision, re-reading it after a conflict. */
  async #updateDoc(
    doc: DocRecord,
    change: (content: Record<string, unknown>) => Record<string, unknown>,
    options: { keepReplacedBlob?: boolean } = {},
  ): Promise<DocRecord> {
    let current = doc;
    for (let attempt = 0; ; attempt++) {
      try {
        const content = change(current.content);
        return await this.#daemon.putDoc(current.id, content, current.rev, options);
      } catch (err) {
        if (errorCode(err) !== 'conflict' || attempt >= CONFLICT_RETRIES) throw err;
        const latest = await this.#daemon.getDoc(current.id);
        if (latest === undefined) throw err;
        current = latest;
      }
    }
  }

  #onDaemonEvent(event: DaemonEvent): void {
    const synced = event.type === 'attachment.state' && event.state === AttachmentState.SYNCED;
    if (!synced || event.docId === null) return;
    if (this.#replaced.has(event.docId)) this.#sweepReplaced(event.docId);
  }

  #addReplaced(docId: string, blobId: string): void {
    let blobs = this.#replaced.get(docId);
    if (blobs === undefined) {
      blobs = new Set();
      this.#replaced.set(docId, blobs);
    }
    blobs.add(blobId);
  }

  #sweepReplaced(docId: string): void {
    if (this.#closing) return;
    void this.#sweeps.run(docId, () => this.#deleteReplaced(docId));
  }

  /**
   * Deletes the blobs replaced in a document once the server holds its current blob:
   * SYNCED, or REMOTE after an eviction (but not `failed`, which is REMOTE too).
   */
  async #deleteReplaced(docId: string): Promise<Outcome> {
    const blobs = this.#replaced.get(docId);
    if (blobs === undefined || blobs.size === 0 || this.#closing) return 'done';
    const doc = await this.#daemon.getDoc(docId);
    const current = doc === undefined || doc.deleted ? null : doc.content.blob_id;
    if (typeof current === 'string') {
      const info = await this.#daemon.getAttachmentInfo(current);
      const onServer =
        info !== undefined &&
        (info.state === AttachmentState.SYNCED ||
          (info.state === AttachmentState.REMOTE && info.machineState !== 'failed'));
      if (!onServer) return 'done';
    }
    for (const old of [...blobs]) {
      if (this.#closing) return 'done';
      if (old !== current && !(await this.#deleteBlob(old, docId))) continue;
      await this.#index.commit((tx) => tx.deleteWatchEntry(REPLACED_BLOB_PREFIX + old));
      blobs.delete(old);
    }
    if (blobs.size === 0) this.#replaced.delete(docId);
    return 'done';
  }

  /** Deletes an unreferenced blob; false when it has to be tried again later. */
  async #deleteBlob(blobId: string, docId: string): Promise<boolean> {
    if (this.#daemon.deleteOrphanBlob === undefined) return true;
    try {
      await this.#daemon.deleteOrphanBlob(blobId);
      this.#logger.debug({ blobId, docId }, 'deleted replaced blob');
      return true;
    } catch (err) {
      const code = errorCode(err);
      if (code === 'not_found') return true;
      if (code === 'invalid_state') {
        this.#logger.warn({ err, blobId, docId }, 'replaced blob is still referenced; kept');
        return true;
      }
      this.#logger.warn({ err, blobId, docId }, 'cannot delete replaced blob yet');
      return false;
    }
  }

  #logFailure(subject: { path: string } | { docId: string }, err: unknown): void {
    if (this.#closing && errorCode(err) === 'shutting_down') return;
    this.#logger.warn(
      { err, ...subject },
      'watch folder change failed; it is tried again on the next change or start',
    );
  }
}

function fileContent(
  folder: Folder,
  rel: string,
  stats: Stats,
  blobId: string | null,
): WatchedFileContent {
  return {
    path: rel,
    folder: folder.root,
    size: stats.size,
    mtime: stats.mtimeMs,
    blob_id: blobId,
    removed: false,
  };
}

function sameStat(entry: { size: number; mtimeMs: number }, stats: Stats): boolean {
  return entry.size === stats.size && entry.mtimeMs === stats.mtimeMs;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const { code } = err as { code: unknown };
  return typeof code === 'string' ? code : undefined;
}

function relativePath(root: string, path: string): string {
  const rel = relative(root, path);
  return sep === '/' ? rel : rel.split(sep).join('/');
}

function isInside(path: string, dir: string): boolean {
  return path.startsWith(dir + sep);
}

function stripTrailingSep(path: string): string {
  return path.length > 1 && path.endsWith(sep) ? path.slice(0, -1) : path;
}

/** At most `limit` tasks at once; the rest wait in arrival order. */
class Semaphore {
  #free: number;
  readonly #waiting: Array<() => void> = [];

  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError('concurrency must be a positive integer');
    }
    this.#free = limit;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((wake) => this.#waiting.push(wake));
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next === undefined) this.#free++;
      else next();
    }
  }
}

/**
 * One serial loop per key: a `run` while the key's loop is busy marks it to go round once
 * more instead of starting a second one. A pass that returns 'again' also goes round.
 */
class SerialKeys {
  readonly #loops = new Map<string, { again: boolean; done: Promise<void> }>();
  readonly #onError: (key: string, error: unknown) => void;
  #waiters: Array<() => void> = [];

  constructor(onError: (key: string, error: unknown) => void) {
    this.#onError = onError;
  }

  get size(): number {
    return this.#loops.size;
  }

  run(key: string, pass: () => Promise<Outcome>): Promise<void> {
    const busy = this.#loops.get(key);
    if (busy !== undefined) {
      busy.again = true;
      return busy.done;
    }
    const loop = { again: false, done: Promise.resolve() };
    this.#loops.set(key, loop);
    loop.done = (async () => {
      try {
        do {
          loop.again = false;
          try {
            if ((await pass()) === 'again') loop.again = true;
          } catch (error) {
            // Goes round again only if another run came in meanwhile.
            this.#onError(key, error);
          }
        } while (loop.again);
      } finally {
        this.#loops.delete(key);
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const wake of waiters) wake();
      }
    })();
    return loop.done;
  }

  /** Resolves when some loop ends. */
  drained(): Promise<void> {
    if (this.#loops.size === 0) return Promise.resolve();
    return new Promise((wake) => this.#waiters.push(wake));
  }

  /** Resolves when no loop is running, including loops started meanwhile. */
  async idle(): Promise<void> {
    while (this.#loops.size > 0) {
      await Promise.all([...this.#loops.values()].map((loop) => loop.done));
    }
  }
}
