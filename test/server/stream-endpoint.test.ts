import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  type DownloadEntry,
  decodeDownloadStream,
  encodeUploadManifest,
  encodeUploadStream,
  parseUploadResults,
} from '../../wire/stream.js';
import { type ServerProcess, type ServerUser, startServer } from '../helpers/server-process.js';
import { waitFor } from '../helpers/wait.js';
import { type HttpResponse, parseRawResponse, type RequestOptions, send } from './http-request.js';

async function* once(...chunks: Buffer[]) {
  yield* chunks;
}

async function collect(entries: AsyncIterable<DownloadEntry>) {
  const result: { id: string; bytes?: Buffer; error?: string }[] = [];
  for await (const entry of entries) {
    if ('error' in entry) {
      result.push({ id: entry.id, error: entry.error });
      continue;
    }
    const parts: Buffer[] = [];
    for await (const chunk of entry.body) parts.push(chunk);
    result.push({ id: entry.id, bytes: Buffer.concat(parts) });
  }
  return result;
}

describe('stream endpoint', () => {
  let server: ServerProcess;
  let user: ServerUser;
  let other: ServerUser;

  const api = (path: string, options: RequestOptions = {}): Promise<HttpResponse> =>
    send(server.url, path, { auth: user.authorization, ...options });
  const stream = (direction: string, body: RequestOptions['body'], query = '') =>
    api(`/stream/${user.uuid}?direction=${direction}${query}`, { method: 'POST', body });

  before(async () => {
    server = await startServer({ config: { max_blob_size: 1_000_000 } });
    [user, other] = await Promise.all([server.addUser({ quota: 3_000_000 }), server.addUser()]);
  });

  after(async () => {
    await server?.cleanup();
  });

  describe('download', () => {
    const big = randomBytes(300_000);

    before(async () => {
      await api(`/blobs/${user.uuid}/d-small`, { method: 'PUT', body: 'small blob' });
      await api(`/blobs/${user.uuid}/d-big`, { method: 'PUT', body: big });
      await api(`/blobs/${user.uuid}/d-empty`, { method: 'PUT', body: '' });
      await api(`/blobs/${user.uuid}/d-gone`, { method: 'PUT', body: 'gone' });
      await api(`/blobs/${user.uuid}/d-gone`, { method: 'DELETE' });
      await api(`/blobs/${user.uuid}/d-ns?namespace=side`, { method: 'PUT', body: 'side' });
    });

    it('sends per id in request order a header line and exactly its bytes, or not_found', async () => {
      const ids = ['d-big', 'd-missing', 'd-empty', 'd-gone', 'd-small'];
      const response = await stream('download', JSON.stringify(ids));
      assert.equal(response.status, 200);
      assert.equal(response.headers['content-type'], 'application/octet-stream');
      const entries = await collect(decodeDownloadStream(once(response.body)));
      assert.deepEqual(entries, [
        { id: 'd-big', bytes: big },
        { id: 'd-missing', error: 'not_found' },
        { id: 'd-empty', bytes: Buffer.alloc(0) },
        { id: 'd-gone', error: 'not_found' },
        { id: 'd-small', bytes: Buffer.from('small blob') },
      ]);
      const header = response.body.subarray(0, response.body.indexOf(10)).toString();
      assert.deepEqual(JSON.parse(header), { id: 'd-big', size: 300_000 });
    });

    it('reads the namespace from the query', async () => {
      const response = await stream('download', '["d-ns","d-small"]', '&namespace=side');
      const entries = await collect(decodeDownloadStream(once(response.body)));
      assert.deepEqual(entries, [
        { id: 'd-ns', bytes: Buffer.from('side') },
        { id: 'd-small', error: 'not_found' },
      ]);
    });

    it('answers 400 for the whole request when an id is invalid or repeated, or the body is not an id array', async () => {
      for (const body of [
        '["d-small","../x"]',
        '["d-small","d-small"]',
        '{"ids":[]}',
        'nope',
        '[3]',
        '',
      ]) {
        const response = await stream('download', body);
        assert.equal(response.status, 400, body);
        assert.equal(response.json<{ error: string }>().error, 'invalid_request');
      }
    });
  });

  describe('request checks', () => {
    it('requires direction to be download or upload', async () => {
      for (const query of [
        '',
        '?direction=sideways',
        '?direction=upload&direction=upload',
        '?direction=download&x=1',
      ]) {
        const response = await api(`/stream/${user.uuid}${query}`, { method: 'POST', body: '[]' });
        assert.equal(response.status, 400, query);
      }
    });

    it('checks credentials and ownership', async () => {
      const anonymous = await send(server.url, `/stream/${user.uuid}?direction=download`, {
        method: 'POST',
        body: '[]',
      });
      assert.equal(anonymous.status, 401);
      const foreign = await send(server.url, `/stream/${user.uuid}?direction=download`, {
        method: 'POST',
        body: '[]',
        auth: other.authorization,
      });
      assert.equal(foreign.status, 403);
      const wrongMethod = await api(`/stream/${user.uuid}?direction=download`);
      assert.equal(wrongMethod.status, 405);
    });
  });

  describe('upload', () => {
    it('stores every blob of the stream and answers created per id', async () => {
      const blobs = [
        { id: 'u-1', bytes: randomBytes(70_000) },
        { id: 'u-empty', bytes: Buffer.alloc(0) },
        { id: 'u-2', bytes: Buffer.from('second') },
      ];
      const body = encodeUploadStream(
        blobs.map(({ id, bytes }) => ({ id, size: bytes.length, body: () => once(bytes) })),
      );
      const response = await stream('upload', body);
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(parseUploadResults(response.text), {
        'u-1': 'created',
        'u-empty': 'created',
        'u-2': 'created',
      });
      for (const { id, bytes } of blobs)
        assert.deepEqual((await api(`/blobs/${user.uuid}/${id}`)).body, bytes);
    });

    it('answers a per-id error for refused blobs and still stores the ones after them', async () => {
      await api(`/blobs/${user.uuid}/u-exists`, { method: 'PUT', body: 'old' });
      await api(`/blobs/${user.uuid}/u-deleted`, { method: 'PUT', body: 'old' });
      await api(`/blobs/${user.uuid}/u-deleted`, { method: 'DELETE' });
      const blobs = [
        { id: 'u-exists', bytes: Buffer.from('new bytes') },
        { id: 'u-after-1', bytes: Buffer.from('after one') },
        { id: 'u-deleted', bytes: Buffer.from('resurrect') },
        { id: 'u-too-large', bytes: Buffer.alloc(1_000_001, 1) },
        { id: 'u-after-2', bytes: Buffer.from('after two') },
      ];
      const body = encodeUploadStream(
        blobs.map(({ id, bytes }) => ({ id, size: bytes.length, body: () => once(bytes) })),
      );
      const response = await stream('upload', body);
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(response.json(), {
        'u-exists': 'blob_exists',
        'u-after-1': 'created',
        'u-deleted': 'blob_deleted',
        'u-too-large': 'too_large',
        'u-after-2': 'created',
      });
      assert.equal((await api(`/blobs/${user.uuid}/u-exists`)).text, 'old');
      assert.equal((await api(`/blobs/${user.uuid}/u-after-2`)).text, 'after two');
    });

    it('applies the quota to each blob of the stream', async () => {
      const tight = await server.addUser({ quota: 100 });
      const body = encodeUploadStream([
        { id: 'q-1', size: 60, body: () => once(Buffer.alloc(60)) },
        { id: 'q-2', size: 60, body: () => once(Buffer.alloc(60)) },
        { id: 'q-3', size: 40, body: () => once(Buffer.alloc(40)) },
      ]);
      const response = await send(server.url, `/stream/${tight.uuid}?direction=upload`, {
        method: 'POST',
        body,
        auth: tight.authorization,
      });
      assert.deepEqual(response.json(), {
        'q-1': 'created',
        'q-2': 'quota_exceeded',
        'q-3': 'created',
      });
    });

    it('answers 400 and stores nothing when the manifest has an invalid or repeated id', async () => {
      for (const manifest of [
        '[["v-1",1],["v-1",1]]',
        '[["v-1",1],["v/2",1]]',
        '[["v-1",-1]]',
        '[["v-1"]]',
        '{}',
      ]) {
        const response = await stream(
          'upload',
          Buffer.concat([Buffer.from(`${manifest}\n`), Buffer.from('ab')]),
        );
        assert.equal(response.status, 400, manifest);
      }
      assert.equal((await api(`/blobs/${user.uuid}/v-1`)).status, 404);
    });

    it('answers 400 for bytes after the last declared body', async () => {
      const body = Buffer.concat([
        encodeUploadManifest([{ id: 't-1', size: 2 }]),
        Buffer.from('abEXTRA'),
      ]);
      const response = await stream('upload', body);
      assert.equal(response.status, 400);
    });

    it('reports blobs after a body that ended early as invalid_request and keeps the complete ones', async () => {
      const body = once(
        encodeUploadManifest([
          { id: 'e-1', size: 3 },
          { id: 'e-2', size: 10 },
          { id: 'e-3', size: 3 },
        ]),
        Buffer.from('abc'),
        Buffer.from('short'),
      );
      const response = await stream('upload', body);
      assert.equal(response.status, 200);
      assert.deepEqual(response.json(), {
        'e-1': 'created',
        'e-2': 'invalid_request',
        'e-3': 'invalid_request',
      });
      assert.equal((await api(`/blobs/${user.uuid}/e-1`)).text, 'abc');
      assert.equal((await api(`/blobs/${user.uuid}/e-2`)).status, 404);
    });

    it('keeps the blobs fully received before the connection was cut, and nothing of the cut one', async () => {
      const url = new URL(server.url);
      const socket = connect({ host: url.hostname, port: Number(url.port) });
      await new Promise((resolve) => socket.once('connect', resolve));
      const manifest = encodeUploadManifest([
        { id: 'c-1', size: 5 },
        { id: 'c-2', size: 5 },
        { id: 'c-3', size: 100_000 },
        { id: 'c-4', size: 5 },
      ]);
      socket.write(
        `POST /stream/${user.uuid}?direction=upload HTTP/1.1\r\nHost: test\r\n` +
          `Authorization: ${user.authorization}\r\nTransfer-Encoding: chunked\r\n\r\n`,
      );
      const chunk = (data: Buffer | string) => {
        const bytes = Buffer.from(data);
        socket.write(`${bytes.length.toString(16)}\r\n`);
        socket.write(bytes);
        socket.write('\r\n');
      };
      chunk(manifest);
      chunk('11111');
      chunk('22222');
      chunk(Buffer.alloc(50_000, 3));
      await waitFor(async () => (await api(`/blobs/${user.uuid}/c-2`)).status === 200, {
        what: 'the second blob of the stream to be stored',
      });
      socket.destroy();
      await waitFor(
        () =>
          server
            .logs()
            .some((line) => String(line.route).startsWith('/stream/') && line.aborted === true),
        { what: 'the cut stream request to end' },
      );
      assert.equal((await api(`/blobs/${user.uuid}/c-1`)).text, '11111');
      assert.equal((await api(`/blobs/${user.uuid}/c-2`)).text, '22222');
      assert.equal((await api(`/blobs/${user.uuid}/c-3`)).status, 404);
      assert.equal((await api(`/blobs/${user.uuid}/c-4`)).status, 404);
      const retry = await api(`/blobs/${user.uuid}/c-3`, {
        method: 'PUT',
        body: Buffer.alloc(100_000),
      });
      assert.equal(retry.status, 200);
    });

    it('refuses a blob of the stream deleted before its body arrived with blob_deleted', async () => {
      const url = new URL(server.url);
      const socket = connect({ host: url.hostname, port: Number(url.port) });
      await new Promise((resolve) => socket.once('connect', resolve));
      const received: Buffer[] = [];
      socket.on('data', (data: Buffer) => received.push(data));
      socket.write(
        `POST /stream/${user.uuid}?direction=upload HTTP/1.1\r\nHost: test\r\n` +
          `Authorization: ${user.authorization}\r\nTransfer-Encoding: chunked\r\n` +
          'Connection: close\r\n\r\n',
      );
      const chunk = (data: Buffer | string) => {
        const bytes = Buffer.from(data);
        socket.write(`${bytes.length.toString(16)}\r\n`);
        socket.write(bytes);
        socket.write('\r\n');
      };
      chunk(
        encodeUploadManifest([
          { id: 'd-1', size: 5 },
          { id: 'd-2', size: 5 },
        ]),
      );
      chunk('11111');
      await waitFor(async () => (await api(`/blobs/${user.uuid}/d-1`)).status === 200, {
        what: 'the first blob of the stream to be stored',
      });
      // d-2 is announced by the manifest but its body has not come yet.
      assert.equal((await api(`/blobs/${user.uuid}/d-2`, { method: 'DELETE' })).status, 200);
      chunk('22222');
      socket.write('0\r\n\r\n');
      await new Promise((resolve) => socket.once('close', resolve));
      const response = parseRawResponse(Buffer.concat(received));
      assert.equal(response.status, 200);
      assert.deepEqual(response.json(), { 'd-1': 'created', 'd-2': 'blob_deleted' });
      assert.equal((await api(`/blobs/${user.uuid}/d-2`)).status, 404);
    });
  });
});
