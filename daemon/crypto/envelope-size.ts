import {
  blobIdBytes,
  checkChunkSize,
  DEFAULT_CHUNK_SIZE,
  HEADER_OVERHEAD,
  MAX_CHUNKS,
  TAG_BYTES,
} from './envelope-format.js';
import { IntegrityError } from './integrity-error.js';

/** What fixes an envelope's geometry: the blob id (its length) and the chunk size. */
export interface EnvelopeShape {
  blobId: string;
  /** Plaintext bytes per chunk; default 64 KiB. */
  chunkSize?: number;
}

export function headerSize({ blobId }: { blobId: string }): number {
  return HEADER_OVERHEAD + blobIdBytes(blobId).length;
}

/** Number of chunks of a plaintext: one empty final chunk for zero bytes. */
export function chunkCount(plaintextSize: number, chunkSize = DEFAULT_CHUNK_SIZE): number {
  checkSize(plaintextSize, 'plaintext size');
  checkChunkSize(chunkSize);
  return Math.max(1, Math.ceil(plaintextSize / chunkSize));
}

/** Envelope bytes for `plaintextSize` bytes of plaintext: header + plaintext + 16 per chunk. */
export function envelopeSize(plaintextSize: number, shape: EnvelopeShape): number {
  const chunks = chunkCount(plaintextSize, shape.chunkSize);
  if (chunks > MAX_CHUNKS) throw new RangeError('plaintext is too large for one envelope');
  return headerSize(shape) + plaintextSize + chunks * TAG_BYTES;
}

/**
 * Plaintext bytes in an envelope of `envelopeSize` bytes. Throws `IntegrityError` when no
 * plaintext yields that size (too short, or a final chunk of under 17 bytes after others).
 */
export function plaintextSize(envelopeSize: number, shape: EnvelopeShape): number {
  checkSize(envelopeSize, 'envelope size');
  const chunkSize = checkChunkSize(shape.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const body = envelopeSize - headerSize(shape);
  if (body < TAG_BYTES) {
    throw new IntegrityError(`an envelope of ${envelopeSize} bytes is too short`);
  }
  const sealedChunk = chunkSize + TAG_BYTES;
  const chunks = Math.ceil(body / sealedChunk);
  const last = body - (chunks - 1) * sealedChunk;
  if ((chunks > 1 && last <= TAG_BYTES) || chunks > MAX_CHUNKS) {
    throw new IntegrityError(`no plaintext makes an envelope of ${envelopeSize} bytes`);
  }
  return body - chunks * TAG_BYTES;
}

function checkSize(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a non-negative integer`);
  }
}
