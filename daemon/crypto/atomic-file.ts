import { randomBytes } from 'node:crypto';
import { link, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /** File mode, set exactly (not filtered by the umask); default 0o600. */
  mode?: number;
  /** Replace an existing file (rename) or fail with EEXIST (link); default true. */
  replace?: boolean;
}

/**
 * Writes `data` to `path` so that readers and crashes see either the old file or the whole
 * new one: a temporary file in the same folder is written and fsynced, then renamed (or
 * linked, when `replace` is false) into place, then the folder is fsynced. The temporary
 * file is removed on every path.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Buffer,
  { mode = 0o600, replace = true }: AtomicWriteOptions = {},
): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  let placed = false;
  try {
    const handle = await open(temp, 'wx', mode);
    try {
      await handle.chmod(mode);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (replace) {
      await rename(temp, path);
      placed = true;
    } else {
      await link(temp, path);
    }
  } finally {
    if (!placed) await unlink(temp).catch(() => {});
  }
  await syncDirectory(dir);
}

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
