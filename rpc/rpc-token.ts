import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

const TOKEN_PATTERN = /^[A-Za-z0-9_-]{32,512}$/;

/**
 * Reads the RPC token from `path`, or creates it (256 random bits, base64url, mode 0600)
 * when the file does not exist. A token file readable by others is narrowed to 0600;
 * `onLoosePermissions` hears about it.
 */
export async function loadOrCreateToken(
  path: string,
  onLoosePermissions?: (mode: number) => void,
): Promise<string> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const fresh = randomBytes(32).toString('base64url');
  try {
    await writeFile(path, `${fresh}\n`, { mode: 0o600, flag: 'wx' });
    return fresh;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const mode = (await stat(path)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    await chmod(path, 0o600);
    onLoosePermissions?.(mode);
  }
  return readToken(path);
}

/** Reads an existing token file; throws when it is missing or malformed. */
export async function readToken(path: string): Promise<string> {
  const token = (await readFile(path, 'utf8')).trim();
  if (!TOKEN_PATTERN.test(token)) throw new Error(`${path} does not hold a valid RPC token`);
  return token;
}

/** Compares two tokens in time independent of where they differ (and of their lengths). */
export function tokensMatch(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected, 'utf8').digest();
  const b = createHash('sha256').update(given, 'utf8').digest();
  return timingSafeEqual(a, b);
}
