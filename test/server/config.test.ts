import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseByteSize } from '../../server/byte-size.js';
import {
  isLoopbackHost,
  loadServerConfig,
  resolveServerConfig,
  ServerConfigError,
} from '../../server/config.js';
import { tempDir } from '../helpers/tmp.js';

describe('server config', () => {
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    dir = await tempDir();
  });

  after(async () => {
    await dir.remove();
  });

  it('gives every field a default', () => {
    const config = resolveServerConfig({}, { baseDir: '/srv' });
    assert.deepEqual(config, {
      root: '/var/lib/soledad',
      logLevel: 'info',
      defaultQuota: 10 * 2 ** 30,
      maxBlobSize: 4 * 2 ** 30,
      shutdownTimeoutMs: 10_000,
      public: { host: '127.0.0.1', port: 2424 },
      services: { host: '127.0.0.1', port: 2525, tokensFile: '/var/lib/soledad/services.tokens' },
    });
  });

  it('reads TOML, resolving relative paths against the file and accepting byte units', async () => {
    const path = join(dir.path, 'server.toml');
    await writeFile(
      path,
      [
        'root = "data"',
        'log_level = "debug"',
        'default_quota = "5 GiB"',
        'max_blob_size = 1048576',
        '[public]',
        'host = "0.0.0.0"',
        'port = 0',
        '[services]',
        'port = 2600',
        'tokens_file = "tokens"',
      ].join('\n'),
    );
    const config = await loadServerConfig({ configPath: path });
    assert.equal(config.root, join(dir.path, 'data'));
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.defaultQuota, 5 * 2 ** 30);
    assert.equal(config.maxBlobSize, 1048576);
    assert.deepEqual(config.public, { host: '0.0.0.0', port: 0 });
    assert.deepEqual(config.services, {
      host: '127.0.0.1',
      port: 2600,
      tokensFile: join(dir.path, 'tokens'),
    });
    assert.equal(config.source, path);
  });

  it('reads JSON and lets --root override the file', async () => {
    const path = join(dir.path, 'server.json');
    await writeFile(path, JSON.stringify({ root: '/elsewhere', public: { port: 8080 } }));
    const config = await loadServerConfig({ configPath: path, root: join(dir.path, 'override') });
    assert.equal(config.root, join(dir.path, 'override'));
    assert.equal(config.public.port, 8080);
    assert.equal(config.services.tokensFile, join(dir.path, 'override', 'services.tokens'));
  });

  it('names the field of every validation error', () => {
    const cases: [unknown, RegExp][] = [
      [{ public: { port: 70000 } }, /public\.port/],
      [{ public: { port: 'high' } }, /public\.port/],
      [{ services: { host: '0.0.0.0' } }, /services\.host: .*loopback/],
      [{ services: { host: '192.168.1.2' } }, /services\.host/],
      [{ default_quota: 'lots' }, /default_quota/],
      [{ max_blob_size: -1 }, /max_blob_size/],
      [{ log_level: 'loud' }, /log_level/],
      [{ colour: 'blue' }, /colour/],
      [{ public: { tls: true } }, /tls/],
    ];
    for (const [fields, pattern] of cases) {
      assert.throws(
        () => resolveServerConfig(fields),
        (error: unknown) => error instanceof ServerConfigError && pattern.test(error.message),
        JSON.stringify(fields),
      );
    }
  });

  it('reports unparsable files and missing files as config errors', async () => {
    const path = join(dir.path, 'broken.toml');
    await writeFile(path, 'root = ');
    await assert.rejects(loadServerConfig({ configPath: path }), ServerConfigError);
    await assert.rejects(
      loadServerConfig({ configPath: join(dir.path, 'absent.toml') }),
      ServerConfigError,
    );
  });

  it('knows loopback hosts', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) {
      assert.equal(isLoopbackHost(host), true, host);
    }
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.org']) {
      assert.equal(isLoopbackHost(host), false, host);
    }
  });
});

describe('parseByteSize', () => {
  it('reads plain integers and decimal or binary units', () => {
    assert.equal(parseByteSize('1024'), 1024);
    assert.equal(parseByteSize('10GB'), 10e9);
    assert.equal(parseByteSize('512 MiB'), 512 * 2 ** 20);
    assert.equal(parseByteSize('1.5 kib'), 1536);
    assert.equal(parseByteSize('7 b'), 7);
  });

  it('refuses anything else', () => {
    for (const text of ['', 'lots', '-1', '1 XB', '1e3', '99999999999 TiB']) {
      assert.equal(parseByteSize(text), undefined, text);
    }
  });
});
