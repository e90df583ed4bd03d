/**
 * Stable error codes of the blobs HTTP API. The `error` field of every error body is one
 * of these; clients match on the code, never on the message.
 */
export const ERROR_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  invalid_flag: 406,
  blob_exists: 409,
  blob_deleted: 409,
  too_large: 413,
  range_not_satisfiable: 416,
  quota_exceeded: 507,
  internal: 500,
} as const;

export type BlobsErrorCode = keyof typeof ERROR_STATUS;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: BlobsErrorCode;
  message: string;
}

export function isBlobsErrorCode(value: unknown): value is BlobsErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_STATUS, value);
}
