import { randomUUID } from 'node:crypto';
import { type Dirent, writevSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { BlobRef } from './blobs-backend.js';

/**
 * Where the filesystem backend keeps things under ROOT. User, namespace and blob ids
 * never contain `.`, so the backend's own entries (`.index`, `.tmp`) and the `.flags`
 * suffix cannot collide with them.
 *
 * ```
 * ROOT/.index/                 LevelDB index (its LOCK file is the process lock)
 * ROOT/.tmp/                   uploads in progress and flags files being written
 * ROOT/.clean                  present only while no backend has ROOT open after a clean close
 * ROOT/.layout                 {"layout": LAYOUT_VERSION}
 * ROOT/{user}/{ns}/{id}        blob bytes
 * ROOT/{user}/{ns}/{id}.flags  JSON array; absent = []
 * ```
 */
export const INDEX_DIR = '.index';
export const TMP_DIR = '.tmp';
export const CLEAN_FILE = '.clean';
export const LAYOUT_FILE = '.layout';
export const FLAGS_SUFFIX = '.flags';

/**
 * 2: one folder per namespace. Layout 1 (0.1.0) had a shard folder of the id's first two
 * characters, `{ns}/{id[0..2]}/{id}`; `migrateLayout` moves such a tree into place.
 */
export const LAYOUT_VERSION = 2;

/** The folder holding the blobs of `ref`'s namespace. */
export function leafDir(root: string, ref: BlobRef): string {
  return join(root, ref.user, ref.namespace);
}

export function blobPath(root: string, ref: BlobRef): string {
  return join(leafDir(root, ref), ref.id);
}

export function flagsPath(root: string, ref: BlobRef): string {
  return join(leafDir(root, ref), ref.id + FLAGS_SUFFIX);
}

export function tempPath(root: string): string {
  return join(root, TMP_DIR, `${randomUUID()}.tmp`);
}

/** Flushes a directory's entries (new, renamed or removed names) to disk. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Folders whose handles a `DirSyncer` keeps open for its fsyncs. */
const OPEN_FOLDERS_MAX = 64;

/**
 * Folder fsyncs with concurrent callers coalesced. A caller's change to a folder (a name
 * linked or removed) is durable once an fsync that *started after the change* completes,
 * so `sync(dir)` joins an fsync of `dir` that is queued but not started, or queues one
 * behind the fsync running now; every caller arriving meanwhile shares that one. Under a
 * burst of writes into few folders this turns one fsync per write into about one per
 * folder per disk round trip. The default fsync keeps the handles of the last
 * OPEN_FOLDERS_MAX folders open, so an fsync is one call instead of open, fsync, close.
 *
 * It also makes folder creation durable for every writer, not just the one whose `mkdir`
 * created it: until the parent's fsync after a creation has completed, `ensureDir` callers
 * that found the folder existing wait for it too. A folder it has seen existing (and
 * durable) is remembered, so later `ensureDir` calls for it make no system call: folders
 * under ROOT are never removed while the backend has it open.
 */
export class DirSyncer {
  readonly #fsync: (dir: string) => Promise<void>;
  readonly #syncs = new Map<string, { running?: Promise<void>; queued?: Promise<void> }>();
  /** Folders created whose names are not durable in their parents yet. */
  readonly #creating = new Map<string, Promise<void>>();
  /** Folders known to exist with durable names. */
  readonly #known = new Set<string>();
  /** Open folder handles, least recently used first; each with its last fsync. */
  readonly #handles = new Map<string, { handle: Promise<FileHandle>; last: Promise<void> }>();

  /** `fsync` is for tests that count calls; the default fsyncs the folder. */
  constructor(fsync?: (dir: string) => Promise<void>) {
    this.#fsync = fsync ?? ((dir) => this.#fsyncOpen(dir));
  }

  sync(dir: string): Promise<void> {
    let entry = this.#syncs.get(dir);
    if (entry === undefined) {
      entry = {};
      this.#syncs.set(dir, entry);
    }
    if (entry.queued !== undefined) return entry.queued;
    const { running } = entry;
    if (running === undefined) return this.#start(dir, entry);
    const slot = entry;
    slot.queued = running.then(ignore, ignore).then(() => {
      slot.queued = undefined;
      return this.#start(dir, slot);
    });
    return slot.queued;
  }

  #start(dir: string, entry: { running?: Promise<void>; queued?: Promise<void> }) {
    const running: Promise<void> = this.#fsync(dir).finally(() => {
      if (entry.running !== running) return;
      entry.running = undefined;
      if (entry.queued === undefined) this.#syncs.delete(dir);
    });
    entry.running = running;
    return running;
  }

  /** fsyncs `dir` through a kept handle; the least recently used one closes past the limit. */
  #fsyncOpen(dir: string): Promise<void> {
    let slot = this.#handles.get(dir);
    if (slot === undefined) {
      slot = { handle: open(dir, 'r'), last: Promise.resolve() };
      slot.handle.catch(ignore);
    } else {
      this.#handles.delete(dir);
    }
    this.#handles.set(dir, slot);
    const current = slot;
    const synced = current.handle.then((handle) => handle.sync());
    current.last = synced.catch(ignore);
    synced.catch(() => {
      // A folder that failed once is opened afresh by the next fsync.
      if (this.#handles.get(dir) === current) this.#forget(dir, current);
    });
    for (const [oldest, old] of this.#handles) {
      if (this.#handles.size <= OPEN_FOLDERS_MAX) break;
      this.#forget(oldest, old);
    }
    return synced;
  }

  #forget(dir: string, slot: { handle: Promise<FileHandle>; last: Promise<void> }): void {
    this.#handles.delete(dir);
    void slot.last.then(() => slot.handle).then((handle) => handle.close().catch(ignore), ignore);
  }

  /** Closes the kept folder handles once their fsyncs end. */
  async close(): Promise<void> {
    const slots = [...this.#handles];
    this.#handles.clear();
    await Promise.all(
      slots.map(async ([, slot]) => {
        await slot.last;
        const handle = await slot.handle.catch(() => undefined);
        await handle?.close().catch(ignore);
      }),
    );
  }

  /**
   * Creates `dir` and its missing parents, and fsyncs the parent of each folder created, so
   * that a name linked into `dir` survives a crash once `dir` is fsynced.
   */
  async ensureDir(dir: string): Promise<void> {
    if (this.#known.has(dir)) return;
    const first = await mkdir(dir, { recursive: true });
    if (first === undefined) {
      // Existing, but perhaps just made by a concurrent call whose parent fsync is running.
      await this.#creating.get(dir);
      this.#known.add(dir);
      return;
    }
    const made: string[] = [];
    let parent = dirname(first);
    for (const name of relative(parent, dir).split(sep)) {
      parent = join(parent, name);
      made.push(parent);
    }
    const durable = (async () => {
      for (const folder of made) await this.sync(dirname(folder));
    })();
    for (const folder of made) this.#creating.set(folder, durable);
    try {
      await durable;
      this.#known.add(dir);
    } finally {
      for (const folder of made) {
        if (this.#creating.get(folder) === durable) this.#creating.delete(folder);
      }
    }
  }
}

function ignore(): void {}

/** The `code` of a Node system error (`ENOENT`, `EEXIST`, ...), if it has one. */
export function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** The folders directly inside `dir`; none when `dir` does not exist. */
export async function subdirs(dir: string): Promise<Dirent[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isDirectory());
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return [];
    throw error;
  }
}

