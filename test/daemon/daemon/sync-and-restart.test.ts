import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DocumentSealer } from '../../../daemon/crypto/document-sealer.js';
import { createEncryptStream } from '../../../daemon/crypto/encrypt-stream.js';
import { REPLACED_BLOB_SETTING } from '../../../daemon/daemon.js';
import { Store } from '../../../daemon/store/index.js';
import { AttachmentState } from '../../../machines/index.js';
import { DaemonHarness } from '../../helpers/daemon-harness.js';
import { waitFor } from '../../helpers/wait.js';
import {
  docWithAttachment,
  hasLocalEnvelope,
  KiB,
  readAll,
  sourceOf,
  waitForAttachment,
} from './daemon-fixtures.js';

/** Request log lines the server wrote for `route` with `method`. */
function requests(h: DaemonHarness, method: string, route: string) {
  return h
    .server!.logs()
    .filter((line) => line.msg === 'request' && line.method === method && line.route === route);
}

describe('Daemon batching, remote sync and restarts', () => {
  let h: DaemonHarness;

  before(async () => {
    h = await DaemonHarness.start();
  });

  after(async () => {
    await h?.cleanup();
  });

  it('uploads 200 small attachments through a few /stream requests', async () => {
    const streamsBefore = requests(h, 'POST', '/stream/:uuid?direction=upload').length;
    const putsBefore = requests(h, 'PUT', '/blobs/:uuid/:blob_id').length;
    const doc = await h.daemon.createDoc({ kind: 'many' });
    const blobIds: string[] = [];
    // Twenty writers at a time, as a bulk import would put them.
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        for (let i = 0; i < 10; i++) {
          const info = await h.daemon.putAttachment(doc.id, sourceOf(randomBytes(10 * KiB)));
          blobIds.push(info.blobId);
        }
      }),
    );
    await waitFor(
      async () => {
        const infos = await h.daemon.listAttachments();
        const synced = new Set(
          infos.filter((i) => i.machineState === 'synced').map((i) => i.blobId),
        );
        return blobIds.every((id) => synced.has(id));
      },
      { timeoutMs: 20_000, what: '200 attachments to be synced' },
    );
    assert.equal((await h.client!.list()).filter((id) => blobIds.includes(id)).length, 200);

    const streams = await waitFor(
      () => {
        const count = requests(h, 'POST', '/stream/:uuid?direction=upload').length - streamsBefore;
        return count > 0 ? count : undefined;
      },
      { what: 'the server to log its stream requests' },
    );
    assert.ok(streams <= 40, `${streams} stream requests for 200 blobs`);
    assert.equal(requests(h, 'PUT', '/blobs/:uuid/:blob_id').length - putsBefore, 0);
    const batched = h.logs.filter((line) => line.msg === 'upload finished' && line.batch);
    assert.ok(batched.some((line) => (line.batch as number) > 1));
    await waitFor(() => h.daemon.liveAttachmentCount === 0, {
      what: 'settled attachments to drop their actors',
    });
  });

  it('downloads evicted small attachments through a few /stream requests, byte-exact', async () => {
    const puts = await Promise.all(
      Array.from({ length: 60 }, (_, i) => docWithAttachment(h.daemon, 4 * KiB + i)),
    );
    for (const { blobId } of puts) {
      await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
    }
    for (const { blobId } of puts) await h.daemon.evictAttachment(blobId);
    // One is gone from the server: it fails alone, the batch goes on.
    const lost = puts.pop()!;
    await h.client!.delete(lost.blobId);
    const streamsBefore = requests(h, 'POST', '/stream/:uuid?direction=download').length;
    const getsBefore = requests(h, 'GET', '/blobs/:uuid/:blob_id').length;

    await Promise.all(puts.map(({ blobId }) => h.daemon.downloadAttachment(blobId)));
    for (const { blobId, plaintext } of puts) {
      assert.equal((await h.daemon.getAttachmentInfo(blobId))?.state, AttachmentState.SYNCED);
      assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
    }
    await assert.rejects(h.daemon.downloadAttachment(lost.blobId));
    // Its tombstone settles it at the next remote sync.
    assert.equal((await h.daemon.sync()).deleted, 1);
    await waitFor(async () => (await h.daemon.getAttachmentInfo(lost.blobId)) === undefined, {
      what: 'the lost record to go',
    });

    const streams = await waitFor(
      () => {
        const count =
          requests(h, 'POST', '/stream/:uuid?direction=download').length - streamsBefore;
        return count > 0 ? count : undefined;
      },
      { what: 'the server to log its stream requests' },
    );
    assert.ok(streams <= 20, `${streams} stream requests for 60 blobs`);
    assert.equal(requests(h, 'GET', '/blobs/:uuid/:blob_id').length - getsBefore, 0);
    const batched = h.logs.filter((line) => line.msg === 'download finished' && line.batch);
    assert.ok(batched.some((line) => (line.batch as number) > 1));
  });

  it('counts an upload that already landed as done once the sizes match', async () => {
    await h.openDaemon({ remote: undefined });
    const large = await docWithAttachment(h.daemon, 300 * KiB);
    const small = await docWithAttachment(h.daemon, 5 * KiB);
    for (const { blobId, info } of [large, small]) {
      const envelope = await h.daemon.localBlobs.createReadStream(blobId);
      await h.client!.put(blobId, envelope, info.size);
    }

    await h.openDaemon();
    for (const { blobId } of [large, small]) {
      await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
    }
    const failures = h.logs.filter((line) => line.msg === 'upload failed');
    assert.deepEqual(failures, []);
  });

  it('applies the deletion when an upload meets a tombstone', async () => {
    await h.openDaemon({ remote: undefined });
    const large = await docWithAttachment(h.daemon, 300 * KiB);
    const small = await docWithAttachment(h.daemon, 5 * KiB);
    for (const { blobId } of [large, small]) {
      await h.client!.put(blobId, sourceOf(Buffer.from('elsewhere')), 9);
      await h.client!.delete(blobId);
    }

    await h.openDaemon();
    for (const { blobId } of [large, small]) {
      await waitFor(async () => (await h.daemon.getAttachmentInfo(blobId)) === undefined, {
        what: `${blobId} to be deleted`,
      });
      assert.equal(await hasLocalEnvelope(h.daemon, blobId), false);
    }
  });

  it('applies a deletion made on the server by another device', async () => {
    const { blobId } = await docWithAttachment(h.daemon, 10 * KiB);
    await h.daemon.uploadAttachment(blobId);
    await h.client!.delete(blobId);

    const result = await h.daemon.sync();
    assert.equal(result.deleted, 1);
    await waitFor(async () => (await h.daemon.getAttachmentInfo(blobId)) === undefined, {
      what: 'the record to go',
    });
    assert.equal(await hasLocalEnvelope(h.daemon, blobId), false);
    assert.equal((await h.daemon.status()).lastSync?.ok, true);
  });

  it('marks a server blob that a document points at REMOTE, and opens it', async () => {
    const blobId = `remote-${randomBytes(8).toString('hex')}`;
    const plaintext = randomBytes(50 * KiB);
    const envelope = await readAll(
      sourceOf(plaintext).pipe(createEncryptStream({ secret: h.secret, blobId })),
    );
    await h.client!.put(blobId, sourceOf(envelope), envelope.length);
    const doc = await h.daemon.createDoc({ name: 'from elsewhere', blob_id: blobId });

    const result = await h.daemon.sync();
    assert.equal(result.markedRemote, 1);
    const info = await h.daemon.getAttachmentInfo(blobId);
    assert.equal(info?.state, AttachmentState.REMOTE);
    assert.equal(info?.docId, doc.id);
    assert.equal(info?.size, envelope.length);
    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);

    assert.equal((await h.daemon.sync()).markedRemote, 0);
  });

  it('leaves server blobs that no document points at alone', async () => {
    const blobId = `stray-${randomBytes(8).toString('hex')}`;
    await h.client!.put(blobId, sourceOf(Buffer.from('opaque')), 6);
    await h.daemon.sync();
    assert.equal(await h.daemon.getAttachmentInfo(blobId), undefined);
    assert.equal(await h.client!.size(blobId), 6);
  });

  it('resumes unsettled attachments after a restart', async () => {
    await h.openDaemon({ transfers: { uploads: 1, smallBlobBytes: 0 } });
    // Made at once, so that most wait for the one upload slot when the daemon stops.
    const puts = await Promise.all(
      Array.from({ length: 8 }, () => docWithAttachment(h.daemon, 1024 * KiB)),
    );
    await h.openDaemon();
    const restored = h.logs.find((line) => line.msg === 'daemon ready')?.restored as number;
    assert.ok(restored > 0, `${restored} attachments restored`);

    for (const { blobId, plaintext } of puts) {
      await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
      const { stream } = await h.client!.get(blobId);
      assert.equal((await readAll(stream)).length > plaintext.length, true);
    }
  });

  it('sweeps attachments that no stored document points at', async () => {
    const kept = await docWithAttachment(h.daemon, KiB);
    const doc = await h.daemon.createDoc({});
    const orphan = await h.daemon.putAttachment(doc.id, sourceOf(randomBytes(KiB)));

    await h.openDaemon({ orphanGraceMs: 0 });
    await waitFor(async () => (await h.daemon.getAttachmentInfo(orphan.blobId)) === undefined, {
      what: 'the orphan to be swept',
    });
    assert.equal(await hasLocalEnvelope(h.daemon, orphan.blobId), false);
    assert.ok(await h.daemon.getAttachmentInfo(kept.blobId));
  });

  /** Opens the daemon's own store (the daemon closed), runs `use`, and closes it. */
  async function withClosedDaemonStore<T>(use: (store: Store) => Promise<T>): Promise<T> {
    await h.daemon.close();
    const store = await Store.open(join(h.dataDir, 'db'), {
      sealer: new DocumentSealer(h.secret),
      deviceId: h.deviceId,
    });
    try {
      return await use(store);
    } finally {
      await store.close();
    }
  }

  /** A document with an attachment, then pointed at a second one. */
  async function replaceAttachment(options: { keepReplacedBlob?: boolean } = {}) {
    const first = await docWithAttachment(h.daemon, KiB);
    const second = await h.daemon.putAttachment(first.doc.id, sourceOf(randomBytes(KiB)));
    const { doc } = first;
    await h.daemon.putDoc(doc.id, { ...doc.content, blob_id: second.blobId }, doc.rev, options);
    return { first, second };
  }

  it('commits the deletion of a replaced blob with the document change, and drops it once done', async () => {
    await h.openDaemon();
    const { first } = await replaceAttachment();
    assert.ok(
      (await h.daemon.getAttachmentInfo(first.blobId))?.machineState.startsWith('deleting') ?? true,
    );
    const pending = await withClosedDaemonStore((store) =>
      store.listSettings(REPLACED_BLOB_SETTING),
    );
    assert.deepEqual(pending, []);
    await h.openDaemon();
  });

  it('finishes at the next start a replaced blob deletion that a crash cut short', async () => {
    await h.openDaemon();
    const { doc, blobId } = await docWithAttachment(h.daemon, KiB);
    await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
    // What a crash right after putDoc's commit leaves: the pointer gone and the deletion
    // recorded in the same batch, the attachment itself still SYNCED.
    await withClosedDaemonStore((store) =>
      store.commit((tx) => {
        const { blob_id: _pointer, ...content } = doc.content;
        tx.putDoc(doc.id, content, doc.rev);
        tx.putSetting(REPLACED_BLOB_SETTING + blobId, { docId: doc.id });
      }),
    );

    // The orphan sweep's grace period (24 h by default) is not what deletes it.
    await h.openDaemon();
    await waitFor(async () => (await h.daemon.getAttachmentInfo(blobId)) === undefined, {
      what: 'the replaced blob to be deleted at start-up',
    });
    assert.ok(h.logs.some((line) => line.msg === 'finishing the deletion of a replaced blob'));
    await waitFor(async () => !(await h.client!.list()).includes(blobId), {
      what: 'the server copy to go',
    });
    const pending = await withClosedDaemonStore((store) =>
      store.listSettings(REPLACED_BLOB_SETTING),
    );
    assert.deepEqual(pending, []);
    await h.openDaemon();
  });

  it('sweeps a blob its document stopped pointing at and that was kept', async () => {
    await h.openDaemon({ orphanGraceMs: 0 });
    const { first, second } = await replaceAttachment({ keepReplacedBlob: true });
    assert.ok(await h.daemon.getAttachmentInfo(first.blobId), 'kept for now');

    // (The start-up sweep may be the one that finds it.)
    await h.daemon.sweepOrphans();
    await waitFor(async () => (await h.daemon.getAttachmentInfo(first.blobId)) === undefined, {
      what: 'the replaced blob to be deleted',
    });
    assert.ok(await h.daemon.getAttachmentInfo(second.blobId));
    // Nothing is left to sweep: the pointed one was claimed, the deleted one is gone.
    assert.deepEqual(await h.daemon.sweepOrphans(), { records: 0, files: 0 });
  });
});
