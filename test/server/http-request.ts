import {
  request as httpRequest,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http';
import { connect } from 'node:net';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json<T = unknown>(): T;
}

export interface RequestOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  /** The `Authorization` header value. */
  auth?: string;
  body?: string | Buffer | AsyncIterable<Uint8Array>;
  timeoutMs?: number;
}

function response(status: number, headers: IncomingHttpHeaders, body: Buffer): HttpResponse {
  const text = body.toString('utf8');
  return { status, headers, body, text, json: <T>() => JSON.parse(text) as T };
}

/**
 * One HTTP request on a fresh connection. `path` goes on the wire as given (no
 * normalisation), so tests can send `..` and odd encodings. String and Buffer bodies get
 * a Content-Length; iterable bodies go chunked unless a Content-Length header is given.
 */
export function send(
  baseUrl: string,
  path: string,
  options: RequestOptions = {},
): Promise<HttpResponse> {
  const url = new URL(baseUrl);
  const headers: OutgoingHttpHeaders = { ...options.headers };
  if (options.auth !== undefined) headers.authorization = options.auth;
  const body = options.body;
  if (
    (typeof body === 'string' || Buffer.isBuffer(body)) &&
    headers['content-length'] === undefined
  ) {
    headers['content-length'] = Buffer.byteLength(body);
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: url.hostname,
      port: url.port,
      path,
      method: options.method ?? 'GET',
      headers,
      agent: false,
      timeout: options.timeoutMs ?? 15_000,
    });
    req.once('timeout', () => req.destroy(new Error(`request ${path} timed out`)));
    req.once('error', reject);
    req.once('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (chunk: Buffer) => parts.push(chunk));
      res.once('error', reject);
      res.once('end', () =>
        resolve(response(res.statusCode ?? 0, res.headers, Buffer.concat(parts))),
      );
    });
    if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) {
      req.end(body);
      return;
    }
    (async () => {
      for await (const chunk of body) {
        if (!req.write(chunk)) await new Promise((done) => req.once('drain', done));
      }
      req.end();
    })().catch((error: unknown) => req.destroy(error as Error));
  });
}

/** Parses one raw HTTP/1.1 response (the connection was closed after it). */
export function parseRawResponse(raw: Buffer): HttpResponse {
  const split = raw.indexOf('\r\n\r\n');
  if (split === -1)
    throw new Error(`no complete response head in ${JSON.stringify(raw.toString())}`);
  const head = raw.subarray(0, split).toString('latin1').split('\r\n');
  const status = Number(head[0]!.split(' ')[1]);
  const headers: IncomingHttpHeaders = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = raw.subarray(split + 4);
  if (headers['content-length'] !== undefined)
    body = body.subarray(0, Number(headers['content-length']));
  return response(status, headers, body);
}

/**
 * Writes `data` as is on a new connection and collects everything until the server
 * closes it (send requests with `Connection: close`).
 */
export function sendRaw(
  baseUrl: string,
  data: string | Buffer,
  timeoutMs = 15_000,
): Promise<HttpResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error('raw request timed out')), timeoutMs);
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      try {
        resolve(parseRawResponse(Buffer.concat(parts)));
      } catch (error) {
        reject(error);
      }
    });
    // Not `end()`: a half-closed client makes Node's server abort the request.
    socket.write(data);
  });
}
