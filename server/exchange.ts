import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ErrorBody } from '../wire/errors.js';
import type { OpenedBlob } from './backends/blobs-backend.js';
import { BlobsError } from './errors.js';

/** How long, and how many bytes, a refused request's unread body is drained before closing. */
const LINGER_MS = 5_000;
const LINGER_BYTES = 16 * 1024 * 1024;

/** The client went away (or sent a broken body) while its request was being handled. */
export class ClientGoneError extends Error {
  readonly code = 'client_gone';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClientGoneError';
  }
}

/**
 * After a response that left part of the request body unread: keep reading (and
 * discarding) for a while, so the client can read the response before the connection
 * closes. Closing at once with unread bytes makes the kernel send a reset, which can
 * destroy the response before the client reads it. Node's own close (`destroySoon`,
 * because the response said `Connection: close`) is replaced by this lingering one.
 */
function lingerAfterResponse(req: IncomingMessage, res: ServerResponse): void {
  res.once('finish', () => {
    const socket = req.socket;
    socket.removeListener('finish', socket.destroy);
    const close = (): void => {
      clearTimeout(timer);
      socket.destroy();
    };
    const timer = setTimeout(close, LINGER_MS);
    timer.unref();
    let discarded = 0;
    socket.once('close', () => clearTimeout(timer));
    req.on('data', (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > LINGER_BYTES) close();
    });
    req.once('end', close);
    req.once('error', close);
    req.resume();
  });
}

/**
 * One request and its response, with what the request log reports about it. Responses
 * that may leave part of the request body unread go through `sendJson` or `sendError`,
 * which say `Connection: close` and drain before closing.
 */
