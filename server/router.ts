import { isValidId } from '../wire/ids.js';
import { BlobsError } from './errors.js';
import type { Plan } from './plan.js';
import type { RequestTarget } from './request-target.js';
import { planBlob, planListing } from './routes/blob-routes.js';
import { planIncoming } from './routes/incoming-routes.js';
import { planHealth, planServerInfo } from './routes/info-routes.js';
import { planStream } from './routes/stream-routes.js';
import type { ServerContext } from './server-context.js';

/** Routes one request on one listener; throws `BlobsError` (400/404) or `MethodNotAllowedError`. */
export type Router = (method: string, target: RequestTarget) => Plan;

function badPath(message: string): BlobsError {
  return new BlobsError('invalid_request', message);
}

function checkId(value: string | undefined, what: string): string {
  if (!isValidId(value)) throw badPath(`${what} must match [A-Za-z0-9_-]{1,128}`);
  return value;
}

/** The public listener: `/`, `/health`, `/blobs/...`, `/stream/...`. */
export function publicRouter(context: ServerContext): Router {
  return (method, { segments, query }) => {
    const [first, ...rest] = segments;
    if (first === undefined) return planServerInfo(context, method);
    if (first === 'health' && rest.length === 0) return planHealth(method);
    if (first === 'blobs') {
      const uuid = checkId(rest[0], 'the user uuid');
      if (rest.length === 1 || (rest.length === 2 && rest[1] === '')) {
        return planListing(context, method, uuid, query);
      }
      if (rest.length === 2) {
        return planBlob(context, method, uuid, checkId(rest[1], 'the blob id'), query);
      }
      throw badPath('blob paths are /blobs/{uuid} and /blobs/{uuid}/{blob_id}');
    }
    if (first === 'stream') {
      const uuid = checkId(rest[0], 'the user uuid');
      if (rest.length === 1) return planStream(context, method, uuid, query);
      throw badPath('the stream path is /stream/{uuid}');
    }
    throw new BlobsError('not_found', 'no such endpoint');
  };
}

/** The services listener: `/`, `/health` and `/incoming/{uuid}/{blob_id}`. */
export function servicesRouter(context: ServerContext): Router {
  return (method, { segments, query }) => {
    const [first, ...rest] = segments;
    if (first === undefined) return planServerInfo(context, method);
    if (first === 'health' && rest.length === 0) return planHealth(method);
    if (first === 'incoming') {
      const uuid = checkId(rest[0], 'the user uuid');
      const id = checkId(rest[1], 'the blob id');
      if (rest.length === 2) return planIncoming(context, method, uuid, id, query);
      throw badPath('the incoming path is /incoming/{uuid}/{blob_id}');
    }
    throw new BlobsError('not_found', 'no such endpoint');
  };
}
