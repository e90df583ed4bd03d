/** The side effects the attachment machine invokes. */
export type AttachmentOperation = 'upload' | 'download' | 'evict' | 'remove';

/** A failure as kept in the machine's context: plain JSON, so it survives persistence. */
export interface FailureInfo {
  code: string;
  message: string;
}

/**
 * What the machine does about a failed side effect:
 * - `retry`: back off and try again;
 * - `pause`: credentials were refused; back to the queue with `paused` set, so the
 *   daemon's scheduler pauses every transfer until the user acts;
 * - `reject`: the server will never take this blob (`too_large`); stop;
 * - `corrupt`: a download failed verification; counts toward `maxCorruptions`;
 * - `deleted`: another device deleted the blob; apply the deletion;
 * - `lost`: the server no longer holds a blob we believed synced (seen while evicting).
 */
export type FailureKind = 'retry' | 'pause' | 'reject' | 'corrupt' | 'deleted' | 'lost';

/**
 * Reads the `code` and `message` of whatever an invoked actor rejected with. A rejection
 * without a string `code` is `unknown`, which is retried like a network error.
 */
export function failureInfo(error: unknown): FailureInfo {
  if (typeof error === 'object' && error !== null) {
    const { code, message } = error as { code?: unknown; message?: unknown };
    return {
      code: typeof code === 'string' && code !== '' ? code : 'unknown',
      message: typeof message === 'string' ? message : String(error),
    };
  }
  return { code: 'unknown', message: String(error) };
}

/**
 * Classifies a failure code for an operation. `network`, `internal` (and any 5xx the
 * daemon maps to it), `quota_exceeded`, `not_found` on download, and every code not named
 * here are retried with back-off.
 */
export function classifyFailure(operation: AttachmentOperation, code: string): FailureKind {
  if (code === 'unauthorized' || code === 'forbidden') return 'pause';
  if (code === 'blob_deleted') return 'deleted';
  if (operation === 'upload' && code === 'too_large') return 'reject';
  if (operation === 'download' && code === 'integrity_error') return 'corrupt';
  if (operation === 'evict' && code === 'not_found') return 'lost';
  return 'retry';
}

/** Default back-off: 10, 20, 30, 40, 50 s, then every 60 s. */
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [
  10_000, 20_000, 30_000, 40_000, 50_000, 60_000,
];

/** Default number of failed verifications of a download before the attachment is `failed`. */
export const DEFAULT_MAX_CORRUPTIONS = 3;

/**
 * The wait before retry number `attempt` (1-based): the attempt-th delay, or the last one
 * once the list is exhausted.
 */
export function retryDelay(delaysMs: readonly number[], attempt: number): number {
  if (delaysMs.length === 0) throw new RangeError('retry delays must not be empty');
  const index = Math.min(Math.max(attempt, 1), delaysMs.length) - 1;
  return delaysMs[index]!;
}
