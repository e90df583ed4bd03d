import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bearerToken, checkUpgrade, isLoopbackHost } from '../../rpc/upgrade-guard.js';

const TOKEN = 'a'.repeat(43);
const rules = { token: TOKEN, allowedOrigins: ['http://localhost:5173'], checkHost: true };

describe('isLoopbackHost', () => {
  it('accepts localhost, 127.0.0.0/8 and [::1], with or without a port', () => {
    for (const host of [
      'localhost',
      'LOCALHOST:2426',
      '127.0.0.1',
      '127.0.0.1:2426',
      '127.1.2.3',
      '127.255.255.255:1',
      '[::1]',
      '[::1]:2426',
    ]) {
      assert.equal(isLoopbackHost(host), true, host);
    }
  });

  it('rejects other names, addresses and malformed values', () => {
    for (const host of [
      undefined,
      '',
      'evil.example',
      'localhost.evil.example',
      '127.0.0.1.evil.example',
      '128.0.0.1',
      '127.0.0.256',
      '0.0.0.0',
      '[::2]',
      '[::1',
      '[::1]x',
      'localhost:',
      'localhost:abc',
      '10.0.0.1:2426',
    ]) {
      assert.equal(isLoopbackHost(host), false, String(host));
    }
  });
});

describe('bearerToken', () => {
  it('reads the token of a Bearer header in any case of the scheme', () => {
    assert.equal(bearerToken(`Bearer ${TOKEN}`), TOKEN);
    assert.equal(bearerToken(`bearer ${TOKEN}`), TOKEN);
  });

  it('returns undefined for other schemes and malformed headers', () => {
    for (const header of [undefined, '', 'Bearer', 'Bearer ', `Token ${TOKEN}`, `Bearer a b`]) {
      assert.equal(bearerToken(header), undefined, String(header));
    }
  });
});

describe('checkUpgrade', () => {
  const good = { host: '127.0.0.1:2426', authorization: `Bearer ${TOKEN}` };

  it('lets a loopback request with the right token through', () => {
    assert.deepEqual(checkUpgrade(good, rules), { ok: true });
  });

  it('refuses a foreign origin with 403 even with the right token', () => {
    const verdict = checkUpgrade({ ...good, origin: 'https://evil.example' }, rules);
    assert.equal(verdict.ok, false);
    assert.equal(!verdict.ok && verdict.status, 403);
  });

  it('accepts an origin that is explicitly allowed', () => {
    assert.deepEqual(checkUpgrade({ ...good, origin: 'http://localhost:5173' }, rules), {
      ok: true,
    });
  });

  it('refuses a rebinding host name with 403 before looking at the token', () => {
    const verdict = checkUpgrade({ host: 'evil.example:2426' }, rules);
    assert.equal(!verdict.ok && verdict.status, 403);
  });

  it('skips the host check when told to (the Unix socket)', () => {
    assert.deepEqual(checkUpgrade({ ...good, host: 'whatever' }, { ...rules, checkHost: false }), {
      ok: true,
    });
  });

  it('refuses a missing or wrong token with 401', () => {
    const missing = checkUpgrade({ host: good.host }, rules);
    const wrong = checkUpgrade({ ...good, authorization: `Bearer ${'b'.repeat(43)}` }, rules);
    const short = checkUpgrade({ ...good, authorization: 'Bearer a' }, rules);
    for (const verdict of [missing, wrong, short]) assert.equal(!verdict.ok && verdict.status, 401);
  });
});
