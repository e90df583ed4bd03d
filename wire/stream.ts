import { type BlobsErrorCode, isBlobsErrorCode } from './errors.js';
import { isValidId } from './ids.js';

/**
 * Framing of the `/stream/{uuid}` endpoint (many blobs in one request), shared by the
 * server and its clients. Pure: it turns bytes into frames and back, and never opens a
 * file or a socket.
 *
 * Download: the request body is a JSON array of ids; the response is, per id and in
 * request order, one JSON line `{"id", "size"}` followed by exactly `size` bytes, or one
 * line `{"id", "error"}`.
 *
 * Upload: the request body is one line holding a JSON array of `[id, size]` pairs, then
 * the bodies back to back in that order; the response is a JSON object mapping each id to
 * `"created"` or an error code.
 */

export type StreamDirection = 'download' | 'upload';

export const STREAM_DIRECTIONS: readonly StreamDirection[] = ['download', 'upload'];

/** Longest header line either side accepts by default (the upload manifest of a large batch). */
export const MAX_STREAM_LINE_BYTES = 4 * 1024 * 1024;

export type StreamFramingReason =
  | 'invalid_json'
  | 'invalid_entry'
  | 'repeated_id'
  | 'line_too_long'
  | 'truncated'
  | 'trailing_bytes';

/** Bytes that do not follow the stream framing. Its `code` is the wire code it maps to. */
export class StreamFramingError extends Error {
  readonly code = 'invalid_request';
  readonly reason: StreamFramingReason;

  constructor(reason: StreamFramingReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StreamFramingError';
    this.reason = reason;
  }
}

export interface UploadEntry {
  id: string;
  size: number;
}

export type DownloadEntryHeader = { id: string; size: number } | { id: string; error: string };

export type UploadResult = 'created' | BlobsErrorCode;

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new StreamFramingError('invalid_json', `${what} is not valid JSON`, { cause });
  }
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk)
    ? chunk
    : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function checkIds(ids: readonly unknown[]): void {
  const seen = new Set<string>();
  for (const id of ids) {
    if (!isValidId(id)) {
      throw new StreamFramingError('invalid_entry', `invalid blob id ${JSON.stringify(id)}`);
    }
    if (seen.has(id)) throw new StreamFramingError('repeated_id', `blob id ${id} is repeated`);
    seen.add(id);
  }
}

/** The body of a download request. Throws on an invalid or repeated id. */
export function encodeDownloadRequest(ids: readonly string[]): string {
  checkIds(ids);
  return JSON.stringify(ids);
}

/** Parses a download request body: a JSON array of distinct valid ids. */
export function parseDownloadRequest(text: string): string[] {
  const value = parseJson(text, 'the request body');
  if (!Array.isArray(value)) {
    throw new StreamFramingError('invalid_entry', 'the request body must be a JSON array of ids');
  }
  checkIds(value);
  return value as string[];
}

/** One header line of a download response, newline included. */
export function encodeDownloadEntryHeader(header: DownloadEntryHeader): Buffer {
  return Buffer.from(`${JSON.stringify(header)}\n`, 'utf8');
}

/** Parses one header line of a download response (without its newline). */
export function parseDownloadEntryHeader(line: string): DownloadEntryHeader {
  const value = parseJson(line, 'a download entry header');
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { id, size, error } = value as Record<string, unknown>;
    if (isValidId(id) && isSize(size) && error === undefined) return { id, size };
    if (isValidId(id) && typeof error === 'string' && size === undefined) return { id, error };
  }
  throw new StreamFramingError('invalid_entry', `invalid download entry header ${line}`);
}

/** The first line of an upload request, newline included. Throws on an invalid or repeated id. */
export function encodeUploadManifest(entries: readonly UploadEntry[]): Buffer {
  checkIds(entries.map((entry) => entry.id));
  for (const entry of entries) {
    if (!isSize(entry.size))
      throw new StreamFramingError('invalid_entry', `invalid size ${entry.size}`);
  }
  const pairs = entries.map((entry) => [entry.id, entry.size]);
  return Buffer.from(`${JSON.stringify(pairs)}\n`, 'utf8');
}

/** Parses the first line of an upload request (without its newline). */
export function parseUploadManifest(line: string): UploadEntry[] {
  const value = parseJson(line, 'the upload manifest');
  if (!Array.isArray(value)) {
    throw new StreamFramingError('invalid_entry', 'the upload manifest must be a JSON array');
  }
  const entries = value.map((pair: unknown): UploadEntry => {
    if (!Array.isArray(pair) || pair.length !== 2 || !isSize(pair[1])) {
      throw new StreamFramingError(
        'invalid_entry',
        `invalid manifest entry ${JSON.stringify(pair)}`,
      );
    }
    return { id: pair[0] as string, size: pair[1] };
  });
  checkIds(entries.map((entry) => entry.id));
  return entries;
}

/** Parses the JSON response of an upload: id → `"created"` or an error code. */
export function parseUploadResults(text: string): Record<string, UploadResult> {
  const value = parseJson(text, 'the upload response');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new StreamFramingError('invalid_entry', 'the upload response must be a JSON object');
  }
  const results: Record<string, UploadResult> = {};
  for (const [id, result] of Object.entries(value)) {
    if (!isValidId(id) || (result !== 'created' && !isBlobsErrorCode(result))) {
      throw new StreamFramingError('invalid_entry', `invalid upload result for ${id}`);
    }
    results[id] = result;
  }
  return results;
}

/**
 * Reads lines and sized bodies from a byte source, holding at most one source chunk (or
 * one line) in memory. A body not read to its end is skipped by the next call, so a
 * consumer may give up on a body early. Errors of the source are rethrown as they are; a
 * source that ends inside a line or a body throws `StreamFramingError('truncated')`.
 */
