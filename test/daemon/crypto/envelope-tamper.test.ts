import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createDecryptStream } from '../../../daemon/crypto/decrypt-stream.js';
import { encodeHeader, TAG_BYTES } from '../../../daemon/crypto/envelope-format.js';
import { headerSize } from '../../../daemon/crypto/envelope-size.js';
import { IntegrityError } from '../../../daemon/crypto/integrity-error.js';
import { NotDecryptableError } from '../../../daemon/crypto/not-decryptable-error.js';
import { decrypt, encrypt, slices } from './envelope-helpers.js';

const secret = randomBytes(32);
const blobId = 'tamper-blob';
const chunkSize = 16;
const sealed = chunkSize + TAG_BYTES;
const H = headerSize({ blobId });
// Seven chunks: six full ones and a final one of 4 bytes.
const plaintext = randomBytes(6 * chunkSize + 4);
const envelope = await encrypt(plaintext, { secret, blobId, chunkSize });
const chunkCount = 7;

function chunk(index: number, of = envelope): Buffer {
  return of.subarray(H + index * sealed, Math.min(H + (index + 1) * sealed, of.length));
}

function chunks(of = envelope): Buffer[] {
  return Array.from({ length: chunkCount }, (_, i) => chunk(i, of));
}

function withChunks(list: Buffer[], header = envelope.subarray(0, H)): Buffer {
  return Buffer.concat([header, ...list]);
}

/**
 * Decrypts `tampered` in writes of `pieceSize` bytes and asserts that it fails with
 * IntegrityError having released only whole chunks that precede `badChunk`.
 */
async function assertRejected(tampered: Buffer, badChunk: number, pieceSize = 7): Promise<void> {
  const { output, error } = await decrypt(
    tampered,
    { secret, blobId },
    slices(tampered, pieceSize),
  );
  assert.ok(error instanceof IntegrityError, `expected IntegrityError, got ${String(error)}`);
  assert.equal(error.code, 'integrity_error');
  assert.ok(output.length <= badChunk * chunkSize, `released ${output.length} bytes`);
  assert.equal(output.length % chunkSize, 0, 'released part of a chunk');
  assert.ok(output.equals(plaintext.subarray(0, output.length)), 'released wrong plaintext');
}

describe('createDecryptStream on a tampered envelope', () => {
  it('decrypts the untampered envelope', async () => {
    const { output, error } = await decrypt(envelope, { secret, blobId }, slices(envelope, 7));
    assert.equal(error, undefined);
    assert.ok(output.equals(plaintext));
  });

  it('fails on every truncation, releasing nothing of the truncated chunk', async () => {
    for (let length = 0; length < envelope.length; length++) {
      // Cut at a chunk boundary, the last whole chunk is the bad one: it is not final.
      const body = length - H;
      const bad =
        body <= 0 ? 0 : body % sealed === 0 ? body / sealed - 1 : Math.floor(body / sealed);
      await assertRejected(envelope.subarray(0, length), bad, 5);
    }
  });

  it('fails when the final chunk is missing at a chunk boundary', async () => {
    const full = await encrypt(randomBytes(4 * chunkSize), { secret, blobId, chunkSize });
    const { output, error } = await decrypt(full.subarray(0, H + 3 * sealed), { secret, blobId });
    assert.ok(error instanceof IntegrityError);
    assert.ok(output.length <= 2 * chunkSize);
  });

  it('fails on bytes after the final chunk', async () => {
    const extras = [
      Buffer.of(0),
      randomBytes(TAG_BYTES),
      randomBytes(sealed),
      chunk(chunkCount - 1),
      chunk(0),
    ];
    for (const extra of extras) {
      await assertRejected(Buffer.concat([envelope, extra]), chunkCount - 1);
    }
  });

  it('fails on reordered chunks', async () => {
    const list = chunks();
    [list[2], list[3]] = [list[3]!, list[2]!];
    await assertRejected(withChunks(list), 2);
    const moved = chunks();
    moved.push(...moved.splice(1, 1));
    await assertRejected(withChunks(moved), 1);
  });

  it('fails on a chunk dropped from the middle', async () => {
    const list = chunks();
    list.splice(4, 1);
    await assertRejected(withChunks(list), 4);
  });

  it('fails on a chunk spliced in from another blob or another sealing of this one', async () => {
    const same = plaintext;
    const others = [
      await encrypt(same, { secret, blobId, chunkSize }),
      await encrypt(same, { secret, blobId: 'other-blob1', chunkSize }),
    ];
    for (const other of others) {
      const otherH = other.length - envelope.length + H;
      const list = chunks();
      list[3] = other.subarray(otherH + 3 * sealed, otherH + 4 * sealed);
      await assertRejected(withChunks(list), 3);
    }
  });

  it("fails on another sealing's header in front of these chunks", async () => {
    const other = await encrypt(plaintext, { secret, blobId, chunkSize });
    await assertRejected(withChunks(chunks(), other.subarray(0, H)), 0);
  });

  it('fails before any chunk when the envelope belongs to another blob id', async () => {
    const other = await encrypt(plaintext, { secret, blobId: 'other-blob1', chunkSize });
    await assertRejected(other, 0);
  });

  it('fails on any flipped bit in the chunks, at that chunk', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: H, max: envelope.length - 1 }),
        fc.integer({ min: 0, max: 7 }),
        async (position, bit) => {
          const tampered = Buffer.from(envelope);
          tampered[position]! ^= 1 << bit;
          await assertRejected(tampered, Math.floor((position - H) / sealed));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('fails on any altered header byte before releasing anything', async () => {
    for (let position = 0; position < H; position++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const tampered = Buffer.from(envelope);
        tampered[position]! ^= mask;
        const { output, error } = await decrypt(tampered, { secret, blobId });
        assert.equal(output.length, 0, `header byte ${position}`);
        // Scheme byte 0x01 ^ 0xff is unknown; 0x01 ^ 0x03 would be `external`.
        assert.ok(error instanceof IntegrityError, `header byte ${position}: ${String(error)}`);
      }
    }
  });

  it('fails on the first chunk under the wrong secret', async () => {
    const { output, error } = await decrypt(envelope, { secret: randomBytes(32), blobId });
    assert.ok(error instanceof IntegrityError);
    assert.equal(output.length, 0);
  });

  it('fails as soon as a bad chunk is complete, before the rest arrives', async () => {
    const tampered = Buffer.from(envelope);
    tampered[H + 3 * sealed + 5]! ^= 1;
    const stream = createDecryptStream({ secret, blobId });
    const released: Buffer[] = [];
    stream.on('data', (data: Buffer) => released.push(data));
    const failed = once(stream, 'error');
    stream.write(tampered.subarray(0, H + 4 * sealed + 1));
    const [error] = await failed;
    assert.ok(error instanceof IntegrityError);
    assert.ok(Buffer.concat(released).equals(plaintext.subarray(0, 3 * chunkSize)));
  });

  it('reports an external envelope as not decryptable', async () => {
    const header = encodeHeader({ scheme: 'external', chunkSize, blobId, salt: randomBytes(32) });
    const { output, error } = await decrypt(Buffer.concat([header, randomBytes(50)]), {
      secret,
      blobId,
    });
    assert.ok(error instanceof NotDecryptableError);
    assert.equal(error.code, 'not_decryptable');
    assert.equal(output.length, 0);
  });
});
