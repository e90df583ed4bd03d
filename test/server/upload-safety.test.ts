import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type ServerProcess, type ServerUser, startServer } from '../helpers/server-process.js';
import { waitFor } from '../helpers/wait.js';
import { type HttpResponse, parseRawResponse, send } from './http-request.js';

function openSocket(baseUrl: string): Promise<Socket> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function putHead(path: string, user: ServerUser, length: number, extra = ''): string {
  return (
    `PUT ${path} HTTP/1.1\r\nHost: test\r\nAuthorization: ${user.authorization}\r\n` +
    `Content-Length: ${length}\r\n${extra}\r\n`
  );
}

/**
 * Opens a raw PUT with `Expect: 100-continue` and resolves once the server answered
 * `100 Continue`, which it does when storage starts reading the body. Later bytes the
 * server sends are collected in `received`.
 */
async function startUpload(
  server: ServerProcess,
  path: string,
  user: ServerUser,
  length: number,
): Promise<{ socket: Socket; received: Buffer[] }> {
  const socket = await openSocket(server.url);
  const received: Buffer[] = [];
  let continued: () => void;
  const ready = new Promise<void>((resolve) => {
    continued = resolve;
  });
  socket.on('data', (chunk: Buffer) => {
    const text = chunk.toString('latin1');
    if (text.startsWith('HTTP/1.1 100')) {
      const rest = chunk.subarray(chunk.indexOf('\r\n\r\n') + 4);
      if (rest.length > 0) received.push(rest);
      continued();
    } else {
      received.push(chunk);
    }
  });
  socket.write(putHead(path, user, length, 'Expect: 100-continue\r\nConnection: close\r\n'));
  await ready;
  return { socket, received };
}

/** Resolves once the server logged the end of a request for `blobId` (its effects are done). */
function requestLogged(
  server: ServerProcess,
  method: string,
  blobId: string,
  count = 1,
): Promise<unknown> {
  return waitFor(
    () =>
      server.logs().filter((line) => line.method === method && line.blobId === blobId).length >=
      count,
    { what: `the log line of ${method} ${blobId}` },
  );
}

/**
 * Sends a PUT with a large body through node:http without waiting for the server, and
 * resolves with the status the client received (or the error it saw first).
 */
