import type { Readable } from 'node:stream';
import type { JSONRPCServer } from 'json-rpc-2.0';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { DaemonApi } from '../daemon/daemon-api.js';
import { CreditReceiver } from './credit-receiver.js';
import { CreditSender } from './credit-sender.js';
import { EventSubscription } from './event-subscription.js';
import type { DownloadOpened, NotificationName, Notifications, Subscribed } from './methods.js';
import type { ProgressFanout } from './progress-fanout.js';
import { type Corkable, SocketWriter } from './socket-writer.js';
import { isDomainCode, SoledadError } from './soledad-error.js';
import { DEFAULT_STREAM_WINDOW, decodeFrame } from './stream-frames.js';

export interface RpcConnectionOptions {
  rpc: JSONRPCServer<RpcConnection>;
  daemon: DaemonApi;
  logger: Logger;
  progress: ProgressFanout;
  subscriberBufferLimit: number;
}

interface UploadEntry {
  kind: 'upload';
  receiver: CreditReceiver;
}

interface DownloadEntry {
  kind: 'download';
  sender: CreditSender;
  source: Readable | undefined;
  cancelled: boolean;
}

/** WebSocket close code for a peer that broke the stream protocol. */
const POLICY_VIOLATION = 1008;

/**
 * One client connection: feeds its text messages to the shared JSON-RPC server with
 * itself as context, routes binary frames to upload streams, pumps download streams, and
 * owns its event subscription. Everything it holds is released when the socket closes.
 */
export class RpcConnection {
  readonly writer: SocketWriter;
  readonly logger: Logger;
  readonly #ws: WebSocket;
  readonly #options: RpcConnectionOptions;
  readonly #streams = new Map<number, UploadEntry | DownloadEntry>();
  /** Stream ids are chosen by the client and must increase. */
  #highestStreamId = 0;
  #subscription: EventSubscription | undefined;
  #closed = false;

  /** `socket` is the connection under `ws`, used to batch writes made in one tick. */
  constructor(ws: WebSocket, socket: Corkable, options: RpcConnectionOptions) {
    this.#ws = ws;
    this.#options = options;
    this.logger = options.logger;
    this.writer = new SocketWriter(ws, { socket });
    ws.on('message', (data, isBinary) => {
      const message = data as Buffer;
      if (isBinary) this.#onFrame(message);
      else this.#onText(message.toString('utf8'));
    });
    ws.on('close', (code) => {
      const streams = this.#streams.size;
      this.#dispose();
      this.logger.debug({ code, streams }, 'RPC client disconnected');
    });
    ws.on('error', (err) => this.logger.debug({ err }, 'RPC socket error'));
    this.logger.debug('RPC client connected');
  }

  notify<N extends NotificationName>(method: N, params: Notifications[N]): void {
    this.writer.notify(method, params);
  }

  /** Closes the socket; streams and the subscription are released on 'close'. */
  close(code = 1001, reason = 'daemon stopping'): void {
    this.#ws.close(code, reason);
  }

  /**
   * Runs an upload: `consume` receives the readable the client's frames flow into and
   * resolves with the result. If the client cancels or disconnects, the readable errors
   * and the upload rejects with `cancelled`, whatever `consume` made of it.
   */
  async receiveUpload<T>(streamId: number, consume: (source: Readable) => Promise<T>): Promise<T> {
    this.#claimStreamId(streamId);
    const receiver = new CreditReceiver({
      window: DEFAULT_STREAM_WINDOW,
      onCredit: (limit) => this.notify('stream.credit', { streamId, limit }),
      onAbandon: () => {},
    });
    this.#streams.set(streamId, { kind: 'upload', receiver });
    this.notify('stream.credit', { streamId, limit: receiver.granted });
    const started = Date.now();
    try {
      const result = await consume(receiver.readable);
      this.logger.debug(
        { streamId, bytes: receiver.received, ms: Date.now() - started },
        'upload stream stored',
      );
      return result;
    } catch (err) {
      const error = receiver.failedWith ?? err;
      this.logger.debug({ streamId, code: toErrorBody(error).code }, 'upload stream failed');
      throw error;
    } finally {
      this.#streams.delete(streamId);
      receiver.fail(new SoledadError('cancelled', 'upload stream closed before its end'));
    }
  }

