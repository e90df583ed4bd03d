import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FileUserStore } from '../../server/file-user-store.js';
import { ServiceTokens } from '../../server/service-tokens.js';
import {
  generateToken,
  hashToken,
  tokenMatches,
  UserExistsError,
} from '../../server/user-store.js';
import { tempDir } from '../helpers/tmp.js';

describe('tokens', () => {
  it('makes 256-bit base64url tokens', () => {
    const token = generateToken();
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(token, 'base64url').length, 32);
    assert.notEqual(generateToken(), token);
  });

  it('matches a token against its hash only', () => {
    const token = generateToken();
    assert.equal(tokenMatches(token, hashToken(token)), true);
    assert.equal(tokenMatches(`${token}x`, hashToken(token)), false);
    assert.equal(tokenMatches(token, undefined), false);
    assert.equal(tokenMatches('', undefined), false);
  });
});

describe('FileUserStore', () => {
  let dir: { path: string; remove(): Promise<void> };

  beforeEach(async () => {
    dir = await tempDir();
  });

  afterEach(async () => {
    await dir.remove();
  });

  it('adds a user and authenticates its token, not another', async () => {
    const store = await FileUserStore.open(dir.path);
    const { user, token } = await store.add({ quota: 123 });
    assert.deepEqual(await store.authenticate(user.uuid, token), { uuid: user.uuid, quota: 123 });
    assert.equal(await store.authenticate(user.uuid, generateToken()), undefined);
    assert.equal(await store.authenticate('someone-else', token), undefined);
    assert.deepEqual(await store.get(user.uuid), { uuid: user.uuid, quota: 123 });
  });

  it('writes users.json with mode 0600 and only token hashes', async () => {
    const store = await FileUserStore.open(dir.path);
    const { token } = await store.add({ uuid: 'fixed-id' });
    const path = join(dir.path, 'users.json');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const text = await readFile(path, 'utf8');
    assert.equal(text.includes(token), false);
    assert.ok(text.includes(hashToken(token).toString('hex')));
  });

  it('refuses a uuid that exists or is invalid', async () => {
    const store = await FileUserStore.open(dir.path);
    await store.add({ uuid: 'taken' });
    await assert.rejects(store.add({ uuid: 'taken' }), UserExistsError);
    await assert.rejects(store.add({ uuid: '../x' }), /invalid uuid/);
  });

  it('sees users another store instance added, without reopening', async () => {
    const server = await FileUserStore.open(dir.path);
    const cli = await FileUserStore.open(dir.path);
    const { user, token } = await cli.add();
    assert.deepEqual(await server.authenticate(user.uuid, token), { uuid: user.uuid, quota: null });
  });

  it('keeps concurrent additions from several instances', async () => {
    const stores = await Promise.all([1, 2, 3, 4].map(() => FileUserStore.open(dir.path)));
    const added = await Promise.all(stores.map((store) => store.add()));
    const fresh = await FileUserStore.open(dir.path);
    for (const { user, token } of added) {
      assert.notEqual(await fresh.authenticate(user.uuid, token), undefined);
    }
  });

  it('keeps the last good copy when the file is corrupted under it', async () => {
    const store = await FileUserStore.open(dir.path);
    const { user, token } = await store.add();
    await writeFile(join(dir.path, 'users.json'), '{ not json');
    assert.notEqual(await store.authenticate(user.uuid, token), undefined);
    await assert.rejects(FileUserStore.open(dir.path));
  });
});

describe('ServiceTokens', () => {
  let dir: { path: string; remove(): Promise<void> };

  beforeEach(async () => {
    dir = await tempDir();
  });

  afterEach(async () => {
    await dir.remove();
  });

  it('admits services by their token lines, ignoring comments and blank lines', async () => {
    const path = join(dir.path, 'tokens');
    await writeFile(
      path,
      '# services\n\nmail:secret-1\nmail:secret-2\nbackup:b:with:colons\nbroken\n',
    );
    const tokens = new ServiceTokens(path);
    assert.equal(await tokens.authenticate('mail', 'secret-1'), 'mail');
    assert.equal(await tokens.authenticate('mail', 'secret-2'), 'mail');
    assert.equal(await tokens.authenticate('backup', 'b:with:colons'), 'backup');
    assert.equal(await tokens.authenticate('mail', 'b:with:colons'), undefined);
    assert.equal(await tokens.authenticate('broken', ''), undefined);
    assert.equal(await tokens.authenticate('nobody', 'secret-1'), undefined);
  });

  it('admits nobody without a file and re-reads the file when it changes', async () => {
    const path = join(dir.path, 'tokens');
    const tokens = new ServiceTokens(path);
    assert.equal(await tokens.authenticate('mail', 'x'), undefined);
    await writeFile(path, 'mail:x\n');
    assert.equal(await tokens.authenticate('mail', 'x'), 'mail');
    await writeFile(path, 'mail:y\n');
    assert.equal(await tokens.authenticate('mail', 'x'), undefined);
  });
});
