import { type BlobFlag, isBlobFlag } from '../wire/flags.js';
import { DEFAULT_NAMESPACE, isValidId } from '../wire/ids.js';
import { STREAM_DIRECTIONS, type StreamDirection } from '../wire/stream.js';
import type { ListOrder } from './backends/blobs-backend.js';
import { BlobsError } from './errors.js';

function invalid(message: string): BlobsError {
  return new BlobsError('invalid_request', message);
}

/** Refuses any field a route does not take. */
export function checkQueryFields(query: Map<string, string>, allowed: readonly string[]): void {
  for (const name of query.keys()) {
    if (!allowed.includes(name)) throw invalid(`unknown query field ${JSON.stringify(name)}`);
  }
}

/** `namespace`, `default` when absent. */
export function readNamespace(query: Map<string, string>): string {
  const namespace = query.get('namespace') ?? DEFAULT_NAMESPACE;
  if (!isValidId(namespace)) throw invalid('namespace must match [A-Za-z0-9_-]{1,128}');
  return namespace;
}

/** A boolean field: `true` or `false`, false when absent. */
export function readBoolean(query: Map<string, string>, name: string): boolean {
  const value = query.get(name);
  if (value === undefined || value === 'false') return false;
  if (value === 'true') return true;
  throw invalid(`${name} must be true or false`);
}

/** `order_by`: `date`, `+date` (also seen as ` date` once a form decoder ate the `+`), `-date`. */
export function readOrder(query: Map<string, string>): ListOrder | undefined {
  const value = query.get('order_by');
  if (value === undefined) return undefined;
  if (value === 'date' || value === '-date' || value === '+date') return value;
  if (value === ' date') return '+date';
  throw invalid('order_by must be date, +date or -date');
}

export function readFlag(query: Map<string, string>, name: string): BlobFlag | undefined {
  const value = query.get(name);
  if (value === undefined) return undefined;
  if (!isBlobFlag(value)) throw invalid(`${name} must be PENDING, PROCESSING, PROCESSED or FAILED`);
  return value;
}

/** `direction`, required. */
export function readDirection(query: Map<string, string>): StreamDirection {
  const value = query.get('direction');
  if (value === undefined) throw invalid('direction is required (download or upload)');
  if (!(STREAM_DIRECTIONS as readonly string[]).includes(value)) {
    throw invalid('direction must be download or upload');
  }
  return value as StreamDirection;
}
