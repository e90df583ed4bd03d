import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, SimulatedClock, waitFor } from 'xstate';
import {
  type AttachmentEmitted,
  type AttachmentInput,
  AttachmentState,
  attachmentMachine,
  attachmentStatePath,
  isSettled,
  publicStateOf,
} from '../../machines/index.js';
import { INPUT, recordedMachine } from './effects.js';

const SECOND = 1000;

function start(input: Partial<AttachmentInput> = {}) {
  const recorded = recordedMachine();
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const actor = createActor(recorded.machine, { input: { ...INPUT, ...input }, clock });
  const emitted: AttachmentEmitted[] = [];
  actor.on('*', (event) => emitted.push(event));
  actor.start();
  const path = () => attachmentStatePath(actor.getSnapshot());
  const context = () => actor.getSnapshot().context;
  const reach = (target: string) =>
    waitFor(actor, (snapshot) => attachmentStatePath(snapshot) === target, { timeout: 2000 });
  return { ...recorded, clock, actor, emitted, path, context, reach };
}

/** Brings a fresh attachment to `synced` through a successful upload. */
async function synced(input: Partial<AttachmentInput> = {}) {
  const t = start(input);
  t.actor.send({ type: 'STORED' });
  t.actor.send({ type: 'START' });
  t.lastUpload().resolve();
  await t.reach('synced');
  return t;
}

