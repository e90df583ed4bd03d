import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { METHODS, type MethodName } from '../../rpc/methods.js';
import { RPC_INFO_FILE, readRpcInfo, unixSocketUrl } from '../../rpc/rpc-paths.js';
import { startRpcServer } from '../../rpc/rpc-server.js';
import { RPC_ERROR_CODES } from '../../rpc/soledad-error.js';
import { tempDir } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';
import { type RpcFixture, startRpcFixture } from './rpc-fixture.js';

/** The HTTP status of an upgrade attempt, or 101 when it is accepted. */
async function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  const ws = new WebSocket(url, { headers });
  ws.on('error', () => {});
  const status = await withTimeout(
    new Promise<number>((resolve) => {
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      ws.once('open', () => resolve(101));
    }),
    5000,
    'the upgrade',
  );
  ws.terminate();
  return status;
}

/** Params that break each method's schema, and the path the error must name. */
const BAD_PARAMS: Record<MethodName, { params: unknown; path: string }> = {
  'doc.create': { params: { content: 'text' }, path: 'content' },
  'doc.get': { params: { id: '../etc' }, path: 'id' },
  'doc.put': { params: { id: 'a', rev: 'r', content: [] }, path: 'content' },
  'doc.delete': { params: { id: 'a' }, path: 'rev' },
  'doc.list': { params: { includeDeleted: 'yes' }, path: 'includeDeleted' },
  'attachment.put': { params: { docId: 'a', streamId: 0 }, path: 'streamId' },
  'attachment.get': { params: { blobId: 'b', streamId: 1, window: 10 }, path: 'window' },
  'attachment.info': { params: { blobId: 'x'.repeat(129) }, path: 'blobId' },
  'attachment.upload': { params: {}, path: 'blobId' },
  'attachment.download': { params: { blobId: 7 }, path: 'blobId' },
  'attachment.evict': { params: { blobId: 'a b' }, path: 'blobId' },
  'attachment.pin': { params: { blobId: '' }, path: 'blobId' },
  'attachment.unpin': { params: { blobId: null }, path: 'blobId' },
  'attachment.delete': { params: { docId: 'a', rev: 5 }, path: 'rev' },
  'attachment.list': { params: { extra: 1 }, path: '' },
  'sync.run': { params: { now: true }, path: '' },
  'daemon.status': { params: { verbose: true }, path: '' },
  'events.subscribe': { params: { after: -1 }, path: 'after' },
  'events.unsubscribe': { params: { all: true }, path: '' },
  'events.after': { params: { after: 1.5 }, path: 'after' },
  'stream.credit': { params: { streamId: 1, limit: -5 }, path: 'limit' },
  'stream.end': { params: { streamId: 'one' }, path: 'streamId' },
  'stream.cancel': { params: { streamId: 2 ** 32 }, path: 'streamId' },
};

