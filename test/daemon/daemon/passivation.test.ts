import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AttachmentState } from '../../../machines/index.js';
import { DaemonHarness } from '../../helpers/daemon-harness.js';
import { waitFor } from '../../helpers/wait.js';
import { docWithAttachment, KiB, readAll, waitForAttachment } from './daemon-fixtures.js';

// Every waiting attachment is passivated (maxLiveIdle 0); retries wait long enough
// (1.2 s, past the 1 s below which a retry keeps its actor) to be passivated too.
const RETRY_DELAYS_MS = [1200];

describe('Daemon with waiting attachments passivated', () => {
  let h: DaemonHarness;

  before(async () => {
    h = await DaemonHarness.start({
      daemon: { maxLiveIdle: 0, transfers: { retryDelaysMs: RETRY_DELAYS_MS } },
    });
  });

  after(async () => {
    await h?.cleanup();
  });

  it('drops the actors of retrying uploads, wakes them at their retry time, and syncs them', async () => {
    await h.stopServer();
    const small = await Promise.all(
      Array.from({ length: 12 }, (_, i) => docWithAttachment(h.daemon, KiB + i)),
    );
    const large = await docWithAttachment(h.daemon, 300 * KiB);
    const all = [...small, large];
    // All fail once and wait to retry without a live actor.
    await waitFor(
      async () => {
        const infos = await Promise.all(
          all.map(({ blobId }) => h.daemon.getAttachmentInfo(blobId)),
        );
        return infos.every((i) => i?.machineState === 'local.retrying');
      },
      { timeoutMs: 10_000, what: 'every upload to wait for a retry' },
    );
    await waitFor(() => h.daemon.liveAttachmentCount === 0, {
      timeoutMs: 5000,
      what: 'the retrying actors to be passivated',
    });
    for (const { blobId } of all) {
      const info = await h.daemon.getAttachmentInfo(blobId);
      assert.equal(info?.state, AttachmentState.LOCAL);
      assert.equal(info?.lastError?.code, 'network');
    }

    // Woken at their retry time, they fail again (attempts go up) while the server is down.
    await waitFor(
      async () => {
        const infos = await Promise.all(
          all.map(({ blobId }) => h.daemon.getAttachmentInfo(blobId)),
        );
        return infos.every((i) => (i?.attempts ?? 0) >= 2);
      },
      { timeoutMs: 15_000, what: 'a second attempt of every upload' },
    );

    await h.startServer();
    for (const { blobId, info, plaintext } of all) {
      await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
      assert.equal(await h.client!.size(blobId), info.size);
      assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
    }
  });

  it('restores queued attachments from their records when a slot comes', async () => {
    const puts = await Promise.all(
      Array.from({ length: 30 }, (_, i) => docWithAttachment(h.daemon, 2 * KiB + i)),
    );
    for (const { blobId } of puts) {
      await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
    }
    await waitFor(() => h.daemon.liveAttachmentCount === 0, {
      timeoutMs: 5000,
      what: 'every actor to be dropped',
    });
  });

  it('passivates what it restores at start-up and still finishes it', async () => {
    await h.stopServer();
    const waiting = await Promise.all(
      Array.from({ length: 8 }, (_, i) => docWithAttachment(h.daemon, 3 * KiB + i)),
    );
    await h.openDaemon();
    await waitFor(() => h.daemon.liveAttachmentCount === 0, {
      timeoutMs: 10_000,
      what: 'the restored uploads to fail and be passivated',
    });
    for (const { blobId } of waiting) {
      assert.equal((await h.daemon.getAttachmentInfo(blobId))?.state, AttachmentState.LOCAL);
    }
    await h.startServer();
    for (const { blobId } of waiting) {
      await h.daemon.uploadAttachment(blobId);
      const info = await h.daemon.getAttachmentInfo(blobId);
      assert.equal(info?.state, AttachmentState.SYNCED);
    }
    const status = await h.daemon.status();
    assert.equal(status.attachments.local, 0);
  });

  it('probes an unreachable server with one attempt per interval, not every upload in turn', async () => {
    await h.stopServer();
    // Large enough to go one PUT each, so that every attempt is one job.
    const puts = await Promise.all(
      Array.from({ length: 20 }, (_, i) => docWithAttachment(h.daemon, 300 * KiB + i)),
    );
    const attempts = async () => {
      const infos = await Promise.all(puts.map(({ blobId }) => h.daemon.getAttachmentInfo(blobId)));
      return infos.reduce((sum, info) => sum + (info?.attempts ?? 0), 0);
    };
    await waitFor(async () => (await attempts()) > 0, {
      timeoutMs: 10_000,
      what: 'a first failed attempt',
    });
    const first = await attempts();
    const windowMs = 2 * RETRY_DELAYS_MS[0]!;
    // A measurement window, not a synchronisation: attempts made in it are counted.
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const made = (await attempts()) - first;
    // Unthrottled, 20 uploads retrying every 1.2 s would make about 20 attempts here.
    assert.ok(made <= 3, `${made} attempts in ${windowMs} ms while the server was down`);
    assert.equal((await h.daemon.status()).server.reachable, false);

    await h.startServer();
    for (const { blobId } of puts) {
      await waitForAttachment(
        h.daemon,
        blobId,
        (i) => i.machineState === 'synced',
        'synced',
        30_000,
      );
    }
  });
});
