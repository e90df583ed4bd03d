import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { DaemonEvent, TransferProgress } from '../../../daemon/daemon-api.js';
import { RemoteError } from '../../../daemon/remote/remote-error.js';
import { SMALL_ENVELOPE_MAX_BYTES } from '../../../daemon/small-envelopes.js';
import { AttachmentState } from '../../../machines/index.js';
import { DaemonHarness } from '../../helpers/daemon-harness.js';
import { waitFor } from '../../helpers/wait.js';
import {
  docWithAttachment,
  exists,
  hasCode,
  hasLocalEnvelope,
  KiB,
  localEnvelopePath,
  MiB,
  readAll,
  sourceOf,
  waitForAttachment,
} from './daemon-fixtures.js';

describe('Daemon attachments against a blobs server', () => {
  let h: DaemonHarness;

  before(async () => {
    h = await DaemonHarness.start();
  });

  after(async () => {
    await h?.cleanup();
  });

  it('runs the documented flow: put, LOCAL, putDoc, upload to SYNCED, same bytes back', async () => {
    const plaintext = randomBytes(300 * KiB);
    const doc = await h.daemon.createDoc({ title: 'hackers' });
    const info = await h.daemon.putAttachment(doc.id, sourceOf(plaintext));
    assert.equal(info.state & AttachmentState.LOCAL, AttachmentState.LOCAL);
    assert.equal(info.docId, doc.id);
    assert.equal(info.plaintextSize, plaintext.length);

    const stored = await h.daemon.putDoc(doc.id, { ...doc.content, blob_id: info.blobId }, doc.rev);
    assert.equal((await h.daemon.getDoc(doc.id))?.content.blob_id, info.blobId);
    assert.notEqual(stored.rev, doc.rev);

    const synced = await h.daemon.uploadAttachment(info.blobId);
    assert.equal(synced.state, AttachmentState.SYNCED);
    assert.equal(synced.machineState, 'synced');
    assert.equal(await h.client!.size(info.blobId), info.size);

    assert.deepEqual(await readAll(await h.daemon.openAttachment(info.blobId)), plaintext);
  });

  it('keeps a small envelope in LevelDB and a large one as a file, both across a restart', async () => {
    const small = await docWithAttachment(h.daemon, 10 * KiB);
    const large = await docWithAttachment(h.daemon, 100 * KiB);
    assert.ok(small.info.size <= SMALL_ENVELOPE_MAX_BYTES);
    assert.ok(large.info.size > SMALL_ENVELOPE_MAX_BYTES);
    assert.equal(await exists(localEnvelopePath(h.dataDir, small.blobId)), false);
    assert.equal(await exists(localEnvelopePath(h.dataDir, large.blobId)), true);

    // Uploaded from where each lives, downloaded back to the same place after an eviction.
    for (const { blobId } of [small, large]) {
      await h.daemon.uploadAttachment(blobId);
      await h.daemon.evictAttachment(blobId);
      assert.equal(await hasLocalEnvelope(h.daemon, blobId), false);
      await h.daemon.downloadAttachment(blobId);
    }
    assert.equal(await exists(localEnvelopePath(h.dataDir, small.blobId)), false);
    await h.openDaemon();
    for (const { blobId, plaintext } of [small, large]) {
      assert.equal(await hasLocalEnvelope(h.daemon, blobId), true);
      assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
    }
  });

  it('stores a small envelope with its first record, and uploads it at the first attempt', async () => {
    const events: DaemonEvent[] = [];
    const stop = h.daemon.onEvent((event) => events.push(event));
    try {
      // Enough at once that a group commit takes longer than the scheduler takes to start
      // an upload, as under any burst of puts.
      const puts: Awaited<ReturnType<typeof docWithAttachment>>[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next++ < 300) puts.push(await docWithAttachment(h.daemon, 2 * KiB));
        }),
      );
      for (const { blobId, plaintext } of puts) {
        // Readable at once: the envelope was durable with the record the put answered with.
        assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
      }
      for (const { blobId } of puts) {
        await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
      }
      const ours = new Set(puts.map((put) => put.blobId));
      const states = events.flatMap((event) =>
        event.type === 'attachment.state' && ours.has(event.blobId) ? [event.machineState] : [],
      );
      // An upload that ran before its envelope was stored would fail and wait to retry.
      assert.equal(states.includes('local.retrying'), false, states.join(' '));
      assert.equal(states.filter((state) => state === 'synced').length, puts.length);
    } finally {
      stop();
    }
  });

  it('keeps only ciphertext on the server', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 20 * KiB);
    await h.daemon.uploadAttachment(blobId);
    const { stream } = await h.client!.get(blobId);
    const stored = await readAll(stream);
    assert.equal(stored.includes(plaintext.subarray(0, 64)), false);
  });

  it('evicts a synced attachment and downloads it again, verified, when opened', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 2 * MiB);
    await h.daemon.uploadAttachment(blobId);

    const evicted = await h.daemon.evictAttachment(blobId);
    assert.equal(evicted.state, AttachmentState.REMOTE);
    assert.equal(evicted.machineState, 'remote.idle');
    assert.equal(await hasLocalEnvelope(h.daemon, blobId), false);

    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
    assert.equal((await h.daemon.getAttachmentInfo(blobId))?.state, AttachmentState.SYNCED);
    assert.equal(await hasLocalEnvelope(h.daemon, blobId), true);
  });

  it('reports an attachment being evicted as REMOTE, and still opens it meanwhile', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 100 * KiB);
    await h.daemon.uploadAttachment(blobId);
    // A stopped server holds the eviction at its check that the server has the blob.
    const pid = h.server!.pid;
    process.kill(pid, 'SIGSTOP');
    let evicting: Promise<unknown> | undefined;
    try {
      evicting = h.daemon.evictAttachment(blobId);
      evicting.catch(() => {});
      await waitFor(
        async () => (await h.daemon.getAttachmentInfo(blobId))?.machineState === 'evicting',
        { timeoutMs: 10_000, what: 'the attachment to be evicting' },
      );
      const info = await h.daemon.getAttachmentInfo(blobId);
      assert.equal(info?.state, AttachmentState.REMOTE, 'a copy being dropped is not promised');
      // The copy is still there: an open reads it without the server.
      assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal(((await evicting) as { state: number }).state, AttachmentState.REMOTE);
    // A download asked for now waits out nothing and fetches the blob back.
    assert.equal((await h.daemon.downloadAttachment(blobId)).state, AttachmentState.SYNCED);
    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
  });

  it('makes a download asked for during an eviction wait for it, then fetch the blob', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 100 * KiB);
    await h.daemon.uploadAttachment(blobId);
    const pid = h.server!.pid;
    process.kill(pid, 'SIGSTOP');
    let downloaded: Promise<{ state: number }> | undefined;
    try {
      const evicting = h.daemon.evictAttachment(blobId);
      evicting.catch(() => {});
      await waitFor(
        async () => (await h.daemon.getAttachmentInfo(blobId))?.machineState === 'evicting',
        { timeoutMs: 10_000, what: 'the attachment to be evicting' },
      );
      downloaded = h.daemon.downloadAttachment(blobId);
      downloaded.catch(() => {});
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal((await downloaded).state, AttachmentState.SYNCED);
    assert.equal(await hasLocalEnvelope(h.daemon, blobId), true);
    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
  });

  it('refuses to evict a pinned attachment, and evicts it once unpinned', async () => {
    const { blobId } = await docWithAttachment(h.daemon, 10 * KiB);
    await h.daemon.uploadAttachment(blobId);
    assert.equal((await h.daemon.pinAttachment(blobId)).pinned, true);

    await assert.rejects(h.daemon.evictAttachment(blobId), hasCode('invalid_state'));
    assert.equal(await hasLocalEnvelope(h.daemon, blobId), true);

    await h.daemon.unpinAttachment(blobId);
    assert.equal((await h.daemon.evictAttachment(blobId)).state, AttachmentState.REMOTE);
  });

  it('downloads a pinned REMOTE attachment and keeps the pin across a restart', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 100 * KiB);
    await h.daemon.uploadAttachment(blobId);
    await h.daemon.evictAttachment(blobId);

    const pinned = await h.daemon.pinAttachment(blobId);
    assert.equal(pinned.pinned, true);
    await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');

    await h.openDaemon();
    const info = await h.daemon.getAttachmentInfo(blobId);
    assert.equal(info?.pinned, true);
    assert.equal(info?.state, AttachmentState.SYNCED);
    await assert.rejects(h.daemon.evictAttachment(blobId), hasCode('invalid_state'));
    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
  });

  it('deletes an attachment: pointer removed, server tombstone, local copy gone', async () => {
    const { blobId, doc } = await docWithAttachment(h.daemon, 10 * KiB);
    await h.daemon.uploadAttachment(blobId);

    const updated = await h.daemon.deleteAttachment(doc.id, doc.rev);
    assert.equal(updated.content.blob_id, undefined);
    assert.equal(updated.content.name, 'file.bin');
    assert.equal((await h.daemon.getDoc(doc.id))?.content.blob_id, undefined);

    await waitForGone(h, blobId);
    await assert.rejects(
      h.client!.size(blobId),
      (error) => error instanceof RemoteError && error.code === 'not_found',
    );
    assert.ok((await h.client!.list({ deleted: true })).includes(blobId));
    assert.equal(await hasLocalEnvelope(h.daemon, blobId), false);
    await assert.rejects(h.daemon.openAttachment(blobId), hasCode('not_found'));
  });

  it('deletes the old blob once a document change replacing it is committed', async () => {
    const first = await docWithAttachment(h.daemon, 10 * KiB);
    await h.daemon.uploadAttachment(first.blobId);
    const second = await h.daemon.putAttachment(first.doc.id, sourceOf(randomBytes(KiB)));
    assert.ok(await h.daemon.getAttachmentInfo(first.blobId), 'not deleted before the commit');

    await h.daemon.putDoc(
      first.doc.id,
      { ...first.doc.content, blob_id: second.blobId },
      first.doc.rev,
    );
    await waitForGone(h, first.blobId);
    assert.ok((await h.client!.list({ deleted: true })).includes(first.blobId));
    assert.ok(await h.daemon.getAttachmentInfo(second.blobId));
  });

  it('deletes the attachment of a deleted document', async () => {
    const { blobId, doc } = await docWithAttachment(h.daemon, KiB);
    await h.daemon.uploadAttachment(blobId);
    const deleted = await h.daemon.deleteDoc(doc.id, doc.rev);
    assert.equal(deleted.deleted, true);
    assert.equal((await h.daemon.getDoc(doc.id))?.deleted, true);
    assert.equal(
      (await h.daemon.listDocs()).some((d) => d.id === doc.id),
      false,
    );
    await waitForGone(h, blobId);
    assert.ok((await h.client!.list({ deleted: true })).includes(blobId));
  });

  it('leaves the blob alone when the document change conflicts', async () => {
    const { blobId, doc } = await docWithAttachment(h.daemon, KiB);
    await assert.rejects(h.daemon.deleteAttachment(doc.id, `${h.deviceId}:1`), hasCode('conflict'));
    assert.ok(await h.daemon.getAttachmentInfo(blobId));
  });

  it('stores nothing when the source fails', async () => {
    const doc = await h.daemon.createDoc({});
    const before = (await h.daemon.listAttachments()).length;
    const failing = new Readable({
      read() {
        this.push(randomBytes(100 * KiB));
        this.destroy(new Error('disk unplugged'));
      },
    });
    await assert.rejects(h.daemon.putAttachment(doc.id, failing), hasCode('source_failed'));
    assert.equal((await h.daemon.listAttachments()).length, before);
    assert.deepEqual(await readdir(join(h.dataDir, 'blobs', '.tmp')), []);
  });

  it('refuses an attachment for a document that does not exist', async () => {
    await assert.rejects(
      h.daemon.putAttachment('no-such-doc', sourceOf(Buffer.from('x'))),
      hasCode('not_found'),
    );
  });

  it('reports transfer progress up to the total', async () => {
    const seen: TransferProgress[] = [];
    const stop = h.daemon.onProgress((progress) => seen.push(progress));
    try {
      const { blobId, info } = await docWithAttachment(h.daemon, 3 * MiB);
      await h.daemon.uploadAttachment(blobId);
      const uploads = seen.filter((p) => p.blobId === blobId && p.direction === 'upload');
      assert.ok(uploads.length >= 2, `${uploads.length} progress reports`);
      assert.equal(uploads.at(-1)?.bytes, info.size);
      assert.equal(uploads.at(-1)?.total, info.size);
    } finally {
      stop();
    }
  });

  it('numbers events and serves them again in order', async () => {
    const live: DaemonEvent[] = [];
    const stop = h.daemon.onEvent((event) => live.push(event));
    const start = (await h.daemon.status()).events.latestSeq;
    const { blobId } = await docWithAttachment(h.daemon, KiB);
    await h.daemon.uploadAttachment(blobId);
    stop();

    const seqs = live.map((event) => event.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => a - b),
    );
    assert.equal(new Set(seqs).size, seqs.length);
    const states = live
      .filter((e) => e.type === 'attachment.state' && e.blobId === blobId)
      .map((e) => (e.type === 'attachment.state' ? e.machineState : ''));
    assert.equal(states[0], 'local.queued');
    assert.equal(states.at(-1), 'synced');
    assert.ok(live.some((e) => e.type === 'doc.changed'));

    const read = await h.daemon.readEventsAfter(start);
    assert.equal(read.kind, 'events');
    if (read.kind !== 'events') return;
    const forFlow = read.events.filter((e) => seqs.includes(e.seq));
    assert.deepEqual(
      forFlow.map((e) => [e.seq, e.type]),
      live.map((e) => [e.seq, e.type]),
    );
  });

  it('reports a gap for events that fell out of the log', async () => {
    const read = await h.daemon.readEventsAfter(10 ** 9);
    assert.equal(read.kind, 'gap');
  });

  it('counts attachments by state in its status', async () => {
    const status = await h.daemon.status();
    assert.equal(status.deviceId, h.deviceId);
    assert.equal(status.server.url, h.server!.url);
    assert.equal(status.server.paused, false);
    const infos = await h.daemon.listAttachments();
    const synced = infos.filter((i) => i.machineState === 'synced').length;
    assert.equal(status.attachments.synced, synced);
  });
});

async function waitForGone(h: DaemonHarness, blobId: string): Promise<void> {
  await waitFor(async () => (await h.daemon.getAttachmentInfo(blobId)) === undefined, {
    what: `${blobId} to be deleted`,
  });
}

describe('Daemon without a blobs server', () => {
  let h: DaemonHarness;

  before(async () => {
    h = await DaemonHarness.start({ withoutServer: true });
  });

  after(async () => {
    await h?.cleanup();
  });

  it('keeps attachments LOCAL and refuses to evict one that is not synced', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 10 * KiB);
    await assert.rejects(h.daemon.evictAttachment(blobId), hasCode('invalid_state'));
    await assert.rejects(h.daemon.uploadAttachment(blobId), hasCode('remote_unavailable'));
    const info = await h.daemon.getAttachmentInfo(blobId);
    assert.equal(info?.state, AttachmentState.LOCAL);
    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
  });
});
