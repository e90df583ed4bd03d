export * from './decrypt-stream.js';
export * from './document-sealer.js';
export * from './encrypt-stream.js';
export {
  DEFAULT_CHUNK_SIZE,
  type EnvelopeHeader,
  type EnvelopeMethod,
  type EnvelopeScheme,
  MAX_CHUNK_SIZE,
  parseHeader as parseEnvelopeHeader,
} from './envelope-format.js';
export * from './envelope-range.js';
export * from './envelope-size.js';
export * from './integrity-error.js';
export * from './not-decryptable-error.js';
export * from './passphrase.js';
export * from './passphrase-error.js';
export * from './range-not-satisfiable-error.js';
export * from './secrets-file.js';
export * from './secrets-file-error.js';
