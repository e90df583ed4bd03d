import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createDecryptStream } from '../../../daemon/crypto/decrypt-stream.js';
import { openSecretsFile } from '../../../daemon/crypto/secrets-file.js';
import { secretsFilePath } from '../../../daemon/paths.js';
import type { BlobsClient } from '../../../daemon/remote/blobs-client.js';
import { type AttachmentInfo, Soledad } from '../../../rpc/client.js';
import { RPC_TOKEN_FILE } from '../../../rpc/rpc-paths.js';
import {
  DaemonHarness,
  type DaemonHarnessOptions,
  type DaemonProcess,
} from '../../helpers/daemon-harness.js';
import type { ExitStatus } from '../../helpers/server-process.js';
import { waitFor } from '../../helpers/wait.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** The passphrase `DaemonProcess` seals the secrets file with (weak scrypt). */
export const PASSPHRASE = 'test passphrase';

export interface Digest {
  sha256: string;
  bytes: number;
}

/** SHA-256 and length of everything `source` yields, streamed. */
export async function digestOf(source: AsyncIterable<unknown>): Promise<Digest> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of source) {
    const piece = chunk as Buffer;
    hash.update(piece);
    bytes += piece.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

export function digestOfBytes(bytes: Uint8Array): Digest {
  return { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
}

/**
 * A deterministic byte generator: the AES-256-CTR keystream of a key derived from `label`,
 * so a seeded test can rebuild any source it wrote. Fast (hundreds of MB/s).
 */
export class SeededBytes {
  readonly #cipher;
  readonly #zeros = Buffer.alloc(4 * MiB);

  constructor(label: string) {
    const key = createHash('sha256').update(`key:${label}`).digest();
    const iv = createHash('sha256').update(`iv:${label}`).digest().subarray(0, 16);
    this.#cipher = createCipheriv('aes-256-ctr', key, iv);
  }

  /** The next `size` bytes (size at most 4 MiB). */
  next(size: number): Buffer {
    if (size > this.#zeros.length) throw new RangeError('at most 4 MiB at a time');
    return this.#cipher.update(this.#zeros.subarray(0, size));
  }
}

/** `size` deterministic bytes for `label`, in memory (keep these small). */
export function seededBuffer(label: string, size: number): Buffer {
  const generator = new SeededBytes(label);
  const pieces: Buffer[] = [];
  for (let left = size; left > 0; left -= 4 * MiB)
    pieces.push(generator.next(Math.min(left, 4 * MiB)));
  return Buffer.concat(pieces, size);
}

/**
 * Writes `size` bytes to `path` in 4 MiB chunks, never holding the whole file: random
 * bytes, or the seeded stream of `label` when given. Returns their digest.
 */
export async function writeSourceFile(path: string, size: number, label?: string): Promise<Digest> {
  const generator = label === undefined ? undefined : new SeededBytes(label);
  const hash = createHash('sha256');
  const handle = await open(path, 'wx', 0o600);
  try {
    for (let left = size; left > 0; ) {
      const n = Math.min(left, 4 * MiB);
      const chunk = generator ? generator.next(n) : randomBytes(n);
      hash.update(chunk);
      let offset = 0;
      while (offset < n) offset += (await handle.write(chunk, offset, n - offset)).bytesWritten;
      left -= n;
    }
  } finally {
    await handle.close();
  }
  return { sha256: hash.digest('hex'), bytes: size };
}

/** The storage secret of a `DaemonProcess` folder, unsealed as the daemon does. */
export async function daemonSecret(dir: string): Promise<Buffer> {
  const secrets = await openSecretsFile(secretsFilePath(join(dir, 'data')), PASSPHRASE);
  return secrets.secret;
}

/** Downloads `blobId` from the server and digests its decrypted (verified) plaintext. */
export async function serverPlaintextDigest(
  client: BlobsClient,
  secret: Buffer,
  blobId: string,
): Promise<Digest> {
  const { stream } = await client.get(blobId);
  const decrypt = createDecryptStream({ secret, blobId });
  const [, digest] = await Promise.all([pipeline(stream, decrypt), digestOf(decrypt)]);
  return digest;
}

/** Reads an attachment through the client library and digests its plaintext. */
export async function clientPlaintextDigest(soledad: Soledad, blobId: string): Promise<Digest> {
  return digestOf(await soledad.openAttachment(blobId));
}

/** Where the daemon's local blob store keeps `blobId` (daemon/local-blob-store.ts). */
export function localBlobPath(dir: string, blobId: string): string {
  return join(dir, 'data', 'blobs', blobId.slice(0, 2), blobId);
}

/** Names of the files in the local blob store's temporary folder. */
export async function localTempFiles(dir: string): Promise<string[]> {
  return readdir(join(dir, 'data', 'blobs', '.tmp')).catch(() => []);
}

export async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Sum of the sizes of every blob file of `user` in `namespace` under the server's root. */
export async function serverBlobBytes(
  root: string,
  user: string,
  namespace = 'default',
): Promise<{ files: number; bytes: number }> {
  const total = { files: 0, bytes: 0 };
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && !entry.name.includes('.')) {
        total.files += 1;
        total.bytes += (await stat(path)).size;
      }
    }
  };
  await walk(join(root, user, namespace));
  return total;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A blobs server child process with a user, plus one daemon folder whose `soledad daemon`
 * child processes are started, killed and restarted on the same data. `cleanup()` kills
 * every process (by PID) and removes every folder.
 */
export class CrashRig {
  readonly harness: DaemonHarness;
  /** The daemon's folder (data, config, secrets); the same across restarts. */
  readonly dir: string;
  readonly config: Record<string, unknown>;
  daemon: DaemonProcess | undefined;
  /** Every daemon process started, oldest first (their logs stay readable). */
  readonly processes: DaemonProcess[] = [];
  #clients: Soledad[] = [];
  #secret: Buffer | undefined;

  private constructor(harness: DaemonHarness, config: Record<string, unknown>) {
    this.harness = harness;
    this.dir = join(harness.dir, 'device');
    this.config = config;
  }

  static async start(
    config: Record<string, unknown> = {},
    options: Omit<DaemonHarnessOptions, 'inProcess'> = {},
  ): Promise<CrashRig> {
    const harness = await DaemonHarness.start({ ...options, inProcess: false });
    return new CrashRig(harness, config);
  }

  get client(): BlobsClient {
    return this.harness.client!;
  }

  /** Starts `soledad daemon` on the rig's folder and connects a client to it. */
  async startDaemon(): Promise<Soledad> {
    if (this.daemon?.running) throw new Error(`daemon ${this.daemon.pid} is still running`);
    this.daemon = await this.harness.startDaemonProcess({ dir: this.dir, config: this.config });
    this.processes.push(this.daemon);
    return this.connect();
  }

  /** A new client connection to the running daemon (no reconnection). */
  async connect(): Promise<Soledad> {
    const daemon = this.#running();
    const soledad = await Soledad.connect({
      url: daemon.rpcUrl,
      tokenFile: join(daemon.configDir, RPC_TOKEN_FILE),
      reconnect: false,
    });
    this.#clients.push(soledad);
    return soledad;
  }

  /** `kill -9` of the running daemon. */
  async kill(): Promise<ExitStatus> {
    const status = await this.#running().kill();
    await this.#closeClients();
    return status;
  }

  /** SIGTERM to the running daemon; resolves with its exit status. */
  async terminate(timeoutMs?: number): Promise<ExitStatus> {
    const status = await this.#running().stop('SIGTERM', timeoutMs);
    await this.#closeClients();
    return status;
  }

  /** The daemon's storage secret, for decrypting server copies. */
  async secret(): Promise<Buffer> {
    this.#secret ??= await daemonSecret(this.dir);
    return this.#secret;
  }

  async cleanup(): Promise<void> {
    await this.#closeClients();
    await this.harness.cleanup();
  }

  async #closeClients(): Promise<void> {
    const clients = this.#clients;
    this.#clients = [];
    await Promise.allSettled(clients.map((client) => client.close()));
  }

  #running(): DaemonProcess {
    if (this.daemon === undefined || !this.daemon.running) throw new Error('no daemon is running');
    return this.daemon;
  }
}

