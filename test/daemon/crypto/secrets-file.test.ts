import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PassphraseError } from '../../../daemon/crypto/passphrase-error.js';
import {
  changePassphrase,
  createSecretsFile,
  DEFAULT_SCRYPT_PARAMS,
  openSecretsFile,
  WEAK_TEST_SCRYPT_PARAMS,
} from '../../../daemon/crypto/secrets-file.js';
import { SecretsFileError } from '../../../daemon/crypto/secrets-file-error.js';
import { tempDir } from '../../helpers/tmp.js';

const scrypt = WEAK_TEST_SCRYPT_PARAMS;
let dir: { path: string; remove(): Promise<void> };
let counter = 0;

before(async () => {
  dir = await tempDir('soledad-secrets-');
});

after(async () => {
  await dir.remove();
});

function freshPath(): string {
  counter++;
  return join(dir.path, `case-${counter}`, 'secrets.json');
}

async function created(passphrase = 'correct horse') {
  const path = freshPath();
  await mkdir(join(path, '..'));
  const secrets = await createSecretsFile(path, passphrase, { scrypt });
  return { path, ...secrets };
}

function rejectsWith(code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof SecretsFileError, String(error));
    assert.equal(error.code, code);
    return true;
  };
}

describe('createSecretsFile', () => {
  it('creates a 0600 file that opens to the same secret and device id', async () => {
    const { path, secret, deviceId } = await created();
    assert.equal(secret.length, 32);
    assert.match(deviceId, /^[0-9a-f]{16}$/);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const opened = await openSecretsFile(path, 'correct horse');
    assert.ok(opened.secret.equals(secret));
    assert.equal(opened.deviceId, deviceId);
  });

  it('stores the device id and scrypt parameters in the clear and the secret sealed', async () => {
    const { path, secret, deviceId } = await created();
    const text = await readFile(path, 'utf8');
    const json = JSON.parse(text);
    assert.equal(json.format, 'soledad-secrets');
    assert.equal(json.version, 1);
    assert.equal(json.deviceId, deviceId);
    assert.deepEqual([json.kdf.name, json.kdf.N, json.kdf.r, json.kdf.p], ['scrypt', 1024, 8, 1]);
    for (const encoding of ['hex', 'base64', 'base64url'] as const) {
      assert.ok(!text.includes(secret.toString(encoding)));
    }
    assert.ok(!text.includes('correct horse'));
  });

  it('uses N = 2^17, r = 8, p = 1 by default', async () => {
    const path = join(dir.path, 'default-params.json');
    const { secret } = await createSecretsFile(path, 'slow and strong');
    const json = JSON.parse(await readFile(path, 'utf8'));
    assert.deepEqual([json.kdf.N, json.kdf.r, json.kdf.p], [DEFAULT_SCRYPT_PARAMS.N, 8, 1]);
    assert.ok((await openSecretsFile(path, 'slow and strong')).secret.equals(secret));
  });

  it('refuses to create over an existing file and leaves it as it was', async () => {
    const { path } = await created();
    const before = await readFile(path);
    await assert.rejects(
      createSecretsFile(path, 'other', { scrypt }),
      rejectsWith('secrets_file_exists'),
    );
    assert.ok((await readFile(path)).equals(before));
    assert.deepEqual(await readdir(join(path, '..')), ['secrets.json']);
  });

  it('leaves no temporary file behind', async () => {
    const { path } = await created();
    assert.deepEqual(await readdir(join(path, '..')), ['secrets.json']);
  });

  it('rejects an empty passphrase', async () => {
    await assert.rejects(
      createSecretsFile(freshPath(), '', { scrypt }),
      (error: unknown) => error instanceof PassphraseError && error.code === 'empty_passphrase',
    );
  });

  it('rejects scrypt parameters that are not a power of two or too costly', async () => {
    const path = join(dir.path, 'bad-params.json');
    await assert.rejects(
      createSecretsFile(path, 'x', { scrypt: { N: 1000, r: 8, p: 1 } }),
      RangeError,
    );
    await assert.rejects(
      createSecretsFile(path, 'x', { scrypt: { N: 2 ** 22, r: 32, p: 1 } }),
      RangeError,
    );
  });
});

