import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { BlobsClient, type StreamDownloadEntry } from '../../../daemon/remote/blobs-client.js';
import { RemoteError } from '../../../daemon/remote/remote-error.js';
import type { BlobFlag } from '../../../wire/flags.js';
import { ServerProcess, type ServerUser } from '../../helpers/server-process.js';

const MiB = 1024 * 1024;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function isRemote(code: string, extra: { status?: number; retryable?: boolean } = {}) {
  return (error: unknown) => {
    assert.ok(error instanceof RemoteError, `not a RemoteError: ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (extra.status !== undefined) assert.equal(error.status, extra.status);
    if (extra.retryable !== undefined) assert.equal(error.retryable, extra.retryable);
    return true;
  };
}

function bytes(text: string): Readable {
  return Readable.from([Buffer.from(text)]);
}

/** A raw HTTP server answering every request with `handler`; for responses a real server never sends. */
async function rawServer(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    req.resume();
    handler(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('BlobsClient against a blobs server', () => {
  let server: ServerProcess;
  let user: ServerUser;
  let client: BlobsClient;
  let serial = 0;
  const freshId = () => `blob-${serial++}`;

  before(async () => {
    server = await ServerProcess.start({ config: { max_blob_size: 120 * MiB } });
    user = await server.addUser();
    client = new BlobsClient({ url: server.url, uuid: user.uuid, token: user.token });
  });

  after(async () => {
    await client?.close();
    await server?.cleanup();
  });

  describe('put, get and delete', () => {
    it('round-trips the bytes of a blob', async () => {
      const id = freshId();
      const data = randomBytes(300_000);
      await client.put(
        id,
        Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
        data.length,
      );
      const { size, stream, range } = await client.get(id);
      assert.equal(size, data.length);
      assert.equal(range, undefined);
      assert.deepEqual(await readAll(stream), data);
      assert.equal(await client.size(id), data.length);
    });

    it('stores an empty blob', async () => {
      const id = freshId();
      await client.put(id, Readable.from([]), 0);
      const { size, stream } = await client.get(id);
      assert.equal(size, 0);
      assert.equal((await readAll(stream)).length, 0);
    });

    it('reads inclusive byte ranges and clamps an end past the blob', async () => {
      const id = freshId();
      const data = randomBytes(1000);
      await client.put(id, Readable.from([data]), data.length);
      const middle = await client.get(id, { range: { start: 10, end: 19 } });
      assert.deepEqual(middle.range, { start: 10, end: 19, total: 1000 });
      assert.equal(middle.size, 10);
      assert.deepEqual(await readAll(middle.stream), data.subarray(10, 20));
      const tail = await client.get(id, { range: { start: 990 } });
      assert.deepEqual(await readAll(tail.stream), data.subarray(990));
      const clamped = await client.get(id, { range: { start: 995, end: 5000 } });
      assert.deepEqual(clamped.range, { start: 995, end: 999, total: 1000 });
      assert.deepEqual(await readAll(clamped.stream), data.subarray(995));
    });

    it('fails with range_not_satisfiable for a range past the blob', async () => {
      const id = freshId();
      await client.put(id, bytes('short'), 5);
      await assert.rejects(
        client.get(id, { range: { start: 5 } }),
        isRemote('range_not_satisfiable', { status: 416, retryable: false }),
      );
    });

    it('deletes a blob, which then is not_found and can never be put again', async () => {
      const id = freshId();
      await client.put(id, bytes('gone soon'), 9);
      await client.delete(id);
      await assert.rejects(
        client.get(id),
        isRemote('not_found', { status: 404, retryable: false }),
      );
      await assert.rejects(client.size(id), isRemote('not_found', { status: 404 }));
      await assert.rejects(client.delete(id), isRemote('not_found', { status: 404 }));
      await assert.rejects(
        client.put(id, bytes('again'), 5),
        isRemote('blob_deleted', { status: 409, retryable: false }),
      );
    });

    it('fails with blob_exists when the id is taken, even for a large body', async () => {
      const id = freshId();
      await client.put(id, bytes('first'), 5);
      const size = 40 * MiB;
      const chunk = Buffer.alloc(MiB, 7);
      async function* body() {
        for (let sent = 0; sent < size; sent += MiB) yield chunk;
      }
      await assert.rejects(
        client.put(id, body(), size),
        isRemote('blob_exists', { status: 409, retryable: false }),
      );
      assert.equal((await readAll((await client.get(id)).stream)).toString(), 'first');
    });

    it('fails with too_large past the server maximum', async () => {
      const size = 121 * MiB;
      const chunk = Buffer.alloc(MiB);
      async function* body() {
        for (let sent = 0; sent < size; sent += MiB) yield chunk;
      }
      await assert.rejects(
        client.put(freshId(), body(), size),
        isRemote('too_large', { status: 413, retryable: false }),
      );
    });

    it('rejects a body that is shorter or longer than its size and stores nothing', async () => {
      const short = freshId();
      const long = freshId();
      await assert.rejects(client.put(short, bytes('abc'), 10), { name: 'RangeError' });
      await assert.rejects(client.put(long, bytes('abcdef'), 3), { name: 'RangeError' });
      const listed = await client.list();
      assert.equal(listed.includes(short), false);
      assert.equal(listed.includes(long), false);
    });

    it('rethrows the error of a failing body source as it is', async () => {
      const failure = new Error('disk read failed');
      async function* body() {
        yield Buffer.alloc(1000);
        throw failure;
      }
      const id = freshId();
      await assert.rejects(client.put(id, body(), 5000), (error) => error === failure);
      await assert.rejects(client.get(id), isRemote('not_found'));
    });

    it('rejects with the abort reason when its signal aborts', async () => {
      const id = freshId();
      await client.put(id, bytes('abc'), 3);
      const controller = new AbortController();
      const reason = new Error('stop');
      controller.abort(reason);
      await assert.rejects(client.get(id, { signal: controller.signal }), (e) => e === reason);
    });

    it('fails the body stream with the abort reason when its signal aborts mid-body', async () => {
      const id = freshId();
      const size = 8 * MiB;
      await client.put(id, Readable.from([Buffer.alloc(size, 3)]), size);
      const controller = new AbortController();
      const reason = new Error('stop reading');
      const { stream } = await client.get(id, { signal: controller.signal });
      await assert.rejects(
        (async () => {
          for await (const _chunk of stream) controller.abort(reason);
        })(),
        (error) => error === reason,
      );
    });

    it('refuses invalid ids before sending anything', async () => {
      await assert.rejects(client.get('../etc'), isRemote('invalid_request', { retryable: false }));
      await assert.rejects(client.get('ok', { namespace: 'a b' }), isRemote('invalid_request'));
    });
  });

  describe('listing, counting and flags', () => {
    it('lists blobs in upload order, per namespace, and their tombstones', async () => {
      const namespace = `ns${serial++}`;
      const ids = ['c-1', 'a-2', 'b-3'];
      for (const id of ids) await client.put(id, bytes(id), id.length, { namespace });
      await client.delete('a-2', { namespace });
      assert.deepEqual(await client.list({ namespace, orderBy: 'date' }), ['c-1', 'b-3']);
      assert.deepEqual(await client.list({ namespace, orderBy: '+date' }), ['c-1', 'b-3']);
      assert.deepEqual(await client.list({ namespace, orderBy: '-date' }), ['b-3', 'c-1']);
      assert.deepEqual(await client.list({ namespace, deleted: true }), ['a-2']);
      assert.equal(await client.count({ namespace }), 2);
      assert.equal(await client.count({ namespace, deleted: true }), 1);
      assert.equal((await client.list()).includes('c-1'), false);
    });

    it('sets, reads and filters by flags', async () => {
      const namespace = `ns${serial++}`;
      await client.put('flagged', bytes('x'), 1, { namespace });
      await client.put('plain', bytes('y'), 1, { namespace });
      assert.deepEqual(await client.getFlags('flagged', { namespace }), []);
      await client.setFlags('flagged', ['PENDING', 'PROCESSING'], { namespace });
      assert.deepEqual((await client.getFlags('flagged', { namespace })).sort(), [
        'PENDING',
        'PROCESSING',
      ]);
      assert.deepEqual(await client.list({ namespace, filterFlag: 'PENDING' }), ['flagged']);
      assert.equal(await client.count({ namespace, filterFlag: 'PROCESSED' }), 0);
      await client.setFlags('flagged', [], { namespace });
      assert.deepEqual(await client.getFlags('flagged', { namespace }), []);
    });

    it('fails with invalid_flag for an unknown flag and not_found for a missing blob', async () => {
      const id = freshId();
      await client.put(id, bytes('x'), 1);
      await assert.rejects(
        client.setFlags(id, ['NOPE' as BlobFlag]),
        isRemote('invalid_flag', { status: 406, retryable: false }),
      );
      await assert.rejects(client.setFlags('missing', ['PENDING']), isRemote('not_found'));
      await assert.rejects(client.getFlags('missing'), isRemote('not_found'));
    });

    it('reads server info and health without credentials', async () => {
      const anonymous = new BlobsClient({ url: server.url, uuid: 'nobody', token: 'none' });
      try {
        const info = await anonymous.serverInfo();
        assert.equal(info.name, 'soledad');
        assert.equal(typeof info.version, 'string');
        await anonymous.health();
      } finally {
        await anonymous.close();
      }
    });
  });

  describe('failures by code', () => {
    it('fails with unauthorized for a wrong token', async () => {
      const wrong = new BlobsClient({ url: server.url, uuid: user.uuid, token: 'not-the-token' });
      try {
        await assert.rejects(
          wrong.list(),
          isRemote('unauthorized', { status: 401, retryable: false }),
        );
        await assert.rejects(
          wrong.put('x', bytes('abc'), 3),
          isRemote('unauthorized', { status: 401 }),
        );
      } finally {
        await wrong.close();
      }
    });

    it('fails with quota_exceeded, which is retryable, past the quota', async () => {
      const small = await server.addUser({ quota: 1000 });
      const limited = new BlobsClient({ url: server.url, uuid: small.uuid, token: small.token });
      try {
        await limited.put('fits', Readable.from([Buffer.alloc(600)]), 600);
        await assert.rejects(
          limited.put('over', Readable.from([Buffer.alloc(600)]), 600),
          isRemote('quota_exceeded', { status: 507, retryable: true }),
        );
      } finally {
        await limited.close();
      }
    });
  });

  describe('stream endpoint', () => {
    it('uploads and downloads 50 small blobs in one request each', async () => {
      const namespace = `ns${serial++}`;
      const blobs = Array.from({ length: 50 }, (_, i) => ({
        id: `small-${i}`,
        data: randomBytes(100 + i * 97),
      }));
      const results = await client.streamUpload(
        blobs.map(({ id, data }) => ({ id, size: data.length, body: () => Readable.from([data]) })),
        { namespace },
      );
      assert.deepEqual(results, Object.fromEntries(blobs.map(({ id }) => [id, 'created'])));
      assert.equal(await client.count({ namespace }), 50);

      const seen: string[] = [];
      for await (const entry of client.streamDownload(
        blobs.map((b) => b.id),
        { namespace },
      )) {
        assert.ok('stream' in entry, `${entry.id} failed`);
        const expected = blobs.find((b) => b.id === entry.id)!.data;
        assert.equal(entry.size, expected.length);
        assert.deepEqual(await readAll(entry.stream), expected);
        seen.push(entry.id);
      }
      assert.deepEqual(
        seen,
        blobs.map((b) => b.id),
      );
    });

    it('reports per-blob outcomes of an upload', async () => {
      const namespace = `ns${serial++}`;
      await client.put('taken', bytes('old'), 3, { namespace });
      const results = await client.streamUpload(
        [
          { id: 'new-1', size: 3, body: () => bytes('one') },
          { id: 'taken', size: 3, body: () => bytes('new') },
          { id: 'new-2', size: 3, body: () => bytes('two') },
        ],
        { namespace },
      );
      assert.deepEqual(results, { 'new-1': 'created', taken: 'blob_exists', 'new-2': 'created' });
      assert.equal(
        (await readAll((await client.get('taken', { namespace })).stream)).toString(),
        'old',
      );
    });

    it('reports missing blobs in a download and skips streams destroyed half-read', async () => {
      const namespace = `ns${serial++}`;
      const big = randomBytes(3 * MiB);
      await client.put('big', Readable.from([big]), big.length, { namespace });
      await client.put('after', bytes('after'), 5, { namespace });
      await client.put('unread', bytes('unread'), 6, { namespace });
      const entries: string[] = [];
      for await (const entry of client.streamDownload(['missing', 'big', 'unread', 'after'], {
        namespace,
      })) {
        if ('error' in entry) {
          entries.push(`${entry.id}:${entry.error}`);
        } else if (entry.id === 'big') {
          for await (const chunk of entry.stream) {
            assert.deepEqual(chunk, big.subarray(0, (chunk as Buffer).length));
            break;
          }
          entries.push('big:partial');
        } else if (entry.id === 'unread') {
          entries.push('unread:skipped');
        } else {
          entries.push(`${entry.id}:${(await readAll(entry.stream)).toString()}`);
        }
      }
      assert.deepEqual(entries, [
        'missing:not_found',
        'big:partial',
        'unread:skipped',
        'after:after',
      ]);
    });

    it('lets the caller stop a download early and keeps the client usable', async () => {
      const namespace = `ns${serial++}`;
      for (const id of ['s1', 's2', 's3']) await client.put(id, bytes(id), 2, { namespace });
      let held: Readable | undefined;
      for await (const entry of client.streamDownload(['s1', 's2', 's3'], { namespace })) {
        assert.equal(entry.id, 's1');
        if ('stream' in entry) held = entry.stream;
        break;
      }
      assert.equal(held?.destroyed, true);
      assert.deepEqual((await client.list({ namespace, orderBy: 'date' })).length, 3);
    });

    it('does nothing for empty batches', async () => {
      assert.deepEqual(await client.streamUpload([]), {});
      const entries: StreamDownloadEntry[] = [];
      for await (const entry of client.streamDownload([])) entries.push(entry);
      assert.deepEqual(entries, []);
    });

    it('refuses repeated ids before sending anything', async () => {
      await assert.rejects(
        client.streamUpload([
          { id: 'x', size: 1, body: () => bytes('a') },
          { id: 'x', size: 1, body: () => bytes('b') },
        ]),
        isRemote('invalid_request'),
      );
      await assert.rejects(client.streamDownload(['x', 'x']).next(), isRemote('invalid_request'));
    });
  });

  describe('large blobs', () => {
    it('streams 100 MB up and down with bounded memory', async () => {
      const size = 100 * MiB;
      // Chunks are distinct windows of one buffer: different bytes each, nothing allocated.
      const source = randomBytes(2 * MiB);
      const chunkAt = (i: number) => source.subarray((i * 7919) % MiB, ((i * 7919) % MiB) + MiB);
      const hashIn = createHash('sha256');
      const peak = { rss: 0, arrayBuffers: 0 };
      const sample = () => {
        const usage = process.memoryUsage();
        peak.rss = Math.max(peak.rss, usage.rss);
        peak.arrayBuffers = Math.max(peak.arrayBuffers, usage.arrayBuffers);
      };
      async function* body() {
        for (let i = 0; i < size / MiB; i++) {
          hashIn.update(chunkAt(i));
          sample();
          yield chunkAt(i);
        }
      }
      const id = freshId();
      const baseline = process.memoryUsage();
      await client.put(id, body(), size);
      const { size: got, stream } = await client.get(id);
      assert.equal(got, size);
      const hashOut = createHash('sha256');
      let received = 0;
      for await (const chunk of stream) {
        hashOut.update(chunk as Buffer);
        received += (chunk as Buffer).length;
        sample();
      }
      assert.equal(received, size);
      assert.equal(hashOut.digest('hex'), hashIn.digest('hex'));
      // Undici allocates a buffer per socket read; V8 collects them once ~32 MiB of them
      // piled up, and RSS keeps some of that (a bare undici request grows it by 50-75 MiB
      // here). A client holding the blob would add 100 MiB to both figures.
      const rss = peak.rss - baseline.rss;
      const buffers = peak.arrayBuffers - baseline.arrayBuffers;
      assert.ok(rss < 85 * MiB, `RSS grew by ${Math.round(rss / MiB)} MiB`);
      assert.ok(buffers < 48 * MiB, `buffers grew by ${Math.round(buffers / MiB)} MiB`);
    });
  });
});

describe('BlobsClient when the server misbehaves', () => {
  it('fails with network, retryable, when nothing listens', async () => {
    const raw = await rawServer((_req, res) => res.end());
    await raw.close();
    const client = new BlobsClient({ url: raw.url, uuid: 'u', token: 't' });
    try {
      await assert.rejects(client.list(), isRemote('network', { retryable: true }));
      await assert.rejects(client.put('a', bytes('abc'), 3), isRemote('network'));
    } finally {
      await client.close();
    }
  });

  it('fails with network when the connection is reset', async () => {
    const raw = await rawServer((req) => req.socket.destroy());
    const client = new BlobsClient({ url: raw.url, uuid: 'u', token: 't' });
    try {
      await assert.rejects(client.get('a'), isRemote('network', { status: undefined }));
    } finally {
      await client.close();
      await raw.close();
    }
  });

  it('fails with network when the headers do not come in time', async () => {
    const raw = await rawServer(() => undefined);
    const client = new BlobsClient({
      url: raw.url,
      uuid: 'u',
      token: 't',
      timeouts: { headers: 200 },
    });
    try {
      await assert.rejects(client.count(), isRemote('network', { retryable: true }));
    } finally {
      await client.close();
      await raw.close();
    }
  });

  it('fails a download with network when the connection drops inside a body', async () => {
    const raw = await rawServer((_req, res) => {
      res.writeHead(200);
      res.write('{"id":"a","size":1}\na{"id":"b","size":100}\nabc', () => res.socket?.destroy());
    });
    const client = new BlobsClient({ url: raw.url, uuid: 'u', token: 't' });
    try {
      const entries = client.streamDownload(['a', 'b']);
      const first = await entries.next();
      assert.ok(!first.done && 'stream' in first.value);
      assert.equal((await readAll(first.value.stream)).toString(), 'a');
      const second = await entries.next();
      assert.ok(!second.done && 'stream' in second.value);
      await assert.rejects(readAll(second.value.stream), isRemote('network', { retryable: true }));
      await assert.rejects(entries.next(), isRemote('network'));
    } finally {
      await client.close();
      await raw.close();
    }
  });

  it('maps each error status and code to its RemoteError', async () => {
    const cases: [number, string, string, boolean][] = [
      [400, 'invalid_request', 'invalid_request', false],
      [401, 'unauthorized', 'unauthorized', false],
      [403, 'forbidden', 'forbidden', false],
      [404, 'not_found', 'not_found', false],
      [406, 'invalid_flag', 'invalid_flag', false],
      [409, 'blob_exists', 'blob_exists', false],
      [409, 'blob_deleted', 'blob_deleted', false],
      [413, 'too_large', 'too_large', false],
      [416, 'range_not_satisfiable', 'range_not_satisfiable', false],
      [507, 'quota_exceeded', 'quota_exceeded', true],
      [500, 'internal', 'internal', true],
      [502, '', 'internal', true],
      [413, '', 'too_large', false],
      [409, '', 'invalid_response', false],
      [404, 'blob_exists', 'not_found', false],
      [418, 'teapot', 'invalid_response', false],
    ];
    let answer: [number, string] = [500, ''];
    const raw = await rawServer((_req, res) => {
      const [status, code] = answer;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(
        code === '' ? '<html>proxy page</html>' : JSON.stringify({ error: code, message: 'm' }),
      );
    });
    const client = new BlobsClient({ url: raw.url, uuid: 'u', token: 't' });
    try {
      for (const [status, code, expected, retryable] of cases) {
        answer = [status, code];
        await assert.rejects(
          client.get('a'),
          isRemote(expected, { status, retryable }),
          `${status} ${code}`,
        );
      }
    } finally {
      await client.close();
      await raw.close();
    }
  });

  it('fails with invalid_response for answers that break the contract', async () => {
    const answers: Record<string, (res: ServerResponse) => void> = {
      'not json': (res) => res.end('not json'),
      'bad ids': (res) => res.end(JSON.stringify(['ok', '../bad'])),
      'not an array': (res) => res.end(JSON.stringify({ ids: [] })),
      'bad count': (res) => res.end(JSON.stringify({ count: -1 })),
      'no length': (res) => {
        res.writeHead(200, { 'transfer-encoding': 'chunked' });
        res.end('abc');
      },
      'ignored range': (res) => res.end('abcdef'),
      'wrong range': (res) => {
        res.writeHead(206, { 'content-range': 'bytes 0-2/6', 'content-length': 3 });
        res.end('abc');
      },
      'stream truncated': (res) => {
        res.writeHead(200);
        res.end('{"id":"a","size":10}\nabc');
      },
      'stream out of order': (res) => {
        res.writeHead(200);
        res.end('{"id":"b","size":1}\nb{"id":"a","size":1}\na');
      },
      'stream short': (res) => {
        res.writeHead(200);
        res.end('{"id":"a","size":1}\na');
      },
      'upload answer incomplete': (res) => res.end(JSON.stringify({ a: 'created' })),
    };
    let current = 'not json';
    const raw = await rawServer((_req, res) => answers[current]!(res));
    const client = new BlobsClient({ url: raw.url, uuid: 'u', token: 't' });
    const downloadAll = async () => {
      for await (const entry of client.streamDownload(['a', 'b'])) {
        if ('stream' in entry) await readAll(entry.stream);
      }
    };
    const calls: Record<string, () => Promise<unknown>> = {
      'not json': () => client.list(),
      'bad ids': () => client.list(),
      'not an array': () => client.list(),
      'bad count': () => client.count(),
      'no length': () => client.get('a'),
      'ignored range': () => client.get('a', { range: { start: 3 } }),
      'wrong range': () => client.get('a', { range: { start: 1, end: 3 } }),
      'stream truncated': downloadAll,
      'stream out of order': downloadAll,
      'stream short': downloadAll,
      'upload answer incomplete': () =>
        client.streamUpload([
          { id: 'a', size: 1, body: () => bytes('a') },
          { id: 'b', size: 1, body: () => bytes('b') },
        ]),
    };
    try {
      for (const name of Object.keys(answers)) {
        current = name;
        await assert.rejects(
          calls[name]!(),
          isRemote('invalid_response', { retryable: false }),
          name,
        );
      }
    } finally {
      await client.close();
      await raw.close();
    }
  });
});
