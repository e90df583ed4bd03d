import { Readable } from 'node:stream';
import { Pool } from 'undici';
import { z } from 'zod';
import { encodeTokenAuth } from '../../wire/auth.js';
import { type BlobsErrorCode, isBlobsErrorCode } from '../../wire/errors.js';
import { BLOB_FLAGS, type BlobFlag } from '../../wire/flags.js';
import { DEFAULT_NAMESPACE, ID_PATTERN, isValidId } from '../../wire/ids.js';
import {
  decodeDownloadStream,
  encodeDownloadRequest,
  encodeUploadManifest,
  encodeUploadStream,
  MAX_STREAM_LINE_BYTES,
  parseUploadResults,
  StreamFramingError,
  type UploadResult,
} from '../../wire/stream.js';
import { errorFromResponse, fromTransportError, RemoteError } from './remote-error.js';

export interface BlobsClientTimeouts {
  /** Milliseconds to open a connection; default 10 s. */
  connect?: number;
  /** Milliseconds from the end of the request to the response headers; default 60 s. */
  headers?: number;
  /** Milliseconds of silence allowed inside a response body; default 60 s. */
  body?: number;
  /** Milliseconds an idle connection is kept open; default 4 s. */
  keepAlive?: number;
}

// TODO: no option for a custom CA or a client certificate; https uses the system's CAs.
export interface BlobsClientConfig {
  /** Base URL of the public listener, e.g. `http://127.0.0.1:2424` (a path prefix is kept). */
  url: string;
  uuid: string;
  token: string;
  /** Most connections open at once; further requests wait for one. Default 16. */
  connections?: number;
  timeouts?: BlobsClientTimeouts;
}

export interface CallOptions {
  /** Default `default`. */
  namespace?: string;
  /** Aborts the request; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Inclusive byte offsets; `end` past the blob is clamped by the server. */
export interface ByteRange {
  start: number;
  end?: number;
}

export interface GetOptions extends CallOptions {
  range?: ByteRange;
}

export interface GetResult {
  /** Bytes in `stream` (the range's length for a range read). */
  size: number;
  /** The bytes. The caller reads it to the end or destroys it; the connection waits till then. */
  stream: Readable;
  /** What a range read returned; absent for a whole blob. */
  range?: { start: number; end: number; total: number };
}

export interface ListQuery extends CallOptions {
  orderBy?: 'date' | '+date' | '-date';
  filterFlag?: BlobFlag;
  /** List tombstones instead of live blobs. */
  deleted?: boolean;
}

export interface StreamUploadEntry {
  id: string;
  size: number;
  /** Called once, when this blob's turn comes; must yield exactly `size` bytes. */
  body: () => Readable | AsyncIterable<Uint8Array>;
}

export type StreamDownloadEntry =
  | { id: string; size: number; stream: Readable }
  | { id: string; error: BlobsErrorCode };

export interface ServerInfo {
  name: string;
  version: string;
}

type Method = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';

interface Response {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & { dump(options?: { limit: number }): Promise<void> };
}

/** Largest JSON answer read into memory (a listing of about a million ids). */
// TODO: listings are parsed whole; a multi-million-blob account needs a streaming parser.
const MAX_JSON_BYTES = 128 * 1024 * 1024;
/** Largest error body read; the rest is dropped with the connection. */
const MAX_ERROR_BYTES = 64 * 1024;

const idListSchema = z.array(z.string().regex(ID_PATTERN));
const countSchema = z.object({ count: z.number().int().nonnegative() });
const flagsSchema = z.array(z.enum(BLOB_FLAGS));
const serverInfoSchema = z.object({ name: z.string(), version: z.string() });
const healthSchema = z.object({ status: z.literal('ok') });
const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/;

/**
 * Client of the blobs HTTP API (DESIGN §3) for one user, over one keep-alive connection
 * pool. Bodies are streamed both ways; nothing holds a whole blob. Every failure is a
 * `RemoteError`, except errors of a caller's own body source, which are rethrown as they
 * are, and an aborted signal, which rejects with its reason. Ids and namespaces are checked
 * before anything is sent (an invalid one is `invalid_request` with no status).
 */
export class BlobsClient {
  readonly uuid: string;
  readonly #pool: Pool;
  readonly #basePath: string;
  readonly #authorization: string;
  #closing: Promise<void> | undefined;

