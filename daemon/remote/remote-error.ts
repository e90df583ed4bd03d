import { type BlobsErrorCode, ERROR_STATUS, isBlobsErrorCode } from '../../wire/errors.js';

/**
 * A wire error code, or `network` (no answer: connection refused, reset, timed out) or
 * `invalid_response` (an answer that breaks the contract: bad JSON, bad framing, a size
 * that does not match).
 */
export type RemoteErrorCode = BlobsErrorCode | 'network' | 'invalid_response';

const RETRYABLE: ReadonlySet<RemoteErrorCode> = new Set(['network', 'internal', 'quota_exceeded']);

/**
 * A failed call to the blobs server. Match on `code`; `retryable` says whether trying the
 * same call again later can succeed (network, 5xx, quota) or not (auth, 4xx, a broken
 * response). `status` is the HTTP status when there was a response.
 */
export class RemoteError extends Error {
  readonly code: RemoteErrorCode;
  readonly status: number | undefined;
  readonly retryable: boolean;

  constructor(
    code: RemoteErrorCode,
    message: string,
    options: { status?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RemoteError';
    this.code = code;
    this.status = options.status;
    this.retryable = RETRYABLE.has(code);
  }
}

const CODES_BY_STATUS = new Map<number, BlobsErrorCode[]>();
for (const [code, status] of Object.entries(ERROR_STATUS)) {
  const codes = CODES_BY_STATUS.get(status) ?? [];
  codes.push(code as BlobsErrorCode);
  CODES_BY_STATUS.set(status, codes);
}

/**
 * The error for a refused request: the body's code when it is a known one that fits the
 * status; otherwise the only code of that status (a proxy's bare 413 or 502 page); any
 * other 5xx is `internal`, and anything else breaks the contract.
 */
export function errorFromResponse(status: number, body: unknown): RemoteError {
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const code = fields.error;
  const message = typeof fields.message === 'string' ? fields.message : `HTTP ${status}`;
  if (isBlobsErrorCode(code) && ERROR_STATUS[code] === status) {
    return new RemoteError(code, message, { status });
  }
  const candidates = CODES_BY_STATUS.get(status);
  if (candidates?.length === 1) return new RemoteError(candidates[0]!, message, { status });
  if (status >= 500) return new RemoteError('internal', message, { status });
  return new RemoteError('invalid_response', `unexpected HTTP ${status}: ${message}`, { status });
}

const NETWORK_ERRNO = /^E[A-Z0-9_]+$/;

/**
 * Maps a failure of the HTTP layer to `network`. Errors that are not about the connection
 * (a RemoteError already, an invalid argument, anything unknown) come back unchanged.
 */
export function fromTransportError(error: unknown): unknown {
  if (error instanceof RemoteError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return error;
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_ABORTED') return error;
  if (code.startsWith('UND_ERR_') || NETWORK_ERRNO.test(code)) {
    const reason = error instanceof Error ? error.message : code;
    return new RemoteError('network', `no answer from the blobs server: ${reason}`, {
      cause: error,
    });
  }
  return error;
}
