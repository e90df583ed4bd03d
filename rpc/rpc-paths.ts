import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';

/** Where the daemon listens unless configured otherwise. */
export const DEFAULT_RPC_HOST = '127.0.0.1';
export const DEFAULT_RPC_PORT = 2426;
export const DEFAULT_RPC_URL = `ws://${DEFAULT_RPC_HOST}:${DEFAULT_RPC_PORT}`;

/** In the config folder: the address the running daemon chose (written at start). */
export const RPC_INFO_FILE = 'rpc.json';
/** In the config folder: the bearer token, generated on first start, mode 0600. */
export const RPC_TOKEN_FILE = 'rpc-token';

/**
 * `$XDG_CONFIG_HOME/soledad`, or `~/.config/soledad` (a relative `XDG_CONFIG_HOME` is
 * ignored, as the XDG spec requires). The daemon uses the same folder.
 */
export function defaultConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.config');
  return join(base, 'soledad');
}

/** What `rpc.json` holds. */
export interface RpcInfo {
  /** `ws://host:port` of the TCP listener. */
  url: string;
  /** The Unix socket, when the daemon listens on one too. */
  socketPath?: string;
  pid: number;
}

/** Reads `rpc.json`; undefined when it does not exist. */
export async function readRpcInfo(path: string): Promise<RpcInfo | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || typeof (value as RpcInfo).url !== 'string') {
    throw new Error(`${path} does not hold an RPC address`);
  }
  return value as RpcInfo;
}

/** Writes `rpc.json` atomically with mode 0600. */
export async function writeRpcInfo(path: string, info: RpcInfo): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/** The WebSocket URL of a Unix socket, as `ws` expects it. */
export function unixSocketUrl(socketPath: string): string {
  return `ws+unix://${socketPath}:/`;
}