function putLarge(
  server: ServerProcess,
  path: string,
  user: ServerUser,
  size: number,
  headers: Record<string, string> = {},
): Promise<{ status?: number; body?: string; error?: Error; continued: boolean }> {
  const url = new URL(server.url);
  return new Promise((resolve) => {
    let continued = false;
    const req = request({
      host: url.hostname,
      port: url.port,
      path,
      method: 'PUT',
      agent: false,
      headers: { authorization: user.authorization, 'content-length': size, ...headers },
    });
    const chunk = Buffer.alloc(64 * 1024, 7);
    let sent = 0;
    const pump = (): void => {
      while (sent < size) {
        const piece = chunk.subarray(0, Math.min(chunk.length, size - sent));
        sent += piece.length;
        if (!req.write(piece)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    req.once('continue', () => {
      continued = true;
      pump();
    });
    req.once('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (part: Buffer) => parts.push(part));
      res.once('end', () =>
        resolve({ status: res.statusCode, body: Buffer.concat(parts).toString(), continued }),
      );
      res.once('error', () =>
        resolve({ status: res.statusCode, body: Buffer.concat(parts).toString(), continued }),
      );
    });
    req.once('error', (error) => resolve({ error, continued }));
    if (headers.expect === undefined) pump();
  });
}

describe('upload safety', () => {
  let server: ServerProcess;
  let user: ServerUser;

  before(async () => {
    server = await startServer({ config: { max_blob_size: 64 * 1024 * 1024 } });
    user = await server.addUser({ quota: 32 * 1024 * 1024 });
  });

  after(async () => {
    await server?.cleanup();
  });

  const api = (path: string, options: Parameters<typeof send>[2] = {}): Promise<HttpResponse> =>
    send(server.url, path, { auth: user.authorization, ...options });

  describe('refusals before the body', () => {
    it('delivers a 409 to a client still sending a large body', async () => {
      const path = `/blobs/${user.uuid}/early-409`;
      assert.equal((await api(path, { method: 'PUT', body: 'x' })).status, 200);
      const result = await putLarge(server, path, user, 24 * 1024 * 1024);
      assert.equal(result.status, 409, String(result.error));
      assert.equal(JSON.parse(result.body!).error, 'blob_exists');
    });

    it('delivers a 413 for a Content-Length over the maximum without reading the body', async () => {
      const result = await putLarge(
        server,
        `/blobs/${user.uuid}/early-413`,
        user,
        65 * 1024 * 1024,
      );
      assert.equal(result.status, 413, String(result.error));
      assert.equal(JSON.parse(result.body!).error, 'too_large');
    });

    it('delivers a 507 for a Content-Length over the quota and a 401 for bad credentials', async () => {
      const over = await putLarge(server, `/blobs/${user.uuid}/early-507`, user, 33 * 1024 * 1024);
      assert.equal(over.status, 507, String(over.error));
      const stranger = { ...user, authorization: 'Token AAAA' };
      const denied = await putLarge(
        server,
        `/blobs/${user.uuid}/early-401`,
        stranger,
        8 * 1024 * 1024,
      );
      assert.equal(denied.status, 401, String(denied.error));
    });

    it('answers Expect: 100-continue with the final status when it refuses, and with 100 when it accepts', async () => {
      const path = `/blobs/${user.uuid}/expecting`;
      const accepted = await putLarge(server, path, user, 1024 * 1024, { expect: '100-continue' });
      assert.equal(accepted.status, 200);
      assert.equal(accepted.continued, true);
      const refused = await putLarge(server, path, user, 1024 * 1024, { expect: '100-continue' });
      assert.equal(refused.status, 409);
      assert.equal(refused.continued, false);
      const bytes = await api(path);
      assert.equal(bytes.body.length, 1024 * 1024);
    });

    it('keeps the connection open after a refused PUT whose body had fully arrived', async () => {
      const path = `/blobs/${user.uuid}/drained`;
      await api(path, { method: 'PUT', body: 'one' });
      const socket = await openSocket(server.url);
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.write(putHead(path, user, 5) + 'abcde');
      socket.write(`GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n`);
      await new Promise((resolve) => socket.once('close', resolve));
      const text = Buffer.concat(received).toString();
      assert.match(text, /^HTTP\/1\.1 409/);
      assert.match(text, /HTTP\/1\.1 200[\s\S]*"status":"ok"/);
    });
  });

  describe('atomicity', () => {
    it('leaves nothing and charges nothing for an upload cut short', async () => {
      const tight = await server.addUser({ quota: 1000 });
      const path = `/blobs/${tight.uuid}/cut-1`;
      const { socket } = await startUpload(server, path, tight, 1000);
      await new Promise((resolve) => socket.write(Buffer.alloc(500, 1), resolve));
      socket.destroy();
      await requestLogged(server, 'PUT', 'cut-1');
      const tightApi = (p: string, o: Parameters<typeof send>[2] = {}) =>
        send(server.url, p, { auth: tight.authorization, ...o });
      assert.equal((await tightApi(path)).status, 404);
      assert.deepEqual((await tightApi(`/blobs/${tight.uuid}?only_count=true`)).json(), {
        count: 0,
      });
      const full = await tightApi(path, { method: 'PUT', body: Buffer.alloc(1000, 2) });
      assert.equal(full.status, 200, full.text);
    });

    it('survives clients that go away in the middle of a large download', async () => {
      const path = `/blobs/${user.uuid}/read-and-dropped`;
      const body = randomBytes(8 * 1024 * 1024);
      assert.equal((await api(path, { method: 'PUT', body })).status, 200);
      for (let i = 0; i < 3; i++) {
        const socket = await openSocket(server.url);
        const firstBytes = new Promise<void>((resolve) => socket.once('data', () => resolve()));
        socket.write(
          `GET ${path} HTTP/1.1\r\nHost: test\r\nAuthorization: ${user.authorization}\r\n\r\n`,
        );
        await firstBytes;
        // Gone while the server has a read in flight and a write pending.
        socket.destroy();
      }
      await requestLogged(server, 'GET', 'read-and-dropped');
      assert.equal(server.running, true);
      const whole = await api(path);
      assert.equal(whole.status, 200);
      assert.ok(whole.body.equals(body));
    });

    it('answers 404 at once for a GET during an unfinished PUT of the same id', async () => {
      const path = `/blobs/${user.uuid}/in-progress`;
      const { socket, received } = await startUpload(server, path, user, 20);
      socket.write('first half');
      const during = await api(path);
      assert.equal(during.status, 404);
      assert.deepEqual(
        (await api(`/blobs/${user.uuid}`)).json<string[]>().includes('in-progress'),
        false,
      );
      socket.write('secondhalf');
      await new Promise((resolve) => socket.once('close', resolve));
      assert.equal(parseRawResponse(Buffer.concat(received)).status, 200);
      assert.equal((await api(path)).text, 'first halfsecondhalf');
    });

    it('lets a DELETE during an unfinished PUT win: the PUT gets 409 blob_deleted', async () => {
      const path = `/blobs/${user.uuid}/overtaken`;
      const { socket, received } = await startUpload(server, path, user, 20);
      socket.write('first half');
      const deleted = await api(path, { method: 'DELETE' });
      assert.equal(deleted.status, 200);
      socket.write('secondhalf');
      await new Promise((resolve) => socket.once('close', resolve));
      const put = parseRawResponse(Buffer.concat(received));
      assert.equal(put.status, 409);
      assert.equal(put.json<{ error: string }>().error, 'blob_deleted');
      assert.equal((await api(path)).status, 404);
      const tombs = (await api(`/blobs/${user.uuid}?deleted=true`)).json<string[]>();
      assert.ok(tombs.includes('overtaken'));
      assert.equal((await api(path, { method: 'DELETE' })).status, 404);
    });

    it('answers 404 for a DELETE of an id no upload announced', async () => {
      assert.equal((await api(`/blobs/${user.uuid}/never-sent`, { method: 'DELETE' })).status, 404);
      const tombs = (await api(`/blobs/${user.uuid}?deleted=true`)).json<string[]>();
      assert.equal(tombs.includes('never-sent'), false);
    });

    it('lets exactly one of concurrent PUTs of one id win, the others get 409, and stores the winner bytes', async () => {
      const path = `/blobs/${user.uuid}/contested`;
      const bodies = Array.from({ length: 8 }, () => randomBytes(256 * 1024));
      const results = await Promise.all(bodies.map((body) => api(path, { method: 'PUT', body })));
      const winners = results.flatMap((result, index) => (result.status === 200 ? [index] : []));
      assert.equal(winners.length, 1, results.map((r) => r.status).join(','));
      for (const result of results) {
        if (result.status !== 200)
          assert.equal(result.json<{ error: string }>().error, 'blob_exists');
      }
      assert.deepEqual((await api(path)).body, bodies[winners[0]!]);
    });

    it('never lets concurrent PUTs near the quota pass it', async () => {
      const racer = await server.addUser({ quota: 10_000 });
      const racerApi = (p: string, o: Parameters<typeof send>[2] = {}) =>
        send(server.url, p, { auth: racer.authorization, ...o });
      async function* chunked(size: number) {
        yield Buffer.alloc(size / 2, 3);
        yield Buffer.alloc(size / 2, 4);
      }
      const results = await Promise.all(
        Array.from({ length: 24 }, (_, i) =>
          racerApi(`/blobs/${racer.uuid}/race-${i}`, {
            method: 'PUT',
            body: i % 2 === 0 ? Buffer.alloc(1000, 5) : chunked(1000),
          }),
        ),
      );
      const stored = results.filter((result) => result.status === 200).length;
      for (const result of results) {
        if (result.status !== 200) {
          assert.equal(result.status, 507);
          assert.equal(result.json<{ error: string }>().error, 'quota_exceeded');
        }
      }
      assert.ok(stored >= 1 && stored <= 10, `stored ${stored}`);
      const count = (await racerApi(`/blobs/${racer.uuid}?only_count=true`)).json<{
        count: number;
      }>();
      assert.equal(count.count, stored);
      const left = 10_000 - stored * 1000;
      const over = await racerApi(`/blobs/${racer.uuid}/race-over`, {
        method: 'PUT',
        body: Buffer.alloc(left + 1),
      });
      assert.equal(over.status, 507);
      if (left > 0) {
        const rest = await racerApi(`/blobs/${racer.uuid}/race-rest`, {
          method: 'PUT',
          body: Buffer.alloc(left),
        });
        assert.equal(rest.status, 200);
      }
    });
  });
});
