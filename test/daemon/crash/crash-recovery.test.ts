import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { AttachmentState, type Soledad, type TransferProgress } from '../../../rpc/client.js';
import { tempDir } from '../../helpers/tmp.js';
import { waitFor } from '../../helpers/wait.js';
import {
  CrashRig,
  clientPlaintextDigest,
  type Digest,
  digestOfBytes,
  KiB,
  localBlobPath,
  localTempFiles,
  MiB,
  seededBuffer,
  serverPlaintextDigest,
  sizeOf,
  waitForAll,
  waitForInfo,
  writeSourceFile,
} from './crash-fixtures.js';

/** Collects the transfer progress the daemon reports to `soledad`. */
async function watchProgress(soledad: Soledad): Promise<TransferProgress[]> {
  const seen: TransferProgress[] = [];
  soledad.on('progress', (progress) => seen.push(progress));
  await soledad.subscribe({ progress: true });
  return seen;
}

/** Waits for a report that `blobId` is moving in `direction` and is not done yet. */
function midTransfer(
  seen: TransferProgress[],
  blobId: string,
  direction: TransferProgress['direction'],
): Promise<TransferProgress> {
  return waitFor(
    () =>
      seen.find(
        (p) => p.blobId === blobId && p.direction === direction && p.bytes > 0 && p.bytes < p.total,
      ),
    { timeoutMs: 30_000, intervalMs: 5, what: `the ${direction} of ${blobId} to start` },
  );
}

/** `restored` of the last 'daemon ready' line of the running daemon. */
function restoredCount(rig: CrashRig): number | undefined {
  const ready = rig.daemon!.logs().filter((line) => line.msg === 'daemon ready');
  return ready.at(-1)?.restored as number | undefined;
}

