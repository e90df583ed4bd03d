import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const DROP_CACHES = '/proc/sys/vm/drop_caches';

/** Writes back every dirty page of the machine (`sync(1)`). */
export async function syncDisk(): Promise<void> {
  await execFileAsync('sync', []);
}

/**
 * Brings the disk to a quiet state before a measure that is bound by it: writes back every
 * dirty page (`sync(1)`), so no measure pays for the writeback of the one before, then, where
 * this process may (root), drops the clean page cache.
 *
 * Why the drop. Our machines' root filesystem is ext4 without a journal
 * (`/sys/fs/ext4/DEV/journal_task` reads `<none>`). There, creating a file skips every inode
 * of its block group that was freed in the last 60 s, or 360 s while the inode's table block
 * is dirty, and to find out it looks each one up in the buffer cache (`recently_deleted()` in
 * the kernel's fs/ext4/ialloc.c). After a bench part removed thousands of files, each create
 * scans past all of them: `perf record -a -g` during a `/stream` upload of 1000 × 10 KB put a
 * quarter of all CPU samples (half of the busy ones) under `ext4_create` → `recently_deleted`,
 * the server spent 0.7–1 ms of system time per blob instead of 0.1–0.2, and the disk's own
 * small-file rate moved between 1,200/s and 7,700/s from one round to the next. A table block that is no longer cached
 * counts as written out, so once the cache is dropped, a create costs what it costs on a quiet
 * disk, whichever files were removed before. Resolves with whether the cache was dropped.
 */
export async function settleDisk(): Promise<boolean> {
  await syncDisk();
  try {
    await writeFile(DROP_CACHES, '1\n');
    return true;
  } catch {
    return false;
  }
}