  constructor(config: BlobsClientConfig) {
    const url = new URL(config.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`the blobs server URL must be http or https, got ${url.protocol}`);
    }
    checkId(config.uuid, 'uuid');
    this.uuid = config.uuid;
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#authorization = encodeTokenAuth(config.uuid, config.token);
    const timeouts = config.timeouts ?? {};
    this.#pool = new Pool(url.origin, {
      connections: config.connections ?? 16,
      connectTimeout: timeouts.connect ?? 10_000,
      headersTimeout: timeouts.headers ?? 60_000,
      bodyTimeout: timeouts.body ?? 60_000,
      keepAliveTimeout: timeouts.keepAlive ?? 4_000,
    });
  }

  /**
   * Uploads `size` bytes from `body` as blob `id`. The body is consumed or destroyed; one
   * that yields more or fewer bytes than `size` rejects with a RangeError and sends nothing
   * the server keeps.
   */
  async put(
    id: string,
    body: Readable | AsyncIterable<Uint8Array>,
    size: number,
    options: CallOptions = {},
  ): Promise<void> {
    checkId(id, 'blob id');
    checkSize(size);
    const source = guardSource(sizedBody(id, body, size));
    const wrapper = Readable.from(source.chunks, { objectMode: false });
    try {
      const response = await this.#request(
        {
          method: 'PUT',
          path: this.#blobPath(id, options),
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
          body: wrapper,
          signal: options.signal,
        },
        source,
      );
      await expectStatus(response, 200);
      await response.body.dump();
    } finally {
      // A request refused early may leave its body unread, or never started reading it.
      wrapper.destroy();
      if (body instanceof Readable && !body.readableEnded) body.destroy();
    }
  }

  /**
   * Opens blob `id`, or the byte range `options.range` of it. The stream fails with a
   * RemoteError (`network`, or `invalid_response` when it ends short).
   */
  async get(id: string, options: GetOptions = {}): Promise<GetResult> {
    checkId(id, 'blob id');
    const { range } = options;
    const headers: Record<string, string> = {};
    if (range) {
      checkSize(range.start);
      if (range.end !== undefined) {
        checkSize(range.end);
        if (range.end < range.start) throw new RangeError('range end is before its start');
      }
      headers.range = `bytes=${range.start}-${range.end ?? ''}`;
    }
    const response = await this.#request({
      method: 'GET',
      path: this.#blobPath(id, options),
      headers,
      signal: options.signal,
    });
    await expectStatus(response, range ? 206 : 200);
    try {
      const size = contentLength(response);
      const result: GetResult = {
        size,
        stream: Readable.from(guardBody(response.body, size, options.signal).chunks, {
          objectMode: false,
        }),
      };
      if (range) result.range = checkContentRange(response, range, size);
      return result;
    } catch (error) {
      drop(response);
      throw error;
    }
  }

  /** Size in bytes of a live blob (a HEAD request); `not_found` when there is none. */
  async size(id: string, options: CallOptions = {}): Promise<number> {
    checkId(id, 'blob id');
    const response = await this.#request({
      method: 'HEAD',
      path: this.#blobPath(id, options),
      signal: options.signal,
    });
    await expectStatus(response, 200);
    await response.body.dump();
    return contentLength(response);
  }

  /** Deletes a live blob, leaving a tombstone; `not_found` when there is none. */
  async delete(id: string, options: CallOptions = {}): Promise<void> {
    checkId(id, 'blob id');
    const response = await this.#request({
      method: 'DELETE',
      path: this.#blobPath(id, options),
      signal: options.signal,
    });
    await expectStatus(response, 200);
    await response.body.dump();
  }

  /** Ids of live blobs (or tombstones with `deleted`), in the order asked for. */
  async list(query: ListQuery = {}): Promise<string[]> {
    return this.#getJson(this.#listPath(query, false), idListSchema, query.signal);
  }

  async count(query: ListQuery = {}): Promise<number> {
    return (await this.#getJson(this.#listPath(query, true), countSchema, query.signal)).count;
  }

  async getFlags(id: string, options: CallOptions = {}): Promise<BlobFlag[]> {
    checkId(id, 'blob id');
    return this.#getJson(
      this.#blobPath(id, options, { only_flags: 'true' }),
      flagsSchema,
      options.signal,
    );
  }

  /** Replaces the flag set of a live blob. */
  async setFlags(id: string, flags: readonly BlobFlag[], options: CallOptions = {}): Promise<void> {
    checkId(id, 'blob id');
    const response = await this.#request({
      method: 'POST',
      path: this.#blobPath(id, options),
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(flags),
      signal: options.signal,
    });
    await expectStatus(response, 200);
    await response.body.dump();
  }

  /** `GET /`, anonymous. */
  async serverInfo(options: { signal?: AbortSignal } = {}): Promise<ServerInfo> {
    return this.#getJson(`${this.#basePath}/`, serverInfoSchema, options.signal, false);
  }

  /** `GET /health`, anonymous: resolves while the server takes requests. */
  async health(options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#getJson(`${this.#basePath}/health`, healthSchema, options.signal, false);
  }

  /**
   * Uploads many blobs in one request (`/stream`, direction upload), in the given order.
   * Resolves with each id's outcome: `created` or the error code that blob got. A body that
   * yields the wrong number of bytes rejects the call with a RangeError.
   */
  async streamUpload(
    entries: readonly StreamUploadEntry[],
    options: CallOptions = {},
  ): Promise<Record<string, UploadResult>> {
    if (entries.length === 0) return {};
    checkDistinctIds(entries.map((entry) => entry.id));
    for (const entry of entries) checkSize(entry.size);
    let length = encodeUploadManifest(entries).length;
    for (const entry of entries) length += entry.size;
    const source = guardSource(
      encodeUploadStream(
        entries.map((entry) => ({ id: entry.id, size: entry.size, body: entry.body })),
      ),
    );
    const wrapper = Readable.from(source.chunks, { objectMode: false });
    let text: string;
    try {
      const response = await this.#request(
        {
          method: 'POST',
          path: this.#streamPath('upload', options),
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(length),
          },
          body: wrapper,
          signal: options.signal,
        },
        source,
      );
      await expectStatus(response, 200);
      text = await readText(response, MAX_STREAM_LINE_BYTES);
    } finally {
      wrapper.destroy();
    }
    let results: Record<string, UploadResult>;
    try {
      results = parseUploadResults(text);
    } catch (error) {
      throw invalidResponse('the stream upload answer', error);
    }
    const ids = entries.map((entry) => entry.id);
    if (
      Object.keys(results).length !== ids.length ||
      !ids.every((id) => Object.hasOwn(results, id))
    ) {
      throw new RemoteError(
        'invalid_response',
        'the stream upload answer does not cover the request',
      );
    }
    return results;
  }

  /**
   * Downloads many blobs in one request (`/stream`, direction download), yielding one
   * entry per id in request order: its size and bytes, or its error code (`not_found`).
   * Read each entry's stream to the end or destroy it before asking for the next entry;
   * one left unread is destroyed then. Stopping the iteration early drops the connection.
   * Memory holds at most one network chunk whatever the sizes.
   */
  async *streamDownload(
    ids: readonly string[],
    options: CallOptions = {},
  ): AsyncGenerator<StreamDownloadEntry, void, undefined> {
    if (ids.length === 0) return;
    checkDistinctIds(ids);
    const response = await this.#request({
      method: 'POST',
      path: this.#streamPath('download', options),
      headers: { 'content-type': 'application/json' },
      body: encodeDownloadRequest(ids),
      signal: options.signal,
    });
    await expectStatus(response, 200);
    let index = 0;
    let current: GuardedBody | undefined;
    let stream: Readable | undefined;
    try {
      for await (const entry of decodeDownloadStream(response.body)) {
        const expected = ids[index];
        if (entry.id !== expected) {
          throw new RemoteError(
            'invalid_response',
            `stream entry ${entry.id}, expected ${expected}`,
          );
        }
        index += 1;
        if ('error' in entry) {
          if (!isBlobsErrorCode(entry.error)) {
            throw new RemoteError('invalid_response', `unknown error code for ${entry.id}`);
          }
          yield { id: entry.id, error: entry.error };
          continue;
        }
        current = guardBody(entry.body, entry.size, options.signal);
        stream = Readable.from(current.chunks, { objectMode: false });
        yield { id: entry.id, size: entry.size, stream };
        await settle(stream);
        // A body that failed broke the whole response; report that, not what follows.
        if (current.failure) throw current.failure;
        current = undefined;
        stream = undefined;
      }
      if (index !== ids.length) {
        throw new RemoteError(
          'invalid_response',
          `the stream ended after ${index} of ${ids.length} entries`,
        );
      }
    } catch (error) {
      if (error === current?.failure) throw error;
      throw mapBodyError(error, options.signal);
    } finally {
      // The caller stopped early, holding an entry: its bytes are gone with the connection.
      if (stream && !stream.readableEnded) stream.destroy();
      if (!response.body.readableEnded) drop(response);
    }
  }

  /**
   * Refuses new requests and resolves once those in flight are done (a body handed out
   * counts until it is read or destroyed); returns the same promise on every call.
   */
  close(): Promise<void> {
    this.#closing ??= this.#pool.close();
    return this.#closing;
  }

  async #getJson<T>(
    path: string,
    schema: z.ZodType<T>,
    signal: AbortSignal | undefined,
    authenticated = true,
  ): Promise<T> {
    const response = await this.#request({ method: 'GET', path, signal }, undefined, authenticated);
    await expectStatus(response, 200);
    const text = await readText(response, MAX_JSON_BYTES);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw invalidResponse(`the answer to GET ${path}`, error);
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw invalidResponse(`the answer to GET ${path}`, parsed.error);
    return parsed.data;
  }

  /**
   * Sends one request. A failure of the caller's body `source` is rethrown as it is; an
   * abort rejects with the signal's reason; other failures become RemoteErrors.
   */
  async #request(
    request: {
      method: Method;
      path: string;
      headers?: Record<string, string>;
      body?: string | Readable;
      signal: AbortSignal | undefined;
    },
    source?: GuardedSource,
    authenticated = true,
  ): Promise<Response> {
    const headers: Record<string, string> = { ...request.headers };
    if (authenticated) headers.authorization = this.#authorization;
    try {
      const response = await this.#pool.request({
        method: request.method,
        path: request.path,
        headers,
        body: request.body ?? null,
        signal: request.signal ?? null,
      });
      return response as unknown as Response;
    } catch (error) {
      if (source?.failure !== undefined) throw source.failure;
      if (request.signal?.aborted) throw request.signal.reason;
      throw fromTransportError(error);
    }
  }

  #blobPath(id: string, options: CallOptions, extra: Record<string, string> = {}): string {
    const query = namespaceQuery(options.namespace);
    for (const [key, value] of Object.entries(extra)) query.set(key, value);
    return withQuery(`${this.#basePath}/blobs/${this.uuid}/${id}`, query);
  }

  #listPath(options: ListQuery, onlyCount: boolean): string {
    const query = namespaceQuery(options.namespace);
    if (options.orderBy !== undefined) query.set('order_by', options.orderBy);
    if (options.filterFlag !== undefined) query.set('filter_flag', options.filterFlag);
    if (options.deleted) query.set('deleted', 'true');
    if (onlyCount) query.set('only_count', 'true');
    return withQuery(`${this.#basePath}/blobs/${this.uuid}`, query);
  }

  #streamPath(direction: 'upload' | 'download', options: CallOptions): string {
    const query = namespaceQuery(options.namespace);
    query.set('direction', direction);
    return withQuery(`${this.#basePath}/stream/${this.uuid}`, query);
  }
}

