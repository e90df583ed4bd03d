import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DaemonConfigError, loadDaemonConfig, resolveDaemonConfig } from '../../daemon/config.js';
import { tempDir } from '../helpers/tmp.js';

describe('daemon configuration', () => {
  let dir: { path: string; remove(): Promise<void> };
  before(async () => {
    dir = await tempDir();
  });
  after(() => dir.remove());

  it('applies every default under the XDG folders', () => {
    const config = resolveDaemonConfig({}, { env: { HOME: '/home/u' } });
    assert.equal(config.dataDir, '/home/u/.local/share/soledad');
    assert.equal(config.configDir, '/home/u/.config/soledad');
    assert.deepEqual(config.rpc, {
      host: '127.0.0.1',
      port: 2426,
      socket: undefined,
      allowedOrigins: [],
    });
    assert.equal(config.transfers.uploads, 4);
    assert.deepEqual(
      config.transfers.retryDelaysMs,
      [10_000, 20_000, 30_000, 40_000, 50_000, 60_000],
    );
    assert.equal(config.eventLogSize, 10_000);
    assert.equal(config.server, undefined);
  });

  it('reads TOML, resolves relative paths against the file and lets the environment win', async () => {
    const path = join(dir.path, 'daemon.toml');
    await writeFile(
      path,
      [
        'data_dir = "data"',
        '[server]',
        'url = "http://127.0.0.1:2424"',
        'uuid = "alice"',
        'token_file = "token"',
        '[rpc]',
        'port = 9000',
        '[[watch]]',
        'path = "inbox"',
        'ignore = ["*.part"]',
      ].join('\n'),
    );
    const config = await loadDaemonConfig({
      configPath: path,
      env: { HOME: dir.path, SOLEDAD_RPC_PORT: '0', SOLEDAD_TRANSFERS_UPLOADS: '2' },
    });
    assert.equal(config.dataDir, join(dir.path, 'data'));
    assert.deepEqual(config.server, {
      url: 'http://127.0.0.1:2424',
      uuid: 'alice',
      tokenFile: join(dir.path, 'token'),
    });
    assert.equal(config.rpc.port, 0);
    assert.equal(config.transfers.uploads, 2);
    assert.deepEqual(config.watch, [{ path: join(dir.path, 'inbox'), ignore: ['*.part'] }]);
  });

  it('names the field of a bad value', () => {
    assert.throws(
      () => resolveDaemonConfig({ rpc: { port: 70000 } }, { env: {} }),
      (error: unknown) => error instanceof DaemonConfigError && /rpc\.port/.test(error.message),
    );
    assert.throws(
      () => resolveDaemonConfig({}, { env: { SOLEDAD_TRANSFERS_UPLOADS: 'many' } }),
      /transfers\.uploads/,
    );
  });

  it('rejects unknown fields and half a server section', () => {
    assert.throws(() => resolveDaemonConfig({ colour: 'red' }, { env: {} }), /colour/);
    assert.throws(
      () => resolveDaemonConfig({ server: { url: 'http://127.0.0.1:1' } }, { env: {} }),
      /go together/,
    );
  });

  it('reports a missing explicit file and a file that is not TOML', async () => {
    await assert.rejects(
      loadDaemonConfig({ configPath: join(dir.path, 'missing.toml'), env: {} }),
      DaemonConfigError,
    );
    const bad = join(dir.path, 'bad.toml');
    await writeFile(bad, 'this is = = not toml');
    await assert.rejects(loadDaemonConfig({ configPath: bad, env: {} }), /not valid TOML/);
  });
});
