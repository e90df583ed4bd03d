import { isBlobFlag } from '../../wire/flags.js';
import type { BlobRef, ListOptions } from '../backends/blobs-backend.js';
import { BlobsError } from '../errors.js';
import type { Exchange } from '../exchange.js';
import { type Plan, pickMethod } from '../plan.js';
import {
  checkQueryFields,
  readBoolean,
  readFlag,
  readNamespace,
  readOrder,
} from '../query-fields.js';
import { decideRange } from '../range.js';
import type { ServerContext } from '../server-context.js';
import { storeBlob } from './store-blob.js';

/** Largest body of a flags POST; four flags fit in well under 100 bytes. */
const MAX_FLAGS_BODY = 4096;

function describe(exchange: Exchange, ref: BlobRef): void {
  exchange.namespace = ref.namespace;
  exchange.blobId = ref.id;
}

/** `GET /blobs/{uuid}`: ids (or tombstones, or their count) in one namespace. */
export function planListing(
  context: ServerContext,
  method: string,
  uuid: string,
  query: Map<string, string>,
): Plan {
  return pickMethod(method, {
    GET: () => {
      checkQueryFields(query, ['namespace', 'filter_flag', 'order_by', 'deleted', 'only_count']);
      const options: ListOptions = {
        namespace: readNamespace(query),
        orderBy: readOrder(query),
        deleted: readBoolean(query, 'deleted'),
        filterFlag: readFlag(query, 'filter_flag'),
      };
      const onlyCount = readBoolean(query, 'only_count');
      return {
        route: '/blobs/:uuid',
        access: 'user',
        uuid,
        run: async (exchange) => {
          exchange.namespace = options.namespace;
          if (onlyCount) {
            exchange.sendJson(200, { count: await context.backend.count(uuid, options) });
          } else {
            exchange.sendJson(200, await context.backend.list(uuid, options));
          }
        },
      };
    },
  });
}

async function sendBlob(
  context: ServerContext,
  exchange: Exchange,
  ref: BlobRef,
  headOnly: boolean,
): Promise<void> {
  const size = await context.backend.size(ref);
  const decision = decideRange(exchange.req.headers.range, size);
  if (decision.kind === 'unsatisfiable') {
    const error = new BlobsError('range_not_satisfiable', `no such range in ${size} bytes`);
    exchange.sendError(error, { 'content-range': `bytes */${size}` });
    return;
  }
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
  };
  let status = 200;
  let length = size;
  if (decision.kind === 'partial') {
    const { start, end } = decision.range;
    status = 206;
    length = end - start + 1;
    headers['content-range'] = `bytes ${start}-${end}/${size}`;
  }
  headers['content-length'] = length;
  if (headOnly) {
    exchange.res.writeHead(status, headers).end();
    return;
  }
  const opened =
    decision.kind === 'partial'
      ? await context.backend.open(ref, decision.range)
      : await context.backend.open(ref);
  exchange.res.writeHead(status, headers);
  await exchange.pipeFrom(opened, length);
  exchange.res.end();
}

async function setFlags(context: ServerContext, exchange: Exchange, ref: BlobRef): Promise<void> {
  const body = await exchange.readSmallBody(MAX_FLAGS_BODY);
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new BlobsError('invalid_request', 'the body must be a JSON array of flags');
  }
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw new BlobsError('invalid_request', 'the body must be a JSON array of flags');
  }
  const unknown = value.find((item) => !isBlobFlag(item));
  if (unknown !== undefined) {
    throw new BlobsError('invalid_flag', `unknown flag ${JSON.stringify(unknown)}`);
  }
  const flags = [...new Set(value.filter(isBlobFlag))];
  await context.backend.setFlags(ref, flags);
  exchange.sendJson(200, { id: ref.id, flags });
}

/** `/blobs/{uuid}/{blob_id}`: GET (bytes, a range, or flags), PUT, POST flags, DELETE. */
export function planBlob(
  context: ServerContext,
  method: string,
  uuid: string,
  id: string,
  query: Map<string, string>,
): Plan {
  const route = '/blobs/:uuid/:blob_id';
  const plain = (run: (exchange: Exchange, ref: BlobRef) => Promise<void>): Plan => {
    checkQueryFields(query, ['namespace']);
    const ref: BlobRef = { user: uuid, namespace: readNamespace(query), id };
    return {
      route,
      access: 'user',
      uuid,
      run: async (exchange) => {
        describe(exchange, ref);
        await run(exchange, ref);
      },
    };
  };
  const read = (headOnly: boolean): Plan => {
    checkQueryFields(query, ['namespace', 'only_flags']);
    const ref: BlobRef = { user: uuid, namespace: readNamespace(query), id };
    const onlyFlags = readBoolean(query, 'only_flags');
    return {
      route,
      access: 'user',
      uuid,
      run: async (exchange) => {
        describe(exchange, ref);
        if (onlyFlags) exchange.sendJson(200, await context.backend.getFlags(ref));
        else await sendBlob(context, exchange, ref, headOnly);
      },
    };
  };
  return pickMethod(method, {
    GET: () => read(false),
    HEAD: () => read(true),
    PUT: () => {
      checkQueryFields(query, ['namespace']);
      const ref: BlobRef = { user: uuid, namespace: readNamespace(query), id };
      return {
        route,
        access: 'user',
        uuid,
        run: async (exchange, user) => {
          describe(exchange, ref);
          await storeBlob(context, exchange, ref, user);
        },
      };
    },
    POST: () => plain((exchange, ref) => setFlags(context, exchange, ref)),
    DELETE: () =>
      plain(async (exchange, ref) => {
        await context.backend.delete(ref);
        exchange.sendJson(200, { id: ref.id, deleted: true });
      }),
  });
}
