import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeTokenAuth } from '../../wire/auth.js';
import { type ServerProcess, type ServerUser, startServer } from '../helpers/server-process.js';
import { sendRaw } from './http-request.js';

/** Every file and folder under `dir` with its size, as sorted lines. */
async function snapshot(dir: string): Promise<string[]> {
  const lines: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    if (path.includes(`${join(dir, '.index')}`)) continue;
    const info = await stat(path).catch(() => undefined);
    lines.push(`${path} ${entry.isDirectory() ? 'dir' : info?.size}`);
  }
  return lines.sort();
}

/** Attempts at leaving a path segment, as they would appear on the wire. */
const SEGMENTS = [
  '..',
  '.',
  '%2e%2e',
  '%2E%2E',
  '.%2e',
  '..%2F..%2Fetc',
  '..%2f',
  'a%2Fb',
  '%2F',
  '..%5C..%5Cx',
  'a%5Cb',
  '..%252F',
  '%00',
  'a%00b',
  'a%20b',
  '~',
  'a:b',
  '%C0%AE%C0%AE',
  '%',
  'x'.repeat(129),
];

describe('path safety', () => {
  const serviceToken = 'path-safety-service-token';
  let server: ServerProcess;
  let user: ServerUser;

  before(async () => {
    server = await startServer({ serviceTokens: { svc: serviceToken } });
    user = await server.addUser();
  });

  after(async () => {
    await server?.cleanup();
  });

  async function attempt(
    baseUrl: string,
    method: string,
    target: string,
    auth: string,
  ): Promise<number> {
    const body = method === 'PUT' || method === 'POST' ? '["PENDING"]' : '';
    const response = await sendRaw(
      baseUrl,
      `${method} ${target} HTTP/1.1\r\nHost: test\r\nAuthorization: ${auth}\r\n` +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    if (response.status === 400) {
      assert.equal(response.json<{ error: string }>().error, 'invalid_request');
    }
    return response.status;
  }

  it('answers 400 for traversal in every path segment and in namespace, touching nothing', async () => {
    const watched = dirname(server.root);
    const before = await snapshot(watched);
    const base = `/blobs/${user.uuid}`;
    for (const bad of SEGMENTS) {
      const targets: [string, string[]][] = [
        [`/blobs/${bad}`, ['GET']],
        [`/blobs/${bad}/x`, ['GET', 'PUT', 'POST', 'DELETE']],
        [`${base}/${bad}`, ['GET', 'PUT', 'POST', 'DELETE']],
        [`${base}/x?namespace=${bad}`, ['GET', 'PUT', 'POST', 'DELETE']],
        [`${base}?namespace=${bad}`, ['GET']],
        [`/stream/${bad}?direction=download`, ['POST']],
        [`/stream/${user.uuid}?direction=download&namespace=${bad}`, ['POST']],
      ];
      for (const [target, methods] of targets) {
        for (const method of methods) {
          const status = await attempt(server.url, method, target, user.authorization);
          assert.equal(status, 400, `${method} ${target}`);
        }
      }
      const service = encodeTokenAuth('svc', serviceToken);
      for (const target of [
        `/incoming/${bad}/x`,
        `/incoming/${user.uuid}/${bad}`,
        `/incoming/${user.uuid}/x?namespace=${bad}`,
      ]) {
        assert.equal(await attempt(server.servicesUrl, 'PUT', target, service), 400, target);
      }
    }
    assert.deepEqual(await snapshot(watched), before);
  });

  it('answers 400 for empty segments and extra segments', async () => {
    for (const target of [
      '/blobs',
      '/blobs/',
      `/blobs//x`,
      `/blobs/${user.uuid}//`,
      `/blobs/${user.uuid}/x/`,
      `/blobs/${user.uuid}/x/y`,
      `/blobs/${user.uuid}/../${user.uuid}/x`,
      `/stream/${user.uuid}/x?direction=download`,
    ]) {
      assert.equal(await attempt(server.url, 'GET', target, user.authorization), 400, target);
    }
  });
});
