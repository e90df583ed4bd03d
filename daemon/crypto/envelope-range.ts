import { DEFAULT_CHUNK_SIZE, TAG_BYTES } from './envelope-format.js';
import { chunkCount, type EnvelopeShape, headerSize, plaintextSize } from './envelope-size.js';
import { RangeNotSatisfiableError } from './range-not-satisfiable-error.js';

/** Which envelope bytes to fetch for a plaintext range, and how to cut their plaintext. */
export interface CiphertextRange {
  /** First envelope byte to fetch (inclusive); always the start of a chunk. */
  start: number;
  /** Last envelope byte to fetch (inclusive); always the end of a chunk. */
  end: number;
  /** The header is fetched separately: the envelope's first `headerSize` bytes. */
  headerSize: number;
  chunkSize: number;
  firstChunk: number;
  lastChunk: number;
  /** Whether `lastChunk` is the envelope's final chunk. */
  includesFinalChunk: boolean;
  /** Sealed bytes of `lastChunk`. */
  lastChunkBytes: number;
  /** Plaintext bytes of `firstChunk` before the requested start. */
  skip: number;
  /** The requested plaintext range, its end clamped to the plaintext. */
  plaintextStart: number;
  plaintextEnd: number;
  /** Plaintext bytes the range yields: plaintextEnd - plaintextStart + 1. */
  length: number;
}

export type EnvelopeSizeHint = { plaintextSize: number } | { envelopeSize: number };

/**
 * Maps the inclusive plaintext range [start, end] to the envelope bytes that hold it, with
 * HTTP semantics: an end past the plaintext is clamped; a start at or past it (any range of
 * an empty plaintext) throws `RangeNotSatisfiableError`. The total size is needed to know
 * where the final chunk is.
 */
export function mapPlaintextRange(
  start: number,
  end: number,
  shape: EnvelopeShape & EnvelopeSizeHint,
): CiphertextRange {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError(`invalid plaintext range ${start}-${end}`);
  }
  const chunkSize = shape.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const total =
    'plaintextSize' in shape ? shape.plaintextSize : plaintextSize(shape.envelopeSize, shape);
  if (start >= total) throw new RangeNotSatisfiableError(start, total);
  const last = Math.min(end, total - 1);
  const header = headerSize(shape);
  const sealedChunk = chunkSize + TAG_BYTES;
  const firstChunk = Math.floor(start / chunkSize);
  const lastChunk = Math.floor(last / chunkSize);
  const finalChunk = chunkCount(total, chunkSize) - 1;
  const lastChunkBytes =
    lastChunk === finalChunk ? total - finalChunk * chunkSize + TAG_BYTES : sealedChunk;
  const rangeStart = header + firstChunk * sealedChunk;
  return {
    start: rangeStart,
    end: header + lastChunk * sealedChunk + lastChunkBytes - 1,
    headerSize: header,
    chunkSize,
    firstChunk,
    lastChunk,
    includesFinalChunk: lastChunk === finalChunk,
    lastChunkBytes,
    skip: start - firstChunk * chunkSize,
    plaintextStart: start,
    plaintextEnd: last,
    length: last - start + 1,
  };
}
