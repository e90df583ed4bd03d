import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { decodeTokenAuth } from '../wire/auth.js';
import { BlobsError } from './errors.js';
import { Exchange } from './exchange.js';
import { MethodNotAllowedError, type Plan } from './plan.js';
import { parseRequestTarget } from './request-target.js';
import type { Router } from './router.js';
import type { ServerContext } from './server-context.js';
import type { UserRecord } from './user-store.js';

const CHALLENGE = { 'www-authenticate': 'Token realm="soledad"' };

function unauthorized(): BlobsError {
  return new BlobsError('unauthorized', 'missing or wrong credentials');
}

/** Credentials (401), then ownership (403) or the recipient's existence (404). */
async function authorize(
  context: ServerContext,
  exchange: Exchange,
  plan: Plan & { access: 'user' | 'service' },
): Promise<UserRecord> {
  const credentials = decodeTokenAuth(exchange.req.headers.authorization);
  if (credentials === undefined) throw unauthorized();
  if (plan.access === 'user') {
    const user = await context.users.authenticate(credentials.id, credentials.token);
    if (user === undefined) throw unauthorized();
    exchange.user = user.uuid;
    if (user.uuid !== plan.uuid) {
      throw new BlobsError('forbidden', 'this path belongs to another user');
    }
    return user;
  }
  const service = await context.services.authenticate(credentials.id, credentials.token);
  if (service === undefined) throw unauthorized();
  exchange.log = exchange.log.child({ service });
  exchange.user = plan.uuid;
  const recipient = await context.users.get(plan.uuid);
  if (recipient === undefined) throw new BlobsError('not_found', `no user ${plan.uuid}`);
  return recipient;
}

/**
 * The request pipeline of one listener, in the order the API fixes: syntax of path and
 * query (400), credentials (401), ownership (403), then the operation. `track` sees every
 * request from start to end, so shutdown can wait for the ones in flight.
 */
export function createRequestHandler(
  context: ServerContext,
  router: Router,
  logger: Logger,
  track: (done: Promise<void>) => void,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const exchange = new Exchange(req, res, logger);
    track(handle(context, router, exchange));
  };
}

async function handle(context: ServerContext, router: Router, exchange: Exchange): Promise<void> {
  try {
    const method = exchange.req.method ?? 'GET';
    const plan = router(method, parseRequestTarget(exchange.req.url ?? '/'));
    exchange.route = plan.route;
    if (plan.access === 'anonymous') {
      await plan.run(exchange);
    } else {
      const user = await authorize(context, exchange, plan);
      await plan.run(exchange, user);
    }
  } catch (error) {
    if (error instanceof MethodNotAllowedError && exchange.responseOpen) {
      exchange.sendJson(
        405,
        { error: 'invalid_request', message: error.message },
        { allow: error.allowed.join(', ') },
      );
    } else if (
      error instanceof BlobsError &&
      error.code === 'unauthorized' &&
      exchange.responseOpen
    ) {
      exchange.sendError(error, CHALLENGE);
    } else {
      exchange.fail(error);
    }
  } finally {
    exchange.handled();
  }
}