/** `unlink` that treats a missing file as done. */
export async function unlinkIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error;
  }
}

/**
 * Writes `content` to `path` atomically: a temp file under ROOT/.tmp, fsynced, renamed over
 * `path`, then the folder fsynced. Only for small metadata files; blobs are never renamed.
 */
export async function writeFileAtomic(root: string, path: string, content: string): Promise<void> {
  const temp = tempPath(root);
  try {
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.writeFile(content, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await fsyncDir(dirname(path));
}

/** Writes all of `chunks`, however much each `writev` call takes. */
export async function writeAll(handle: FileHandle, chunks: Buffer[]): Promise<void> {
  let pending = chunks;
  while (pending.length > 0)
    pending = unwritten(pending, (await handle.writev(pending)).bytesWritten);
}

/** `writeAll` with synchronous calls, for small bodies (see filesystem-backend.ts). */
export function writeAllSync(fd: number, chunks: Buffer[]): void {
  let pending = chunks;
  while (pending.length > 0) pending = unwritten(pending, writevSync(fd, pending));
}

/** What is left of `chunks` once their first `bytesWritten` bytes are written. */
function unwritten(chunks: Buffer[], bytesWritten: number): Buffer[] {
  let left = bytesWritten;
  let i = 0;
  while (i < chunks.length && left >= chunks[i]!.length) {
    left -= chunks[i]!.length;
    i++;
  }
  const pending = chunks.slice(i);
  if (left > 0) pending[0] = pending[0]!.subarray(left);
  return pending;
}