function namespaceQuery(namespace: string | undefined): URLSearchParams {
  const query = new URLSearchParams();
  if (namespace !== undefined && namespace !== DEFAULT_NAMESPACE) {
    checkId(namespace, 'namespace');
    query.set('namespace', namespace);
  }
  return query;
}

function withQuery(path: string, query: URLSearchParams): string {
  const text = query.toString();
  return text === '' ? path : `${path}?${text}`;
}

function checkId(value: string, what: string): void {
  if (!isValidId(value)) {
    throw new RemoteError('invalid_request', `invalid ${what} ${JSON.stringify(value)}`);
  }
}

function checkDistinctIds(ids: readonly string[]): void {
  for (const id of ids) checkId(id, 'blob id');
  if (new Set(ids).size !== ids.length) {
    throw new RemoteError('invalid_request', 'a blob id is repeated');
  }
}

function checkSize(value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`a size or offset must be a non-negative integer, got ${value}`);
  }
}

/** Throws the mapped error of a response whose status is not `ok`, after reading its body. */
async function expectStatus(response: Response, ok: number): Promise<void> {
  if (response.statusCode === ok) return;
  let body: unknown;
  try {
    body = JSON.parse(await readText(response, MAX_ERROR_BYTES));
  } catch {
    body = undefined;
  }
  if (response.statusCode === 200 || response.statusCode === 206) {
    throw new RemoteError('invalid_response', `HTTP ${response.statusCode} where ${ok} was due`, {
      status: response.statusCode,
    });
  }
  throw errorFromResponse(response.statusCode, body);
}

