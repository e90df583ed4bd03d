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
 * ROOT/{user}/{ns}/{id[0]}/{id[0..3]}/{id[0..6]}/{id}         blob bytes
 * ROOT/{user}/{ns}/{id[0]}/{id[0..3]}/{id[0..6]}/{id}.flags   JSON array; absent = []
 * ```
 */
export const INDEX_DIR = '.index';
export const TMP_DIR = '.tmp';
export const CLEAN_FILE = '.clean';
export const FLAGS_SUFFIX = '.flags';

/** The three prefix folders of `id`, outermost first. */
export function prefixDirs(id: string): [string, string, string] {
  return [id.slice(0, 1), id.slice(0, 3), id.slice(0, 6)];
}

export function leafDir(root: string, ref: BlobRef): string {
  return join(root, ref.user, ref.namespace, ...prefixDirs(ref.id));
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
 * Creates `dir` and its missing parents under `root`, and fsyncs the parent of each folder
 * it created, so that a name linked into `dir` survives a crash once `dir` is fsynced.
 */
export async function ensureDurableDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined) return;
  // TODO: a folder created at the same moment by a concurrent write of another id is
  // fsynced into its parent by that write only; a crash in that window can drop this blob.
  let parent = dirname(first);
  for (const name of relative(parent, dir).split(sep)) {
    await fsyncDir(parent);
    parent = join(parent, name);
  }
}

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
