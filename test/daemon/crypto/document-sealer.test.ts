import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { DocumentSealer } from '../../../daemon/crypto/document-sealer.js';
import { IntegrityError } from '../../../daemon/crypto/integrity-error.js';

const sealer = new DocumentSealer(randomBytes(32));
const content = Buffer.from(JSON.stringify({ blob_id: 'b-1', name: 'hackers.txt' }));
const sealed = sealer.seal('doc-1', 'dev-a:1', content);

describe('DocumentSealer', () => {
  it('opens what it sealed for the same document and revision', () => {
    assert.ok(sealer.open('doc-1', 'dev-a:1', sealed).equals(content));
  });

  it('seals the same content differently each time', () => {
    assert.ok(!sealer.seal('doc-1', 'dev-a:1', content).equals(sealed));
  });

  it('fails with IntegrityError under another doc id', () => {
    assert.throws(() => sealer.open('doc-2', 'dev-a:1', sealed), IntegrityError);
  });

  it('fails with IntegrityError under another revision', () => {
    assert.throws(() => sealer.open('doc-1', 'dev-a:2', sealed), IntegrityError);
    assert.throws(() => sealer.open('doc-1', 'dev-a:1,dev-b:1', sealed), IntegrityError);
  });

  it('fails with IntegrityError for any flipped bit', () => {
    for (let position = 0; position < sealed.length; position++) {
      const tampered = Buffer.from(sealed);
      tampered[position]! ^= 1 << (position % 8);
      assert.throws(() => sealer.open('doc-1', 'dev-a:1', tampered), IntegrityError, `${position}`);
    }
  });

  it('fails with IntegrityError for truncated values and another storage secret', () => {
    for (const length of [0, 1, 28, sealed.length - 1]) {
      assert.throws(
        () => sealer.open('doc-1', 'dev-a:1', sealed.subarray(0, length)),
        IntegrityError,
      );
    }
    const other = new DocumentSealer(randomBytes(32));
    assert.throws(() => other.open('doc-1', 'dev-a:1', sealed), IntegrityError);
  });

  it('does not let a doc id and revision boundary shift', () => {
    const a = sealer.seal('doc', '1:x', content);
    assert.throws(() => sealer.open('doc1', ':x', a), IntegrityError);
  });
});
