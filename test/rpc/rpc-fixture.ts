import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { WebSocket } from 'ws';
import type { DaemonApi } from '../../daemon/daemon-api.js';
import { type ConnectOptions, Soledad } from '../../rpc/client.js';
import type { Notifications } from '../../rpc/methods.js';
import { RPC_INFO_FILE, RPC_TOKEN_FILE } from '../../rpc/rpc-paths.js';
import { type RpcServer, type RpcServerOptions, startRpcServer } from '../../rpc/rpc-server.js';
import { decodeFrame } from '../../rpc/stream-frames.js';
import { DaemonHarness } from '../helpers/daemon-harness.js';
import { tempDir } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';

export interface FixtureOptions {
  /** Daemon fields: `eventLogSize` shrinks the event log. */
  eventLogSize?: number;
  /** Start a real blobs server for the daemon to sync with. */
  withServer?: boolean;
  rpc?: Partial<Omit<RpcServerOptions, 'daemon' | 'tokenFile'>>;
  /** Config folder to use instead of a fresh one (e.g. inside a temp HOME). */
  configDir?: string;
}

/** A real daemon, its RPC listener, and helpers to reach it. */
export interface RpcFixture {
  daemon: DaemonApi;
  rpc: RpcServer;
  /** Every log line of the RPC layer so far (debug level), parsed. */
  logs: Record<string, unknown>[];
  configDir: string;
  tokenFile: string;
  token: string;
  /** A client library connection configured from the fixture's config folder. */
  connect(options?: ConnectOptions): Promise<Soledad>;
  /** A raw protocol connection with the right token (and any extra headers). */
  raw(headers?: Record<string, string>): Promise<RawRpc>;
  /** Stops the RPC listener and starts it again on the same port (same daemon). */
  restartRpc(between?: () => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

export async function startRpcFixture(options: FixtureOptions = {}): Promise<RpcFixture> {
  const temp = await tempDir('soledad-rpc-');
  const configDir = options.configDir ?? join(temp.path, 'config');
  const tokenFile = join(configDir, RPC_TOKEN_FILE);
  const { daemon, stop } = await startTestDaemon(options);
  const logs: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line.startsWith('{')) logs.push(JSON.parse(line) as Record<string, unknown>);
        }
        callback();
      },
    }),
  );
  const rpcOptions = (port: number): RpcServerOptions => ({
    port,
    logger,
    infoFile: join(configDir, RPC_INFO_FILE),
    ...options.rpc,
    daemon,
    tokenFile,
  });
  let rpc = await startRpcServer(rpcOptions(0));
  const token = (await readFile(tokenFile, 'utf8')).trim();
  const clients: { close(): Promise<void> }[] = [];

  const fixture: RpcFixture = {
    daemon,
    get rpc() {
      return rpc;
    },
    logs,
    configDir,
    tokenFile,
    token,
    async connect(connectOptions = {}) {
      const client = await Soledad.connect({ configDir, ...connectOptions });
      clients.push(client);
      return client;
    },
    async raw(headers = {}) {
      const client = await RawRpc.open(rpc.url, { Authorization: `Bearer ${token}`, ...headers });
      clients.push(client);
      return client;
    },
    async restartRpc(between) {
      const port = Number(new URL(rpc.url).port);
      await rpc.close();
      await between?.();
      rpc = await startRpcServer(rpcOptions(port));
    },
    async close() {
      await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
      await rpc.close();
      await stop();
      await temp.remove();
    },
  };
  return fixture;
}

/** The real daemon (in this process), with a real blobs server when asked for. */
async function startTestDaemon(
  options: FixtureOptions,
): Promise<{ daemon: DaemonApi; stop(): Promise<void> }> {
  const harness = await DaemonHarness.start({
    withoutServer: !options.withServer,
    ...(options.eventLogSize === undefined
      ? {}
      : { daemon: { eventLogSize: options.eventLogSize } }),
  });
  return { daemon: harness.daemon, stop: () => harness.cleanup() };
}

export interface RpcErrorBody {
  code: number;
  message: string;
  data?: { code?: string; issues?: { path: string; message: string }[] };
}

export type RawResponse = { id: number; result?: unknown; error?: RpcErrorBody };

interface RawNotification {
  method: string;
  params: unknown;
}

/**
 * A bare protocol client: sends requests and frames exactly as told, records every
 * notification and frame, so tests can check what the daemon does on the wire.
 */
export class RawRpc {
  readonly ws: WebSocket;
  readonly notifications: RawNotification[] = [];
  readonly frames: { streamId: number; payload: Buffer }[] = [];
  readonly #waiting = new Map<number, (response: RawResponse) => void>();
  readonly #listeners = new Set<() => void>();
  #nextId = 1;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      const message = data as Buffer;
      if (isBinary) {
        const frame = decodeFrame(message);
        if (frame)
          this.frames.push({ streamId: frame.streamId, payload: Buffer.from(frame.payload) });
      } else {
        const parsed = JSON.parse(message.toString('utf8')) as RawResponse & RawNotification;
        if (typeof parsed.method === 'string') this.notifications.push(parsed);
        else this.#waiting.get(parsed.id)?.(parsed);
      }
      for (const listener of this.#listeners) listener();
    });
    ws.on('close', () => {
      const closed = { code: 0, message: 'connection closed' };
      for (const [id, resolve] of this.#waiting) resolve({ id, error: closed });
      this.#waiting.clear();
    });
  }

  static async open(url: string, headers: Record<string, string>): Promise<RawRpc> {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    await withTimeout(once(ws, 'open'), 5000, 'the raw connection');
    return new RawRpc(ws);
  }

  /** Sends a request and resolves with the whole response (result or error). */
  call(method: string, params?: unknown): Promise<RawResponse> {
    const id = this.#nextId++;
    const response = new Promise<RawResponse>((resolve) =>
      this.#waiting.set(id, (message) => {
        this.#waiting.delete(id);
        resolve(message);
      }),
    );
    this.send({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
    return withTimeout(response, 20_000, `the response to ${method}`);
  }

  /** Sends a request that must succeed and returns its result. */
  async ok<T = unknown>(method: string, params?: unknown): Promise<T> {
    const response = await this.call(method, params);
    if (response.error) throw new Error(`${method}: ${JSON.stringify(response.error)}`);
    return response.result as T;
  }

  send(message: unknown): void {
    this.ws.send(JSON.stringify(message));
  }

  /** Resolves once `probe` holds, re-checked on every message received. */
  until<T>(probe: () => T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
    const found = probe();
    if (found !== undefined && found !== false) return Promise.resolve(found);
    return withTimeout(
      new Promise<T>((resolve) => {
        const listener = () => {
          const value = probe();
          if (value === undefined || value === false) return;
          this.#listeners.delete(listener);
          resolve(value);
        };
        this.#listeners.add(listener);
      }),
      timeoutMs,
      what,
    );
  }

  notificationsOf<N extends keyof Notifications>(method: N): Notifications[N][] {
    return this.notifications
      .filter((n) => n.method === method)
      .map((n) => n.params as Notifications[N]);
  }

  bytesOf(streamId: number): number {
    return this.frames
      .filter((f) => f.streamId === streamId)
      .reduce((n, f) => n + f.payload.length, 0);
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = once(this.ws, 'close');
    this.ws.close();
    await closed;
  }
}
