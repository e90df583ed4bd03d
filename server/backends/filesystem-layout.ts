import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { BlobRef } from './blobs-backend.js';

/**
 * Where the filesystem backend keeps things under ROOT. User, namespace and blob ids
 * never contain `.`, so the backend's own entries (`.index`, `.tmp`) and the `.flags`
 * suffix cannot collide with them.
 *
 * ```
 * ROOT/.index/                         LevelDB index (its LOCK file is the process lock)
 * ROOT/.tmp/                           uploads in progress and flags files being written
 * ROOT/.clean                          present only while no backend has ROOT open after a clean close
 * ROOT/{user}/{ns}/{id[0..2]}/{id}         blob bytes
 * ROOT/{user}/{ns}/{id[0..2]}/{id}.flags   JSON array; absent = []
 * ```
 */
export const INDEX_DIR = '.index';
export const TMP_DIR = '.tmp';
export const CLEAN_FILE = '.clean';
export const FLAGS_SUFFIX = '.flags';

/**
 * The shard folder of `id`: its first two characters (the whole id if shorter). One level
 * of at most 4,096 shards keeps the folders of a busy namespace existing after its first
 * writes, so a write rarely creates one (each creation costs an fsync of the parent).
 */
export function shardOf(id: string): string {
  return id.slice(0, 2);
}

export function leafDir(root: string, ref: BlobRef): string {
  return join(root, ref.user, ref.namespace, shardOf(ref.id));
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

/**
 * Folder fsyncs with concurrent callers coalesced. A caller's change to a folder (a name
 * linked or removed) is durable once an fsync that *started after the change* completes,
 * so `sync(dir)` joins an fsync of `dir` that is queued but not started, or queues one
 * behind the fsync running now; every caller arriving meanwhile shares that one. Under a
 * burst of writes into few folders this turns one fsync per write into about one per
 * folder per disk round trip.
 *
 * It also makes folder creation durable for every writer, not just the one whose `mkdir`
 * created it: until the parent's fsync after a creation has completed, `ensureDir` callers
 * that found the folder existing wait for it too.
 */
export class DirSyncer {
  readonly #fsync: (dir: string) => Promise<void>;
  readonly #syncs = new Map<string, { running?: Promise<void>; queued?: Promise<void> }>();
  /** Folders created whose names are not durable in their parents yet. */
  readonly #creating = new Map<string, Promise<void>>();

  /** `fsync` is for tests that count calls; the default fsyncs the folder. */
  constructor(fsync: (dir: string) => Promise<void> = fsyncDir) {
    this.#fsync = fsync;
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

  /**
   * Creates `dir` and its missing parents, and fsyncs the parent of each folder created, so
   * that a name linked into `dir` survives a crash once `dir` is fsynced.
   */
  async ensureDir(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true });
    if (first === undefined) {
      // Existing, but perhaps just made by a concurrent call whose parent fsync is running.
      await this.#creating.get(dir);
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
    } finally {
      for (const folder of made) {
        if (this.#creating.get(folder) === durable) this.#creating.delete(folder);
      }
    }
  }
}

function ignore(): void {}

/** `unlink` that treats a missing file as done. */
export async function unlinkIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
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