  /**
   * Opens a download with `open` and, once the result has gone out, pumps its bytes to
   * the client within the credit it grants; ends with `stream.end` or `stream.error`.
   */
  async sendDownload(
    streamId: number,
    window: number,
    open: () => Promise<{ source: Readable; size: number | null }>,
  ): Promise<DownloadOpened> {
    this.#claimStreamId(streamId);
    const entry: DownloadEntry = {
      kind: 'download',
      sender: new CreditSender(streamId, window, (frame) => this.writer.send(frame)),
      source: undefined,
      cancelled: false,
    };
    this.#streams.set(streamId, entry);
    let opened: { source: Readable; size: number | null };
    try {
      opened = await open();
    } catch (err) {
      this.#streams.delete(streamId);
      throw err;
    }
    if (entry.sender.abortedWith !== undefined) {
      opened.source.destroy();
      this.#streams.delete(streamId);
      throw entry.sender.abortedWith;
    }
    entry.source = opened.source;
    setImmediate(() => void this.#pumpDownload(entry, opened.source));
    return { size: opened.size };
  }

  creditStream(streamId: number, limit: number): true {
    const entry = this.#streams.get(streamId);
    if (entry === undefined) return this.#knownStream(streamId);
    if (entry.kind !== 'download') {
      throw new SoledadError(
        'invalid_state',
        `stream ${streamId} is an upload: the daemon grants its credit`,
      );
    }
    entry.sender.credit(limit);
    return true;
  }

  endStream(streamId: number): true {
    const entry = this.#streams.get(streamId);
    if (entry === undefined) {
      throw new SoledadError('not_found', `no open upload stream ${streamId}`);
    }
    if (entry.kind !== 'upload') {
      throw new SoledadError(
        'invalid_state',
        `stream ${streamId} is a download: the daemon ends it`,
      );
    }
    entry.receiver.end();
    return true;
  }

  cancelStream(streamId: number, reason: string | undefined): true {
    const entry = this.#streams.get(streamId);
    if (entry === undefined) return this.#knownStream(streamId);
    const error = new SoledadError('cancelled', reason ?? 'cancelled by the client');
    if (entry.kind === 'upload') {
      entry.receiver.fail(error);
    } else {
      entry.cancelled = true;
      entry.sender.abort(error);
    }
    return true;
  }

  /** Replaces this connection's subscription. */
  subscribe(params: {
    after?: number | undefined;
    epoch?: string | undefined;
    progress: boolean;
  }): Promise<Subscribed> {
    this.#subscription?.stop();
    const subscription = new EventSubscription({
      daemon: this.#options.daemon,
      writer: this.writer,
      bufferLimit: this.#options.subscriberBufferLimit,
      logger: this.logger,
      ...(params.progress ? { progress: this.#options.progress } : {}),
    });
    this.#subscription = subscription;
    return subscription.start(params);
  }

  unsubscribe(): true {
    this.#subscription?.stop();
    this.#subscription = undefined;
    return true;
  }

  #claimStreamId(streamId: number): void {
    if (streamId <= this.#highestStreamId) {
      throw new SoledadError(
        'invalid_params',
        `stream ids must increase on a connection: ${streamId} is not above ${this.#highestStreamId}`,
      );
    }
    this.#highestStreamId = streamId;
  }

  /** A stream that already ended: late credit or cancel for it is harmless. */
  #knownStream(streamId: number): true {
    if (streamId <= this.#highestStreamId) return true;
    throw new SoledadError('not_found', `no stream ${streamId}`);
  }

  async #pumpDownload(entry: DownloadEntry, source: Readable): Promise<void> {
    const { streamId } = entry.sender;
    const started = Date.now();
    try {
      const bytes = await entry.sender.pump(source);
      this.notify('stream.end', { streamId, bytes });
      this.logger.debug({ streamId, bytes, ms: Date.now() - started }, 'download stream sent');
    } catch (err) {
      source.destroy();
      if (!entry.cancelled && !this.#closed) {
        const error = toErrorBody(err);
        this.notify('stream.error', { streamId, error });
        this.logger.warn({ streamId, code: error.code }, 'download stream failed');
      }
    } finally {
      this.#streams.delete(streamId);
    }
  }

  #onText(text: string): void {
    this.#options.rpc.receiveJSON(text, this).then(
      (response) => {
        if (response !== null) this.writer.send(JSON.stringify(response));
      },
      (err: unknown) => this.logger.error({ err }, 'JSON-RPC dispatch failed'),
    );
  }

  #onFrame(frame: Buffer): void {
    const problem = this.#deliverFrame(frame);
    if (problem !== undefined) this.#violation(problem);
  }

  /** Hands a frame to its upload; returns what was wrong with it, if anything. */
  #deliverFrame(frame: Buffer): string | undefined {
    const decoded = decodeFrame(frame);
    if (decoded === undefined) return 'binary message shorter than a stream header';
    const { streamId, payload } = decoded;
    const entry = this.#streams.get(streamId);
    if (entry === undefined) {
      // Frames still in flight when an upload failed or was cancelled are dropped.
      return streamId <= this.#highestStreamId ? undefined : `data for unopened stream ${streamId}`;
    }
    if (entry.kind !== 'upload') return `data sent on download stream ${streamId}`;
    if (!entry.receiver.push(payload)) return `stream ${streamId} sent past its credit`;
    return undefined;
  }

  #violation(reason: string): void {
    this.logger.warn({ reason }, 'closing an RPC connection that broke the stream protocol');
    this.#ws.close(POLICY_VIOLATION, reason.slice(0, 120));
  }

  #dispose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#subscription?.stop();
    this.#subscription = undefined;
    const gone = new SoledadError('cancelled', 'the client disconnected');
    for (const entry of this.#streams.values()) {
      if (entry.kind === 'upload') {
        entry.receiver.fail(gone);
      } else {
        entry.cancelled = true;
        entry.sender.abort(gone);
        entry.source?.destroy();
      }
    }
    this.#streams.clear();
  }
}

function toErrorBody(err: unknown): { code: string; message: string } {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return { code: isDomainCode(code) ? code : 'internal', message };
}