describe('startRpcServer', () => {
  let fixture: RpcFixture;
  before(async () => {
    fixture = await startRpcFixture();
  });
  after(() => fixture.close());

  it('creates the token file with mode 0600 holding 256 random bits', async () => {
    assert.equal((await stat(fixture.tokenFile)).mode & 0o777, 0o600);
    assert.match(fixture.token, /^[A-Za-z0-9_-]{43}$/);
  });

  it('writes its address to rpc.json', async () => {
    const info = await readRpcInfo(join(fixture.configDir, RPC_INFO_FILE));
    assert.equal(info?.url, fixture.rpc.url);
    assert.equal(info?.pid, process.pid);
  });

  it('accepts the right token from a loopback host', async () => {
    assert.equal(
      await upgradeStatus(fixture.rpc.url, { Authorization: `Bearer ${fixture.token}` }),
      101,
    );
  });

  it('refuses an upgrade without a token with 401', async () => {
    assert.equal(await upgradeStatus(fixture.rpc.url, {}), 401);
  });

  it('refuses a wrong token with 401', async () => {
    const wrong = `Bearer ${'A'.repeat(43)}`;
    assert.equal(await upgradeStatus(fixture.rpc.url, { Authorization: wrong }), 401);
  });

  it('refuses a foreign Origin with 403, token or not', async () => {
    const origin = 'https://evil.example';
    assert.equal(
      await upgradeStatus(fixture.rpc.url, {
        Authorization: `Bearer ${fixture.token}`,
        Origin: origin,
      }),
      403,
    );
    assert.equal(await upgradeStatus(fixture.rpc.url, { Origin: origin }), 403);
  });

  it('refuses a Host that is not loopback with 403 (DNS rebinding)', async () => {
    const port = new URL(fixture.rpc.url).port;
    for (const host of [`evil.example:${port}`, `localhost.evil.example:${port}`, '192.168.1.2']) {
      const status = await upgradeStatus(fixture.rpc.url, {
        Authorization: `Bearer ${fixture.token}`,
        Host: host,
      });
      assert.equal(status, 403, host);
    }
    for (const host of [`localhost:${port}`, `127.0.0.2:${port}`, `[::1]:${port}`]) {
      const status = await upgradeStatus(fixture.rpc.url, {
        Authorization: `Bearer ${fixture.token}`,
        Host: host,
      });
      assert.equal(status, 101, host);
    }
  });

  it('answers plain HTTP requests with 426', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      request(fixture.rpc.url.replace('ws:', 'http:'), (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(status, 426);
  });

  it('serves many clients at once', async () => {
    const clients = await Promise.all(Array.from({ length: 20 }, () => fixture.raw()));
    const results = await Promise.all(
      clients.map((client, i) => client.ok<{ id: string }>('doc.create', { content: { i } })),
    );
    assert.equal(new Set(results.map((doc) => doc.id)).size, 20);
    await Promise.all(clients.map((client) => client.close()));
  });
});

describe('startRpcServer options', () => {
  it('allows an Origin listed in allowedOrigins', async () => {
    const fixture = await startRpcFixture({ rpc: { allowedOrigins: ['http://localhost:5173'] } });
    try {
      const headers = { Authorization: `Bearer ${fixture.token}` };
      assert.equal(
        await upgradeStatus(fixture.rpc.url, { ...headers, Origin: 'http://localhost:5173' }),
        101,
      );
      assert.equal(
        await upgradeStatus(fixture.rpc.url, { ...headers, Origin: 'http://localhost:5174' }),
        403,
      );
    } finally {
      await fixture.close();
    }
  });

  it('listens on a Unix socket with mode 0600 that still requires the token', async () => {
    const dir = await tempDir('soledad-sock-');
    const socketPath = join(dir.path, 'rpc.sock');
    const fixture = await startRpcFixture({ rpc: { socketPath } });
    try {
      assert.equal(fixture.rpc.socketPath, socketPath);
      assert.equal((await stat(socketPath)).mode & 0o777, 0o600);
      const url = unixSocketUrl(socketPath);
      assert.equal(await upgradeStatus(url, {}), 401);
      assert.equal(await upgradeStatus(url, { Authorization: `Bearer ${fixture.token}` }), 101);
      const client = await fixture.connect({ url });
      assert.equal((await client.status()).events.latestSeq >= 0, true);
    } finally {
      await fixture.close();
      await dir.remove();
    }
  });

  it('reuses the token on the next start and closes idempotently, removing rpc.json', async () => {
    const fixture = await startRpcFixture();
    const infoFile = join(fixture.configDir, RPC_INFO_FILE);
    try {
      const raw = await fixture.raw();
      const closed = once(raw.ws, 'close');
      await Promise.all([fixture.rpc.close(), fixture.rpc.close()]);
      const [code] = (await closed) as [number];
      assert.equal(code, 1001);
      assert.equal(await readRpcInfo(infoFile), undefined);

      const again = await startRpcServer({
        daemon: fixture.daemon,
        port: 0,
        tokenFile: fixture.tokenFile,
      });
      assert.equal((await readFile(fixture.tokenFile, 'utf8')).trim(), fixture.token);
      await again.close();
    } finally {
      await fixture.close();
    }
  });
});

describe('method dispatch', () => {
  let fixture: RpcFixture;
  before(async () => {
    fixture = await startRpcFixture();
  });
  after(() => fixture.close());

  it('answers -32602 naming the bad param, for every method in the table', async () => {
    const raw = await fixture.raw();
    assert.deepEqual(Object.keys(BAD_PARAMS).sort(), Object.keys(METHODS).sort());
    for (const [method, { params, path }] of Object.entries(BAD_PARAMS)) {
      const { error } = await raw.call(method, params);
      assert.equal(error?.code, -32602, method);
      assert.equal(error?.data?.code, 'invalid_params', method);
      assert.ok(
        error?.data?.issues?.some((issue) => issue.path === path),
        `${method}: ${error?.message}`,
      );
      assert.match(
        error?.message ?? '',
        new RegExp(`^invalid params for ${method.replace('.', '\\.')}: `),
      );
    }
  });

  it('refuses params given by position', async () => {
    const raw = await fixture.raw();
    const { error } = await raw.call('doc.get', ['some-id']);
    assert.equal(error?.code, -32602);
  });

  it('answers -32601 for an unknown method', async () => {
    const raw = await fixture.raw();
    const { error } = await raw.call('doc.explode', {});
    assert.equal(error?.code, -32601);
  });

  it('answers a domain error with its family code and stable code', async () => {
    const raw = await fixture.raw();
    const missing = await raw.call('doc.put', { id: 'no-such-doc', rev: 'x:1', content: {} });
    assert.equal(missing.error?.data?.code, 'not_found');
    assert.equal(missing.error?.code, RPC_ERROR_CODES.not_found);

    const doc = await raw.ok<{ id: string; rev: string }>('doc.create', { content: { a: 1 } });
    await raw.ok('doc.put', { id: doc.id, rev: doc.rev, content: { a: 2 } });
    const stale = await raw.call('doc.put', { id: doc.id, rev: doc.rev, content: { a: 3 } });
    assert.equal(stale.error?.data?.code, 'conflict');
    assert.equal(stale.error?.code, RPC_ERROR_CODES.conflict);
  });

  it('runs every document and attachment method with good params', async () => {
    const raw = await fixture.raw();
    const doc = await raw.ok<{ id: string; rev: string; content: object }>('doc.create', {
      content: { title: 'x' },
    });
    assert.deepEqual(await raw.ok('doc.get', { id: doc.id }), doc);
    assert.equal(await raw.ok('doc.get', { id: 'not-there' }), null);
    const listed = await raw.ok<{ id: string }[]>('doc.list');
    assert.ok(listed.some((d) => d.id === doc.id));
    const put = await raw.ok<{ rev: string }>('doc.put', {
      id: doc.id,
      rev: doc.rev,
      content: { t: 2 },
    });
    assert.notEqual(put.rev, doc.rev);
    assert.equal(await raw.ok('attachment.info', { blobId: 'not-there' }), null);
    assert.ok(Array.isArray(await raw.ok('attachment.list')));
    const status = await raw.ok<{ events: { latestSeq: number } }>('daemon.status');
    assert.ok(status.events.latestSeq > 0);
    const page = await raw.ok<{ kind: string }>('events.after', { after: 0, limit: 5 });
    assert.ok(page.kind === 'events' || page.kind === 'gap');
    const deleted = await raw.ok<{ deleted: boolean }>('doc.delete', { id: doc.id, rev: put.rev });
    assert.equal(deleted.deleted, true);
    assert.equal(await raw.ok('events.unsubscribe'), true);
  });
});
