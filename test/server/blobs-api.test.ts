import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { encodeTokenAuth } from '../../wire/auth.js';
import { type ServerProcess, type ServerUser, startServer } from '../helpers/server-process.js';
import { type HttpResponse, type RequestOptions, send } from './http-request.js';

function assertError(response: HttpResponse, status: number, code: string): void {
  assert.equal(response.status, status, response.text);
  assert.match(String(response.headers['content-type']), /application\/json/);
  const body = response.json<{ error: string; message: string }>();
  assert.equal(body.error, code);
  assert.equal(typeof body.message, 'string');
}

describe('blobs HTTP API', () => {
  let server: ServerProcess;
  let alice: ServerUser;
  let bob: ServerUser;
  let small: ServerUser;

  const as =
    (user: ServerUser) =>
    (path: string, options: RequestOptions = {}) =>
      send(server.url, path, { auth: user.authorization, ...options });

  before(async () => {
    server = await startServer({ config: { max_blob_size: 4096 } });
    [alice, bob, small] = await Promise.all([
      server.addUser(),
      server.addUser(),
      server.addUser({ quota: 100 }),
    ]);
  });

  after(async () => {
    await server?.cleanup();
  });

  describe('anonymous endpoints', () => {
    it('answers GET / with the server name and version only', async () => {
      const response = await send(server.url, '/');
      assert.equal(response.status, 200);
      const info = response.json<Record<string, unknown>>();
      assert.deepEqual(Object.keys(info).sort(), ['name', 'version']);
      assert.equal(info.name, 'soledad');
      assert.equal(typeof info.version, 'string');
    });

    it('answers GET /health without credentials', async () => {
      const response = await send(server.url, '/health');
      assert.equal(response.status, 200);
      assert.deepEqual(response.json(), { status: 'ok' });
    });

    it('answers 404 for an unknown endpoint and 405 with Allow for a wrong method', async () => {
      assertError(await send(server.url, '/nowhere'), 404, 'not_found');
      const wrong = await as(alice)(`/blobs/${alice.uuid}/x`, { method: 'PATCH' });
      assert.equal(wrong.status, 405);
      assert.equal(wrong.json<{ error: string }>().error, 'invalid_request');
      assert.match(String(wrong.headers.allow), /PUT/);
    });
  });

  describe('authentication and check order', () => {
    it('refuses missing, malformed, unknown and wrong credentials with 401', async () => {
      const path = `/blobs/${alice.uuid}`;
      const missing = await send(server.url, path);
      assertError(missing, 401, 'unauthorized');
      assert.match(String(missing.headers['www-authenticate']), /^Token/);
      for (const auth of [
        'Token !!!',
        `Bearer ${alice.token}`,
        encodeTokenAuth(alice.uuid, `${alice.token}x`),
        encodeTokenAuth(alice.uuid, bob.token),
        encodeTokenAuth('nobody', alice.token),
      ]) {
        assertError(await send(server.url, path, { auth }), 401, 'unauthorized');
      }
    });

    it("refuses another user's paths with 403 for every method", async () => {
      const api = as(alice);
      await as(bob)(`/blobs/${bob.uuid}/mine`, { method: 'PUT', body: 'bob' });
      assertError(await api(`/blobs/${bob.uuid}`), 403, 'forbidden');
      assertError(await api(`/blobs/${bob.uuid}/mine`), 403, 'forbidden');
      assertError(
        await api(`/blobs/${bob.uuid}/x`, { method: 'PUT', body: 'x' }),
        403,
        'forbidden',
      );
      assertError(
        await api(`/blobs/${bob.uuid}/mine`, { method: 'POST', body: '[]' }),
        403,
        'forbidden',
      );
      assertError(await api(`/blobs/${bob.uuid}/mine`, { method: 'DELETE' }), 403, 'forbidden');
      assertError(
        await api(`/stream/${bob.uuid}?direction=download`, { method: 'POST', body: '["mine"]' }),
        403,
        'forbidden',
      );
      assert.equal((await as(bob)(`/blobs/${bob.uuid}/mine`)).text, 'bob');
    });

    it('answers 400 for an invalid uuid even with a valid token', async () => {
      assertError(await as(alice)('/blobs/not.a.uuid'), 400, 'invalid_request');
      assertError(await as(alice)('/blobs/not.a.uuid/x'), 400, 'invalid_request');
    });

    it('checks syntax before credentials, credentials before ownership, ownership before the operation', async () => {
      assertError(
        await send(server.url, `/blobs/${alice.uuid}?order_by=size`),
        400,
        'invalid_request',
      );
      assertError(await send(server.url, `/blobs/${bob.uuid}/missing`), 401, 'unauthorized');
      assertError(await as(alice)(`/blobs/${bob.uuid}/missing`), 403, 'forbidden');
      assertError(await as(alice)(`/blobs/${alice.uuid}/missing`), 404, 'not_found');
    });
  });

  describe('blob lifecycle', () => {
    it('stores a blob with PUT and returns its exact bytes with GET', async () => {
      const api = as(alice);
      const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
      const put = await api(`/blobs/${alice.uuid}/life-1`, { method: 'PUT', body: bytes });
      assert.equal(put.status, 200);
      assert.deepEqual(put.json(), { id: 'life-1', size: 3000 });
      const get = await api(`/blobs/${alice.uuid}/life-1`);
      assert.equal(get.status, 200);
      assert.equal(get.headers['content-type'], 'application/octet-stream');
      assert.equal(get.headers['content-length'], '3000');
      assert.deepEqual(get.body, bytes);
    });

    it('accepts a chunked upload', async () => {
      async function* chunks() {
        yield Buffer.from('chunk-one ');
        yield Buffer.from('chunk-two');
      }
      const api = as(alice);
      const put = await api(`/blobs/${alice.uuid}/chunked`, { method: 'PUT', body: chunks() });
      assert.equal(put.status, 200, put.text);
      assert.equal((await api(`/blobs/${alice.uuid}/chunked`)).text, 'chunk-one chunk-two');
    });

    it('stores an empty blob', async () => {
      const api = as(alice);
      assert.equal(
        (await api(`/blobs/${alice.uuid}/empty-0`, { method: 'PUT', body: '' })).status,
        200,
      );
      const get = await api(`/blobs/${alice.uuid}/empty-0`);
      assert.equal(get.status, 200);
      assert.equal(get.body.length, 0);
    });

    it('refuses a PUT of an existing id with 409 blob_exists and keeps the first bytes', async () => {
      const api = as(alice);
      await api(`/blobs/${alice.uuid}/twice`, { method: 'PUT', body: 'first' });
      assertError(
        await api(`/blobs/${alice.uuid}/twice`, { method: 'PUT', body: 'second' }),
        409,
        'blob_exists',
      );
      assert.equal((await api(`/blobs/${alice.uuid}/twice`)).text, 'first');
    });

    it('deletes a blob, then answers 404 for it and 409 blob_deleted for a new PUT', async () => {
      const api = as(alice);
      await api(`/blobs/${alice.uuid}/doomed`, { method: 'PUT', body: 'bye' });
      const deleted = await api(`/blobs/${alice.uuid}/doomed`, { method: 'DELETE' });
      assert.equal(deleted.status, 200);
      assertError(await api(`/blobs/${alice.uuid}/doomed`), 404, 'not_found');
      assertError(await api(`/blobs/${alice.uuid}/doomed?only_flags=true`), 404, 'not_found');
      assertError(await api(`/blobs/${alice.uuid}/doomed`, { method: 'DELETE' }), 404, 'not_found');
      assertError(
        await api(`/blobs/${alice.uuid}/doomed`, { method: 'POST', body: '[]' }),
        404,
        'not_found',
      );
      assertError(
        await api(`/blobs/${alice.uuid}/doomed`, { method: 'PUT', body: 'again' }),
        409,
        'blob_deleted',
      );
    });

    it('answers 404 for GET, POST and DELETE of an id never stored', async () => {
      const api = as(alice);
      assertError(await api(`/blobs/${alice.uuid}/never`), 404, 'not_found');
      assertError(
        await api(`/blobs/${alice.uuid}/never`, { method: 'POST', body: '["PENDING"]' }),
        404,
        'not_found',
      );
      assertError(await api(`/blobs/${alice.uuid}/never`, { method: 'DELETE' }), 404, 'not_found');
    });

    it('keeps namespaces apart', async () => {
      const api = as(alice);
      await api(`/blobs/${alice.uuid}/ns-blob?namespace=photos`, {
        method: 'PUT',
        body: 'in photos',
      });
      assertError(await api(`/blobs/${alice.uuid}/ns-blob`), 404, 'not_found');
      assert.equal((await api(`/blobs/${alice.uuid}/ns-blob?namespace=photos`)).text, 'in photos');
      const put = await api(`/blobs/${alice.uuid}/ns-blob`, { method: 'PUT', body: 'in default' });
      assert.equal(put.status, 200);
    });

    it('answers HEAD with the size and no body', async () => {
      const api = as(alice);
      await api(`/blobs/${alice.uuid}/head-1`, { method: 'PUT', body: '12345' });
      const head = await api(`/blobs/${alice.uuid}/head-1`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], '5');
      assert.equal(head.body.length, 0);
    });
  });

  describe('sizes and quota', () => {
    it('refuses a body over the maximum blob size with 413, by Content-Length or chunked', async () => {
      const api = as(alice);
      const big = Buffer.alloc(4097, 1);
      assertError(
        await api(`/blobs/${alice.uuid}/big-1`, { method: 'PUT', body: big }),
        413,
        'too_large',
      );
      async function* chunks() {
        yield big.subarray(0, 2000);
        yield big.subarray(2000);
      }
      assertError(
        await api(`/blobs/${alice.uuid}/big-2`, { method: 'PUT', body: chunks() }),
        413,
        'too_large',
      );
      assertError(await api(`/blobs/${alice.uuid}/big-1`), 404, 'not_found');
      assertError(await api(`/blobs/${alice.uuid}/big-2`), 404, 'not_found');
      const exact = await api(`/blobs/${alice.uuid}/big-3`, {
        method: 'PUT',
        body: big.subarray(1),
      });
      assert.equal(exact.status, 200);
    });

    it('refuses a PUT over the quota with 507 and frees usage on DELETE at once', async () => {
      const api = as(small);
      const base = `/blobs/${small.uuid}`;
      assert.equal(
        (await api(`${base}/q-1`, { method: 'PUT', body: Buffer.alloc(60) })).status,
        200,
      );
      assertError(
        await api(`${base}/q-2`, { method: 'PUT', body: Buffer.alloc(41) }),
        507,
        'quota_exceeded',
      );
      async function* chunked() {
        yield Buffer.alloc(41);
      }
      assertError(
        await api(`${base}/q-3`, { method: 'PUT', body: chunked() }),
        507,
        'quota_exceeded',
      );
      assert.equal(
        (await api(`${base}/q-4`, { method: 'PUT', body: Buffer.alloc(40) })).status,
        200,
      );
      assert.equal((await api(`${base}/q-1`, { method: 'DELETE' })).status, 200);
      assert.equal(
        (await api(`${base}/q-2`, { method: 'PUT', body: Buffer.alloc(60) })).status,
        200,
      );
      assert.deepEqual((await api(`${base}?only_count=true`)).json(), { count: 2 });
    });
  });

  describe('flags', () => {
    it('replaces the flag set with POST and reads it with only_flags', async () => {
      const api = as(alice);
      const path = `/blobs/${alice.uuid}/flagged`;
      await api(path, { method: 'PUT', body: 'f' });
      assert.deepEqual((await api(`${path}?only_flags=true`)).json(), []);
      const set = await api(path, { method: 'POST', body: '["PENDING","PROCESSING"]' });
      assert.equal(set.status, 200);
      assert.deepEqual((await api(`${path}?only_flags=true`)).json<string[]>().sort(), [
        'PENDING',
        'PROCESSING',
      ]);
      await api(path, { method: 'POST', body: '["PROCESSED"]' });
      assert.deepEqual((await api(`${path}?only_flags=true`)).json(), ['PROCESSED']);
      await api(path, { method: 'POST', body: '[]' });
      assert.deepEqual((await api(`${path}?only_flags=true`)).json(), []);
    });

    it('refuses an unknown flag with 406 and a body that is not an array of strings with 400, changing nothing', async () => {
      const api = as(alice);
      const path = `/blobs/${alice.uuid}/flag-guard`;
      await api(path, { method: 'PUT', body: 'g' });
      await api(path, { method: 'POST', body: '["FAILED"]' });
      assertError(
        await api(path, { method: 'POST', body: '["FAILED","EXPLODED"]' }),
        406,
        'invalid_flag',
      );
      assertError(await api(path, { method: 'POST', body: '["pending"]' }), 406, 'invalid_flag');
      for (const body of [
        '',
        'PENDING',
        '"PENDING"',
        '{"flags":[]}',
        '[1]',
        '["PENDING",null]',
        '[["PENDING"]]',
      ]) {
        assertError(await api(path, { method: 'POST', body }), 400, 'invalid_request');
      }
      assertError(
        await api(path, { method: 'POST', body: `[${'"PENDING",'.repeat(2000)}"PENDING"]` }),
        413,
        'too_large',
      );
      assert.deepEqual((await api(`${path}?only_flags=true`)).json(), ['FAILED']);
    });
  });

  describe('listing', () => {
    let lister: ServerUser;
    const ids = ['l-c', 'l-a', 'l-d', 'l-b'];

    before(async () => {
      lister = await server.addUser();
      const api = as(lister);
      for (const id of ids) {
        const response = await api(`/blobs/${lister.uuid}/${id}`, { method: 'PUT', body: id });
        assert.equal(response.status, 200);
      }
      await api(`/blobs/${lister.uuid}/l-a`, { method: 'POST', body: '["PENDING"]' });
      await api(`/blobs/${lister.uuid}/l-d`, { method: 'POST', body: '["PENDING","FAILED"]' });
      await api(`/blobs/${lister.uuid}/l-b`, { method: 'DELETE' });
      await api(`/blobs/${lister.uuid}/other?namespace=elsewhere`, { method: 'PUT', body: 'x' });
    });

    it('lists the live ids of the default namespace, with or without a trailing slash', async () => {
      const api = as(lister);
      const plain = (await api(`/blobs/${lister.uuid}`)).json<string[]>();
      assert.deepEqual([...plain].sort(), ['l-a', 'l-c', 'l-d']);
      const slashed = (await api(`/blobs/${lister.uuid}/`)).json<string[]>();
      assert.deepEqual([...slashed].sort(), ['l-a', 'l-c', 'l-d']);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?namespace=elsewhere`)).json(), ['other']);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?namespace=unused`)).json(), []);
    });

    it('orders by upload time, oldest first for date and +date in every spelling, newest first for -date', async () => {
      const api = as(lister);
      const oldestFirst = ['l-c', 'l-a', 'l-d'];
      assert.deepEqual((await api(`/blobs/${lister.uuid}?order_by=date`)).json(), oldestFirst);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?order_by=%2Bdate`)).json(), oldestFirst);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?order_by=+date`)).json(), oldestFirst);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?order_by=%20date`)).json(), oldestFirst);
      assert.deepEqual(
        (await api(`/blobs/${lister.uuid}?order_by=-date`)).json(),
        [...oldestFirst].reverse(),
      );
    });

    it('filters by flag, lists tombstones with deleted=true and counts with only_count=true', async () => {
      const api = as(lister);
      const pending = (await api(`/blobs/${lister.uuid}?filter_flag=PENDING`)).json<string[]>();
      assert.deepEqual([...pending].sort(), ['l-a', 'l-d']);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?filter_flag=FAILED`)).json(), ['l-d']);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?deleted=true`)).json(), ['l-b']);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?deleted=false&order_by=date`)).json(), [
        'l-c',
        'l-a',
        'l-d',
      ]);
      assert.deepEqual((await api(`/blobs/${lister.uuid}?only_count=true`)).json(), { count: 3 });
      assert.deepEqual((await api(`/blobs/${lister.uuid}?only_count=true&deleted=true`)).json(), {
        count: 1,
      });
      assert.deepEqual(
        (await api(`/blobs/${lister.uuid}?only_count=true&filter_flag=PENDING`)).json(),
        { count: 2 },
      );
      assert.deepEqual(
        (await api(`/blobs/${lister.uuid}?only_count=false`)).json<string[]>().length,
        3,
      );
    });

    it('refuses malformed query fields with 400', async () => {
      const api = as(lister);
      const base = `/blobs/${lister.uuid}`;
      for (const query of [
        'order_by=size',
        'order_by=DATE',
        'order_by=date&order_by=date',
        'filter_flag=DONE',
        'filter_flag=pending',
        'deleted=1',
        'deleted=yes',
        'deleted=True',
        'deleted=',
        'deleted',
        'only_count=TRUE',
        'namespace=a.b',
        'namespace=',
        'namespace=a%2Fb',
        'namespace=x&namespace=y',
        'colour=blue',
        'order_by=%ZZ',
      ]) {
        assertError(await api(`${base}?${query}`), 400, 'invalid_request');
      }
      assertError(await api(`${base}/l-a?only_flags=1`), 400, 'invalid_request');
      assertError(await api(`${base}/l-a?only_flags=true&only_flags=true`), 400, 'invalid_request');
      assertError(await api(`${base}/l-a?order_by=date`), 400, 'invalid_request');
    });
  });

  describe('ranges', () => {
    let path: string;
    let emptyPath: string;

    before(async () => {
      path = `/blobs/${alice.uuid}/ranged`;
      emptyPath = `/blobs/${alice.uuid}/ranged-empty`;
      await as(alice)(path, { method: 'PUT', body: '0123456789' });
      await as(alice)(emptyPath, { method: 'PUT', body: '' });
    });

    const get = (target: string, range: string) => as(alice)(target, { headers: { range } });

    it('answers a satisfiable range with 206, Content-Range and the inclusive bytes', async () => {
      const cases: [string, string, string][] = [
        ['bytes=2-5', '2345', 'bytes 2-5/10'],
        ['bytes=0-0', '0', 'bytes 0-0/10'],
        ['bytes=7-', '789', 'bytes 7-9/10'],
        ['bytes=-3', '789', 'bytes 7-9/10'],
        ['bytes=5-100', '56789', 'bytes 5-9/10'],
        ['bytes=-20', '0123456789', 'bytes 0-9/10'],
        ['bytes=9-9', '9', 'bytes 9-9/10'],
        ['BYTES=1-2', '12', 'bytes 1-2/10'],
      ];
      for (const [range, body, contentRange] of cases) {
        const response = await get(path, range);
        assert.equal(response.status, 206, range);
        assert.equal(response.text, body, range);
        assert.equal(response.headers['content-range'], contentRange, range);
        assert.equal(response.headers['content-length'], String(body.length), range);
      }
    });

    it('answers an unsatisfiable range with 416 and Content-Range bytes */size', async () => {
      for (const range of ['bytes=10-', 'bytes=10-20', 'bytes=99999999999999999999-', 'bytes=-0']) {
        const response = await get(path, range);
        assertError(response, 416, 'range_not_satisfiable');
        assert.equal(response.headers['content-range'], 'bytes */10', range);
      }
    });

    it('ignores a syntactically invalid or multi-range Range and sends the whole blob', async () => {
      for (const range of [
        'bytes=5-2',
        'bytes=abc',
        'items=0-1',
        'bytes=1-2,4-5',
        'bytes=',
        'bytes=--1',
        'bytes 1-2',
      ]) {
        const response = await get(path, range);
        assert.equal(response.status, 200, range);
        assert.equal(response.text, '0123456789', range);
        assert.equal(response.headers['content-range'], undefined, range);
      }
    });

    it('answers 416 for any range of an empty blob', async () => {
      for (const range of ['bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=-0']) {
        const response = await get(emptyPath, range);
        assertError(response, 416, 'range_not_satisfiable');
        assert.equal(response.headers['content-range'], 'bytes */0', range);
      }
      const whole = await as(alice)(emptyPath);
      assert.equal(whole.status, 200);
      assert.equal(whole.body.length, 0);
    });
  });
});
