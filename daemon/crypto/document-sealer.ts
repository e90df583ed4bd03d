import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { IntegrityError } from './integrity-error.js';

const VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const DOC_KEY_INFO = 'soledad document key v1';
/**
 * Derived keys kept for the documents used last: a put reads, checks and seals the same
 * document a few times in a row, and each derivation costs about 50 µs.
 */
const KEY_CACHE_SIZE = 256;

/**
 * Seals document contents at rest. Each document has its own AES-256-GCM key, derived with
 * HKDF-SHA256 from the storage secret and the doc id; the doc id and the revision's
 * canonical text are the associated data, so a sealed value moved to another document or
 * revision fails to open.
 *
 * Layout: version (1 byte) | nonce (12) | ciphertext | tag (16).
 */
export class DocumentSealer {
  readonly #secret: Buffer;
  readonly #keys = new Map<string, KeyObject>();

  constructor(storageSecret: Buffer) {
    if (storageSecret.length !== 32) throw new TypeError('storage secret must be 32 bytes');
    this.#secret = Buffer.from(storageSecret);
  }

  seal(docId: string, rev: string, plaintext: Buffer): Buffer {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key(docId), nonce);
    cipher.setAAD(associatedData(docId, rev));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([Buffer.of(VERSION), nonce, body, cipher.getAuthTag()]);
  }

  open(docId: string, rev: string, sealed: Buffer): Buffer {
    if (sealed.length < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] !== VERSION) {
      throw new IntegrityError(`sealed content of document ${docId} is malformed`);
    }
    const nonce = sealed.subarray(1, 1 + NONCE_BYTES);
    const tag = sealed.subarray(sealed.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', this.#key(docId), nonce);
    decipher.setAAD(associatedData(docId, rev));
    decipher.setAuthTag(tag);
    try {
      const body = sealed.subarray(1 + NONCE_BYTES, sealed.length - TAG_BYTES);
      return Buffer.concat([decipher.update(body), decipher.final()]);
    } catch (cause) {
      throw new IntegrityError(`sealed content of document ${docId} at ${rev} failed to open`, {
        cause,
      });
    }
  }

  #key(docId: string): KeyObject {
    let key = this.#keys.get(docId);
    if (key !== undefined) {
      // Most recently used last, so the first entry is the one to drop.
      this.#keys.delete(docId);
    } else {
      const bytes = hkdfSync('sha256', this.#secret, Buffer.from(docId), DOC_KEY_INFO, 32);
      key = createSecretKey(Buffer.from(bytes));
      if (this.#keys.size >= KEY_CACHE_SIZE) this.#keys.delete(this.#keys.keys().next().value!);
    }
    this.#keys.set(docId, key);
    return key;
  }
}

function associatedData(docId: string, rev: string): Buffer {
  const id = Buffer.from(docId, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(id.length);
  return Buffer.concat([length, id, Buffer.from(rev, 'utf8')]);
}