describe('openSecretsFile', () => {
  it('fails with wrong_passphrase for a wrong passphrase', async () => {
    const { path } = await created();
    await assert.rejects(openSecretsFile(path, 'Correct horse'), rejectsWith('wrong_passphrase'));
  });

  it('treats composed and decomposed Unicode passphrases alike', async () => {
    const { path, secret } = await created('caf\u00e9');
    assert.ok((await openSecretsFile(path, 'cafe\u0301')).secret.equals(secret));
  });

  it('fails with secrets_file_missing when there is no file', async () => {
    await assert.rejects(openSecretsFile(freshPath(), 'x'), rejectsWith('secrets_file_missing'));
  });

  it('fails with malformed_secrets_file naming the problem', async () => {
    const { path } = await created();
    const good = JSON.parse(await readFile(path, 'utf8'));
    const cases: [unknown, RegExp][] = [
      ['not json', /not JSON/],
      [{ ...good, format: 'other' }, /format/],
      [{ ...good, version: 2 }, /version/],
      [{ ...good, deviceId: 'XYZ' }, /deviceId/],
      [{ ...good, kdf: { ...good.kdf, N: 1000 } }, /kdf\.N/],
      [{ ...good, kdf: { ...good.kdf, N: 2 ** 30 } }, /kdf\.N/],
      [{ ...good, kdf: { ...good.kdf, salt: 'AAAA' } }, /kdf\.salt/],
      [{ ...good, sealed: { ...good.sealed, tag: '!!' } }, /sealed\.tag/],
      [{ ...good, sealed: undefined }, /sealed/],
    ];
    for (const [content, pattern] of cases) {
      await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content));
      await assert.rejects(openSecretsFile(path, 'correct horse'), (error: unknown) => {
        rejectsWith('malformed_secrets_file')(error);
        assert.match((error as Error).message, pattern);
        return true;
      });
    }
  });
});

describe('changePassphrase', () => {
  it('re-seals the same secret and device id under the new passphrase', async () => {
    const { path, secret, deviceId } = await created('old pass');
    const inode = (await stat(path)).ino;
    await changePassphrase(path, 'old pass', 'new pass');
    const opened = await openSecretsFile(path, 'new pass');
    assert.ok(opened.secret.equals(secret));
    assert.equal(opened.deviceId, deviceId);
    await assert.rejects(openSecretsFile(path, 'old pass'), rejectsWith('wrong_passphrase'));
    const after = await stat(path);
    assert.equal(after.mode & 0o777, 0o600);
    assert.notEqual(after.ino, inode, 'the file was rewritten in place, not replaced');
    assert.deepEqual(await readdir(join(path, '..')), ['secrets.json']);
  });

  it('keeps the scrypt parameters unless given new ones', async () => {
    const { path } = await created('old pass');
    await changePassphrase(path, 'old pass', 'new pass');
    assert.equal(JSON.parse(await readFile(path, 'utf8')).kdf.N, 1024);
    await changePassphrase(path, 'new pass', 'newer', { scrypt: { N: 2048, r: 4, p: 2 } });
    const { kdf } = JSON.parse(await readFile(path, 'utf8'));
    assert.deepEqual([kdf.N, kdf.r, kdf.p], [2048, 4, 2]);
    await openSecretsFile(path, 'newer');
  });

  it('changes nothing when the old passphrase is wrong', async () => {
    const { path } = await created('old pass');
    const before = await readFile(path);
    const inode = (await stat(path)).ino;
    await assert.rejects(
      changePassphrase(path, 'wrong', 'new pass'),
      rejectsWith('wrong_passphrase'),
    );
    assert.ok((await readFile(path)).equals(before));
    assert.equal((await stat(path)).ino, inode);
    assert.deepEqual(await readdir(join(path, '..')), ['secrets.json']);
  });
});
