import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeTokenAuth, encodeTokenAuth, isBlobFlag, isValidId } from '../../wire/index.js';

describe('isValidId', () => {
  it('accepts letters, digits, dash and underscore up to 128 characters', () => {
    assert.equal(isValidId('a'), true);
    assert.equal(isValidId('A-z_09'), true);
    assert.equal(isValidId('x'.repeat(128)), true);
  });

  it('rejects empty, overlong, dotted, slashed and non-string values', () => {
    for (const bad of ['', 'x'.repeat(129), '..', 'a/b', 'a.b', 'a b', '%2e', null, 3]) {
      assert.equal(isValidId(bad), false, String(bad));
    }
  });
});

describe('token auth header', () => {
  it('round-trips an id and a token containing a colon', () => {
    const header = encodeTokenAuth('user-1', 'se:cret');
    assert.deepEqual(decodeTokenAuth(header), { id: 'user-1', token: 'se:cret' });
  });

  it('returns undefined for malformed headers', () => {
    for (const bad of [
      undefined,
      '',
      'Bearer abc',
      'Token',
      'Token !!!',
      `Token ${btoa('nocolon')}`,
    ]) {
      assert.equal(decodeTokenAuth(bad), undefined, String(bad));
    }
  });
});

describe('isBlobFlag', () => {
  it('knows the four flags and nothing else', () => {
    assert.equal(isBlobFlag('PENDING'), true);
    assert.equal(isBlobFlag('pending'), false);
  });
});
