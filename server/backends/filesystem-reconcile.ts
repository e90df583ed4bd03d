import type { Dir } from 'node:fs';
import { opendir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type BlobFlag, isBlobFlag } from '../../wire/flags.js';
import { isValidId } from '../../wire/ids.js';
import type { BlobIndex, IndexOp, LiveEntry } from './blob-index.js';
import type { BlobRef } from './blobs-backend.js';
import {
  blobPath,
  errorCode,
  FLAGS_SUFFIX,
  flagsPath,
  subdirs,
  unlinkIfExists,
  writeFileAtomic,
} from './filesystem-layout.js';

/** What `reconcile` found and fixed, and what the backend needs to start. */
export interface ReconcileResult {
  /** Bytes of live blobs per user, recomputed from the index. */
  usage: Map<string, number>;
  /** The latest upload time in the index (µs), so that the clock never goes back. */
  latestTime: number;
  /** Blob files that had no index entry and were indexed from their mtime. */
  indexed: number;
  /** Index entries whose blob file was missing, dropped. */
  dropped: number;
  /** Files removed: blobs of tombstoned ids, flags files without a blob. */
  removed: number;
  /** Flags files rewritten from the index after an interrupted `setFlags`. */
  flagsRewritten: number;
}

interface FoundFiles {
  blob: boolean;
  flags: boolean;
}

const WALK_CONCURRENCY = 32;
const BATCH = 1000;

async function mapLimit<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(WALK_CONCURRENCY, items.length) }, worker));
}

function parseFlags(text: string): BlobFlag[] | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (Array.isArray(value) && value.every(isBlobFlag)) return value;
  } catch {
    // Not JSON: reported by the caller.
  }
  return undefined;
}

/**
 * Rewrites from the index every flags file that a crash inside `setFlags` may have left
 * stale, and clears their dirty marks; resolves with how many there were.
 */
export async function repairFlagsFiles(root: string, index: BlobIndex): Promise<number> {
  let repaired = 0;
  for (const ref of await index.dirtyRefs()) {
    const entry = await index.getLive(ref);
    try {
      if (entry !== undefined && entry.f.length > 0) {
        await writeFileAtomic(root, flagsPath(root, ref), JSON.stringify(entry.f));
      } else {
        await unlinkIfExists(flagsPath(root, ref));
      }
    } catch (error) {
      // A missing folder means the blob file is gone too; reconciliation drops its entry.
      if (errorCode(error) !== 'ENOENT') throw error;
    }
    await index.clearDirty(ref);
    repaired++;
  }
  return repaired;
}

/**
 * Brings the index and the files under ROOT back into agreement after a crash (or a hand
 * edit); `open()` runs it, before serving anything, whenever ROOT/.clean is missing:
 * - a flags file marked dirty is rewritten from the index;
 * - a blob file with no index entry is indexed, with its mtime as upload time, its size
 *   and its flags file; if its id is tombstoned it is removed instead;
 * - an index entry whose blob file is missing is dropped;
 * - a flags file without a blob file is removed;
 * - usage per user is recomputed from the index.
 * It reads every folder of the layout once, but stats only files the index does not list.
 */
// TODO: recovery after a crash walks every blob folder (seconds per 100,000 blobs); an
// intent journal in the index would make it proportional to the writes in flight.
export async function reconcile(
  root: string,
  index: BlobIndex,
  logger: Logger,
): Promise<ReconcileResult> {
  const result: ReconcileResult = {
    usage: new Map(),
    latestTime: 0,
    indexed: 0,
    dropped: 0,
    removed: 0,
    flagsRewritten: 0,
  };

  result.flagsRewritten = await repairFlagsFiles(root, index);

  const onDisk = new Set<string>();
  for (const user of await subdirs(root)) {
    if (!isValidId(user.name)) continue;
    for (const namespace of await subdirs(join(root, user.name))) {
      if (isValidId(namespace.name)) onDisk.add(`${user.name}!${namespace.name}`);
    }
  }

  const done = new Set<string>();
  let group: { user: string; namespace: string; entries: Map<string, LiveEntry> } | undefined;
  const flush = async () => {
    if (group === undefined) return;
    done.add(`${group.user}!${group.namespace}`);
    await reconcileNamespace(
      root,
      index,
      logger,
      group.user,
      group.namespace,
      group.entries,
      result,
    );
  };
  for await (const page of index.scanLive()) {
    for (const { user, namespace, id, entry } of page) {
      if (group?.user !== user || group.namespace !== namespace) {
        await flush();
        group = { user, namespace, entries: new Map() };
      }
      group.entries.set(id, entry);
    }
  }
  await flush();
  for (const key of onDisk) {
    if (done.has(key)) continue;
    const [user, namespace] = key.split('!') as [string, string];
    await reconcileNamespace(root, index, logger, user, namespace, new Map(), result);
  }
  return result;
}