export class FrameReader {
  readonly #source: AsyncIterator<Uint8Array>;
  #pending: Buffer | undefined;
  /** Bytes of earlier bodies still to be discarded before anything else is read. */
  #skip = 0;
  /** Bytes of the current body not yet handed out. */
  #owed = 0;
  #bodyGeneration = 0;
  #ended = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#source = source[Symbol.asyncIterator]();
  }

  async #next(): Promise<Buffer | undefined> {
    if (this.#pending !== undefined) {
      const chunk = this.#pending;
      this.#pending = undefined;
      return chunk;
    }
    while (!this.#ended) {
      const result = await this.#source.next();
      if (result.done) {
        this.#ended = true;
        break;
      }
      if (result.value.length > 0) return asBuffer(result.value);
    }
    return undefined;
  }

  #unshift(chunk: Buffer): void {
    if (chunk.length > 0) this.#pending = chunk;
  }

  /** Abandons the current body: its unread bytes are discarded before the next read. */
  #leaveBody(): void {
    this.#skip += this.#owed;
    this.#owed = 0;
    this.#bodyGeneration += 1;
  }

  async #discard(): Promise<void> {
    while (this.#skip > 0) {
      const chunk = await this.#next();
      if (chunk === undefined) {
        this.#skip = 0;
        throw new StreamFramingError('truncated', 'the stream ended inside a body');
      }
      const used = Math.min(chunk.length, this.#skip);
      this.#skip -= used;
      this.#unshift(chunk.subarray(used));
    }
  }

  /**
   * The next line as UTF-8 text without its `\n`, or undefined when the source ended
   * cleanly before it. Throws `line_too_long` past `maxBytes`.
   */
  async readLine(maxBytes = MAX_STREAM_LINE_BYTES): Promise<string | undefined> {
    this.#leaveBody();
    await this.#discard();
    const parts: Buffer[] = [];
    let length = 0;
    for (;;) {
      const chunk = await this.#next();
      if (chunk === undefined) {
        if (length === 0) return undefined;
        throw new StreamFramingError('truncated', 'the stream ended inside a line');
      }
      const newline = chunk.indexOf(0x0a);
      const end = newline === -1 ? chunk.length : newline;
      if (length + end > maxBytes) {
        throw new StreamFramingError('line_too_long', `a line is longer than ${maxBytes} bytes`);
      }
      parts.push(chunk.subarray(0, end));
      length += end;
      if (newline !== -1) {
        this.#unshift(chunk.subarray(newline + 1));
        return Buffer.concat(parts, length).toString('utf8');
      }
    }
  }

  /**
   * The next `size` bytes, as chunks. Throws `truncated` if the source ends first. Any
   * part the consumer leaves unread is skipped by the next call on this reader.
   */
  readBody(size: number): AsyncGenerator<Buffer, void, undefined> {
    this.#leaveBody();
    this.#owed = size;
    return this.#body(this.#bodyGeneration);
  }

  async *#body(generation: number): AsyncGenerator<Buffer, void, undefined> {
    for (;;) {
      if (generation !== this.#bodyGeneration) {
        throw new Error('a body was read after the reader moved past it');
      }
      await this.#discard();
      if (this.#owed === 0) return;
      const chunk = await this.#next();
      if (chunk === undefined) {
        this.#owed = 0;
        throw new StreamFramingError('truncated', 'the stream ended inside a body');
      }
      const used = Math.min(chunk.length, this.#owed);
      this.#owed -= used;
      this.#unshift(chunk.subarray(used));
      yield chunk.subarray(0, used);
    }
  }

  /** True once the source has no bytes left after the current body. */
  async atEnd(): Promise<boolean> {
    this.#leaveBody();
    await this.#discard();
    const chunk = await this.#next();
    if (chunk === undefined) return true;
    this.#unshift(chunk);
    return false;
  }
}

export type DownloadEntry =
  | { id: string; size: number; body: AsyncGenerator<Buffer, void, undefined> }
  | { id: string; error: string };

/**
 * Splits a download response into its entries. Each entry with a size carries its body;
 * a body the consumer does not read to its end is skipped when the next entry is pulled.
 */
export async function* decodeDownloadStream(
  source: AsyncIterable<Uint8Array>,
  maxLineBytes = MAX_STREAM_LINE_BYTES,
): AsyncGenerator<DownloadEntry, void, undefined> {
  const reader = new FrameReader(source);
  for (;;) {
    const line = await reader.readLine(maxLineBytes);
    if (line === undefined) return;
    const header = parseDownloadEntryHeader(line);
    if ('error' in header) yield header;
    else yield { ...header, body: reader.readBody(header.size) };
  }
}

export interface UploadSource extends UploadEntry {
  /** Called once, when this blob's turn comes; must yield exactly `size` bytes. */
  body(): AsyncIterable<Uint8Array>;
}

/**
 * The body of an upload request: the manifest line, then each blob's bytes in order.
 * Throws if a body yields more or fewer bytes than its entry declares.
 */
export async function* encodeUploadStream(
  sources: readonly UploadSource[],
): AsyncGenerator<Buffer, void, undefined> {
  yield encodeUploadManifest(sources);
  for (const source of sources) {
    let sent = 0;
    for await (const chunk of source.body()) {
      sent += chunk.length;
      if (sent > source.size) {
        throw new StreamFramingError(
          'invalid_entry',
          `blob ${source.id} is longer than ${source.size} bytes`,
        );
      }
      yield asBuffer(chunk);
    }
    if (sent !== source.size) {
      throw new StreamFramingError(
        'invalid_entry',
        `blob ${source.id} has ${sent} bytes, not ${source.size}`,
      );
    }
  }
}
