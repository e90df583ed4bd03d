import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PEER_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'raw-http-peer.js');

/** The bare node:http peer (raw-http-peer.ts) running in a child process. */
export class RawPeerProcess {
  readonly pid: number;
  readonly url: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;

  private constructor(child: ChildProcess, port: number, exited: Promise<void>) {
    this.#child = child;
    this.pid = child.pid!;
    this.url = `http://127.0.0.1:${port}`;
    this.#exited = exited;
  }

  /** `scratch`: where `/file-sink` leaves its files for the caller to remove. */
  static async start(
    options: { timeoutMs?: number; scratch?: string } = {},
  ): Promise<RawPeerProcess> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const env =
      options.scratch === undefined
        ? process.env
        : { ...process.env, SOLEDAD_BENCH_SCRATCH: options.scratch };
    const child = spawn(process.execPath, [PEER_SCRIPT], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env,
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let timer: NodeJS.Timeout | undefined;
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let text = '';
        child.once('error', reject);
        child.once('exit', (code) => reject(new Error(`raw peer exited early (${code})`)));
        child.stdout!.setEncoding('utf8').on('data', (part: string) => {
          text += part;
          const newline = text.indexOf('\n');
          if (newline !== -1)
            resolve((JSON.parse(text.slice(0, newline)) as { port: number }).port);
        });
        timer = setTimeout(() => reject(new Error('raw peer did not listen in time')), timeoutMs);
      });
      return new RawPeerProcess(child, port, exited);
    } catch (error) {
      if (child.pid !== undefined) killQuietly(child.pid);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL by PID, then waits for the exit. */
  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) killQuietly(this.pid);
    await this.#exited;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Runs a compiled script of this folder in a child process with `args` as one JSON argument
 * and `env` added, and resolves with the JSON it printed last. Killed (by PID) after `timeoutMs`.
 */
export async function runChildScript<T>(
  name: string,
  args: unknown,
  options: { env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<T> {
  const script = join(dirname(fileURLToPath(import.meta.url)), name);
  const child = spawn(process.execPath, [script, JSON.stringify(args)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...options.env },
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (part: string) => {
    stdout += part;
  });
  const timer = setTimeout(() => {
    if (child.pid !== undefined) killQuietly(child.pid);
  }, options.timeoutMs);
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (exitCode) => resolve(exitCode));
    });
    if (code !== 0) throw new Error(`${name} exited with ${code}`);
    const lines = stdout.trim().split('\n');
    return JSON.parse(lines[lines.length - 1]!) as T;
  } finally {
    clearTimeout(timer);
  }
}
