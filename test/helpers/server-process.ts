import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../../cli/node-flags.js';
import { readListeningFile } from '../../server/listening-file.js';
import { encodeTokenAuth } from '../../wire/auth.js';
import { type ExitStatus, exitOf, killPid, ServiceProcess } from './service-process.js';
import { tempDir } from './tmp.js';

export type { ExitStatus } from './service-process.js';

/** The compiled `soledad` entry point beside this compiled helper (`dist/cli/main.js`). */
export const CLI_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'main.js');

export interface CliResult extends ExitStatus {
  stdout: string;
  stderr: string;
}

/** Runs `soledad ...args` to completion; killed (by PID) if it outlives `timeoutMs`. */
export async function runSoledadCli(
  args: readonly string[],
  options: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI_PATH, ...args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  const timer = setTimeout(() => killPid(child.pid), options.timeoutMs ?? 20_000);
  try {
    const status = await exitOf(child);
    return { ...status, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

async function writeServiceTokens(path: string, tokens: Record<string, string>): Promise<void> {
  const lines = Object.entries(tokens).map(([service, token]) => `${service}:${token}\n`);
  await writeFile(path, lines.join(''), { mode: 0o600 });
}

export interface ServerProcessOptions {
  /** Storage root. When absent, a fresh temp folder that `cleanup()` removes. */
  root?: string;
  /**
   * Config file fields (snake_case, as in a real config file). `root` and both ports
   * (0) are filled in unless given here.
   */
  config?: Record<string, unknown>;
  /** `service → token` pairs written to the services tokens file. */
  serviceTokens?: Record<string, string>;
  /** How long to wait for `listening.json`; default 15 s. */
  readyTimeoutMs?: number;
}

/** A user made with `soledad server add-user`. */
export interface ServerUser {
  uuid: string;
  token: string;
  /** The `Authorization` header value for this user. */
  authorization: string;
}

/**
 * A `soledad server` child process on loopback ports chosen by the OS. Stop it with
 * `stop()` (a signal, then its exit status) or, in `after()`, `cleanup()` (SIGKILL by
 * PID if still running, then removal of the temp folders it made).
 */
export class ServerProcess extends ServiceProcess {
  /** Storage root (`root` in the config). */
  readonly root: string;
  readonly configPath: string;
  /** Path of the services tokens file. */
  readonly tokensPath: string;
  readonly #removeTemp: () => Promise<void>;
  #url = '';
  #servicesUrl = '';

  private constructor(init: {
    child: ChildProcess;
    root: string;
    configPath: string;
    tokensPath: string;
    removeTemp: () => Promise<void>;
  }) {
    super(init.child, 'server');
    this.root = init.root;
    this.configPath = init.configPath;
    this.tokensPath = init.tokensPath;
    this.#removeTemp = init.removeTemp;
  }

  /** Starts a server and resolves once it has written its `listening.json`. */
  static async start(options: ServerProcessOptions = {}): Promise<ServerProcess> {
    const base = await tempDir('soledad-server-');
    const root = options.root ?? join(base.path, 'root');
    const configPath = join(base.path, 'server.json');
    const tokensPath = join(base.path, 'services.tokens');
    const config = {
      root,
      ...options.config,
      public: { port: 0, ...(options.config?.public as object | undefined) },
      services: {
        port: 0,
        tokens_file: tokensPath,
        ...(options.config?.services as object | undefined),
      },
    };
    await mkdir(root, { recursive: true });
    await writeFile(configPath, JSON.stringify(config, null, 2));
    await writeServiceTokens(tokensPath, options.serviceTokens ?? {});

    const child = spawn(
      process.execPath,
      [...NODE_FLAGS, CLI_PATH, 'server', '--config', configPath],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const server = new ServerProcess({
      child,
      root,
      configPath,
      tokensPath,
      removeTemp: base.remove,
    });
    try {
      const info = await server.untilReady(
        async () => {
          const found = await readListeningFile(root);
          return found?.pid === server.pid ? found : undefined;
        },
        { timeoutMs: options.readyTimeoutMs ?? 15_000, what: 'the server to listen' },
      );
      server.#url = info.public.url;
      server.#servicesUrl = info.services.url;
    } catch (error) {
      await server.cleanup();
      throw error;
    }
    return server;
  }

  /** Base URL of the public listener, e.g. `http://127.0.0.1:40123`. */
  get url(): string {
    return this.#url;
  }

  /** Base URL of the services listener. */
  get servicesUrl(): string {
    return this.#servicesUrl;
  }

  /** Replaces the services tokens file (the server re-reads it on its next request). */
  async setServiceTokens(tokens: Record<string, string>): Promise<void> {
    await writeServiceTokens(this.tokensPath, tokens);
  }

  /** Adds a user through `soledad server add-user` (works while the server runs). */
  async addUser(options: { uuid?: string; quota?: number | string } = {}): Promise<ServerUser> {
    const args = ['server', 'add-user', '--config', this.configPath, '--json'];
    if (options.uuid !== undefined) args.push('--uuid', options.uuid);
    if (options.quota !== undefined) args.push('--quota', String(options.quota));
    const result = await runSoledadCli(args);
    if (result.code !== 0) throw new Error(`add-user failed: ${result.stderr}`);
    const { uuid, token } = JSON.parse(result.stdout) as { uuid: string; token: string };
    return { uuid, token, authorization: encodeTokenAuth(uuid, token) };
  }

  /** SIGKILL by PID if still running, then removes the temp folder made by `start`. */
  async cleanup(): Promise<void> {
    await this.terminate();
    await this.#removeTemp();
  }
}

/** Shorthand for `ServerProcess.start`. */
export function startServer(options: ServerProcessOptions = {}): Promise<ServerProcess> {
  return ServerProcess.start(options);
}