describe('attachment machine', () => {
  describe('upload path', () => {
    it('starts in none, which is settled and NONE', () => {
      const t = start();
      assert.equal(t.path(), 'none');
      assert.equal(publicStateOf(t.actor.getSnapshot().value), AttachmentState.NONE);
      assert.equal(isSettled(t.actor.getSnapshot().value), true);
    });

    it('queues a stored envelope and uploads it when the scheduler grants a slot', async () => {
      const t = start();
      t.actor.send({ type: 'STORED', size: 4321 });
      assert.equal(t.path(), 'local.queued');
      assert.equal(t.calls.upload.length, 0);

      t.actor.send({ type: 'START' });
      assert.equal(t.path(), 'local.uploading');
      assert.deepEqual(t.lastUpload().input, {
        ...INPUT,
        size: 4321,
        priority: 'MEDIUM',
        attempt: 1,
      });

      t.lastUpload().resolve();
      const snapshot = await t.reach('synced');
      assert.equal(publicStateOf(snapshot.value), AttachmentState.SYNCED);
      assert.equal(snapshot.context.attempts, 0);
      assert.equal(snapshot.context.lastError, null);
    });

    it('ignores START outside a queued state', () => {
      const t = start();
      t.actor.send({ type: 'START' });
      assert.equal(t.path(), 'none');
      assert.equal(t.calls.upload.length, 0);
    });

    it('passes a changed priority to the next transfer', () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'PRIORITIZE', priority: 'URGENT' });
      t.actor.send({ type: 'START' });
      assert.equal(t.lastUpload().input.priority, 'URGENT');
    });

    it('retries network, internal, quota and unknown failures after a back-off', async () => {
      for (const code of ['network', 'internal', 'quota_exceeded', 'ECONNRESET']) {
        const t = start();
        t.actor.send({ type: 'STORED' });
        t.actor.send({ type: 'START' });
        t.lastUpload().reject(code, `boom ${code}`);
        const snapshot = await t.reach('local.retrying');
        assert.equal(snapshot.context.attempts, 1, code);
        assert.equal(snapshot.context.retryAt, t.clock.now() + 10 * SECOND, code);
        assert.deepEqual(snapshot.context.lastError, { code, message: `boom ${code}` });
        assert.equal(publicStateOf(snapshot.value), AttachmentState.LOCAL);
      }
    });

    it('backs off 10, 20, 30, 40, 50, then every 60 seconds', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      const waits: number[] = [];
      for (let attempt = 1; attempt <= 7; attempt++) {
        t.actor.send({ type: 'START' });
        assert.equal(t.lastUpload().input.attempt, attempt);
        t.lastUpload().reject('network');
        const snapshot = await t.reach('local.retrying');
        const wait = snapshot.context.retryAt! - t.clock.now();
        waits.push(wait / SECOND);

        t.clock.increment(wait - 1);
        assert.equal(t.path(), 'local.retrying');
        t.clock.increment(1);
        assert.equal(t.path(), 'local.queued');
        assert.equal(t.context().retryAt, null);
      }
      assert.deepEqual(waits, [10, 20, 30, 40, 50, 60, 60]);
    });

    it('takes its back-off delays from the input', async () => {
      const t = start({ retryDelaysMs: [5, 7] });
      t.actor.send({ type: 'STORED' });
      for (const expected of [5, 7, 7]) {
        t.actor.send({ type: 'START' });
        t.lastUpload().reject('network');
        const snapshot = await t.reach('local.retrying');
        assert.equal(snapshot.context.retryAt! - t.clock.now(), expected);
        t.clock.increment(expected);
      }
    });

    it('skips the rest of the wait on RETRY', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'START' });
      t.lastUpload().reject('network');
      await t.reach('local.retrying');
      t.actor.send({ type: 'RETRY' });
      assert.equal(t.path(), 'local.queued');
      t.clock.increment(60 * SECOND);
      assert.equal(t.path(), 'local.queued');
    });

    it('goes back to the queue paused when credentials are refused', async () => {
      for (const code of ['unauthorized', 'forbidden']) {
        const t = start();
        t.actor.send({ type: 'STORED' });
        t.actor.send({ type: 'START' });
        t.lastUpload().reject(code);
        const snapshot = await t.reach('local.queued');
        assert.equal(snapshot.context.paused, true, code);
        assert.equal(snapshot.context.retryAt, null);
        assert.equal(snapshot.context.lastError?.code, code);

        t.actor.send({ type: 'START' });
        assert.equal(t.context().paused, false);
      }
    });

    it('rejects a too large blob for good', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'START' });
      t.lastUpload().reject('too_large');
      const snapshot = await t.reach('local.rejected');
      assert.equal(publicStateOf(snapshot.value), AttachmentState.LOCAL);
      assert.equal(isSettled(snapshot.value), true);
      t.clock.increment(600 * SECOND);
      assert.equal(t.path(), 'local.rejected');
      assert.equal(t.calls.upload.length, 1);

      t.actor.send({ type: 'RETRY' });
      assert.equal(t.path(), 'local.queued');
    });

    it('applies the deletion when the upload finds the blob deleted', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'START' });
      t.lastUpload().reject('blob_deleted');
      await t.reach('deleting.removing');
      assert.equal(t.lastRemove().input.deletion, 'remote');
      t.lastRemove().resolve();
      const snapshot = await t.reach('deleted');
      assert.equal(snapshot.status, 'done');
      assert.equal(publicStateOf(snapshot.value), AttachmentState.NONE);
    });

    it('emits each failure with its kind and attempt count', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'START' });
      t.lastUpload().reject('network', 'offline');
      await t.reach('local.retrying');
      assert.deepEqual(t.emitted, [
        {
          type: 'failure',
          operation: 'upload',
          error: { code: 'network', message: 'offline' },
          kind: 'retry',
          attempts: 1,
        },
      ]);
    });

    it('fails with "not provided" when the daemon supplies no upload actor', async () => {
      const actor = createActor(attachmentMachine, {
        input: INPUT,
        clock: new SimulatedClock(),
      }).start();
      actor.send({ type: 'STORED' });
      actor.send({ type: 'START' });
      const snapshot = await waitFor(actor, (s) => s.matches({ local: 'retrying' }), {
        timeout: 2000,
      });
      assert.equal(snapshot.context.lastError?.code, 'unknown');
      assert.match(snapshot.context.lastError?.message ?? '', /upload actor is not provided/);
    });
  });

  describe('download path', () => {
    it('finds a remote blob, downloads it on request and ends synced', async () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND', size: 99 });
      assert.equal(t.path(), 'remote.idle');
      assert.equal(publicStateOf(t.actor.getSnapshot().value), AttachmentState.REMOTE);
      assert.equal(isSettled(t.actor.getSnapshot().value), true);

      t.actor.send({ type: 'DOWNLOAD' });
      assert.equal(t.path(), 'remote.queued');
      t.actor.send({ type: 'START' });
      assert.equal(t.path(), 'remote.downloading');
      assert.equal(t.lastDownload().input.size, 99);
      t.lastDownload().resolve();
      await t.reach('synced');
    });

    it('queues a pinned remote attachment for download', () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'PIN' });
      assert.equal(t.path(), 'remote.queued');
      assert.equal(t.context().pinned, true);

      t.actor.send({ type: 'UNPIN' });
      assert.equal(t.path(), 'remote.queued');
      assert.equal(t.context().pinned, false);
    });

    it('queues a remote attachment found while already pinned', () => {
      const t = start({ pinned: true });
      t.actor.send({ type: 'REMOTE_FOUND' });
      assert.equal(t.path(), 'remote.queued');
    });

    it('retries a failed download with back-off', async () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('internal');
      const snapshot = await t.reach('remote.retrying');
      assert.equal(publicStateOf(snapshot.value), AttachmentState.REMOTE);
      t.clock.increment(10 * SECOND);
      assert.equal(t.path(), 'remote.queued');
    });

    it('ends in failed after three failed verifications', async () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      for (let n = 1; n <= 2; n++) {
        t.actor.send({ type: 'START' });
        t.lastDownload().reject('integrity_error');
        const snapshot = await t.reach('remote.retrying');
        assert.equal(snapshot.context.corruptions, n);
        t.clock.increment(snapshot.context.retryAt! - t.clock.now());
      }
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('integrity_error');
      const snapshot = await t.reach('failed');
      assert.equal(snapshot.context.corruptions, 3);
      assert.equal(publicStateOf(snapshot.value), AttachmentState.REMOTE);
      assert.equal(isSettled(snapshot.value), true);
      assert.equal(t.emitted.filter((e) => e.type === 'failure' && e.kind === 'corrupt').length, 3);
    });

    it('counts verifications against maxCorruptions from the input', async () => {
      const t = start({ maxCorruptions: 1 });
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('integrity_error');
      await t.reach('failed');
    });

    it('downloads a failed attachment again on request, with counters reset', async () => {
      const t = start({ maxCorruptions: 1 });
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('integrity_error');
      await t.reach('failed');
      t.actor.send({ type: 'DOWNLOAD' });
      assert.equal(t.path(), 'remote.queued');
      assert.equal(t.context().corruptions, 0);
      assert.equal(t.context().lastError, null);
    });

    it('resets the corruption count after a good download', async () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('integrity_error');
      await t.reach('remote.retrying');
      t.actor.send({ type: 'RETRY' });
      t.actor.send({ type: 'START' });
      t.lastDownload().resolve();
      const snapshot = await t.reach('synced');
      assert.equal(snapshot.context.corruptions, 0);
    });

    it('goes back to the queue paused when the download is refused', async () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('forbidden');
      const snapshot = await t.reach('remote.queued');
      assert.equal(snapshot.context.paused, true);
    });

    it('applies the deletion when the download finds the blob deleted', async () => {
      const t = start();
      t.actor.send({ type: 'REMOTE_FOUND' });
      t.actor.send({ type: 'DOWNLOAD' });
      t.actor.send({ type: 'START' });
      t.lastDownload().reject('blob_deleted');
      await t.reach('deleting.removing');
      assert.equal(t.lastRemove().input.deletion, 'remote');
    });
  });

  describe('evicting', () => {
    it('asks the evict actor and ends in remote.idle', async () => {
      const t = await synced();
      t.actor.send({ type: 'EVICT' });
      assert.equal(t.path(), 'evicting');
      assert.equal(publicStateOf(t.actor.getSnapshot().value), AttachmentState.REMOTE);
      assert.equal(t.lastEvict().input.blobId, INPUT.blobId);
      t.lastEvict().resolve();
      await t.reach('remote.idle');
    });

    it('refuses to evict a pinned attachment', async () => {
      const t = await synced({ pinned: true });
      t.actor.send({ type: 'EVICT' });
      assert.equal(t.path(), 'synced');
      assert.equal(t.calls.evict.length, 0);
      assert.deepEqual(t.emitted.at(-1), { type: 'refused', command: 'EVICT', reason: 'pinned' });
    });

    it('refuses to evict an attachment that is not synced', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'EVICT' });
      assert.equal(t.path(), 'local.queued');
      assert.deepEqual(t.emitted.at(-1), {
        type: 'refused',
        command: 'EVICT',
        reason: 'not_synced',
      });
      t.actor.send({ type: 'START' });
      t.actor.send({ type: 'EVICT' });
      assert.equal(t.path(), 'local.uploading');
      assert.equal(t.calls.evict.length, 0);
    });

    it('queues the blob for upload again when the server no longer holds it', async () => {
      const t = await synced();
      t.actor.send({ type: 'EVICT' });
      t.lastEvict().reject('not_found');
      const snapshot = await t.reach('local.queued');
      assert.equal(snapshot.context.lastError?.code, 'not_found');
    });

    it('stays synced when the check fails', async () => {
      const t = await synced();
      t.actor.send({ type: 'EVICT' });
      t.lastEvict().reject('network');
      const snapshot = await t.reach('synced');
      assert.equal(snapshot.context.lastError?.code, 'network');
      assert.equal(t.emitted.at(-1)?.type, 'failure');
    });

    it('downloads again when pinned while evicting', async () => {
      const t = await synced();
      t.actor.send({ type: 'EVICT' });
      t.actor.send({ type: 'PIN' });
      t.lastEvict().resolve();
      await t.reach('remote.queued');
    });
  });

  describe('deleting', () => {
    it('deletes from every state and aborts a transfer in flight', async () => {
      const t = start();
      t.actor.send({ type: 'STORED' });
      t.actor.send({ type: 'START' });
      const upload = t.lastUpload();
      t.actor.send({ type: 'DELETE' });
      assert.equal(t.path(), 'deleting.removing');
      assert.equal(upload.signal.aborted, true);
      assert.deepEqual(t.lastRemove().input, {
        blobId: INPUT.blobId,
        docId: INPUT.docId,
        namespace: INPUT.namespace,
        deletion: 'local',
      });
      t.lastRemove().resolve();
      await t.reach('deleted');

      for (const setup of [
        (s: ReturnType<typeof start>) => s.actor.send({ type: 'REMOTE_FOUND' }),
        (s: ReturnType<typeof start>) => s.actor.send({ type: 'STORED' }),
        () => {},
      ]) {
        const s = start();
        setup(s);
        s.actor.send({ type: 'DELETE' });
        assert.equal(s.path(), 'deleting.removing');
        assert.equal(publicStateOf(s.actor.getSnapshot().value), AttachmentState.NONE);
      }
    });

    it('drops only the local copy when another device deleted the blob', async () => {
      const t = await synced();
      t.actor.send({ type: 'REMOTE_DELETED' });
      assert.equal(t.lastRemove().input.deletion, 'remote');
      t.actor.send({ type: 'DELETE' });
      assert.equal(t.calls.remove.length, 1);
    });

    it('retries a failed removal with back-off', async () => {
      const t = await synced();
      t.actor.send({ type: 'DELETE' });
      t.lastRemove().reject('network');
      const snapshot = await t.reach('deleting.retrying');
      assert.equal(snapshot.context.retryAt! - t.clock.now(), 10 * SECOND);
      t.clock.increment(10 * SECOND);
      assert.equal(t.path(), 'deleting.removing');
      assert.equal(t.calls.remove.length, 2);
      assert.equal(t.lastRemove().input.deletion, 'local');
    });
  });
});
