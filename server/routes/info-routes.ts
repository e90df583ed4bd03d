import type { Plan } from '../plan.js';
import { pickMethod } from '../plan.js';
import type { ServerContext } from '../server-context.js';

/** `GET /` (or HEAD): name and version, anonymous. */
export function planServerInfo(context: ServerContext, method: string): Plan {
  const plan = (): Plan => ({
    route: '/',
    access: 'anonymous',
    run: async (exchange) => exchange.sendJson(200, context.info),
  });
  return pickMethod(method, { GET: plan, HEAD: plan });
}

/** `GET /health` (or HEAD): 200 while the server takes requests, anonymous. */
export function planHealth(method: string): Plan {
  const plan = (): Plan => ({
    route: '/health',
    access: 'anonymous',
    run: async (exchange) => exchange.sendJson(200, { status: 'ok' }),
  });
  return pickMethod(method, { GET: plan, HEAD: plan });
}
