import { link, mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlignedPool,
  DIRECT_CHUNK,
  openDirectForWrite,
  writeFullyAt,
} from '../../server/backends/direct-io.js';

export interface DiskPublishOptions {
  /** A folder on the filesystem to measure; a temp folder is made inside and removed. */
  parent: string;
  files: number;
  /** Bytes per file (written from `data`, which must be at least this long). */
  data: Buffer;
  size: number;
  inFlight: number;
  /** Also fsync the destination folder after each link, as a durable publish needs. */
  syncDir: boolean;
  /**
   * Leave the files for the caller, who removes `parent` later. On a filesystem mounted
   * with `discard`, removing files sends TRIMs to the device, which slow down whatever is
   * measured right after; a bench that defers its removals keeps them out of its figures.
   */
  keep?: boolean;
}

/**
 * The disk's own limit for small durable files: per file, create a temp file, write it,
 * fsync, close, link(2) it to its final name (and optionally fsync that folder), with
 * `inFlight` files at once. Resolves with files per second.
 */
export async function diskPublishRate(options: DiskPublishOptions): Promise<number> {
  const dir = await mkdtemp(join(options.parent, 'soledad-bench-disk-'));
  try {
    const tmp = join(dir, 'tmp');
    const published = join(dir, 'published');
    await mkdir(tmp);
    await mkdir(published);
    const body = options.data.subarray(0, options.size);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < options.files) {
        const i = next++;
        const temp = join(tmp, `${i}.tmp`);
        const handle = await open(temp, 'wx', 0o600);
        try {
          await handle.write(body);
          await handle.sync();
        } finally {
          await handle.close();
        }
        await link(temp, join(published, String(i)));
        if (options.syncDir) {
          const folder = await open(published, 'r');
          try {
            await folder.sync();
          } finally {
            await folder.close();
          }
        }
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: options.inFlight }, worker));
    return options.files / ((performance.now() - started) / 1000);
  } finally {
    if (options.keep !== true) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The disk's own rate for one large durable file: write `total` bytes (`block` again and
 * again) to a new file in a temp folder under `parent`, fsync, close. Resolves with bytes
 * per second; the file is removed unless `keep` (see `DiskPublishOptions.keep`).
 */
export async function diskWriteRate(
  parent: string,
  block: Buffer,
  total: number,
  keep = false,
): Promise<number> {
  return timedLargeFile(parent, keep, async (path) => {
    const handle = await open(path, 'wx', 0o600);
    try {
      for (let written = 0; written < total; written += block.length) await handle.write(block);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return total;
  });
}

/**
 * The device's own rate for one large durable file, around the page cache: `total` bytes
 * (a multiple of `DIRECT_CHUNK`) in `O_DIRECT` writes from two reused aligned buffers, one
 * in flight while the next is filled from `block`, then fsync. Resolves with bytes per
 * second; the file is removed unless `keep`.
 */
export async function diskDirectWriteRate(
  parent: string,
  block: Buffer,
  total: number,
  keep = false,
): Promise<number> {
  const buffers = new AlignedPool().acquire(2)!;
  return timedLargeFile(parent, keep, async (path) => {
    const handle = await openDirectForWrite(path, 0o600);
    try {
      let writing: Promise<void> = Promise.resolve();
      for (let at = 0, turn = 0; at < total; at += DIRECT_CHUNK, turn = 1 - turn) {
        const buffer = buffers[turn]!;
        for (let i = 0; i < DIRECT_CHUNK; i += block.length) block.copy(buffer, i);
        await writing;
        writing = writeFullyAt(handle, buffer, DIRECT_CHUNK, at);
      }
      await writing;
      await handle.sync();
    } finally {
      await handle.close();
    }
    return total;
  });
}

/** Bytes per second of `write(path)` into a new temp folder under `parent` (removed unless `keep`). */
async function timedLargeFile(
  parent: string,
  keep: boolean,
  write: (path: string) => Promise<number>,
): Promise<number> {
  const dir = await mkdtemp(join(parent, 'soledad-bench-disk-'));
  try {
    const started = performance.now();
    const bytes = await write(join(dir, 'large'));
    return bytes / ((performance.now() - started) / 1000);
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}
