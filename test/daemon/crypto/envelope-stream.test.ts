import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createDecryptStream } from '../../../daemon/crypto/decrypt-stream.js';
import { createEncryptStream } from '../../../daemon/crypto/encrypt-stream.js';
import { DEFAULT_CHUNK_SIZE, type EnvelopeHeader } from '../../../daemon/crypto/envelope-format.js';
import { envelopeSize, headerSize } from '../../../daemon/crypto/envelope-size.js';
import { decrypt, encrypt, slices, split } from './envelope-helpers.js';

const secret = randomBytes(32);
const blobId = '3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6b';
const C = DEFAULT_CHUNK_SIZE;

describe('createEncryptStream and createDecryptStream', () => {
  for (const size of [0, 1, C - 1, C, C + 1, 10 * C]) {
    it(`round-trips ${size} bytes in one write`, async () => {
      const plaintext = randomBytes(size);
      const envelope = await encrypt(plaintext, { secret, blobId });
      assert.equal(envelope.length, envelopeSize(size, { blobId }));
      const { output, error } = await decrypt(envelope, { secret, blobId });
      assert.equal(error, undefined);
      assert.ok(output.equals(plaintext));
    });
  }

  it('round-trips 10 chunks written and read in 1 MiB pieces', async () => {
    const plaintext = randomBytes(10 * C + 123);
    const envelope = await encrypt(plaintext, { secret, blobId }, slices(plaintext, 1 << 20));
    const { output, error } = await decrypt(
      envelope,
      { secret, blobId },
      slices(envelope, 1 << 20),
    );
    assert.equal(error, undefined);
    assert.ok(output.equals(plaintext));
  });

  it('accepts 1-byte writes on both sides', async () => {
    const plaintext = randomBytes(C + 1);
    const envelope = await encrypt(plaintext, { secret, blobId }, slices(plaintext, 1));
    assert.ok(
      envelope.equals(await encrypt(plaintext, { secret, blobId, salt: saltOf(envelope) })),
    );
    const { output, error } = await decrypt(envelope, { secret, blobId }, slices(envelope, 1));
    assert.equal(error, undefined);
    assert.ok(output.equals(plaintext));
  });

  it('round-trips any size, chunk size and chunking of input and output', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 1, max: 400 }),
        fc.array(fc.nat({ max: 3000 }), { maxLength: 12 }),
        fc.array(fc.nat({ max: 4000 }), { maxLength: 12 }),
        async (size, chunkSize, plainCuts, envelopeCuts) => {
          const plaintext = randomBytes(size);
          const envelope = await encrypt(
            plaintext,
            { secret, blobId, chunkSize },
            split(plaintext, plainCuts),
          );
          assert.equal(envelope.length, envelopeSize(size, { blobId, chunkSize }));
          const options = { secret, blobId };
          const { output, error } = await decrypt(envelope, options, split(envelope, envelopeCuts));
          assert.equal(error, undefined);
          assert.ok(output.equals(plaintext));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('writes the same envelope for the same salt whatever the input chunking', async () => {
    const plaintext = randomBytes(1000);
    const salt = randomBytes(32);
    const whole = await encrypt(plaintext, { secret, blobId, chunkSize: 64, salt });
    const pieces = split(plaintext, [1, 63, 64, 65, 500]);
    assert.ok(
      whole.equals(await encrypt(plaintext, { secret, blobId, chunkSize: 64, salt }, pieces)),
    );
  });

  it('uses a fresh random salt for every blob', async () => {
    const plaintext = Buffer.from('same bytes');
    const a = await encrypt(plaintext, { secret, blobId });
    const b = await encrypt(plaintext, { secret, blobId });
    assert.ok(!saltOf(a).equals(saltOf(b)));
    assert.ok(!a.equals(b));
  });

  it('emits the parsed header before the plaintext', async () => {
    const envelope = await encrypt(Buffer.from('hello'), { secret, blobId, chunkSize: 4 });
    const stream = createDecryptStream({ secret, blobId });
    const header = once(stream, 'header') as Promise<[EnvelopeHeader]>;
    stream.end(envelope);
    const [parsed] = await header;
    assert.equal(parsed.blobId, blobId);
    assert.equal(parsed.chunkSize, 4);
    assert.equal(parsed.scheme, 'symkey');
    assert.equal(parsed.method, 'aes_256_gcm');
    assert.ok(parsed.bytes.equals(envelope.subarray(0, headerSize({ blobId }))));
    stream.resume();
    await once(stream, 'end');
  });

  it('applies backpressure: writes return false while the output is not read', async () => {
    const stream = createEncryptStream({ secret, blobId, highWaterMark: 256 * 1024 });
    const block = randomBytes(256 * 1024);
    let accepted = 0;
    while (stream.write(block)) {
      accepted++;
      assert.ok(accepted < 8, 'the stream keeps accepting writes while nobody reads');
    }
    assert.ok(stream.readableLength <= 2 * 256 * 1024 + 64);
    stream.end();
    stream.resume();
    await once(stream, 'end');
  });

  it('applies backpressure when decrypting too', async () => {
    const envelope = await encrypt(randomBytes(4 << 20), { secret, blobId });
    const stream = createDecryptStream({ secret, blobId, highWaterMark: 256 * 1024 });
    const pieces = slices(envelope, 256 * 1024);
    let written = 0;
    while (stream.write(pieces[written]!)) {
      written++;
      assert.ok(written < 8, 'the stream keeps accepting writes while nobody reads');
    }
    assert.ok(stream.readableLength <= 2 * 256 * 1024 + C);
    for (const piece of pieces.slice(written + 1)) stream.write(piece);
    stream.end();
    const out: Buffer[] = [];
    for await (const chunk of stream) out.push(chunk as Buffer);
    assert.equal(Buffer.concat(out).length, 4 << 20);
  });

  it('rejects a secret that is not 32 bytes and an empty blob id', () => {
    assert.throws(() => createEncryptStream({ secret: randomBytes(16), blobId }), TypeError);
    assert.throws(() => createEncryptStream({ secret, blobId: '' }), RangeError);
    assert.throws(() => createEncryptStream({ secret, blobId, chunkSize: 0 }), RangeError);
  });
});

function saltOf(envelope: Buffer): Buffer {
  const size = headerSize({ blobId });
  return envelope.subarray(size - 32, size);
}