describe('a daemon killed with SIGKILL in the middle of its work', () => {
  let rig: CrashRig;
  let work: { path: string; remove(): Promise<void> };

  before(async () => {
    rig = await CrashRig.start({ log_level: 'info' });
    work = await tempDir('soledad-crash-src-');
  });

  afterEach(async () => {
    if (rig?.daemon?.running) await rig.kill();
  });

  after(async () => {
    await rig?.cleanup();
    await work?.remove();
  });

  it('completes a 200 MB upload after the daemon is killed mid-transfer', async () => {
    const path = join(work.path, 'upload.bin');
    const source = await writeSourceFile(path, 200 * MiB);

    let soledad = await rig.startDaemon();
    const progress = await watchProgress(soledad);
    const doc = await soledad.createDoc({ name: 'upload.bin' });
    const stored = await doc.putAttachment(path);
    await soledad.putDoc(doc);
    const { blobId } = stored;
    assert.equal(stored.state, AttachmentState.LOCAL);
    assert.equal(stored.plaintextSize, source.bytes);

    await midTransfer(progress, blobId, 'upload');
    const status = await rig.kill();
    assert.equal(status.signal, 'SIGKILL');
    assert.equal(
      (await rig.client.list()).includes(blobId),
      false,
      'the server must not hold an upload that was cut short',
    );

    soledad = await rig.startDaemon();
    assert.ok((restoredCount(rig) ?? 0) >= 1, 'the interrupted upload is restored at start');
    const after = await soledad.getAttachmentInfo(blobId);
    assert.ok(after !== undefined, 'the attachment survives the kill');
    assert.notEqual(after.state & AttachmentState.LOCAL, 0, 'the local copy survives the kill');

    const synced = await waitForInfo(soledad, blobId, (i) => i.machineState === 'synced', 'synced');
    assert.equal(synced.state, AttachmentState.SYNCED);
    assert.equal(await rig.client.size(blobId), stored.size);
    assert.deepEqual(await serverPlaintextDigest(rig.client, await rig.secret(), blobId), source);
    assert.deepEqual(await clientPlaintextDigest(soledad, blobId), source);
    const reloaded = await soledad.getDoc(doc.id);
    assert.equal(reloaded?.content.blob_id, blobId);
  });

  it('completes a download interrupted by SIGKILL and never shows a partial copy', async () => {
    const path = join(work.path, 'download.bin');
    const source = await writeSourceFile(path, 150 * MiB);

    let soledad = await rig.startDaemon();
    const progress = await watchProgress(soledad);
    const doc = await soledad.createDoc({ name: 'download.bin' });
    const { blobId, size } = await doc.putAttachment(path);
    await soledad.putDoc(doc);
    assert.equal(await doc.uploadAttachment(), AttachmentState.SYNCED);
    assert.equal(await doc.evictAttachment(), AttachmentState.REMOTE);
    const local = localBlobPath(rig.dir, blobId);
    assert.equal(await sizeOf(local), undefined, 'eviction drops the local copy');

    // Reading a REMOTE attachment downloads it first.
    const reading = soledad.openAttachment(blobId);
    reading.catch(() => undefined);
    await midTransfer(progress, blobId, 'download');
    await rig.kill();
    await assert.rejects(reading, 'a read cut off by the kill fails, it never returns bytes');
    assert.equal(await sizeOf(local), undefined, 'a partial download is never published');
    const leftovers = await localTempFiles(rig.dir);

    soledad = await rig.startDaemon();
    const temps = await localTempFiles(rig.dir);
    for (const name of leftovers) {
      assert.equal(temps.includes(name), false, `the partial file ${name} is removed at start`);
    }
    // Read at once: the daemon must download (again) rather than serve anything partial.
    const read = clientPlaintextDigest(soledad, blobId);
    read.catch(() => undefined);
    // Polled until synced: whenever the daemon reports a local copy, it is complete.
    await waitFor(
      async () => {
        const info = await soledad.getAttachmentInfo(blobId);
        assert.ok(info !== undefined, 'the attachment survives the kill');
        if ((info.state & AttachmentState.LOCAL) !== 0) {
          assert.equal(await sizeOf(local), size, `a ${info.machineState} copy is complete`);
        } else {
          assert.ok(info.machineState.startsWith('remote.'), `unexpected ${info.machineState}`);
        }
        return info.machineState === 'synced';
      },
      { timeoutMs: 60_000, intervalMs: 10, what: `${blobId} to be downloaded again` },
    );
    assert.deepEqual(await read, source, 'the first read after the restart is the whole file');
    assert.deepEqual(await clientPlaintextDigest(soledad, blobId), source);
    assert.equal((await soledad.getAttachmentInfo(blobId))?.state, AttachmentState.SYNCED);
  });

  it('keeps a deletion that was acknowledged just before the kill', async () => {
    let soledad = await rig.startDaemon();
    const docs = [];
    for (let i = 0; i < 12; i++) {
      const doc = await soledad.createDoc({ n: i });
      await doc.putAttachment(seededBuffer(`delete-${i}`, 4 * KiB + i));
      await soledad.putDoc(doc);
      assert.equal(await doc.uploadAttachment(), AttachmentState.SYNCED);
      docs.push(doc);
    }
    // Deleted all at once; killed as soon as the first deletion is acknowledged.
    const acked: { docId: string; blobId: string }[] = [];
    let killing: Promise<unknown> | undefined;
    await Promise.allSettled(
      docs.map(async (doc) => {
        const blobId = doc.blobId!;
        await doc.deleteAttachment();
        acked.push({ docId: doc.id, blobId });
        killing ??= rig.kill();
      }),
    );
    await killing;
    assert.ok(acked.length >= 1);

    soledad = await rig.startDaemon();
    for (const { docId, blobId } of acked) {
      assert.equal((await soledad.getDoc(docId))?.blobId, undefined, `${docId} points again`);
      const info = await soledad.getAttachmentInfo(blobId);
      assert.ok(
        info === undefined || info.machineState.startsWith('deleting'),
        `the acknowledged deletion of ${blobId} was lost: ${info?.machineState}`,
      );
    }
    await waitFor(
      async () => {
        const infos = await soledad.listAttachments();
        return acked.every(({ blobId }) => !infos.some((info) => info.blobId === blobId));
      },
      { timeoutMs: 20_000, what: 'the acknowledged deletions to finish' },
    );
    const onServer = new Set(await rig.client.list());
    const tombstones = new Set(await rig.client.list({ deleted: true }));
    for (const { blobId } of acked) {
      assert.equal(onServer.has(blobId), false, `${blobId} is still on the server`);
      assert.ok(tombstones.has(blobId), `${blobId} has no tombstone`);
    }
  });

  it('finishes evictions interrupted by SIGKILL without losing the blobs', async () => {
    let soledad = await rig.startDaemon();
    const entries: { blobId: string; source: Digest }[] = [];
    for (let i = 0; i < 16; i++) {
      const bytes = seededBuffer(`evict-${i}`, 300 * KiB + i * 1000);
      const doc = await soledad.createDoc({ n: i });
      const { blobId } = await doc.putAttachment(bytes);
      await soledad.putDoc(doc);
      assert.equal(await doc.uploadAttachment(), AttachmentState.SYNCED);
      entries.push({ blobId, source: digestOfBytes(bytes) });
    }
    // Evicted all at once; killed as soon as the first eviction is acknowledged, so that
    // others are cut off between dropping their local copy and recording it.
    let killing: Promise<unknown> | undefined;
    await Promise.allSettled(
      entries.map(async ({ blobId }) => {
        await soledad.evictAttachment(blobId);
        killing ??= rig.kill();
      }),
    );
    await killing;

    soledad = await rig.startDaemon();
    await waitFor(
      async () => {
        const infos = await soledad.listAttachments();
        let settled = 0;
        for (const { blobId } of entries) {
          const info = infos.find((candidate) => candidate.blobId === blobId);
          assert.ok(info !== undefined, `${blobId} is lost`);
          assert.notEqual(info.state, AttachmentState.LOCAL, `${blobId} is ${info.machineState}`);
          const local = await sizeOf(localBlobPath(rig.dir, blobId));
          // `evicting` (REMOTE outwardly) may have dropped its copy before the kill; its
          // re-run at start then records remote.idle. Only `synced` promises a copy.
          if (info.machineState === 'synced') {
            assert.equal(local, info.size, `${blobId} is ${info.machineState} without its copy`);
          }
          if (info.machineState === 'remote.idle' || info.machineState === 'synced') settled++;
        }
        return settled === entries.length;
      },
      { timeoutMs: 20_000, what: 'the interrupted evictions to settle' },
    );
    const secret = await rig.secret();
    for (const { blobId, source } of entries) {
      assert.deepEqual(await serverPlaintextDigest(rig.client, secret, blobId), source);
      assert.deepEqual(await clientPlaintextDigest(soledad, blobId), source);
    }
  });
});

