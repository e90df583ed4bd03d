import { BlobsError } from './errors.js';

/** A request's path and query, percent-decoded and checked for syntax only. */
export interface RequestTarget {
  /**
   * Path segments after the leading `/`, decoded. A trailing `/` shows as a last empty
   * segment; `/` alone is `[]`.
   */
  segments: string[];
  /** Query fields, decoded as forms are (`+` is a space). Each field appears once. */
  query: Map<string, string>;
}

function invalid(message: string): BlobsError {
  return new BlobsError('invalid_request', message);
}

function decode(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw invalid(`malformed percent-encoding in ${what}`);
  }
}

/** Parses a query string (without `?`); a repeated field or bad encoding is a 400. */
export function parseQuery(raw: string): Map<string, string> {
  const query = new Map<string, string>();
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const equals = part.indexOf('=');
    const rawName = equals === -1 ? part : part.slice(0, equals);
    const rawValue = equals === -1 ? '' : part.slice(equals + 1);
    const name = decode(rawName.replaceAll('+', ' '), 'the query');
    const value = decode(rawValue.replaceAll('+', ' '), 'the query');
    if (query.has(name)) throw invalid(`query field ${name} is repeated`);
    query.set(name, value);
  }
  return query;
}

/**
 * Parses a request target (origin-form, or absolute-form as proxies send it). Segments
 * are decoded but not otherwise interpreted: `..` stays a segment, for the routes to
 * refuse like any other invalid id.
 */
export function parseRequestTarget(url: string): RequestTarget {
  let target = url;
  if (!target.startsWith('/')) {
    const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*(.*)$/.exec(target);
    if (!absolute) throw invalid('the request target must be a path');
    target = absolute[1]!.startsWith('/') ? absolute[1]! : `/${absolute[1]!}`;
  }
  if (target.includes('#')) throw invalid('the request target must not carry a fragment');
  const mark = target.indexOf('?');
  const path = mark === -1 ? target : target.slice(0, mark);
  const query = parseQuery(mark === -1 ? '' : target.slice(mark + 1));
  const segments =
    path === '/'
      ? []
      : path
          .slice(1)
          .split('/')
          .map((s) => decode(s, 'the path'));
  return { segments, query };
}
