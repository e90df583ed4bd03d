import {
  encodeDownloadEntryHeader,
  FrameReader,
  MAX_STREAM_LINE_BYTES,
  parseDownloadRequest,
  parseUploadManifest,
  StreamFramingError,
  type UploadEntry,
  type UploadResult,
} from '../../wire/stream.js';
import type { BlobRef } from '../backends/blobs-backend.js';
import { BlobsError } from '../errors.js';
import type { Exchange } from '../exchange.js';
import { type Plan, pickMethod } from '../plan.js';
import { checkQueryFields, readDirection, readNamespace } from '../query-fields.js';
import { quotaOf, type ServerContext } from '../server-context.js';
import type { UserRecord } from '../user-store.js';

function framingToRequestError(error: unknown): unknown {
  return error instanceof StreamFramingError
    ? new BlobsError('invalid_request', error.message, { cause: error })
    : error;
}

/**
 * Download: per id, a header line and the bytes. The status (200) goes out before the
 * first blob is opened; a fault after that cuts the connection, which the client sees
 * as a truncated stream.
 */
async function download(
  context: ServerContext,
  exchange: Exchange,
  user: string,
  namespace: string,
): Promise<void> {
  let ids: string[];
  try {
    const body = await exchange.readSmallBody(MAX_STREAM_LINE_BYTES);
    ids = parseDownloadRequest(body.toString('utf8'));
  } catch (error) {
    throw framingToRequestError(error);
  }
  exchange.res.writeHead(200, { 'content-type': 'application/octet-stream' });
  for (const id of ids) {
    const ref: BlobRef = { user, namespace, id };
    let opened: Awaited<ReturnType<typeof context.backend.open>>;
    try {
      opened = await context.backend.open(ref);
    } catch (error) {
      if (!(error instanceof BlobsError) || error.code !== 'not_found') throw error;
      await exchange.writeFlushed(encodeDownloadEntryHeader({ id, error: 'not_found' }));
      continue;
    }
    try {
      await exchange.writeFlushed(encodeDownloadEntryHeader({ id, size: opened.size }));
    } catch (error) {
      await opened.close();
      throw error;
    }
    await exchange.pipeFrom(opened, opened.size);
  }
  exchange.res.end();
}

/**
 * Blobs of one upload stream being fsynced and published at once. Small durable writes are
 * bound by the disk's commit latency, so more in flight means more per commit: through the
 * backend alone, 1000 × 10 KB ran at about 0.6 of the disk baseline's rate with 16 in
 * flight and 0.75 with 64 (docs/filesystem-backend.md).
 */
const STORES_IN_FLIGHT = 64;
/**
 * Bodies up to this size are read off the stream before their store starts, so that the
 * next one can be read while this one's checks and fsyncs run (at most STORES_IN_FLIGHT
 * such bodies are held, 4 MiB in all); larger ones stream into the backend as they arrive.
 */
const PREREAD_MAX_BYTES = 64 * 1024;

