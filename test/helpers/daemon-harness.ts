import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import { NODE_FLAGS } from '../../cli/node-flags.js';
import {
  createSecretsFile,
  type StorageSecrets,
  WEAK_TEST_SCRYPT_PARAMS,
} from '../../daemon/crypto/secrets-file.js';
import { Daemon, type DaemonOptions } from '../../daemon/daemon.js';
import { secretsFilePath } from '../../daemon/paths.js';
import { BlobsClient } from '../../daemon/remote/blobs-client.js';
import { RPC_INFO_FILE, readRpcInfo } from '../../rpc/rpc-paths.js';
import { blobPath } from '../../server/backends/filesystem-layout.js';
import { DEFAULT_NAMESPACE } from '../../wire/ids.js';
import {
  CLI_PATH,
  ServerProcess,
  type ServerProcessOptions,
  type ServerUser,
} from './server-process.js';
import { ServiceProcess } from './service-process.js';
import { tempDir } from './tmp.js';

/** Retry waits short enough for tests: 50 ms, then 100 ms. */
export const TEST_RETRY_DELAYS_MS = [50, 100];

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/**
 * A pino logger that keeps its JSON lines in `lines` (debug and up), and also prints
 * them to stderr when `SOLEDAD_TEST_LOG` is set.
 */
export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const echo = process.env.SOLEDAD_TEST_LOG !== undefined;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      const text = chunk.toString('utf8');
      for (const line of text.split('\n')) {
        if (line.startsWith('{')) lines.push(JSON.parse(line) as LogLine);
      }
      if (echo) process.stderr.write(text);
      callback();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

export interface DaemonHarnessOptions {
  /** Daemon options on top of the harness defaults (tiny retry waits, no background sync). */
  daemon?: Partial<DaemonOptions>;
  /** Start without a blobs server (the daemon gets no `remote`). */
  withoutServer?: boolean;
  /** Options of the blobs server process (its config fields, for example). */
  server?: ServerProcessOptions;
  /**
   * Open the in-process daemon; default true. False for tests that only run
   * `soledad daemon` child processes (`startDaemonProcess`).
   */
  inProcess?: boolean;
}

/**
 * A real blobs server child process with one user, and an in-process `Daemon` against it
 * with its data in a temp folder. The harness defaults turn background remote sync off and
 * shrink retry waits to 50/100 ms. `cleanup()` closes everything and removes the folders.
 */
export class DaemonHarness {
  readonly dir: string;
  readonly dataDir: string;
  readonly secret: Buffer;
  readonly deviceId: string;
  /** Every server started, for cleanup (a restarted server keeps the first one's root). */
  readonly #servers: ServerProcess[] = [];
  readonly #processes: DaemonProcess[] = [];
  readonly #removeDir: () => Promise<void>;
  readonly #options: DaemonHarnessOptions;
  server: ServerProcess | undefined;
  user: ServerUser | undefined;
  /** A blobs client of the same user, for checking the server directly. */
  client: BlobsClient | undefined;
  /** The in-process daemon (unset with `inProcess: false`). */
  daemon!: Daemon;
  logs: LogLine[] = [];

  private constructor(
    dir: { path: string; remove(): Promise<void> },
    options: DaemonHarnessOptions,
  ) {
    this.dir = dir.path;
    this.dataDir = join(dir.path, 'data');
    this.#removeDir = dir.remove;
    this.#options = options;
    this.secret = randomBytes(32);
    this.deviceId = randomBytes(8).toString('hex');
  }

  static async start(options: DaemonHarnessOptions = {}): Promise<DaemonHarness> {
    const harness = new DaemonHarness(await tempDir('soledad-daemon-'), options);
    try {
      if (!options.withoutServer) {
        const server = await ServerProcess.start(options.server);
        harness.#servers.push(server);
        harness.server = server;
        harness.user = await server.addUser();
        harness.client = new BlobsClient({
          url: server.url,
          uuid: harness.user.uuid,
          token: harness.user.token,
        });
      }
      if (options.inProcess ?? true) await harness.openDaemon();
    } catch (error) {
      await harness.cleanup();
      throw error;
    }
    return harness;
  }

  /** The options the harness opens its daemon with, plus `overrides`. */
  daemonOptions(overrides: Partial<DaemonOptions> = {}): DaemonOptions {
    const { logger, lines } = captureLogger();
    this.logs = lines;
    const base: DaemonOptions = {
      dataDir: this.dataDir,
      secret: this.secret,
      deviceId: this.deviceId,
      syncIntervalMs: 0,
      initialSyncDelayMs: -1,
      stopTimeoutMs: 5000,
      logger,
      ...this.#options.daemon,
      ...overrides,
    };
    base.transfers = {
      retryDelaysMs: TEST_RETRY_DELAYS_MS,
      ...this.#options.daemon?.transfers,
      ...overrides.transfers,
    };
    if (this.server && this.user && !('remote' in overrides)) {
      base.remote = { url: this.server.url, uuid: this.user.uuid, token: this.user.token };
    }
    return base;
  }

  /** Opens the daemon (closing the current one first, if open). */
  async openDaemon(overrides: Partial<DaemonOptions> = {}): Promise<Daemon> {
    if (this.daemon) await this.daemon.close();
    this.daemon = await Daemon.open(this.daemonOptions(overrides));
    return this.daemon;
  }

