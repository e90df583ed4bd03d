import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_CHUNK_SIZE, TAG_BYTES } from '../../../daemon/crypto/envelope-format.js';
import {
  chunkCount,
  envelopeSize,
  headerSize,
  plaintextSize,
} from '../../../daemon/crypto/envelope-size.js';
import { IntegrityError } from '../../../daemon/crypto/integrity-error.js';

const blobId = '0b6e2f4c-8a1d-4f3e-9c7b-5d6e7f8a9b0c';
const C = DEFAULT_CHUNK_SIZE;

describe('headerSize', () => {
  it('is 43 bytes plus the UTF-8 length of the blob id', () => {
    assert.equal(headerSize({ blobId }), 43 + 36);
    assert.equal(headerSize({ blobId: 'é' }), 45);
  });

  it('rejects an empty or overlong blob id', () => {
    assert.throws(() => headerSize({ blobId: '' }), RangeError);
    assert.throws(() => headerSize({ blobId: 'x'.repeat(1025) }), RangeError);
  });
});

describe('envelopeSize', () => {
  it('adds the header and one tag per chunk, with one empty chunk for no plaintext', () => {
    const H = headerSize({ blobId });
    assert.equal(envelopeSize(0, { blobId }), H + TAG_BYTES);
    assert.equal(envelopeSize(1, { blobId }), H + 1 + TAG_BYTES);
    assert.equal(envelopeSize(C, { blobId }), H + C + TAG_BYTES);
    assert.equal(envelopeSize(C + 1, { blobId }), H + C + 1 + 2 * TAG_BYTES);
    assert.equal(envelopeSize(10 * C, { blobId }), H + 10 * C + 10 * TAG_BYTES);
    assert.equal(envelopeSize(10, { blobId, chunkSize: 3 }), H + 10 + 4 * TAG_BYTES);
  });

  it('matches the worked example of the format document', () => {
    assert.equal(envelopeSize(1 << 20, { blobId }), 1_048_911);
    assert.equal(envelopeSize(0, { blobId }), 95);
  });

  it('counts chunks as ceil(size / chunk size), at least one', () => {
    assert.deepEqual(
      [0, 1, C - 1, C, C + 1].map((n) => chunkCount(n)),
      [1, 1, 1, 1, 2],
    );
  });

  it('rejects negative and fractional sizes', () => {
    assert.throws(() => envelopeSize(-1, { blobId }), RangeError);
    assert.throws(() => envelopeSize(1.5, { blobId }), RangeError);
  });
});

describe('plaintextSize', () => {
  it('inverts envelopeSize for every size and chunk size', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 10_000_000 }),
        fc.integer({ min: 1, max: 1 << 20 }),
        (size, chunkSize) => {
          const shape = { blobId, chunkSize };
          assert.equal(plaintextSize(envelopeSize(size, shape), shape), size);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('throws IntegrityError for sizes no plaintext produces', () => {
    const H = headerSize({ blobId });
    const shape = { blobId, chunkSize: 10 };
    const impossible = [0, H, H + TAG_BYTES - 1, H + 26 + TAG_BYTES, H + 26 + 1];
    for (const size of impossible) {
      assert.throws(() => plaintextSize(size, shape), IntegrityError, String(size));
    }
    const possible = new Set(Array.from({ length: 100 }, (_, n) => envelopeSize(n, shape)));
    for (let size = H; size < H + 200; size++) {
      if (possible.has(size)) assert.equal(envelopeSize(plaintextSize(size, shape), shape), size);
      else assert.throws(() => plaintextSize(size, shape), IntegrityError, String(size));
    }
  });
});
