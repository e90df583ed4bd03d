import type { ChildProcess } from 'node:child_process';
import { waitFor } from './wait.js';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function exitOf(child: ChildProcess): Promise<ExitStatus> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

export function killPid(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/**
 * A `soledad server` or `soledad daemon` child process: keeps what it writes, knows whether
 * it still runs, and is stopped by PID. Subclasses add what is particular to each program.
 */
export class ServiceProcess {
  readonly pid: number;
  /** Settles when the process exits. */
  readonly exited: Promise<ExitStatus>;
  /** `server` or `daemon`, for messages. */
  readonly #name: string;
  #stdout = '';
  #stderr = '';
  #running = true;

  protected constructor(child: ChildProcess, name: string) {
    this.pid = child.pid!;
    this.#name = name;
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      this.#stdout += text;
    });
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      this.#stderr += text;
    });
    this.exited = exitOf(child).finally(() => {
      this.#running = false;
    });
  }

  get running(): boolean {
    return this.#running;
  }

  /** Everything the process wrote to stdout so far (JSON log lines). */
  get stdout(): string {
    return this.#stdout;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** Log lines so far, parsed. */
  logs(): Array<Record<string, unknown> & { msg?: string; level?: number }> {
    return this.#stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** Sends `signal` (default SIGTERM) by PID and resolves with the exit status, or throws after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<ExitStatus> {
    if (this.#running) killPid(this.pid, signal);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.#name} did not exit after ${signal}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `kill -9` by PID, for crash tests. */
  kill(): Promise<ExitStatus> {
    return this.stop('SIGKILL');
  }

  /** Resolves with what `probe` finds once it finds it; rejects if the process exits first. */
  protected untilReady<T>(
    probe: () => Promise<T | undefined>,
    options: { timeoutMs: number; what: string },
  ): Promise<T> {
    return Promise.race([
      waitFor(probe, options),
      this.exited.then((status) => {
        throw new Error(
          `${this.#name} exited before it was ready (${JSON.stringify(status)}): ${this.#stderr}`,
        );
      }),
    ]);
  }

  /** SIGKILL by PID if still running, and waits for the exit. */
  protected async terminate(): Promise<void> {
    if (!this.#running) return;
    killPid(this.pid);
    await this.exited.catch(() => undefined);
  }
}
