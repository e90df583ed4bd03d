import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createRangeDecryptStream } from '../../../daemon/crypto/decrypt-stream.js';
import { TAG_BYTES } from '../../../daemon/crypto/envelope-format.js';
import { type CiphertextRange, mapPlaintextRange } from '../../../daemon/crypto/envelope-range.js';
import { headerSize } from '../../../daemon/crypto/envelope-size.js';
import { IntegrityError } from '../../../daemon/crypto/integrity-error.js';
import { RangeNotSatisfiableError } from '../../../daemon/crypto/range-not-satisfiable-error.js';
import { encrypt, run, split } from './envelope-helpers.js';

const secret = randomBytes(32);
const blobId = 'range-blob';
const H = headerSize({ blobId });

function decryptRange(envelope: Buffer, range: CiphertextRange, pieces?: Buffer[]) {
  const stream = createRangeDecryptStream({
    secret,
    blobId,
    header: envelope.subarray(0, range.headerSize),
    range,
  });
  return run(stream, pieces ?? [envelope.subarray(range.start, range.end + 1)]);
}

describe('mapPlaintextRange', () => {
  const shape = { blobId, chunkSize: 100, plaintextSize: 250 };

  it('maps a range inside one chunk to that whole chunk', () => {
    const range = mapPlaintextRange(10, 20, shape);
    assert.equal(range.start, H);
    assert.equal(range.end, H + 100 + TAG_BYTES - 1);
    assert.deepEqual([range.firstChunk, range.lastChunk, range.skip, range.length], [0, 0, 10, 11]);
    assert.equal(range.includesFinalChunk, false);
  });

  it('maps a range across a chunk boundary to both chunks', () => {
    const range = mapPlaintextRange(99, 100, shape);
    assert.equal(range.start, H);
    assert.equal(range.end, H + 2 * 116 - 1);
    assert.deepEqual([range.firstChunk, range.lastChunk, range.skip, range.length], [0, 1, 99, 2]);
  });

  it('maps a range ending in the short final chunk to the end of the envelope', () => {
    const range = mapPlaintextRange(150, 249, shape);
    assert.equal(range.start, H + 116);
    assert.equal(range.end, H + 2 * 116 + 50 + TAG_BYTES - 1);
    assert.equal(range.includesFinalChunk, true);
    assert.equal(range.lastChunkBytes, 66);
  });

  it('clamps an end past the plaintext, as HTTP does', () => {
    const range = mapPlaintextRange(200, 10_000, shape);
    assert.equal(range.plaintextEnd, 249);
    assert.equal(range.length, 50);
  });

  it('throws RangeNotSatisfiableError for a start at or past the end', () => {
    assert.throws(() => mapPlaintextRange(250, 260, shape), RangeNotSatisfiableError);
    assert.throws(
      () => mapPlaintextRange(0, 0, { blobId, plaintextSize: 0 }),
      (error: unknown) =>
        error instanceof RangeNotSatisfiableError && error.code === 'range_not_satisfiable',
    );
  });

  it('throws RangeError for a reversed or negative range', () => {
    assert.throws(() => mapPlaintextRange(5, 4, shape), RangeError);
    assert.throws(() => mapPlaintextRange(-1, 4, shape), RangeError);
  });

  it('gives the same mapping from the envelope size as from the plaintext size', () => {
    const fromEnvelope = mapPlaintextRange(30, 180, {
      blobId,
      chunkSize: 100,
      envelopeSize: H + 250 + 3 * TAG_BYTES,
    });
    assert.deepEqual(fromEnvelope, mapPlaintextRange(30, 180, shape));
  });
});

describe('createRangeDecryptStream', () => {
  it('yields exactly the requested bytes for any range, size and chunking', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 300 }),
        fc.nat(),
        fc.nat(),
        fc.array(fc.nat({ max: 2500 }), { maxLength: 8 }),
        async (size, chunkSize, a, b, cuts) => {
          const plaintext = randomBytes(size);
          const envelope = await encrypt(plaintext, { secret, blobId, chunkSize });
          const start = a % size;
          const end = start + (b % (size + 10));
          const range = mapPlaintextRange(start, end, {
            blobId,
            chunkSize,
            envelopeSize: envelope.length,
          });
          assert.ok(range.start >= H && range.end < envelope.length);
          assert.equal((range.start - H) % (chunkSize + TAG_BYTES), 0);
          const fetched = envelope.subarray(range.start, range.end + 1);
          const { output, error } = await decryptRange(envelope, range, split(fetched, cuts));
          assert.equal(error, undefined);
          assert.ok(output.equals(plaintext.subarray(start, end + 1)));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('fails with IntegrityError on a flipped bit in the fetched chunks', async () => {
    const envelope = await encrypt(randomBytes(500), { secret, blobId, chunkSize: 100 });
    const range = mapPlaintextRange(150, 320, { blobId, chunkSize: 100, plaintextSize: 500 });
    const fetched = Buffer.from(envelope.subarray(range.start, range.end + 1));
    fetched[130]! ^= 4;
    const { output, error } = await decryptRange(envelope, range, [fetched]);
    assert.ok(error instanceof IntegrityError);
    assert.equal(output.length, 50);
  });

  it('fails with IntegrityError on fewer or more bytes than the range covers', async () => {
    const envelope = await encrypt(randomBytes(500), { secret, blobId, chunkSize: 100 });
    const range = mapPlaintextRange(0, 199, { blobId, chunkSize: 100, plaintextSize: 500 });
    const short = envelope.subarray(range.start, range.end);
    const long = envelope.subarray(range.start, range.end + 2);
    for (const fetched of [short, long]) {
      const { error } = await decryptRange(envelope, range, [fetched]);
      assert.ok(error instanceof IntegrityError);
    }
  });

  it('fails with IntegrityError when the final chunk is read as a non-final one', async () => {
    const envelope = await encrypt(randomBytes(500), { secret, blobId, chunkSize: 100 });
    const range = mapPlaintextRange(400, 450, { blobId, chunkSize: 100, plaintextSize: 500 });
    const wrong = { ...range, includesFinalChunk: false };
    const { error } = await decryptRange(envelope, wrong);
    assert.ok(error instanceof IntegrityError);
  });

  it('throws IntegrityError at once for the header of another blob or chunk size', async () => {
    const envelope = await encrypt(randomBytes(500), { secret, blobId, chunkSize: 100 });
    const other = await encrypt(randomBytes(500), { secret, blobId: 'other-blob', chunkSize: 100 });
    const range = mapPlaintextRange(0, 10, { blobId, chunkSize: 100, plaintextSize: 500 });
    const header = other.subarray(0, headerSize({ blobId: 'other-blob' }));
    assert.throws(
      () => createRangeDecryptStream({ secret, blobId, header, range }),
      IntegrityError,
    );
    const guessed = mapPlaintextRange(0, 10, { blobId, chunkSize: 64, plaintextSize: 500 });
    assert.throws(
      () => createRangeDecryptStream({ secret, blobId, header: envelope, range: guessed }),
      IntegrityError,
    );
  });
});
