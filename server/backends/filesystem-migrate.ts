import { link, opendir, readFile, rmdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isValidId } from '../../wire/ids.js';
import {
  errorCode,
  FLAGS_SUFFIX,
  fsyncDir,
  LAYOUT_FILE,
  LAYOUT_VERSION,
  subdirs,
  writeFileAtomic,
} from './filesystem-layout.js';

/** A long move logs its progress every this many files. */
const PROGRESS_EVERY = 10_000;

/** ROOT/.layout names a layout this version cannot read (or is not valid). */
export class LayoutError extends Error {
  readonly code = 'unknown_layout';

  constructor(message: string) {
    super(message);
    this.name = 'LayoutError';
  }
}

/** The layout ROOT/.layout records; undefined when the file is absent (layout 1 or a new ROOT). */
async function readLayout(root: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(join(root, LAYOUT_FILE), 'utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  let layout: unknown;
  try {
    layout = (JSON.parse(text) as { layout?: unknown }).layout;
  } catch {
    layout = undefined;
  }
  if (typeof layout !== 'number' || !Number.isSafeInteger(layout) || layout < 1) {
    throw new LayoutError(`${join(root, LAYOUT_FILE)} is not {"layout": N}`);
  }
  return layout;
}

/**
 * Moves `from` to `to` without ever replacing a file: `link(2)` then unlink. A crash
 * between the two leaves both names on one inode, which the next run recognises and
 * finishes. Resolves false (and leaves `from`) if `to` is another file.
 */
async function moveNoReplace(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
  } catch (error) {
    if (errorCode(error) !== 'EEXIST') throw error;
    const [a, b] = await Promise.all([stat(from), stat(to)]);
    if (a.ino !== b.ino || a.dev !== b.dev) return false;
  }
  await unlink(from);
  return true;
}

/**
 * Moves the blob and flags files of one layout-1 shard folder up into their namespace
 * folder, makes the new names durable, and removes the shard folder once it is empty.
 */
async function flattenShard(
  nsDir: string,
  shard: string,
  logger: Logger,
): Promise<{ moved: number; left: number }> {
  const shardDir = join(nsDir, shard);
  let moved = 0;
  let left = 0;
  for await (const dirent of await opendir(shardDir)) {
    const isFlags = dirent.name.endsWith(FLAGS_SUFFIX);
    const id = isFlags ? dirent.name.slice(0, -FLAGS_SUFFIX.length) : dirent.name;
    const from = join(shardDir, dirent.name);
    if (
      dirent.isFile() &&
      isValidId(id) &&
      id.slice(0, 2) === shard &&
      (await moveNoReplace(from, join(nsDir, dirent.name)))
    ) {
      moved++;
    } else {
      logger.warn(
        { path: from },
        'left a file of layout 1 in place: it is not a blob, or its name is taken',
      );
      left++;
    }
  }
  await fsyncDir(nsDir);
  if (left === 0) {
    await rmdir(shardDir);
    await fsyncDir(nsDir);
  }
  return { moved, left };
}

/**
 * Brings ROOT to LAYOUT_VERSION before the backend uses it. A ROOT without `.layout` is
 * either new or of layout 1 (0.1.0), whose blobs live in shard folders
 * `{ns}/{id[0..2]}/{id}`: they are moved up to `{ns}/{id}`, one shard at a time, and
 * `.layout` is written last, so a crash part-way just makes the next open continue. The
 * index does not change: it never held paths. Refuses a ROOT of a later layout.
 */
export async function migrateLayout(root: string, logger: Logger): Promise<void> {
  const layout = await readLayout(root);
  if (layout === LAYOUT_VERSION) return;
  if (layout !== undefined && layout > LAYOUT_VERSION) {
    throw new LayoutError(
      `${root} has blob layout ${layout}; this version of soledad reads layout ${LAYOUT_VERSION} and older`,
    );
  }
  const started = performance.now();
  let moved = 0;
  let left = 0;
  let reported = 0;
  for (const user of await subdirs(root)) {
    if (!isValidId(user.name)) continue;
    for (const namespace of await subdirs(join(root, user.name))) {
      if (!isValidId(namespace.name)) continue;
      const nsDir = join(root, user.name, namespace.name);
      for (const shard of await subdirs(nsDir)) {
        if (!isValidId(shard.name) || shard.name.length > 2) continue;
        const counts = await flattenShard(nsDir, shard.name, logger);
        moved += counts.moved;
        left += counts.left;
        if (moved - reported >= PROGRESS_EVERY) {
          reported = moved;
          logger.info(
            { path: root, moved, ms: Math.round(performance.now() - started) },
            `moving blob files to layout ${LAYOUT_VERSION}`,
          );
        }
      }
    }
  }
  await writeFileAtomic(
    root,
    join(root, LAYOUT_FILE),
    `${JSON.stringify({ layout: LAYOUT_VERSION })}\n`,
  );
  if (moved > 0 || left > 0) {
    logger.info(
      { path: root, moved, left, ms: Math.round(performance.now() - started) },
      `moved blob files to layout ${LAYOUT_VERSION}`,
    );
  }
}
