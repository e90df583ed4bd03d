import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openSecretsFile } from '../../../daemon/crypto/secrets-file.js';
import { defaultConfigDir, defaultDataDir, secretsFilePath } from '../../../daemon/paths.js';
import { tempDir } from '../../helpers/tmp.js';

// `soledad init` end to end, as a child process. Lives here with the secrets file it writes.

const cli = fileURLToPath(new URL('../../../cli/main.js', import.meta.url));
let dir: { path: string; remove(): Promise<void> };
let counter = 0;

before(async () => {
  dir = await tempDir('soledad-init-');
});

after(async () => {
  await dir.remove();
});

async function soledad(args: string[], env: NodeJS.ProcessEnv = {}) {
  const base = { ...process.env };
  for (const name of Object.keys(base)) if (name.startsWith('SOLEDAD_')) delete base[name];
  delete base.CREDENTIALS_DIRECTORY;
  const child = spawn(process.execPath, [cli, ...args], {
    env: { ...base, SOLEDAD_TEST_WEAK_SCRYPT: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (data: Buffer) => {
    stdout += data.toString();
  });
  child.stderr.on('data', (data: Buffer) => {
    stderr += data.toString();
  });
  const [code] = (await once(child, 'close')) as [number];
  return { code, stdout, stderr };
}

async function passphraseFile(content: string): Promise<string> {
  counter++;
  const path = join(dir.path, `passphrase-${counter}`);
  await writeFile(path, `${content}\n`, { mode: 0o600 });
  return path;
}

function freshDataDir(): string {
  counter++;
  return join(dir.path, `data-${counter}`, 'soledad');
}

describe('soledad init', () => {
  it('creates the data folder (0700) and secrets file (0600) and prints them', async () => {
    const dataDir = freshDataDir();
    const file = await passphraseFile('init pass');
    const result = await soledad(['init', '--data-dir', dataDir, '--passphrase-file', file]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
    const secrets = secretsFilePath(dataDir);
    assert.equal((await stat(secrets)).mode & 0o777, 0o600);
    assert.ok(result.stdout.includes(dataDir));
    assert.ok(result.stdout.includes(secrets));
    const { deviceId } = await openSecretsFile(secrets, 'init pass');
    assert.ok(result.stdout.includes(deviceId));
    assert.ok(!`${result.stdout}${result.stderr}`.includes('init pass'));
    assert.match(result.stderr, /weak scrypt/);
  });

  it('refuses to initialise twice and leaves the secrets file alone', async () => {
    const dataDir = freshDataDir();
    const file = await passphraseFile('first');
    assert.equal(
      (await soledad(['init', '--data-dir', dataDir, '--passphrase-file', file])).code,
      0,
    );
    const before = await readFile(secretsFilePath(dataDir));
    const again = await soledad(['init', '--data-dir', dataDir, '--passphrase-file', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already initialised/);
    assert.ok((await readFile(secretsFilePath(dataDir))).equals(before));
  });

  it('takes the passphrase from SOLEDAD_PASSPHRASE', async () => {
    const dataDir = freshDataDir();
    const result = await soledad(['init', '--data-dir', dataDir], { SOLEDAD_PASSPHRASE: 'env' });
    assert.equal(result.code, 0, result.stderr);
    await openSecretsFile(secretsFilePath(dataDir), 'env');
  });

  it('uses $XDG_DATA_HOME/soledad when no data folder is given', async () => {
    const xdg = join(dir.path, `xdg-${++counter}`);
    const file = await passphraseFile('xdg pass');
    const result = await soledad(['init', '--passphrase-file', file], { XDG_DATA_HOME: xdg });
    assert.equal(result.code, 0, result.stderr);
    await openSecretsFile(join(xdg, 'soledad', 'secrets.json'), 'xdg pass');
  });

  it('fails with no_passphrase, creating nothing, when no passphrase is available', async () => {
    const dataDir = freshDataDir();
    const result = await soledad(['init', '--data-dir', dataDir]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no_passphrase/);
    await assert.rejects(stat(dataDir), { code: 'ENOENT' });
  });

  it('changes the passphrase and keeps the storage secret', async () => {
    const dataDir = freshDataDir();
    const oldFile = await passphraseFile('old pass');
    const newFile = await passphraseFile('new pass');
    await soledad(['init', '--data-dir', dataDir, '--passphrase-file', oldFile]);
    const secrets = secretsFilePath(dataDir);
    const { secret, deviceId } = await openSecretsFile(secrets, 'old pass');
    const result = await soledad([
      'init',
      '--change-passphrase',
      '--data-dir',
      dataDir,
      '--passphrase-file',
      oldFile,
      '--new-passphrase-file',
      newFile,
    ]);
    assert.equal(result.code, 0, result.stderr);
    const opened = await openSecretsFile(secrets, 'new pass');
    assert.ok(opened.secret.equals(secret));
    assert.equal(opened.deviceId, deviceId);
  });

  it('refuses to change the passphrase before init, without asking for one', async () => {
    const result = await soledad(['init', '--change-passphrase', '--data-dir', freshDataDir()]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /not initialised/);
  });

  it('refuses to change the passphrase when the old one is wrong', async () => {
    const dataDir = freshDataDir();
    await soledad(['init', '--data-dir', dataDir, '--passphrase-file', await passphraseFile('a')]);
    const before = await readFile(secretsFilePath(dataDir));
    const result = await soledad(
      ['init', '--change-passphrase', '--data-dir', dataDir, '--passphrase-file'].concat(
        await passphraseFile('b'),
      ),
      { SOLEDAD_NEW_PASSPHRASE: 'c' },
    );
    assert.equal(result.code, 1);
    assert.match(result.stderr, /wrong_passphrase/);
    assert.ok((await readFile(secretsFilePath(dataDir))).equals(before));
  });
});

describe('defaultDataDir and defaultConfigDir', () => {
  it('follow XDG_DATA_HOME and XDG_CONFIG_HOME when they are absolute', () => {
    const env = { XDG_DATA_HOME: '/x/data', XDG_CONFIG_HOME: '/x/config', HOME: '/home/u' };
    assert.equal(defaultDataDir(env), '/x/data/soledad');
    assert.equal(defaultConfigDir(env), '/x/config/soledad');
  });

  it('fall back to ~/.local/share and ~/.config when unset or relative', () => {
    assert.equal(defaultDataDir({ HOME: '/home/u' }), '/home/u/.local/share/soledad');
    assert.equal(
      defaultConfigDir({ HOME: '/home/u', XDG_CONFIG_HOME: 'rel' }),
      '/home/u/.config/soledad',
    );
  });
});
