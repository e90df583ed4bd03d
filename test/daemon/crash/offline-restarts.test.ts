import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AttachmentState, type Soledad } from '../../../rpc/client.js';
import { waitFor } from '../../helpers/wait.js';
import {
  CrashRig,
  type Digest,
  digestOfBytes,
  KiB,
  prng,
  seededBuffer,
  serverBlobBytes,
  serverPlaintextDigest,
  waitForAll,
} from './crash-fixtures.js';

const COUNT = 1000;
const WRITERS = 32;

interface Put {
  docId: string;
  blobId: string;
  /** Envelope size, as the server stores it. */
  size: number;
  source: Digest;
}

/** Runs `task` over `items` with `limit` calls in flight. */
async function inParallel<T>(items: T[], limit: number, task: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await task(items[next++]!);
    }),
  );
}

/** Checks that the daemon still has every put, LOCAL, with its document pointing at it. */
async function assertAllLocal(soledad: Soledad, puts: Put[]): Promise<void> {
  const infos = new Map((await soledad.listAttachments()).map((info) => [info.blobId, info]));
  assert.equal(infos.size, puts.length, 'exactly the acknowledged attachments are recorded');
  for (const put of puts) {
    const info = infos.get(put.blobId);
    assert.ok(info !== undefined, `${put.blobId} is lost`);
    assert.equal(info.state, AttachmentState.LOCAL, `${put.blobId} is ${info.machineState}`);
    assert.equal(info.size, put.size);
  }
  const docs = await soledad.listDocs();
  const pointers = new Set(docs.map((doc) => doc.content.blob_id));
  for (const put of puts) assert.ok(pointers.has(put.blobId), `${put.docId} lost its pointer`);
}

describe('attachments put while the server is unreachable', () => {
  let rig: CrashRig;

  before(async () => {
    rig = await CrashRig.start({
      log_level: 'info',
      sync: { interval_ms: 2000 },
      // Short waits, but not so short that 1000 failing uploads keep the daemon busy.
      transfers: { retry_delays_ms: [200, 500, 1000] },
    });
  });

  after(async () => {
    await rig?.cleanup();
  });

  it('syncs 1000 attachments put offline after a SIGKILL, a SIGTERM and the server coming back', async () => {
    await rig.harness.stopServer();
    let soledad = await rig.startDaemon();

    const random = prng(1000);
    const sizes = Array.from({ length: COUNT }, () => KiB + Math.floor(random() * 9 * KiB));
    const puts: Put[] = [];
    await inParallel([...sizes.keys()], WRITERS, async (i) => {
      const bytes = seededBuffer(`offline-${i}`, sizes[i]!);
      const doc = await soledad.createDoc({ name: `file-${i}.bin` });
      const info = await doc.putAttachment(bytes);
      await soledad.putDoc(doc);
      puts.push({
        docId: doc.id,
        blobId: info.blobId,
        size: info.size,
        source: digestOfBytes(bytes),
      });
    });
    assert.equal(puts.length, COUNT);
    await assertAllLocal(soledad, puts);
    await waitFor(async () => (await soledad.status()).server.reachable === false, {
      what: 'the daemon to notice the server is down',
    });

    // Killed while every upload is failing and waiting to retry.
    assert.equal((await rig.kill()).signal, 'SIGKILL');
    soledad = await rig.startDaemon();
    await assertAllLocal(soledad, puts);

    const stopped = await rig.terminate();
    assert.deepEqual(stopped, { code: 0, signal: null }, rig.daemon!.stderr);
    soledad = await rig.startDaemon();
    await assertAllLocal(soledad, puts);

    await rig.harness.startServer();
    const infos = await waitForAll(
      soledad,
      puts.map((put) => put.blobId),
      (info) => info.machineState === 'synced',
      `${COUNT} attachments to be synced`,
      60_000,
    );
    for (const put of puts) assert.equal(infos.get(put.blobId)?.state, AttachmentState.SYNCED);

    const client = rig.client;
    const listed = await client.list();
    assert.equal(listed.length, COUNT, 'the server holds exactly one blob per attachment');
    assert.deepEqual(new Set(listed), new Set(puts.map((put) => put.blobId)));
    assert.equal(await client.count(), COUNT);
    const onDisk = await serverBlobBytes(rig.harness.server!.root, rig.harness.user!.uuid);
    const expectedBytes = puts.reduce((sum, put) => sum + put.size, 0);
    assert.deepEqual(onDisk, { files: COUNT, bytes: expectedBytes });

    const secret = await rig.secret();
    await inParallel(puts, 16, async (put) => {
      assert.deepEqual(await serverPlaintextDigest(client, secret, put.blobId), put.source);
    });
  });
});
