import { IntegrityError } from './crypto/integrity-error.js';
import { NotDecryptableError } from './crypto/not-decryptable-error.js';
import { RemoteError } from './remote/remote-error.js';
import {
  AlreadyDeletedError,
  ConflictError,
  DocumentNotFoundError,
  StoreClosedError,
} from './store/errors.js';

/**
 * Stable codes of `DaemonError`. Remote failures keep the blobs API's code where a caller
 * can act on it (`unauthorized`, `forbidden`, `too_large`, `quota_exceeded`,
 * `blob_deleted`); a server that does not answer, or answers with a 5xx or nonsense, is
 * `remote_unavailable`.
 */
export type DaemonErrorCode =
  | 'not_found'
  | 'conflict'
  | 'invalid_state'
  | 'invalid_request'
  | 'integrity_error'
  | 'not_decryptable'
  | 'remote_unavailable'
  | 'unauthorized'
  | 'forbidden'
  | 'too_large'
  | 'quota_exceeded'
  | 'blob_deleted'
  | 'source_failed'
  | 'shutting_down'
  | 'internal';

/** A failure of a `DaemonApi` call. Match on `code`, never on the message. */
export class DaemonError extends Error {
  readonly code: DaemonErrorCode;
  /** For `conflict`: the stored revision the change was not based on. */
  readonly currentRev: string | undefined;

  constructor(
    code: DaemonErrorCode,
    message: string,
    options: { cause?: unknown; currentRev?: string } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DaemonError';
    this.code = code;
    this.currentRev = options.currentRev;
  }
}

const REMOTE_CODES: Partial<Record<string, DaemonErrorCode>> = {
  unauthorized: 'unauthorized',
  forbidden: 'forbidden',
  too_large: 'too_large',
  quota_exceeded: 'quota_exceeded',
  blob_deleted: 'blob_deleted',
  not_found: 'not_found',
  integrity_error: 'integrity_error',
  not_decryptable: 'not_decryptable',
  invalid_state: 'invalid_state',
};

/**
 * The error code a caller sees for a failure code recorded by the attachment machine
 * (a RemoteError's code, `integrity_error`, ...).
 */
export function daemonCodeFor(code: string): DaemonErrorCode {
  return REMOTE_CODES[code] ?? 'remote_unavailable';
}

/** Wraps whatever a store, crypto or remote call threw into a `DaemonError`. */
export function toDaemonError(error: unknown): DaemonError {
  if (error instanceof DaemonError) return error;
  if (error instanceof ConflictError) {
    return new DaemonError('conflict', error.message, {
      cause: error,
      currentRev: error.currentRev,
    });
  }
  if (error instanceof DocumentNotFoundError) {
    return new DaemonError('not_found', error.message, { cause: error });
  }
  if (error instanceof AlreadyDeletedError) {
    return new DaemonError('invalid_state', error.message, { cause: error });
  }
  if (error instanceof StoreClosedError) {
    return new DaemonError('shutting_down', 'the daemon is stopping', { cause: error });
  }
  if (error instanceof IntegrityError) {
    return new DaemonError('integrity_error', error.message, { cause: error });
  }
  if (error instanceof NotDecryptableError) {
    return new DaemonError('not_decryptable', error.message, { cause: error });
  }
  if (error instanceof RemoteError) {
    return new DaemonError(daemonCodeFor(error.code), error.message, { cause: error });
  }
  if (error instanceof TypeError || error instanceof RangeError) {
    return new DaemonError('invalid_request', error.message, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new DaemonError('internal', message, { cause: error });
}
