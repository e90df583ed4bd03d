import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  CLEAN_FILE,
  errorCode,
  fsyncDir,
  unlinkIfExists,
  writeFileAtomic,
} from './filesystem-layout.js';

/**
 * What `close()` leaves in ROOT/.clean: the proof that the index and the files agreed at
 * shutdown, and the state that would otherwise take a scan of every blob to rebuild.
 */
export interface CleanState {
  /** Bytes of live blobs per user. */
  usage: Map<string, number>;
  /** The clock's last upload or deletion time (µs), so that it never goes back. */
  latestTime: number;
}

function parse(text: string): CleanState | undefined {
  try {
    const value = JSON.parse(text) as { usage?: unknown; latestTime?: unknown };
    const { usage, latestTime } = value;
    if (typeof latestTime !== 'number' || !Number.isSafeInteger(latestTime)) return undefined;
    if (typeof usage !== 'object' || usage === null || Array.isArray(usage)) return undefined;
    const entries = Object.entries(usage);
    if (!entries.every(([, bytes]) => Number.isSafeInteger(bytes) && (bytes as number) >= 0)) {
      return undefined;
    }
    return { usage: new Map(entries as [string, number][]), latestTime };
  } catch {
    return undefined;
  }
}

/**
 * Reads and removes ROOT/.clean. Resolves with its state when the last run closed cleanly,
 * undefined otherwise (a crash, a first open, or an operator who removed the file to force a
 * full check). The file is gone, durably, before this resolves, so a crash from here on is
 * noticed at the next open.
 */
export async function takeCleanState(
  root: string,
  logger: Logger,
): Promise<CleanState | undefined> {
  const path = join(root, CLEAN_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  const state = parse(text);
  if (state === undefined) logger.warn({ path }, 'ignored an unreadable clean-shutdown file');
  await unlinkIfExists(path);
  await fsyncDir(root);
  return state;
}

/** Writes ROOT/.clean; called by `close()` after the last change and before releasing ROOT. */
export async function writeCleanState(root: string, state: CleanState): Promise<void> {
  const content = JSON.stringify({
    latestTime: state.latestTime,
    usage: Object.fromEntries(state.usage),
  });
  await writeFileAtomic(root, join(root, CLEAN_FILE), content);
}
