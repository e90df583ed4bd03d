export type SecretsFileErrorCode =
  | 'wrong_passphrase'
  | 'malformed_secrets_file'
  | 'secrets_file_exists'
  | 'secrets_file_missing';

/**
 * The secrets file cannot be created or opened. `wrong_passphrase` also covers a file whose
 * sealed secret was altered: authenticated encryption cannot tell the two apart.
 */
export class SecretsFileError extends Error {
  readonly code: SecretsFileErrorCode;
  readonly path: string;

  constructor(
    code: SecretsFileErrorCode,
    path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SecretsFileError';
    this.code = code;
    this.path = path;
  }
}
