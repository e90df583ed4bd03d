/** Flags a blob may carry; POST of flags replaces the whole set. */
export const BLOB_FLAGS = ['PENDING', 'PROCESSING', 'PROCESSED', 'FAILED'] as const;

export type BlobFlag = (typeof BLOB_FLAGS)[number];

export function isBlobFlag(value: unknown): value is BlobFlag {
  return typeof value === 'string' && (BLOB_FLAGS as readonly string[]).includes(value);
}
