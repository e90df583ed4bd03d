import { hkdfSync } from 'node:crypto';
import { IntegrityError } from './integrity-error.js';

// The blob envelope, format version 1. docs/envelope-format.md is the normative text;
// every constant here appears there.

export const MAGIC = Buffer.of(0x13, 0x37);
export const FORMAT_VERSION = 1;

export const SCHEME_CODES = { symkey: 0x01, external: 0x02 } as const;
export type EnvelopeScheme = keyof typeof SCHEME_CODES;

export const METHOD_CODES = { aes_256_gcm: 0x01 } as const;
export type EnvelopeMethod = keyof typeof METHOD_CODES;

/** Plaintext bytes per chunk when the writer picks none: 64 KiB. */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
/** Largest chunk size a reader accepts (16 MiB), which bounds what it buffers. */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
export const MAX_BLOB_ID_BYTES = 1024;
export const SALT_BYTES = 32;
export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
/** Chunk indexes are 32-bit: at most 2^32 chunks per blob. */
export const MAX_CHUNKS = 2 ** 32;

/** Bytes before the blob id: magic, version, scheme, method, chunk size, blob id length. */
export const FIXED_HEADER_BYTES = 11;
/** Header bytes other than the blob id. */
export const HEADER_OVERHEAD = FIXED_HEADER_BYTES + SALT_BYTES;

const KEY_INFO_PREFIX = Buffer.from('soledad blob key v1 aes_256_gcm\0', 'latin1');

export interface EnvelopeHeader {
  version: number;
  scheme: EnvelopeScheme;
  method: EnvelopeMethod;
  /** Plaintext bytes in every chunk but the last. */
  chunkSize: number;
  blobId: string;
  salt: Buffer;
  /** The exact header bytes: the associated data of every chunk. */
  bytes: Buffer;
}

export function blobIdBytes(blobId: string): Buffer {
  const bytes = Buffer.from(blobId, 'utf8');
  if (bytes.length === 0 || bytes.length > MAX_BLOB_ID_BYTES) {
    throw new RangeError(`blob id must be 1 to ${MAX_BLOB_ID_BYTES} bytes of UTF-8`);
  }
  return bytes;
}

export function checkChunkSize(chunkSize: number): number {
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunk size must be an integer from 1 to ${MAX_CHUNK_SIZE}`);
  }
  return chunkSize;
}

export function encodeHeader(fields: {
  scheme?: EnvelopeScheme;
  chunkSize: number;
  blobId: string;
  salt: Buffer;
}): Buffer {
  const id = blobIdBytes(fields.blobId);
  checkChunkSize(fields.chunkSize);
  if (fields.salt.length !== SALT_BYTES) throw new RangeError(`salt must be ${SALT_BYTES} bytes`);
  const bytes = Buffer.alloc(HEADER_OVERHEAD + id.length);
  MAGIC.copy(bytes, 0);
  bytes[2] = FORMAT_VERSION;
  bytes[3] = SCHEME_CODES[fields.scheme ?? 'symkey'];
  bytes[4] = METHOD_CODES.aes_256_gcm;
  bytes.writeUInt32BE(fields.chunkSize, 5);
  bytes.writeUInt16BE(id.length, 9);
  id.copy(bytes, FIXED_HEADER_BYTES);
  fields.salt.copy(bytes, FIXED_HEADER_BYTES + id.length);
  return bytes;
}

/**
 * The header's length once its first {@link FIXED_HEADER_BYTES} bytes are known, or
 * undefined while fewer are available. Throws `IntegrityError` for bytes that cannot start
 * a version 1 header.
 */
export function headerLength(prefix: Buffer): number | undefined {
  if (prefix.length < FIXED_HEADER_BYTES) return undefined;
  checkFixedFields(prefix);
  return HEADER_OVERHEAD + prefix.readUInt16BE(9);
}

/**
 * Parses the header at the start of `bytes` (which may hold more than the header). Throws
 * `IntegrityError` when the bytes are not a complete, well-formed version 1 header. The
 * header is authenticated only by the chunks that follow it.
 */
export function parseHeader(bytes: Buffer): EnvelopeHeader {
  const length = headerLength(bytes);
  if (length === undefined || bytes.length < length) {
    throw new IntegrityError('envelope ends inside its header');
  }
  const idLength = bytes.readUInt16BE(9);
  const id = bytes.subarray(FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + idLength);
  const blobId = id.toString('utf8');
  if (!Buffer.from(blobId, 'utf8').equals(id)) {
    throw new IntegrityError('envelope header holds a blob id that is not valid UTF-8');
  }
  const header = Buffer.from(bytes.subarray(0, length));
  return {
    version: header[2]!,
    scheme: header[3] === SCHEME_CODES.symkey ? 'symkey' : 'external',
    method: 'aes_256_gcm',
    chunkSize: header.readUInt32BE(5),
    blobId,
    salt: header.subarray(FIXED_HEADER_BYTES + idLength),
    bytes: header,
  };
}

function checkFixedFields(bytes: Buffer): void {
  if (bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1]) {
    throw new IntegrityError('not a blob envelope: wrong magic bytes');
  }
  if (bytes[2] !== FORMAT_VERSION) {
    throw new IntegrityError(`unsupported envelope format version ${bytes[2]}`);
  }
  if (bytes[3] !== SCHEME_CODES.symkey && bytes[3] !== SCHEME_CODES.external) {
    throw new IntegrityError(`unknown envelope scheme ${bytes[3]}`);
  }
  if (bytes[4] !== METHOD_CODES.aes_256_gcm) {
    throw new IntegrityError(`unknown envelope method ${bytes[4]}`);
  }
  const chunkSize = bytes.readUInt32BE(5);
  if (chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) {
    throw new IntegrityError(`envelope chunk size ${chunkSize} is out of bounds`);
  }
  const idLength = bytes.readUInt16BE(9);
  if (idLength < 1 || idLength > MAX_BLOB_ID_BYTES) {
    throw new IntegrityError(`envelope blob id length ${idLength} is out of bounds`);
  }
}

/** The per-blob AES-256-GCM key: HKDF-SHA256(secret, salt, prefix || blob id). */
export function deriveBlobKey(secret: Buffer, salt: Buffer, blobId: string): Buffer {
  if (secret.length !== KEY_BYTES) throw new TypeError('storage secret must be 32 bytes');
  const info = Buffer.concat([KEY_INFO_PREFIX, blobIdBytes(blobId)]);
  return Buffer.from(hkdfSync('sha256', secret, salt, info, KEY_BYTES));
}

/** Seven zero bytes, the chunk index as a 32-bit big-endian integer, then the final flag. */
export function chunkNonce(index: number, final: boolean): Buffer {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_CHUNKS) {
    throw new RangeError(`chunk index ${index} is out of bounds`);
  }
  const nonce = Buffer.alloc(NONCE_BYTES);
  nonce.writeUInt32BE(index, 7);
  nonce[11] = final ? 1 : 0;
  return nonce;
}
