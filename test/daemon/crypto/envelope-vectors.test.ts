import assert from 'node:assert/strict';
import { createCipheriv, hkdfSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { deriveBlobKey } from '../../../daemon/crypto/envelope-format.js';
import { envelopeSize, plaintextSize } from '../../../daemon/crypto/envelope-size.js';
import { decrypt, encrypt, slices } from './envelope-helpers.js';
import { ENVELOPE_VECTORS, VECTOR_SALT_HEX, VECTOR_SECRET_HEX } from './vectors/envelope-v1.js';

const secret = Buffer.from(VECTOR_SECRET_HEX, 'hex');
const salt = Buffer.from(VECTOR_SALT_HEX, 'hex');

/**
 * A second, deliberately plain writer of format version 1, written from
 * docs/envelope-format.md alone, with no code shared with daemon/crypto.
 */
function referenceEnvelope(blobId: string, chunkSize: number, plaintext: Buffer): Buffer {
  const id = Buffer.from(blobId, 'utf8');
  const header = Buffer.alloc(11);
  header.set([0x13, 0x37, 0x01, 0x01, 0x01]);
  header.writeUInt32BE(chunkSize, 5);
  header.writeUInt16BE(id.length, 9);
  const fullHeader = Buffer.concat([header, id, salt]);
  const info = Buffer.concat([Buffer.from('soledad blob key v1 aes_256_gcm\0'), id]);
  const key = Buffer.from(hkdfSync('sha256', secret, salt, info, 32));
  const count = Math.max(1, Math.ceil(plaintext.length / chunkSize));
  const parts = [fullHeader];
  for (let i = 0; i < count; i++) {
    const nonce = Buffer.alloc(12);
    nonce.writeUInt32BE(i, 7);
    nonce[11] = i === count - 1 ? 1 : 0;
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(fullHeader);
    parts.push(cipher.update(plaintext.subarray(i * chunkSize, (i + 1) * chunkSize)));
    cipher.final();
    parts.push(cipher.getAuthTag());
  }
  return Buffer.concat(parts);
}

describe('envelope format version 1 test vectors', () => {
  it('derives the key the format document shows for vector "one short chunk"', () => {
    const key = deriveBlobKey(secret, salt, 'vector-short');
    assert.equal(
      key.toString('hex'),
      '8195bfb3e392a0cdef1524d4cdc66981b4be6df167fd38bcc6ecdb62cd98f58e',
    );
  });

  for (const vector of ENVELOPE_VECTORS) {
    const plaintext = Buffer.from(vector.plaintext, 'utf8');
    const expected = Buffer.from(vector.envelope.join(''), 'hex');
    const { blobId, chunkSize } = vector;

    it(`encrypts to the committed bytes: ${vector.name}`, async () => {
      const envelope = await encrypt(plaintext, { secret, blobId, chunkSize, salt });
      assert.equal(envelope.toString('hex'), expected.toString('hex'));
    });

    it(`decrypts the committed bytes: ${vector.name}`, async () => {
      const { output, error } = await decrypt(expected, { secret, blobId }, slices(expected, 5));
      assert.equal(error, undefined);
      assert.equal(output.toString('utf8'), vector.plaintext);
    });

    it(`matches a writer built from the format document: ${vector.name}`, () => {
      const reference = referenceEnvelope(blobId, chunkSize, plaintext);
      assert.equal(reference.toString('hex'), expected.toString('hex'));
    });

    it(`agrees with the size formulas: ${vector.name}`, () => {
      assert.equal(expected.length, envelopeSize(plaintext.length, { blobId, chunkSize }));
      assert.equal(plaintextSize(expected.length, { blobId, chunkSize }), plaintext.length);
    });
  }
});
