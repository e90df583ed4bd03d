/**
 * An envelope this device stores but cannot open: its scheme is `external` (sealed by
 * someone else). Distinct from `IntegrityError`: nothing is known to be wrong with it.
 */
export class NotDecryptableError extends Error {
  readonly code = 'not_decryptable';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NotDecryptableError';
  }
}
