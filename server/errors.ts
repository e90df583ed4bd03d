import { type BlobsErrorCode, ERROR_STATUS } from '../wire/errors.js';

/** A failure with a wire error code; routes turn it into the status and JSON body of §3. */
export class BlobsError extends Error {
  readonly code: BlobsErrorCode;
  readonly status: number;

  constructor(code: BlobsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BlobsError';
    this.code = code;
    this.status = ERROR_STATUS[code];
  }
}
