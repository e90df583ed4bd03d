/** Sealed data failed authentication: tampered, truncated, moved or under the wrong key. */
export class IntegrityError extends Error {
  readonly code = 'integrity_error';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IntegrityError';
  }
}
