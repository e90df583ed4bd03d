import type { Exchange } from './exchange.js';
import type { UserRecord } from './user-store.js';

/**
 * What a request will do once its credentials pass: the outcome of routing, which has
 * already checked the method and the syntax of path and query. `user` plans run for the
 * owner of `uuid`; `service` plans for a service delivering to user `uuid`.
 */
export type Plan =
  | { route: string; access: 'anonymous'; run(exchange: Exchange): Promise<void> }
  | {
      route: string;
      access: 'user' | 'service';
      uuid: string;
      run(exchange: Exchange, user: UserRecord): Promise<void>;
    };

/** A known path asked with a method it does not take. */
export class MethodNotAllowedError extends Error {
  readonly code = 'method_not_allowed';
  readonly allowed: readonly string[];

  constructor(method: string, allowed: readonly string[]) {
    super(`method ${method} is not allowed here; use ${allowed.join(', ')}`);
    this.name = 'MethodNotAllowedError';
    this.allowed = allowed;
  }
}

/** Picks the plan for `method` from a route's table, or throws `MethodNotAllowedError`. */
export function pickMethod<T>(method: string, table: Record<string, () => T>): T {
  const make = Object.hasOwn(table, method) ? table[method] : undefined;
  if (make === undefined) throw new MethodNotAllowedError(method, Object.keys(table));
  return make();
}
