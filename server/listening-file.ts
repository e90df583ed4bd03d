import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export const LISTENING_FILE = 'listening.json';

export interface ListenerAddress {
  host: string;
  port: number;
  /** Base URL, e.g. `http://127.0.0.1:2424`. */
  url: string;
}

/** Where a running server listens; written to `ROOT/listening.json` once both listeners are up. */
export interface ListeningInfo {
  pid: number;
  public: ListenerAddress;
  services: ListenerAddress;
  startedAt: string;
}

export function listenerAddress(host: string, port: number): ListenerAddress {
  const shown = host.includes(':') ? `[${host}]` : host;
  return { host, port, url: `http://${shown}:${port}` };
}

/** Replaces `ROOT/listening.json` atomically. */
export async function writeListeningFile(root: string, info: ListeningInfo): Promise<void> {
  const path = join(root, LISTENING_FILE);
  const temporary = `${path}.${process.pid}.tmp`;
  const handle = await open(temporary, 'w', 0o644);
  try {
    await handle.writeFile(`${JSON.stringify(info, null, 2)}\n`, 'utf8');
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
}

/** The listening file under `root`, or undefined if there is none (yet). */
export async function readListeningFile(root: string): Promise<ListeningInfo | undefined> {
  try {
    return JSON.parse(await readFile(join(root, LISTENING_FILE), 'utf8')) as ListeningInfo;
  } catch {
    return undefined;
  }
}

/** Removes the listening file if it still describes process `pid`. */
export async function removeListeningFile(root: string, pid: number): Promise<void> {
  const current = await readListeningFile(root);
  if (current?.pid === pid) await unlink(join(root, LISTENING_FILE)).catch(() => {});
}