async function readWhole(body: AsyncGenerator<Buffer, void, undefined>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

async function* once(bytes: Buffer): AsyncGenerator<Buffer, void, undefined> {
  if (bytes.length > 0) yield bytes;
}

/** Passes `body` through and calls `done` once it has been read to its end or failed. */
async function* untilEnd(
  body: AsyncGenerator<Buffer, void, undefined>,
  done: () => void,
): AsyncGenerator<Buffer, void, undefined> {
  try {
    yield* body;
  } finally {
    done();
  }
}

/**
 * Upload: the manifest line, then each body in turn, each stored as a PUT would be. A
 * refused blob's bytes are skipped; blobs stored before the request broke stay stored.
 */
async function upload(
  context: ServerContext,
  exchange: Exchange,
  owner: UserRecord,
  namespace: string,
): Promise<void> {
  const reader = new FrameReader(exchange.body());
  let entries: ReturnType<typeof parseUploadManifest>;
  try {
    const line = await reader.readLine(MAX_STREAM_LINE_BYTES);
    if (line === undefined) throw new BlobsError('invalid_request', 'the upload body is empty');
    entries = parseUploadManifest(line);
  } catch (error) {
    throw framingToRequestError(error);
  }
  const announced = context.backend.announceUploads(
    entries.map(({ id }) => ({ user: owner.uuid, namespace, id })),
  );
  try {
    await storeEntries(context, exchange, reader, entries, owner, namespace);
  } finally {
    announced();
  }
}

/** Stores each body of an upload stream in turn and answers the per-id results. */
async function storeEntries(
  context: ServerContext,
  exchange: Exchange,
  reader: FrameReader,
  entries: UploadEntry[],
  owner: UserRecord,
  namespace: string,
): Promise<void> {
  const { maxBlobSize } = context.config;
  const quota = quotaOf(context, owner);
  const results = new Map<string, UploadResult>(entries.map(({ id }) => [id, 'invalid_request']));
  let broken = false;
  let requestError: unknown;
  // A blob's body is read in stream order, but its fsync and publication run while the
  // next bodies arrive: up to STORES_IN_FLIGHT of them at once.
  const storing = new Set<Promise<void>>();
  const settle = (id: string, error: unknown): void => {
    if (exchange.requestError !== undefined) {
      requestError ??= error;
    } else if (error instanceof StreamFramingError) {
      broken = true;
    } else if (error instanceof BlobsError) {
      results.set(id, error.code);
      if (error.code === 'internal') exchange.log.error({ err: error, blobId: id }, 'stream write');
    } else {
      exchange.log.error({ err: error, blobId: id }, 'stream upload of one blob failed');
      results.set(id, 'internal');
    }
  };
  for (const { id, size } of entries) {
    if (broken || requestError !== undefined) break;
    const ref: BlobRef = { user: owner.uuid, namespace, id };
    let bodyDone!: () => void;
    const consumed = new Promise<void>((resolve) => {
      bodyDone = resolve;
    });
    // A small body is read first (a framing error breaks the stream before any store).
    let preread: Buffer | undefined;
    if (size <= PREREAD_MAX_BYTES) {
      try {
        preread = await readWhole(reader.readBody(size));
      } catch (error) {
        settle(id, error);
        break;
      }
    }
    const store = (async () => {
      const body = preread === undefined ? reader.readBody(size) : once(preread);
      if (size > maxBlobSize) throw new BlobsError('too_large', `blob ${id} is too large`);
      const stored = await context.backend.write(ref, untilEnd(body, bodyDone), {
        quota,
        maxSize: maxBlobSize,
        expectedSize: size,
      });
      exchange.bytes += stored.size;
      results.set(id, 'created');
    })().then(
      () => bodyDone(),
      (error: unknown) => {
        bodyDone();
        settle(id, error);
      },
    );
    storing.add(store);
    void store.finally(() => storing.delete(store));
    // A preread body is off the stream already: the next one can be read while this
    // store waits for its checks and its temp file (behind other stores' fsyncs).
    if (preread === undefined) await consumed;
    while (storing.size >= STORES_IN_FLIGHT) await Promise.race(storing);
  }
  await Promise.all(storing);
  if (requestError !== undefined) throw requestError;
  if (!broken) {
    let atEnd: boolean;
    try {
      atEnd = await reader.atEnd();
    } catch (error) {
      if (exchange.requestError !== undefined || !(error instanceof StreamFramingError)) {
        throw error;
      }
      atEnd = true;
    }
    if (!atEnd) {
      throw new BlobsError('invalid_request', 'bytes after the last blob of the manifest');
    }
  }
  exchange.sendJson(200, Object.fromEntries(results));
}

/** `POST /stream/{uuid}?direction=download|upload`: many blobs in one request. */
export function planStream(
  context: ServerContext,
  method: string,
  uuid: string,
  query: Map<string, string>,
): Plan {
  return pickMethod(method, {
    POST: () => {
      checkQueryFields(query, ['namespace', 'direction']);
      const namespace = readNamespace(query);
      const direction = readDirection(query);
      return {
        route: `/stream/:uuid?direction=${direction}`,
        access: 'user',
        uuid,
        run: async (exchange, user) => {
          exchange.namespace = namespace;
          if (direction === 'download') await download(context, exchange, uuid, namespace);
          else await upload(context, exchange, user, namespace);
        },
      };
    },
  });
}
