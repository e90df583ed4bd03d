import type { BlobFlag } from '../../wire/flags.js';
import type { BlobRef, WriteOptions } from '../backends/blobs-backend.js';
import { BlobsError } from '../errors.js';
import type { Exchange } from '../exchange.js';
import { quotaOf, type ServerContext } from '../server-context.js';
import type { UserRecord } from '../user-store.js';

async function exists(context: ServerContext, ref: BlobRef): Promise<boolean> {
  try {
    await context.backend.size(ref);
    return true;
  } catch (error) {
    if (error instanceof BlobsError && error.code === 'not_found') return false;
    throw error;
  }
}

/**
 * Stores the request body as blob `ref` of `owner` and answers `{id, size}`. Refusals
 * that need no body (413 by Content-Length, 409 for a live blob, 507 by Content-Length)
 * are answered before the body is read; the backend refuses the rest (a tombstone, a
 * quota or size passed mid-body) and rolls back.
 */
export async function storeBlob(
  context: ServerContext,
  exchange: Exchange,
  ref: BlobRef,
  owner: UserRecord,
  flags?: BlobFlag[],
): Promise<void> {
  const { maxBlobSize } = context.config;
  const expected = exchange.contentLength();
  if (expected !== undefined && expected > maxBlobSize) {
    throw new BlobsError('too_large', `blob of ${expected} bytes; the maximum is ${maxBlobSize}`);
  }
  if (await exists(context, ref)) {
    throw new BlobsError('blob_exists', `blob ${ref.id} already exists`);
  }
  const quota = quotaOf(context, owner);
  if (expected !== undefined && (await context.backend.usage(owner.uuid)) + expected > quota) {
    throw new BlobsError('quota_exceeded', `a blob of ${expected} bytes would pass the quota`);
  }
  const options: WriteOptions = { quota, maxSize: maxBlobSize };
  if (expected !== undefined) options.expectedSize = expected;
  if (flags !== undefined) options.flags = flags;
  const announced = context.backend.announceUploads([ref]);
  try {
    const { size } = await context.backend.write(ref, exchange.body(expected), options);
    exchange.bytes = size;
    exchange.sendJson(200, { id: ref.id, size });
  } finally {
    announced();
  }
}