export class Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  log: Logger;
  readonly #startedAt = process.hrtime.bigint();
  route = 'unmatched';
  user: string | undefined;
  namespace: string | undefined;
  blobId: string | undefined;
  /** Payload bytes moved: received for uploads, sent for downloads. */
  bytes = 0;
  /** Set once reading the request body failed: the client is gone or sent a broken body. */
  requestError: unknown;
  #continued = false;
  #closed = false;
  #handled = false;

  constructor(req: IncomingMessage, res: ServerResponse, log: Logger) {
    this.req = req;
    this.res = res;
    this.log = log;
    res.once('close', () => {
      this.#closed = true;
      if (this.#handled) this.#logDone();
    });
  }

  /**
   * Marks the handler done (its storage work finished or rolled back). The request's log
   * line is written once both this and the response are over, so it comes after every
   * effect of the request.
   */
  handled(): void {
    this.#handled = true;
    if (this.#closed) this.#logDone();
  }

  #logDone(): void {
    const ms = Number(process.hrtime.bigint() - this.#startedAt) / 1e6;
    const fields: Record<string, unknown> = {
      method: this.req.method,
      route: this.route,
      status: this.res.statusCode,
      bytes: this.bytes,
      ms: Math.round(ms * 10) / 10,
    };
    if (this.user !== undefined) fields.user = this.user;
    if (this.namespace !== undefined) fields.namespace = this.namespace;
    if (this.blobId !== undefined) fields.blobId = this.blobId;
    if (!this.res.writableFinished) fields.aborted = true;
    if (this.route === '/health') this.log.debug(fields, 'request');
    else this.log.info(fields, 'request');
  }

  /** True when the client sent (or announced) a body that is not fully read yet. */
  get bodyPending(): boolean {
    if (this.req.complete) return false;
    const headers = this.req.headers;
    return headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0;
  }

  get responseOpen(): boolean {
    return !this.res.headersSent && !this.res.destroyed && !this.req.socket.destroyed;
  }

  /**
   * The declared body length: Content-Length, 0 when the request has no body, undefined
   * for a chunked body.
   */
  contentLength(): number | undefined {
    if (this.req.headers['transfer-encoding'] !== undefined) return undefined;
    const header = this.req.headers['content-length'];
    return header === undefined ? 0 : Number(header);
  }

  #send(status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
    const pending = this.bodyPending;
    const all: OutgoingHttpHeaders = { ...headers, 'content-length': body.length };
    if (pending) all.connection = 'close';
    this.res.writeHead(status, all);
    if (pending) lingerAfterResponse(this.req, this.res);
    this.res.end(body);
  }

  sendJson(status: number, value: unknown, headers: OutgoingHttpHeaders = {}): void {
    const body = Buffer.from(JSON.stringify(value), 'utf8');
    this.#send(status, { 'content-type': 'application/json', ...headers }, body);
  }

  sendError(error: BlobsError, headers: OutgoingHttpHeaders = {}): void {
    const body: ErrorBody = { error: error.code, message: error.message };
    this.sendJson(error.status, body, headers);
  }

  /**
   * Answers a failure: a `BlobsError` with its status, anything else with a 500
   * `internal`, logged with details and none sent. When the response has already begun
   * the connection is cut, so the client sees a broken body rather than a wrong one.
   */
  fail(error: unknown): void {
    const gone = this.requestError !== undefined && error === this.requestError;
    if (error instanceof ClientGoneError || gone) {
      this.log.debug({ err: error }, 'request body failed');
    } else if (!(error instanceof BlobsError) || error.code === 'internal') {
      this.log.error({ err: error, method: this.req.method, route: this.route }, 'request failed');
    }
    if (!this.responseOpen) {
      this.res.destroy();
      return;
    }
    if (error instanceof BlobsError) this.sendError(error);
    else if (gone) this.sendError(new BlobsError('invalid_request', 'the request body is broken'));
    else this.sendError(new BlobsError('internal', 'internal error'));
  }

  /** Sends `100 Continue` if the client asked for it; called when the body is first needed. */
  #continue(): void {
    if (this.#continued) return;
    this.#continued = true;
    const expect = this.req.headers.expect;
    if (expect?.toLowerCase() === '100-continue' && !this.res.headersSent) this.res.writeContinue();
  }

  /**
   * The request body, read on demand (`100 Continue` goes out at the first read). With
   * `expected`, a body of another length fails with `invalid_request`. A consumer that
   * stops early leaves the rest unread; the response then drains it or closes.
   */
  async *body(expected?: number): AsyncGenerator<Buffer, void, undefined> {
    this.#continue();
    let received = 0;
    try {
      for await (const chunk of this.req.iterator({ destroyOnReturn: false })) {
        received += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
    } catch (error) {
      this.requestError = error;
      throw error;
    }
    if (expected !== undefined && received !== expected) {
      const error = new BlobsError('invalid_request', `body of ${received} bytes, not ${expected}`);
      this.requestError = error;
      throw error;
    }
  }

  /** Reads a small body whole; over `limit` bytes it fails with `too_large` unread. */
  async readSmallBody(limit: number): Promise<Buffer> {
    const declared = this.contentLength();
    if (declared !== undefined && declared > limit) {
      throw new BlobsError('too_large', `request body over ${limit} bytes`);
    }
    const parts: Buffer[] = [];
    let length = 0;
    for await (const chunk of this.body(declared)) {
      length += chunk.length;
      if (length > limit) throw new BlobsError('too_large', `request body over ${limit} bytes`);
      parts.push(chunk);
    }
    return Buffer.concat(parts, length);
  }

  /**
   * Writes `chunk` and resolves once the socket has taken it (so its memory may be reused),
   * rejecting with `ClientGoneError` if the client goes away first.
   */
  writeFlushed(chunk: Buffer): Promise<void> {
    const res = this.res;
    if (res.destroyed)
      return Promise.reject(new ClientGoneError('the client closed the connection'));
    return new Promise<void>((resolve, reject) => {
      const onClose = (): void => reject(new ClientGoneError('the client closed the connection'));
      res.once('close', onClose);
      res.write(chunk, (error) => {
        res.off('close', onClose);
        if (error)
          reject(new ClientGoneError('the client closed the connection', { cause: error }));
        else resolve();
      });
    });
  }

  /**
   * Copies exactly `size` bytes of an opened blob into the response already begun; a blob
   * that yields another count is a storage fault and cuts the connection. The blob is
   * released on every path.
   */
  async pipeFrom(blob: OpenedBlob, size: number): Promise<void> {
    let sent = 0;
    await blob.pipeTo(async (chunk) => {
      sent += chunk.length;
      if (sent > size) throw new Error(`storage yielded more than the ${size} bytes of a blob`);
      await this.writeFlushed(chunk);
      this.bytes += chunk.length;
    });
    if (sent !== size) throw new Error(`storage yielded ${sent} bytes of a ${size}-byte blob`);
  }
}
