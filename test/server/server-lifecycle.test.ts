import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  runSoledadCli,
  type ServerProcess,
  type ServerUser,
  startServer,
} from '../helpers/server-process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { parseRawResponse, send } from './http-request.js';

describe('soledad server process', () => {
  const started: ServerProcess[] = [];
  const start = async (options: Parameters<typeof startServer>[0] = {}) => {
    const server = await startServer(options);
    started.push(server);
    return server;
  };

  after(async () => {
    for (const server of started.reverse()) await server.cleanup();
  });

  it('keeps every blob, flag, tombstone and user across a restart', async () => {
    const first = await start();
    const user = await first.addUser({ quota: '1 MiB' });
    const api = (server: ServerProcess, path: string, options = {}) =>
      send(server.url, path, { auth: user.authorization, ...options });
    await api(first, `/blobs/${user.uuid}/kept`, { method: 'PUT', body: 'kept bytes' });
    await api(first, `/blobs/${user.uuid}/kept`, { method: 'POST', body: '["PROCESSING"]' });
    await api(first, `/blobs/${user.uuid}/other?namespace=side`, { method: 'PUT', body: 'side' });
    await api(first, `/blobs/${user.uuid}/gone`, { method: 'PUT', body: 'gone' });
    await api(first, `/blobs/${user.uuid}/gone`, { method: 'DELETE' });
    assert.deepEqual(await first.stop(), { code: 0, signal: null });

    const second = await start({ root: first.root });
    assert.notEqual(second.url, '');
    assert.equal((await api(second, `/blobs/${user.uuid}/kept`)).text, 'kept bytes');
    assert.deepEqual((await api(second, `/blobs/${user.uuid}/kept?only_flags=true`)).json(), [
      'PROCESSING',
    ]);
    assert.equal((await api(second, `/blobs/${user.uuid}/other?namespace=side`)).text, 'side');
    assert.deepEqual((await api(second, `/blobs/${user.uuid}?deleted=true`)).json(), ['gone']);
    const resurrect = await api(second, `/blobs/${user.uuid}/gone`, {
      method: 'PUT',
      body: 'again',
    });
    assert.equal(resurrect.status, 409);
    assert.equal(resurrect.json<{ error: string }>().error, 'blob_deleted');
    const quota = await api(second, `/blobs/${user.uuid}/big`, {
      method: 'PUT',
      body: Buffer.alloc(1024 * 1024),
    });
    assert.equal(quota.status, 507);
  });

  it('exits 0 on SIGTERM and on SIGINT, logging start and stop and removing listening.json', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const server = await start();
      assert.deepEqual(await server.stop(signal), { code: 0, signal: null });
      const messages = server.logs().map((line) => line.msg);
      for (const message of [
        'server starting',
        'server listening',
        'server stopping',
        'server stopped',
      ]) {
        assert.ok(messages.includes(message), `${signal}: ${message}`);
      }
      await assert.rejects(stat(join(server.root, 'listening.json')), { code: 'ENOENT' });
    }
  });

  it('lets an upload in flight at SIGTERM finish, then exits 0', async () => {
    const server = await start();
    const user = await server.addUser();
    const url = new URL(server.url);
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    const received: Buffer[] = [];
    let continued = false;
    socket.on('data', (chunk: Buffer) => {
      if (!continued && chunk.toString('latin1').startsWith('HTTP/1.1 100')) {
        continued = true;
        const rest = chunk.subarray(chunk.indexOf('\r\n\r\n') + 4);
        if (rest.length > 0) received.push(rest);
      } else {
        received.push(chunk);
      }
    });
    socket.write(
      `PUT /blobs/${user.uuid}/in-flight HTTP/1.1\r\nHost: test\r\nAuthorization: ${user.authorization}\r\n` +
        'Content-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
    );
    await waitFor(() => continued, { what: '100 Continue' });
    socket.write('12345');
    const stopped = server.stop('SIGTERM');
    await waitFor(() => server.logs().some((line) => line.msg === 'server stopping'), {
      what: 'the server to start stopping',
    });
    socket.write('67890');
    await new Promise((resolve) => socket.once('close', resolve));
    assert.equal(parseRawResponse(Buffer.concat(received)).status, 200);
    assert.deepEqual(await stopped, { code: 0, signal: null });

    const again = await start({ root: server.root });
    const stored = await send(again.url, `/blobs/${user.uuid}/in-flight`, {
      auth: user.authorization,
    });
    assert.equal(stored.text, '1234567890');
  });

  it('accepts a user added while it runs at once', async () => {
    const server = await start();
    const late = await server.addUser();
    const response = await send(server.url, `/blobs/${late.uuid}`, { auth: late.authorization });
    assert.equal(response.status, 200);
    assert.deepEqual(response.json(), []);
  });

  it('keeps users in a mode 0600 file that holds no token', async () => {
    const server = await start();
    const user = await server.addUser({ uuid: 'chosen-uuid_1', quota: 5000 });
    assert.equal(user.uuid, 'chosen-uuid_1');
    const path = join(server.root, 'users.json');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const text = await readFile(path, 'utf8');
    assert.equal(text.includes(user.token), false);
    const duplicate = await runSoledadCli([
      'server',
      'add-user',
      '--config',
      server.configPath,
      '--uuid',
      'chosen-uuid_1',
    ]);
    assert.notEqual(duplicate.code, 0);
    assert.match(duplicate.stderr, /already exists/);
    const badQuota = await runSoledadCli([
      'server',
      'add-user',
      '--config',
      server.configPath,
      '--quota',
      'lots',
    ]);
    assert.notEqual(badQuota.code, 0);
  });

  it('logs one line per request with method, route, status, bytes and ms, and never a token', async () => {
    const server = await start();
    const user: ServerUser = await server.addUser();
    await send(server.url, `/blobs/${user.uuid}/logged`, {
      method: 'PUT',
      body: 'abc',
      auth: user.authorization,
    });
    await send(server.url, `/blobs/${user.uuid}/logged`, {
      auth: `Token ${Buffer.from(`${user.uuid}:bad`).toString('base64')}`,
    });
    await waitFor(() => server.logs().filter((line) => line.msg === 'request').length >= 2, {
      what: 'two request log lines',
    });
    const lines = server.logs().filter((line) => line.msg === 'request');
    assert.equal(lines.length, 2);
    assert.deepEqual(
      lines.map(({ method, route, status, bytes }) => ({ method, route, status, bytes })),
      [
        { method: 'PUT', route: '/blobs/:uuid/:blob_id', status: 200, bytes: 3 },
        { method: 'GET', route: '/blobs/:uuid/:blob_id', status: 401, bytes: 0 },
      ],
    );
    assert.equal(typeof lines[0]!.ms, 'number');
    assert.equal(server.stdout.includes(user.token), false);
    assert.equal(server.stdout.includes(user.authorization.slice(6)), false);
    assert.equal(server.stdout.toLowerCase().includes('authorization'), false);
  });

  it('refuses to start a second server on the same root', async () => {
    const server = await start();
    const second = await runSoledadCli(['server', '--config', server.configPath]);
    assert.notEqual(second.code, 0);
    assert.equal((await send(server.url, '/health')).status, 200);
  });

  it('refuses an invalid config file naming the field', async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, 'server.toml');
      await writeFile(path, `root = "${dir.path}"\n[services]\nhost = "0.0.0.0"\nport = 0\n`);
      const loopback = await runSoledadCli(['server', '--config', path]);
      assert.notEqual(loopback.code, 0);
      assert.match(loopback.stderr, /services\.host/);
      await writeFile(path, `root = "${dir.path}"\n[public]\nport = "high"\n`);
      const port = await runSoledadCli(['server', '--config', path]);
      assert.match(port.stderr, /public\.port/);
    } finally {
      await dir.remove();
    }
  });
});