async function reconcileNamespace(
  root: string,
  index: BlobIndex,
  logger: Logger,
  user: string,
  namespace: string,
  entries: Map<string, LiveEntry>,
  result: ReconcileResult,
): Promise<void> {
  const found = await walkNamespace(root, user, namespace, logger);
  const log = logger.child({ user, namespace });
  let bytes = 0;

  const gone: IndexOp[] = [];
  for (const [id, entry] of entries) {
    if (found.get(id)?.blob) {
      bytes += entry.s;
      result.latestTime = Math.max(result.latestTime, entry.t);
    } else {
      log.debug({ blobId: id }, 'dropping an index entry whose blob file is gone');
      gone.push(...index.dropOps({ user, namespace, id }, entry));
    }
  }
  for (let i = 0; i < gone.length; i += BATCH) await index.batch(gone.slice(i, i + BATCH));
  result.dropped += gone.length / 2;
  if (gone.length > 0) {
    log.warn({ count: gone.length / 2 }, 'dropped index entries whose blob files are gone');
  }

  const unindexed: BlobRef[] = [];
  let removed = 0;
  for (const [id, files] of found) {
    const ref: BlobRef = { user, namespace, id };
    if (!files.blob) {
      await unlinkIfExists(flagsPath(root, ref));
      removed++;
    } else if (!entries.has(id)) {
      unindexed.push(ref);
    }
  }
  let indexed = 0;
  for (let i = 0; i < unindexed.length; i += BATCH) {
    const refs = unindexed.slice(i, i + BATCH);
    const tombs = await index.getTombs(refs);
    const ops: IndexOp[] = [];
    await mapLimit(
      refs.map((ref, k) => ({ ref, tombstoned: tombs[k] !== undefined })),
      async ({ ref, tombstoned }) => {
        if (tombstoned) {
          log.debug({ blobId: ref.id }, 'removing the blob file of a tombstoned id');
          await unlinkIfExists(blobPath(root, ref));
          await unlinkIfExists(flagsPath(root, ref));
          removed++;
          return;
        }
        const entry = await entryFromFiles(root, ref, found.get(ref.id)!, log);
        log.debug(
          { blobId: ref.id, bytes: entry.s },
          'indexing a blob file the index did not list',
        );
        ops.push(...index.liveOps(ref, entry));
        bytes += entry.s;
        result.latestTime = Math.max(result.latestTime, entry.t);
        indexed++;
      },
    );
    await index.batch(ops);
  }
  result.indexed += indexed;
  result.removed += removed;
  if (indexed > 0) log.warn({ count: indexed }, 'indexed blob files the index did not list');
  if (removed > 0) {
    log.warn({ count: removed }, 'removed files of tombstoned ids and flags files without a blob');
  }
  if (bytes > 0) result.usage.set(user, (result.usage.get(user) ?? 0) + bytes);
}

async function entryFromFiles(
  root: string,
  ref: BlobRef,
  files: FoundFiles,
  logger: Logger,
): Promise<LiveEntry> {
  const info = await stat(blobPath(root, ref), { bigint: true });
  let flags: BlobFlag[] = [];
  if (files.flags) {
    const parsed = parseFlags(await readFile(flagsPath(root, ref), 'utf8'));
    if (parsed === undefined) {
      logger.warn({ blobId: ref.id, path: flagsPath(root, ref) }, 'ignored an invalid flags file');
    } else {
      flags = parsed;
    }
  }
  return { t: Number((info.mtimeNs + 500n) / 1000n), s: Number(info.size), f: flags };
}

/** Every blob and flags file of one namespace, by id; entries off the layout are skipped. */
async function walkNamespace(
  root: string,
  user: string,
  namespace: string,
  logger: Logger,
): Promise<Map<string, FoundFiles>> {
  const found = new Map<string, FoundFiles>();
  const dir = join(root, user, namespace);
  let entries: Dir;
  try {
    entries = await opendir(dir, { bufferSize: 1024 });
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return found;
    throw error;
  }
  // Read as a stream: a namespace folder may hold millions of names.
  for await (const dirent of entries) {
    const isFlags = dirent.name.endsWith(FLAGS_SUFFIX);
    const id = isFlags ? dirent.name.slice(0, -FLAGS_SUFFIX.length) : dirent.name;
    if (!dirent.isFile() || !isValidId(id)) {
      logger.warn({ path: join(dir, dirent.name) }, 'ignored an entry outside the blob layout');
      continue;
    }
    const files = found.get(id) ?? { blob: false, flags: false };
    if (isFlags) files.flags = true;
    else files.blob = true;
    found.set(id, files);
  }
  return found;
}