describe('deletions racing a /stream batch upload', () => {
  let rig: CrashRig;
  let frozenServer: number | undefined;

  before(async () => {
    rig = await CrashRig.start({ log_level: 'info' });
  });

  after(async () => {
    if (frozenServer !== undefined) process.kill(frozenServer, 'SIGCONT');
    await rig?.cleanup();
  });

  it('leaves no blob on the server when attachments are deleted while their batch uploads', async () => {
    const soledad = await rig.startDaemon();
    // The server stops reading: the /stream batches carrying these stay in flight.
    frozenServer = rig.harness.server!.pid;
    process.kill(frozenServer, 'SIGSTOP');
    // Just under the small-blob limit: they travel together through /stream.
    const docs = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const doc = await soledad.createDoc({ n: i });
        await doc.putAttachment(seededBuffer(`batched-${i}`, 200 * KiB + i));
        await soledad.putDoc(doc);
        return doc;
      }),
    );
    const blobIds = new Set(docs.map((doc) => doc.blobId!));
    await waitForAll(
      soledad,
      blobIds,
      (info) => info.machineState === 'local.uploading',
      'the batches to be in flight',
      20_000,
    );
    // Deletions need only the local store: acknowledged while the batches hang.
    await Promise.all(docs.map((doc) => doc.deleteAttachment()));
    process.kill(frozenServer, 'SIGCONT');
    frozenServer = undefined;

    await waitFor(
      async () => {
        const infos = await soledad.listAttachments();
        return infos.every((info) => !blobIds.has(info.blobId));
      },
      { timeoutMs: 20_000, what: 'the deletions to finish' },
    );
    // A batch that landed after its blobs' deletion would leave them here for good.
    const onServer = (await rig.client.list()).filter((id) => blobIds.has(id));
    assert.deepEqual(onServer, [], 'deleted attachments are still on the server');
    assert.deepEqual(await rig.terminate(), { code: 0, signal: null });
  });
});
