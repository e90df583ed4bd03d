/** The one rule for user uuids, blob ids and namespaces, on both ends of the wire. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** Namespace used when a request names none. */
export const DEFAULT_NAMESPACE = 'default';

/** Namespace of the incoming box, where services deliver blobs for a user. */
export const INCOMING_NAMESPACE = 'MX';

export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}