/** Polls `attachment.info` until `accept` holds. */
export function waitForInfo(
  soledad: Soledad,
  blobId: string,
  accept: (info: AttachmentInfo) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<AttachmentInfo> {
  return waitFor(
    async () => {
      const info = await soledad.getAttachmentInfo(blobId);
      return info !== undefined && accept(info) ? info : undefined;
    },
    { timeoutMs, intervalMs: 50, what: `${blobId} ${what}` },
  );
}

/** Polls `attachment.list` until every id of `blobIds` satisfies `accept`. */
export async function waitForAll(
  soledad: Soledad,
  blobIds: Iterable<string>,
  accept: (info: AttachmentInfo) => boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<Map<string, AttachmentInfo>> {
  const wanted = [...blobIds];
  let last = '';
  return waitFor(
    async () => {
      const infos = new Map((await soledad.listAttachments()).map((info) => [info.blobId, info]));
      const missing = wanted.filter((id) => {
        const info = infos.get(id);
        return info === undefined || !accept(info);
      });
      const states = new Map<string, number>();
      for (const id of missing) {
        const state = infos.get(id)?.machineState ?? 'absent';
        states.set(state, (states.get(state) ?? 0) + 1);
      }
      last = JSON.stringify(Object.fromEntries(states));
      return missing.length === 0 ? infos : undefined;
    },
    { timeoutMs, intervalMs: 200, what },
  ).catch((error: Error) => {
    throw new Error(`${error.message}; still missing: ${last}`);
  });
}