  /** Where the server keeps `blobId` of the harness user. */
  serverBlobPath(blobId: string, namespace = DEFAULT_NAMESPACE): string {
    return blobPath(this.#server().root, { user: this.user!.uuid, namespace, id: blobId });
  }

  /** Stops the server (SIGTERM) and keeps its root and port for `startServer`. */
  async stopServer(): Promise<void> {
    await this.#server().stop();
  }

  /** Starts the server again on the same root and port. */
  async startServer(): Promise<ServerProcess> {
    const previous = this.#server();
    const port = Number(new URL(previous.url).port);
    const server = await ServerProcess.start({
      root: previous.root,
      config: { public: { port } },
    });
    this.#servers.push(server);
    this.server = server;
    return server;
  }

  /**
   * Starts `soledad daemon` as a child process against the harness's server and user
   * (see `DaemonProcess.start`); `cleanup()` kills it if still running.
   */
  async startDaemonProcess(
    options: Omit<DaemonProcessOptions, 'server'> = {},
  ): Promise<DaemonProcess> {
    const server =
      this.server && this.user
        ? { url: this.server.url, uuid: this.user.uuid, token: this.user.token }
        : undefined;
    const child = await DaemonProcess.start({ ...options, server });
    this.#processes.push(child);
    return child;
  }

  async cleanup(): Promise<void> {
    for (const child of [...this.#processes].reverse()) await child.cleanup();
    await this.daemon?.close().catch(() => undefined);
    await this.client?.close().catch(() => undefined);
    // Newest first: the first server's temp folder holds the root the others used.
    for (const server of [...this.#servers].reverse()) await server.cleanup();
    await this.#removeDir();
  }

  #server(): ServerProcess {
    if (this.server === undefined) throw new Error('the harness has no server');
    return this.server;
  }
}

export interface DaemonProcessOptions {
  /** Blobs server and user the daemon talks to; none when absent. */
  server?: { url: string; uuid: string; token: string };
  /** Extra config fields (snake_case, merged over the harness's). */
  config?: Record<string, unknown>;
  /** Reuse a folder (and its secrets) from an earlier process; a fresh temp folder if absent. */
  dir?: string;
  passphrase?: string;
  /** How long to wait for `rpc.json`; default 20 s. */
  readyTimeoutMs?: number;
}

/**
 * `soledad daemon --config <dir>/daemon.toml` as a child process, for crash and CLI
 * tests: a secrets file made with weak scrypt, the passphrase in `SOLEDAD_PASSPHRASE`,
 * `XDG_CONFIG_HOME` inside the folder (so `rpc-token` and `rpc.json` land there), RPC on
 * a free port, tiny retry waits. Resolves once the daemon wrote `rpc.json`.
 */
export class DaemonProcess extends ServiceProcess {
  readonly dir: string;
  readonly dataDir: string;
  readonly configDir: string;
  readonly configPath: string;
  readonly #remove: (() => Promise<void>) | undefined;
  rpcUrl = '';

  private constructor(
    child: ChildProcess,
    paths: { dir: string; dataDir: string; configDir: string; configPath: string },
    remove: (() => Promise<void>) | undefined,
  ) {
    super(child, 'daemon');
    this.dir = paths.dir;
    this.dataDir = paths.dataDir;
    this.configDir = paths.configDir;
    this.configPath = paths.configPath;
    this.#remove = remove;
  }

  static async start(options: DaemonProcessOptions = {}): Promise<DaemonProcess> {
    const temp = options.dir === undefined ? await tempDir('soledad-daemon-proc-') : undefined;
    const dir = options.dir ?? temp!.path;
    const dataDir = join(dir, 'data');
    const configDir = join(dir, 'config', 'soledad');
    const configPath = join(dir, 'daemon.json');
    const passphrase = options.passphrase ?? 'test passphrase';
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await mkdir(configDir, { recursive: true, mode: 0o700 });
    await ensureSecrets(dataDir, passphrase);

    const config: Record<string, unknown> = {
      data_dir: dataDir,
      log_level: 'debug',
      stop_timeout_ms: 10_000,
      rpc: { port: 0 },
      transfers: { retry_delays_ms: TEST_RETRY_DELAYS_MS },
      ...options.config,
    };
    if (options.server) {
      const tokenFile = join(dir, 'server-token');
      await writeFile(tokenFile, `${options.server.token}\n`, { mode: 0o600 });
      config.server = { url: options.server.url, uuid: options.server.uuid, token_file: tokenFile };
    }
    await writeFile(configPath, JSON.stringify(config, null, 2));

    const child = spawn(
      process.execPath,
      [...NODE_FLAGS, CLI_PATH, 'daemon', '--config', configPath],
      {
        env: {
          ...process.env,
          XDG_CONFIG_HOME: join(dir, 'config'),
          SOLEDAD_PASSPHRASE: passphrase,
          SOLEDAD_TEST_WEAK_SCRYPT: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const daemon = new DaemonProcess(child, { dir, dataDir, configDir, configPath }, temp?.remove);
    try {
      const info = await daemon.untilReady(
        async () => {
          const found = await readRpcInfo(join(configDir, RPC_INFO_FILE)).catch(() => undefined);
          return found?.pid === daemon.pid ? found : undefined;
        },
        { timeoutMs: options.readyTimeoutMs ?? 20_000, what: 'the daemon to listen' },
      );
      daemon.rpcUrl = info.url;
    } catch (error) {
      await daemon.cleanup();
      throw error;
    }
    return daemon;
  }

  /** Kills the process if still running and removes the temp folder it made (if any). */
  async cleanup(): Promise<void> {
    await this.terminate();
    await this.#remove?.();
  }
}

/** Creates the secrets file in `dataDir` unless it exists; weak scrypt, for tests. */
async function ensureSecrets(dataDir: string, passphrase: string): Promise<StorageSecrets | null> {
  try {
    return await createSecretsFile(secretsFilePath(dataDir), passphrase, {
      scrypt: { ...WEAK_TEST_SCRYPT_PARAMS },
    });
  } catch (error) {
    if ((error as { code?: unknown }).code === 'secrets_file_exists') return null;
    throw error;
  }
}
