import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { encodeTokenAuth } from '../../wire/auth.js';
import { type ServerProcess, type ServerUser, startServer } from '../helpers/server-process.js';
import { send } from './http-request.js';

describe('incoming box (services listener)', () => {
  const mailToken = 'mail-service-token-0123456789';
  const mail = encodeTokenAuth('mail', mailToken);
  let server: ServerProcess;
  let user: ServerUser;

  const deliver = (uuid: string, id: string, body: string | Buffer, query = '', auth = mail) =>
    send(server.servicesUrl, `/incoming/${uuid}/${id}${query}`, { method: 'PUT', body, auth });
  const asUser = (path: string) => send(server.url, path, { auth: user.authorization });

  before(async () => {
    server = await startServer({ serviceTokens: { mail: mailToken } });
    user = await server.addUser({ quota: 1000 });
  });

  after(async () => {
    await server?.cleanup();
  });

  it('listens on a loopback address apart from the public listener', () => {
    const services = new URL(server.servicesUrl);
    assert.equal(services.hostname, '127.0.0.1');
    assert.notEqual(services.port, new URL(server.url).port);
  });

  it('delivers a blob into the MX namespace flagged PENDING', async () => {
    const response = await deliver(user.uuid, 'mail-1', 'a message');
    assert.equal(response.status, 200, response.text);
    assert.deepEqual((await asUser(`/blobs/${user.uuid}?namespace=MX`)).json(), ['mail-1']);
    assert.deepEqual(
      (await asUser(`/blobs/${user.uuid}/mail-1?namespace=MX&only_flags=true`)).json(),
      ['PENDING'],
    );
    assert.equal((await asUser(`/blobs/${user.uuid}/mail-1?namespace=MX`)).text, 'a message');
    assert.deepEqual(
      (await asUser(`/blobs/${user.uuid}?filter_flag=PENDING&namespace=MX`)).json(),
      ['mail-1'],
    );
    assert.equal((await asUser(`/blobs/${user.uuid}/mail-1`)).status, 404);
  });

  it('delivers into the namespace named in the query', async () => {
    const response = await deliver(user.uuid, 'mail-2', 'elsewhere', '?namespace=inbox');
    assert.equal(response.status, 200);
    assert.deepEqual(
      (await asUser(`/blobs/${user.uuid}/mail-2?namespace=inbox&only_flags=true`)).json(),
      ['PENDING'],
    );
  });

  it('refuses a second delivery of the same id with 409', async () => {
    assert.equal((await deliver(user.uuid, 'mail-3', 'x')).status, 200);
    const again = await deliver(user.uuid, 'mail-3', 'y');
    assert.equal(again.status, 409);
    assert.equal(again.json<{ error: string }>().error, 'blob_exists');
  });

  it('counts deliveries against the recipient quota', async () => {
    const filler = await deliver(user.uuid, 'mail-big', Buffer.alloc(900));
    assert.equal(filler.status, 200);
    const over = await deliver(user.uuid, 'mail-over', Buffer.alloc(200));
    assert.equal(over.status, 507);
    assert.equal(over.json<{ error: string }>().error, 'quota_exceeded');
    const own = await send(server.url, `/blobs/${user.uuid}/own`, {
      method: 'PUT',
      body: Buffer.alloc(200),
      auth: user.authorization,
    });
    assert.equal(own.status, 507);
  });

  it('refuses missing or wrong service credentials and user tokens with 401', async () => {
    for (const auth of [
      undefined,
      encodeTokenAuth('mail', 'wrong'),
      encodeTokenAuth('other', mailToken),
      user.authorization,
    ]) {
      const options =
        auth === undefined ? { method: 'PUT', body: 'x' } : { method: 'PUT', body: 'x', auth };
      const response = await send(server.servicesUrl, `/incoming/${user.uuid}/denied`, options);
      assert.equal(response.status, 401);
    }
  });

  it('answers 404 for an unknown recipient and 400 for an invalid uuid or namespace', async () => {
    assert.equal((await deliver('no-such-user', 'x', 'x')).status, 404);
    assert.equal((await deliver('bad.uuid', 'x', 'x')).status, 400);
    assert.equal((await deliver(user.uuid, 'x', 'x', '?namespace=..')).status, 400);
    assert.equal((await deliver(user.uuid, 'x', 'x', '?colour=red')).status, 400);
  });

  it('serves the incoming box only on the services listener and the blobs API only on the public one', async () => {
    const onPublic = await send(server.url, `/incoming/${user.uuid}/x`, {
      method: 'PUT',
      body: 'x',
      auth: mail,
    });
    assert.equal(onPublic.status, 404);
    const onServices = await send(server.servicesUrl, `/blobs/${user.uuid}`, {
      auth: user.authorization,
    });
    assert.equal(onServices.status, 404);
    assert.equal((await send(server.servicesUrl, '/health')).status, 200);
  });

  it('accepts a service token added to the tokens file while running', async () => {
    await server.setServiceTokens({ mail: mailToken, backup: 'backup-token-abcdef' });
    const response = await deliver(
      user.uuid,
      'mail-new',
      'y',
      '',
      encodeTokenAuth('backup', 'backup-token-abcdef'),
    );
    assert.equal(response.status, 200);
  });
});
