import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { JSONRPCClient, JSONRPCErrorException } from 'json-rpc-2.0';
import { WebSocket } from 'ws';
import { CreditReceiver } from './credit-receiver.js';
import { CreditSender } from './credit-sender.js';
import type {
  AttachmentInfo,
  MethodName,
  NotificationName,
  Notifications,
  ParamsIn,
  ResultOf,
} from './methods.js';
import { SocketWriter } from './socket-writer.js';
import { SoledadError } from './soledad-error.js';
import {
  DEFAULT_STREAM_WINDOW,
  decodeFrame,
  FRAME_HEADER_BYTES,
  MAX_MESSAGE_BYTES,
} from './stream-frames.js';

/** Where to connect and with which token; asked again before every reconnect. */
export type EndpointResolver = () => Promise<{ url: string; token: string }>;

export interface TransportOptions {
  endpoint: EndpointResolver;
  /** Reconnect after an unexpected close, backing off from 100 ms to 5 s. Default true. */
  reconnect?: boolean;
}

export interface TransportEvents {
  notification: [method: Exclude<NotificationName, `stream.${string}`>, params: unknown];
  disconnect: [error: SoledadError];
  reconnect: [];
}

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5000;
const POLICY_VIOLATION = 1008;

/**
 * The client end of one daemon connection: JSON-RPC requests, stream frames and credit,
 * notifications, and reconnection. Knows nothing of documents.
 */
export class RpcTransport extends EventEmitter<TransportEvents> {
  readonly #endpoint: EndpointResolver;
  readonly #reconnect: boolean;
  readonly #client: JSONRPCClient;
  readonly #senders = new Map<number, CreditSender>();
  readonly #receivers = new Map<number, CreditReceiver>();
  #ws: WebSocket | undefined;
  #writer: SocketWriter | undefined;
  #url = '';
  #nextStreamId = 1;
  #closed = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #holdOpen = false;

