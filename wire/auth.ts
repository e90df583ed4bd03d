/**
 * `Authorization: Token <base64(id:token)>`, the credentials of the blobs API.
 * The id never contains `:` (see ID_PATTERN); the token is everything after the first `:`.
 */
export function encodeTokenAuth(id: string, token: string): string {
  return `Token ${Buffer.from(`${id}:${token}`, 'utf8').toString('base64')}`;
}

export interface TokenCredentials {
  id: string;
  token: string;
}

/** Parses an Authorization header; returns undefined for anything malformed. */
export function decodeTokenAuth(header: string | undefined): TokenCredentials | undefined {
  if (header === undefined) return undefined;
  const match = /^Token ([A-Za-z0-9+/]+={0,2})$/.exec(header.trim());
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0 || colon === decoded.length - 1) return undefined;
  return { id: decoded.slice(0, colon), token: decoded.slice(colon + 1) };
}
