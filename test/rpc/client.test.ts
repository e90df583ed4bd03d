import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { AttachmentState, Soledad, SoledadError } from '../../rpc/client.js';
import type { TransferProgress } from '../../rpc/methods.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { type RpcFixture, startRpcFixture } from './rpc-fixture.js';

async function digest(stream: Readable): Promise<{ sha: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha: hash.digest('hex'), bytes };
}

/** A loopback port nobody listens on. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('the client library against a daemon and a blobs server', () => {
  let fixture: RpcFixture;
  let soledad: Soledad;
  let dir: { path: string; remove(): Promise<void> };
  before(async () => {
    fixture = await startRpcFixture({ withServer: true });
    soledad = await fixture.connect();
    dir = await tempDir('soledad-client-');
  });
  after(async () => {
    await fixture.close();
    await dir.remove();
  });

  it('runs the attachment example of the design step by step', async () => {
    const hackers = join(dir.path, 'hackers.txt');
    await writeFile(hackers, 'Hack the planet!\n'.repeat(10_000));

    const doc = await soledad.createDoc({});
    assert.equal(await doc.getAttachmentState(), AttachmentState.NONE);
    assert.equal(await doc.isDirty(), false);

    await doc.putAttachment(createReadStream(hackers));
    assert.notEqual((await doc.getAttachmentState()) & AttachmentState.LOCAL, 0);
    assert.equal(await doc.isDirty(), true);

    await soledad.putDoc(doc);
    assert.equal(await doc.isDirty(), false);

    assert.equal(await doc.uploadAttachment(), AttachmentState.SYNCED);
    assert.equal(await doc.getAttachmentState(), AttachmentState.SYNCED);

    const stream = await doc.getAttachment();
    assert.deepEqual(await digest(stream), await digest(createReadStream(hackers)));
  });

  it('puts and gets 64 MiB byte-exact', async () => {
    const path = join(dir.path, 'big.bin');
    const block = randomBytes(1024 * 1024);
    await writeFile(path, Buffer.concat(Array.from({ length: 64 }, () => block)));
    const doc = await soledad.createDoc({ name: 'big.bin' });
    const info = await doc.putAttachment(path);
    assert.equal(info.plaintextSize ?? 64 * 1024 * 1024, 64 * 1024 * 1024);
    await soledad.putDoc(doc);
    const read = await digest(await doc.getAttachment());
    assert.deepEqual(read, await digest(createReadStream(path)));
    assert.equal(read.bytes, 64 * 1024 * 1024);
  });

  it('takes a Buffer, or any byte stream, as an attachment source', async () => {
    const doc = await soledad.createDoc({});
    const bytes = randomBytes(100_000);
    await doc.putAttachment(bytes);
    assert.ok(
      (await digest(await doc.getAttachment())).sha ===
        createHash('sha256').update(bytes).digest('hex'),
    );
    await doc.putAttachment(Readable.from([bytes.subarray(0, 10), bytes.subarray(10)]));
    assert.equal((await digest(await doc.getAttachment())).bytes, bytes.length);
  });

  it('evicts a synced attachment, fetches it again on read, and refuses to evict a pinned one', async () => {
    const doc = await soledad.createDoc({});
    const bytes = randomBytes(300_000);
    await doc.putAttachment(bytes);
    await soledad.putDoc(doc);
    assert.equal(await doc.uploadAttachment(), AttachmentState.SYNCED);
    assert.equal(await doc.evictAttachment(), AttachmentState.REMOTE);
    assert.equal((await digest(await doc.getAttachment())).bytes, bytes.length);
    assert.equal(await doc.downloadAttachment(), AttachmentState.SYNCED);
    assert.equal(await doc.pinAttachment(), AttachmentState.SYNCED);
    await assert.rejects(
      doc.evictAttachment(),
      (err: SoledadError) => err.code === 'invalid_state',
    );
    assert.equal(await doc.unpinAttachment(), AttachmentState.SYNCED);
  });

  it('deletes an attachment: the document loses its pointer', async () => {
    const doc = await soledad.createDoc({ keep: 'me' });
    await doc.putAttachment(Buffer.from('to be deleted'));
    await soledad.putDoc(doc);
    const rev = doc.rev;
    await doc.deleteAttachment();
    assert.notEqual(doc.rev, rev);
    assert.equal(doc.blobId, undefined);
    assert.deepEqual((await soledad.getDoc(doc.id))?.content, { keep: 'me' });
    assert.equal(await doc.getAttachmentState(), AttachmentState.NONE);
  });

  it('stores nothing and rejects with the source error when the source fails midway', async () => {
    const doc = await soledad.createDoc({});
    const failing = Readable.from(
      (async function* () {
        yield randomBytes(3 * 1024 * 1024);
        yield randomBytes(3 * 1024 * 1024);
        throw new Error('disk on fire');
      })(),
    );
    await assert.rejects(doc.putAttachment(failing), /disk on fire/);
    assert.equal(doc.blobId, undefined);
    const stored = (await soledad.listAttachments()).filter((info) => info.docId === doc.id);
    assert.deepEqual(stored, []);
  });

  it('answers NONE, or not_found for the bytes, when nothing is attached', async () => {
    const doc = await soledad.createDoc({});
    assert.equal(await doc.uploadAttachment(), AttachmentState.NONE);
    assert.equal(await doc.downloadAttachment(), AttachmentState.NONE);
    await assert.rejects(doc.getAttachment(), (err: SoledadError) => err.code === 'not_found');
  });

  it('reports content edits as dirty until put, and a stale put as a conflict', async () => {
    const doc = await soledad.createDoc({ n: 1 });
    doc.content.n = 2;
    assert.equal(await doc.isDirty(), true);
    const twin = await soledad.getDoc(doc.id);
    assert.ok(twin);
    await soledad.putDoc(doc);
    assert.equal(await doc.isDirty(), false);
    twin.content.n = 3;
    await assert.rejects(soledad.putDoc(twin), (err: SoledadError) => {
      assert.ok(err instanceof SoledadError);
      return err.code === 'conflict';
    });
  });

  it('lists, gets and deletes documents', async () => {
    const doc = await soledad.createDoc({ listed: true });
    assert.ok((await soledad.listDocs()).some((d) => d.id === doc.id));
    await soledad.deleteDoc(doc);
    assert.equal(doc.deleted, true);
    assert.equal(
      (await soledad.listDocs()).some((d) => d.id === doc.id),
      false,
    );
    assert.equal((await soledad.getDoc(doc.id))?.deleted, true);
    assert.equal(await soledad.getDoc('never-created'), undefined);
  });

  it('reports transfer progress only to subscribers that asked for it', async () => {
    const watcher = await fixture.connect();
    const quiet = await fixture.connect();
    const progress: TransferProgress[] = [];
    const unwanted: TransferProgress[] = [];
    watcher.on('progress', (p) => progress.push(p));
    quiet.on('progress', (p) => unwanted.push(p));
    await watcher.subscribe({ progress: true });
    await quiet.subscribe();

    const doc = await soledad.createDoc({});
    const info = await doc.putAttachment(randomBytes(8 * 1024 * 1024));
    await soledad.putDoc(doc);
    await doc.uploadAttachment();
    await waitFor(() => progress.find((p) => p.blobId === info.blobId && p.bytes === p.total), {
      what: 'the final progress report',
    });
    assert.ok(progress.every((p) => p.direction === 'upload'));
    assert.equal(unwanted.length, 0);
  });

  it('runs sync and reports status', async () => {
    const result = await soledad.sync();
    assert.equal(typeof result.uploaded, 'number');
    const status = await soledad.status();
    assert.equal(typeof status.deviceId, 'string');
    assert.ok(status.events.latestSeq > 0);
  });
});

describe('the client library against a daemon without a server', () => {
  it('refuses to evict the only copy', async () => {
    const fixture = await startRpcFixture();
    try {
      const soledad = await fixture.connect();
      const doc = await soledad.createDoc({});
      await doc.putAttachment(Buffer.from('only here'));
      await soledad.putDoc(doc);
      assert.equal(await doc.getAttachmentState(), AttachmentState.LOCAL);
      await assert.rejects(
        doc.evictAttachment(),
        (err: SoledadError) => err.code === 'invalid_state',
      );
      assert.equal(await doc.getAttachmentState(), AttachmentState.LOCAL);
    } finally {
      await fixture.close();
    }
  });
});

describe('Soledad.connect', () => {
  it('reads the address and the token from the config folder', async () => {
    const fixture = await startRpcFixture();
    try {
      const client = await Soledad.connect({ configDir: fixture.configDir, reconnect: false });
      assert.equal(client.url, fixture.rpc.url);
      await client.close();
    } finally {
      await fixture.close();
    }
  });

  it('rejects with daemon_not_running when nothing listens', async () => {
    const url = `ws://127.0.0.1:${await freePort()}`;
    await assert.rejects(
      Soledad.connect({ url, token: 'x'.repeat(43) }),
      (err: SoledadError) => err.code === 'daemon_not_running',
    );
  });

  it('rejects with daemon_not_running when the config folder has no token', async () => {
    const dir = await tempDir('soledad-empty-');
    try {
      await assert.rejects(
        Soledad.connect({ configDir: dir.path }),
        (err: SoledadError) =>
          err.code === 'daemon_not_running' && err.message.includes('rpc-token'),
      );
    } finally {
      await dir.remove();
    }
  });

  it('rejects with rpc_unauthorized for a wrong token', async () => {
    const fixture = await startRpcFixture();
    try {
      await assert.rejects(
        Soledad.connect({ url: fixture.rpc.url, token: 'y'.repeat(43) }),
        (err: SoledadError) => err.code === 'rpc_unauthorized',
      );
    } finally {
      await fixture.close();
    }
  });

  it('fails pending calls with disconnected when the daemon goes away', async () => {
    const fixture = await startRpcFixture();
    try {
      const client = await fixture.connect({ reconnect: false });
      await fixture.rpc.close();
      await assert.rejects(client.status(), (err: SoledadError) => err.code === 'disconnected');
    } finally {
      await fixture.close();
    }
  });
});
