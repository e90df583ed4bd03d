import type { IncomingHttpHeaders } from 'node:http';
import { tokensMatch } from './rpc-token.js';

export type UpgradeVerdict = { ok: true } | { ok: false; status: 401 | 403; reason: string };

export interface UpgradeRules {
  token: string;
  /** Exact `Origin` values allowed; a request without `Origin` (not a browser) passes. */
  allowedOrigins: readonly string[];
  /** Off for the Unix socket, which no browser and no DNS name can reach. */
  checkHost: boolean;
}

const IPV4_LOOPBACK = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const PORT = /^\d{1,5}$/;

/**
 * Decides whether a WebSocket upgrade may proceed. Order matters: a foreign origin or
 * host is refused with 403 before the token is looked at, so a web page learns nothing
 * about the token; then a missing or wrong token is 401.
 */
export function checkUpgrade(headers: IncomingHttpHeaders, rules: UpgradeRules): UpgradeVerdict {
  const origin = headers.origin;
  if (origin !== undefined && !rules.allowedOrigins.includes(origin)) {
    return { ok: false, status: 403, reason: 'origin not allowed' };
  }
  if (rules.checkHost && !isLoopbackHost(headers.host)) {
    return { ok: false, status: 403, reason: 'host is not a loopback name or address' };
  }
  const given = bearerToken(headers.authorization);
  if (given === undefined) return { ok: false, status: 401, reason: 'no bearer token' };
  if (!tokensMatch(rules.token, given)) return { ok: false, status: 401, reason: 'wrong token' };
  return { ok: true };
}

/** `localhost`, 127.0.0.0/8 or `[::1]`, each with an optional port. */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  let name = host.toLowerCase();
  if (name.startsWith('[')) {
    const close = name.indexOf(']');
    if (close < 0) return false;
    const rest = name.slice(close + 1);
    if (rest !== '' && !(rest.startsWith(':') && PORT.test(rest.slice(1)))) return false;
    return name.slice(1, close) === '::1';
  }
  const colon = name.indexOf(':');
  if (colon >= 0) {
    if (!PORT.test(name.slice(colon + 1))) return false;
    name = name.slice(0, colon);
  }
  if (name === 'localhost') return true;
  const match = IPV4_LOOPBACK.exec(name);
  return match?.slice(1).every((octet) => Number(octet) <= 255) ?? false;
}

/** The token of an `Authorization: Bearer <token>` header. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer +(\S+) *$/i.exec(header);
  return match?.[1];
}
