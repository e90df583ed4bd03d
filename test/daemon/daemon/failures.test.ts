import assert from 'node:assert/strict';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AttachmentState } from '../../../machines/index.js';
import { DaemonHarness } from '../../helpers/daemon-harness.js';
import {
  docWithAttachment,
  hasCode,
  hasLocalEnvelope,
  KiB,
  readAll,
  waitForAttachment,
} from './daemon-fixtures.js';

/** Flips one byte of a file in place. */
async function flipByte(path: string, offset: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

describe('Daemon transfer failures', () => {
  let h: DaemonHarness;

  before(async () => {
    h = await DaemonHarness.start();
  });

  after(async () => {
    await h?.cleanup();
  });

  it('retries uploads with back-off while the server is down and completes when it returns', async () => {
    await h.stopServer();
    const small = await docWithAttachment(h.daemon, 10 * KiB);
    const large = await docWithAttachment(h.daemon, 400 * KiB);

    await assert.rejects(h.daemon.uploadAttachment(large.blobId), hasCode('remote_unavailable'));
    for (const { blobId } of [small, large]) {
      const info = await waitForAttachment(h.daemon, blobId, (i) => i.attempts >= 2, 'retried');
      assert.equal(info.state, AttachmentState.LOCAL, 'nothing is SYNCED while the server is down');
      assert.equal(info.lastError?.code, 'network');
    }
    const status = await h.daemon.status();
    assert.equal(status.server.reachable, false);
    assert.match(status.server.lastError ?? '', /network/);
    const failures = h.logs.filter((line) => line.msg === 'upload failed');
    assert.ok(failures.some((line) => typeof line.retryInMs === 'number'));

    await h.startServer();
    for (const { blobId, info } of [small, large]) {
      await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
      assert.equal(await h.client!.size(blobId), info.size);
    }
    assert.equal((await h.daemon.status()).server.reachable, true);
  });

  it('ends a tampered blob in failed and never hands out its plaintext', async () => {
    const { blobId } = await docWithAttachment(h.daemon, 200 * KiB);
    await h.daemon.uploadAttachment(blobId);
    await h.daemon.evictAttachment(blobId);
    await flipByte(h.serverBlobPath(blobId), 150 * KiB);

    await assert.rejects(h.daemon.openAttachment(blobId), hasCode('integrity_error'));
    const failed = await waitForAttachment(
      h.daemon,
      blobId,
      (i) => i.machineState === 'failed',
      'failed',
    );
    assert.equal(failed.state, AttachmentState.REMOTE);
    assert.equal(failed.lastError?.code, 'integrity_error');
    await assert.rejects(h.daemon.openAttachment(blobId), hasCode('integrity_error'));

    assert.equal(await hasLocalEnvelope(h.daemon, blobId), false);
    assert.deepEqual(await readdir(join(h.dataDir, 'blobs', '.tmp')), []);
    const corrupt = h.logs.filter(
      (line) => line.msg === 'download failed' && line.blobId === blobId && line.kind === 'corrupt',
    );
    assert.equal(corrupt.length, 3);
  });

  it('downloads a failed attachment again when asked explicitly', async () => {
    const { blobId, plaintext } = await docWithAttachment(h.daemon, 20 * KiB);
    await h.daemon.uploadAttachment(blobId);
    await h.daemon.evictAttachment(blobId);
    const path = h.serverBlobPath(blobId);
    await flipByte(path, 10 * KiB);
    await assert.rejects(h.daemon.openAttachment(blobId), hasCode('integrity_error'));
    await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'failed', 'failed');

    await flipByte(path, 10 * KiB);
    const info = await h.daemon.downloadAttachment(blobId);
    assert.equal(info.state, AttachmentState.SYNCED);
    assert.deepEqual(await readAll(await h.daemon.openAttachment(blobId)), plaintext);
  });

  it('pauses every transfer when the server refuses the credentials', async () => {
    await h.openDaemon({
      remote: { url: h.server!.url, uuid: h.user!.uuid, token: 'not-the-token' },
    });
    const { blobId } = await docWithAttachment(h.daemon, 300 * KiB);
    await assert.rejects(h.daemon.uploadAttachment(blobId), hasCode('unauthorized'));
    const status = await h.daemon.status();
    assert.equal(status.server.paused, true);
    assert.match(status.server.lastError ?? '', /unauthorized/);
    const waiting = await waitForAttachment(
      h.daemon,
      blobId,
      (i) => i.machineState === 'local.queued',
      'queued again',
    );
    assert.equal(waiting.lastError?.code, 'unauthorized');
    assert.equal((await h.daemon.status()).server.paused, true);

    await h.openDaemon();
    await waitForAttachment(h.daemon, blobId, (i) => i.machineState === 'synced', 'synced');
  });
});

describe('Daemon against a server with a small maximum blob size', () => {
  let h: DaemonHarness;

  before(async () => {
    h = await DaemonHarness.start({ server: { config: { max_blob_size: 64 * KiB } } });
  });

  after(async () => {
    await h?.cleanup();
  });

  it('keeps an attachment the server refuses as too large LOCAL, without retrying', async () => {
    const { blobId } = await docWithAttachment(h.daemon, 300 * KiB);
    await assert.rejects(h.daemon.uploadAttachment(blobId), hasCode('too_large'));
    const info = await waitForAttachment(
      h.daemon,
      blobId,
      (i) => i.machineState === 'local.rejected',
      'rejected',
    );
    assert.equal(info.state, AttachmentState.LOCAL);
    assert.equal((await h.daemon.status()).attachments.rejected, 1);
  });
});