  private constructor(options: TransportOptions) {
    super();
    this.#endpoint = options.endpoint;
    this.#reconnect = options.reconnect ?? true;
    this.#client = new JSONRPCClient((payload) => {
      const writer = this.#writer;
      if (writer === undefined || !writer.open) throw new Error('not connected to the daemon');
      writer.send(JSON.stringify(payload));
    });
  }

  /** Connects once; rejects with `daemon_not_running`, `rpc_unauthorized` or `rpc_forbidden`. */
  static async connect(options: TransportOptions): Promise<RpcTransport> {
    const transport = new RpcTransport(options);
    await transport.#open();
    return transport;
  }

  get url(): string {
    return this.#url;
  }

  get connected(): boolean {
    return this.#writer?.open ?? false;
  }

  /** While true, a pending reconnect keeps the process alive (someone awaits events). */
  set holdOpen(value: boolean) {
    this.#holdOpen = value;
    if (value) this.#retryTimer?.ref();
    else this.#retryTimer?.unref();
  }

  async request<M extends MethodName>(method: M, params: ParamsIn<M>): Promise<ResultOf<M>> {
    if (!this.connected) throw new SoledadError('disconnected', 'not connected to the daemon');
    try {
      return (await this.#client.request(method, params)) as ResultOf<M>;
    } catch (err) {
      throw toSoledadError(err);
    }
  }

  /** A request without a response (used for stream credit and cancel). */
  notify<M extends MethodName>(method: M, params: ParamsIn<M>): void {
    if (this.connected) this.#client.notify(method, params);
  }

  /**
   * Streams `source` to the daemon as the attachment of `docId`; resolves with what the
   * daemon stored. If the source fails, the daemon is told to cancel and stores nothing.
   */
  async upload(docId: string, source: AsyncIterable<unknown>): Promise<AttachmentInfo> {
    const streamId = this.#nextStreamId++;
    const writer = this.#writer;
    const sender = new CreditSender(streamId, 0, (frame) => writer?.send(frame));
    this.#senders.set(streamId, sender);
    const stored = this.request('attachment.put', { docId, streamId });
    stored.catch((err: Error) => sender.abort(err));
    try {
      await sender.pump(source);
      const ended = this.request('stream.end', { streamId }).catch(() => undefined);
      const info = await stored;
      await ended;
      return info;
    } catch (err) {
      if (sender.abortedWith === undefined) {
        // The source failed: the daemon must drop what it received.
        this.notify('stream.cancel', { streamId, reason: 'the client source failed' });
        await stored.catch(() => undefined);
      }
      throw err;
    } finally {
      this.#senders.delete(streamId);
    }
  }

  /**
   * Opens a download of the attachment `blobId`; resolves once the daemon has it open.
   * Destroying the readable early cancels the stream.
   */
  async download(
    blobId: string,
    window = DEFAULT_STREAM_WINDOW,
  ): Promise<{ stream: Readable; size: number | null }> {
    const streamId = this.#nextStreamId++;
    const receiver = new CreditReceiver({
      window,
      onCredit: (limit) => this.notify('stream.credit', { streamId, limit }),
      onAbandon: () => {
        if (this.#receivers.delete(streamId)) this.notify('stream.cancel', { streamId });
      },
    });
    this.#receivers.set(streamId, receiver);
    try {
      const { size } = await this.request('attachment.get', { blobId, streamId, window });
      return { stream: receiver.readable, size };
    } catch (err) {
      this.#receivers.delete(streamId);
      receiver.fail(err as Error);
      throw err;
    }
  }

  /** Closes the connection for good; idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    if (ws === undefined || ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.close(1000, 'client closing');
    await closed;
  }

  #open(): Promise<void> {
    return this.#endpoint().then(
      ({ url, token }) =>
        new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(url, {
            headers: { Authorization: `Bearer ${token}` },
            perMessageDeflate: false,
            maxPayload: MAX_MESSAGE_BYTES + FRAME_HEADER_BYTES,
            // An all-zero mask: masking defends proxies in the path, and there are none
            // between a local process and its daemon; XOR-ing every byte in JavaScript
            // would cap attachment throughput at a few hundred MB/s.
            generateMask: (mask) => mask.fill(0),
          });
          let settled = false;
          const fail = (error: SoledadError) => {
            if (settled) return;
            settled = true;
            reject(error);
          };
          ws.on('error', (err) => fail(connectError(url, err)));
          ws.once('unexpected-response', (_req, res) => {
            res.resume();
            fail(refusedError(url, res.statusCode ?? 0));
            ws.terminate();
          });
          ws.once('open', () => {
            settled = true;
            this.#attach(ws, url);
            resolve();
          });
        }),
    );
  }

  #attach(ws: WebSocket, url: string): void {
    this.#ws = ws;
    this.#writer = new SocketWriter(ws);
    this.#url = url;
    ws.on('message', (data, isBinary) => {
      const message = data as Buffer;
      if (isBinary) this.#onFrame(ws, message);
      else this.#onText(message.toString('utf8'));
    });
    ws.once('close', (code, reason) => this.#onClose(code, reason.toString('utf8')));
  }

  #onText(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (Array.isArray(message)) {
      this.#client.receive(message);
      return;
    }
    if (typeof message !== 'object' || message === null) return;
    const { method, params } = message as { method?: unknown; params?: unknown };
    if (typeof method === 'string') this.#onNotification(method as NotificationName, params);
    else this.#client.receive(message as Parameters<JSONRPCClient['receive']>[0]);
  }

  #onNotification(method: NotificationName, params: unknown): void {
    switch (method) {
      case 'stream.credit': {
        const p = params as Notifications['stream.credit'];
        this.#senders.get(p.streamId)?.credit(p.limit);
        return;
      }
      case 'stream.end': {
        const p = params as Notifications['stream.end'];
        this.#receivers.get(p.streamId)?.end();
        this.#receivers.delete(p.streamId);
        return;
      }
      case 'stream.error': {
        const p = params as Notifications['stream.error'];
        const error = new SoledadError(p.error.code, p.error.message);
        this.#receivers.get(p.streamId)?.fail(error);
        this.#receivers.delete(p.streamId);
        this.#senders.get(p.streamId)?.abort(error);
        return;
      }
      default:
        this.emit('notification', method, params);
    }
  }

  #onFrame(ws: WebSocket, frame: Buffer): void {
    const decoded = decodeFrame(frame);
    if (decoded === undefined) return;
    const receiver = this.#receivers.get(decoded.streamId);
    if (receiver === undefined) return;
    if (!receiver.push(decoded.payload)) {
      ws.close(POLICY_VIOLATION, `stream ${decoded.streamId} sent past its credit`);
    }
  }

  #onClose(code: number, reason: string): void {
    this.#ws = undefined;
    this.#writer = undefined;
    const detail = reason ? `${code}: ${reason}` : `${code}`;
    const error = new SoledadError(
      'disconnected',
      `the connection to the daemon closed (${detail})`,
    );
    this.#client.rejectAllPendingRequests(error.message);
    for (const sender of this.#senders.values()) sender.abort(error);
    for (const receiver of this.#receivers.values()) receiver.fail(error);
    this.#senders.clear();
    this.#receivers.clear();
    if (this.#closed) return;
    this.emit('disconnect', error);
    if (this.#reconnect) this.#retry(0);
  }

  #retry(attempt: number): void {
    const delay = Math.min(FIRST_RETRY_MS * 2 ** attempt, MAX_RETRY_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#closed) return;
      this.#open().then(
        () => {
          if (this.#closed) {
            this.#ws?.close(1000, 'client closing');
            return;
          }
          this.emit('reconnect');
        },
        () => {
          if (!this.#closed) this.#retry(attempt + 1);
        },
      );
    }, delay);
    if (!this.#holdOpen) this.#retryTimer.unref();
  }
}

/** Maps what the JSON-RPC client rejects with to a `SoledadError` with a stable code. */
function toSoledadError(err: unknown): SoledadError {
  if (err instanceof SoledadError) return err;
  if (err instanceof JSONRPCErrorException) {
    const data = err.data as { code?: unknown; currentRev?: unknown } | undefined;
    if (typeof data?.code === 'string') {
      return new SoledadError(data.code, err.message, {
        rpcCode: err.code,
        ...(typeof data.currentRev === 'string' ? { currentRev: data.currentRev } : {}),
      });
    }
    // The JSON-RPC client fails pending requests with code 0 when the socket closes.
    if (err.code === 0) return new SoledadError('disconnected', err.message);
    return new SoledadError('internal', err.message, { rpcCode: err.code });
  }
  return new SoledadError('internal', err instanceof Error ? err.message : String(err), {
    cause: err,
  });
}

function connectError(url: string, err: Error): SoledadError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'ECONNRESET') {
    return new SoledadError(
      'daemon_not_running',
      `the daemon is not running (nothing answers at ${url})`,
      {
        cause: err,
      },
    );
  }
  return new SoledadError(
    'daemon_not_running',
    `cannot reach the daemon at ${url}: ${err.message}`,
    {
      cause: err,
    },
  );
}

function refusedError(url: string, status: number): SoledadError {
  if (status === 401) {
    return new SoledadError('rpc_unauthorized', `the daemon at ${url} refused the token (401)`);
  }
  if (status === 403) {
    return new SoledadError(
      'rpc_forbidden',
      `the daemon at ${url} refused this origin or host (403)`,
    );
  }
  return new SoledadError('daemon_not_running', `${url} answered ${status}: not a Soledad daemon`);
}