/** The whole body as text, up to `limit` bytes; more than that is `invalid_response`. */
async function readText(response: Response, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of response.body) {
      length += (chunk as Buffer).length;
      if (length > limit) {
        drop(response);
        throw new RemoteError('invalid_response', `an answer longer than ${limit} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    throw fromTransportError(error);
  }
  return Buffer.concat(chunks, length).toString('utf8');
}

/**
 * Drops an unread response body and its connection. Undici reports a body destroyed before
 * its end as an `error` event, which nobody waits for here.
 */
function drop(response: Response): void {
  response.body.on('error', () => undefined);
  response.body.destroy();
}

function contentLength(response: Response): number {
  const header = response.headers['content-length'];
  if (typeof header !== 'string' || !/^\d+$/.test(header)) {
    throw new RemoteError('invalid_response', 'a blob answer without a valid Content-Length');
  }
  return Number(header);
}

/** The range a 206 answer holds; it must be exactly the asked range, clamped to the blob. */
function checkContentRange(
  response: Response,
  asked: ByteRange,
  length: number,
): { start: number; end: number; total: number } {
  const header = response.headers['content-range'];
  const match = typeof header === 'string' ? CONTENT_RANGE.exec(header) : null;
  if (!match)
    throw new RemoteError('invalid_response', 'a 206 answer without a valid Content-Range');
  const [start, end, total] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const dueEnd = Math.min(asked.end ?? total - 1, total - 1);
  if (start !== asked.start || end !== dueEnd || end - start + 1 !== length) {
    throw new RemoteError(
      'invalid_response',
      `Content-Range ${header} does not answer the range asked`,
    );
  }
  return { start, end, total };
}

interface GuardedSource {
  chunks: AsyncGenerator<Buffer, void, undefined>;
  /** The source's own error, once it failed. */
  failure: unknown;
}

/** Remembers the first error of a request body's source so that it can be told from the network's. */
function guardSource(source: AsyncIterable<Uint8Array>): GuardedSource {
  const guarded = { failure: undefined } as GuardedSource;
  guarded.chunks = (async function* () {
    try {
      for await (const chunk of source) yield asBuffer(chunk);
    } catch (error) {
      guarded.failure =
        error instanceof StreamFramingError
          ? new RangeError(error.message, { cause: error })
          : error;
      throw guarded.failure;
    }
  })();
  return guarded;
}

async function* sizedBody(
  id: string,
  body: Readable | AsyncIterable<Uint8Array>,
  size: number,
): AsyncGenerator<Uint8Array, void, undefined> {
  let sent = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array | string>) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    sent += bytes.byteLength;
    if (sent > size) throw new RangeError(`blob ${id} is longer than ${size} bytes`);
    yield bytes;
  }
  if (sent !== size) throw new RangeError(`blob ${id} has ${sent} bytes, not ${size}`);
}

interface GuardedBody {
  chunks: AsyncGenerator<Buffer, void, undefined>;
  /** The RemoteError the body failed with, once it did. */
  failure: RemoteError | undefined;
}

/** A response body that must hold exactly `size` bytes; its failures become RemoteErrors. */
function guardBody(
  body: AsyncIterable<Uint8Array>,
  size: number,
  signal: AbortSignal | undefined,
): GuardedBody {
  const guarded = { failure: undefined } as GuardedBody;
  guarded.chunks = (async function* () {
    let received = 0;
    try {
      for await (const chunk of body) {
        received += chunk.byteLength;
        if (received > size) {
          throw new RemoteError('invalid_response', `a body longer than ${size} bytes`);
        }
        yield asBuffer(chunk);
      }
      if (received !== size) {
        throw new RemoteError('invalid_response', `a body of ${received} bytes, not ${size}`);
      }
    } catch (error) {
      const mapped = mapBodyError(error, signal);
      if (mapped instanceof RemoteError) guarded.failure = mapped;
      throw mapped;
    }
  })();
  return guarded;
}

function mapBodyError(error: unknown, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted) return signal.reason;
  if (error instanceof StreamFramingError) return invalidResponse('the stream answer', error);
  return fromTransportError(error);
}

function invalidResponse(what: string, cause: unknown): RemoteError {
  const reason = cause instanceof Error ? `: ${cause.message}` : '';
  return new RemoteError('invalid_response', `${what} breaks the contract${reason}`, { cause });
}

/** Destroys `stream` unless it was read to the end, and waits until it has closed. */
async function settle(stream: Readable): Promise<void> {
  if (!stream.readableEnded && !stream.destroyed) stream.destroy();
  if (stream.closed) return;
  await new Promise<void>((resolve) => stream.once('close', () => resolve()));
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk)
    ? chunk
    : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
