export type PassphraseErrorCode =
  | 'no_passphrase'
  | 'empty_passphrase'
  | 'passphrase_file_unreadable'
  | 'passphrase_mismatch'
  | 'prompt_aborted';

/** No usable passphrase could be obtained. */
export class PassphraseError extends Error {
  readonly code: PassphraseErrorCode;

  constructor(code: PassphraseErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PassphraseError';
    this.code = code;
  }
}
