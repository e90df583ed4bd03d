import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Soledad } from '../../rpc/client.js';
import type { DaemonEvent, GapNotice, Subscribed } from '../../rpc/methods.js';
import { unixSocketUrl } from '../../rpc/rpc-paths.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { RawRpc, type RpcFixture, startRpcFixture } from './rpc-fixture.js';

/** Collects a client's events and gaps. */
function record(client: Soledad) {
  const events: DaemonEvent[] = [];
  const gaps: GapNotice[] = [];
  client.on('event', (event) => events.push(event));
  client.on('gap', (gap) => gaps.push(gap));
  return { events, gaps, seqs: () => events.map((e) => e.seq) };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('event subscriptions', () => {
  let fixture: RpcFixture;
  before(async () => {
    fixture = await startRpcFixture();
  });
  after(() => fixture.close());

  it("delivers each client's changes to the other as notifications", async () => {
    const alice = await fixture.connect();
    const bob = await fixture.connect();
    const seenByAlice = record(alice);
    const seenByBob = record(bob);
    await alice.subscribe();
    await bob.subscribe();

    const doc = await alice.createDoc({ from: 'alice' });
    await waitFor(() =>
      seenByBob.events.find((e) => e.type === 'doc.changed' && e.docId === doc.id),
    );
    const bobsDoc = await bob.getDoc(doc.id);
    assert.ok(bobsDoc);
    const info = await bobsDoc.putAttachment(Buffer.from('from bob'));
    await bob.putDoc(bobsDoc);
    await waitFor(() =>
      seenByAlice.events.find((e) => e.type === 'attachment.state' && e.blobId === info.blobId),
    );
    await waitFor(() =>
      seenByAlice.events.find((e) => e.type === 'doc.changed' && e.rev === bobsDoc.rev),
    );
  });

  it('replays the 100 events a disconnected client missed, in order, after it reconnects', async () => {
    const client = await fixture.connect();
    const seen = record(client);
    const { latestSeq } = await client.subscribe();
    const disconnected = new Promise((resolve) => client.once('disconnect', resolve));
    const reconnected = new Promise<void>((resolve) => client.once('reconnect', () => resolve()));

    await fixture.restartRpc(async () => {
      await disconnected;
      for (let i = 0; i < 100; i++) await fixture.daemon.createDoc({ i });
    });
    await withTimeout(reconnected, 15_000, 'the client to reconnect');
    await waitFor(() => seen.events.length >= 100, { what: '100 events' });
    assert.deepEqual(seen.seqs(), range(latestSeq + 1, latestSeq + 100));
    assert.deepEqual(
      seen.events.map((e) => e.type === 'doc.changed' && e.docId !== undefined),
      Array(100).fill(true),
    );
    assert.equal(seen.gaps.length, 0);
  });

  it('joins replay and live events without holes or duplicates', async () => {
    const writer = await fixture.connect();
    const start = (await writer.status()).events.latestSeq;
    let writing = true;
    const writes = (async () => {
      for (let i = 0; writing || i < 20; i++) await writer.createDoc({ i });
    })();
    await waitFor(async () => (await writer.status()).events.latestSeq > start + 30);

    const reader = await fixture.connect();
    const seen = record(reader);
    await reader.subscribe({ after: start });
    await waitFor(() => seen.events.length > 60, { what: 'live events after the replay' });
    writing = false;
    await writes;
    const end = (await writer.status()).events.latestSeq;
    await waitFor(() => seen.events.at(-1)?.seq === end, { what: 'the last event' });
    assert.deepEqual(seen.seqs(), range(start + 1, end));
  });

  it('replays events for a raw subscriber before the subscribe response', async () => {
    const start = (await fixture.daemon.status()).events.latestSeq;
    for (let i = 0; i < 5; i++) await fixture.daemon.createDoc({ i });
    const raw = await fixture.raw();
    const result = await raw.ok<Subscribed>('events.subscribe', { after: start });
    assert.equal(result.latestSeq, start + 5);
    assert.deepEqual(
      raw.notificationsOf('events.event').map((e) => e.seq),
      range(start + 1, start + 5),
    );
  });

  it('announces a reset gap when the epoch is not the daemon’s', async () => {
    const raw = await fixture.raw();
    const result = await raw.ok<Subscribed>('events.subscribe', {
      after: 3,
      epoch: 'another-epoch',
    });
    const [gap] = raw.notificationsOf('events.gap');
    assert.deepEqual(gap, {
      reason: 'reset',
      epoch: result.epoch,
      afterSeq: 3,
      latestSeq: result.latestSeq,
    });
  });

  it('stops sending events after events.unsubscribe', async () => {
    const raw = await fixture.raw();
    await raw.ok('events.subscribe');
    await fixture.daemon.createDoc({ before: true });
    await raw.until(() => raw.notificationsOf('events.event').length === 1, 'one event');
    await raw.ok('events.unsubscribe');
    await fixture.daemon.createDoc({ after: true });
    await raw.ok('daemon.status');
    assert.equal(raw.notificationsOf('events.event').length, 1);
  });
});

describe('event gaps', () => {
  it('announces a trimmed gap when the events after the seq are no longer kept', async () => {
    const fixture = await startRpcFixture({ eventLogSize: 20 });
    try {
      for (let i = 0; i < 50; i++) await fixture.daemon.createDoc({ i });
      const client = await fixture.connect();
      const seen = record(client);
      const result = await client.subscribe({ after: 1 });
      assert.equal(seen.gaps.length, 1);
      assert.equal(seen.gaps[0]?.reason, 'trimmed');
      assert.equal(seen.gaps[0]?.afterSeq, 1);
      assert.equal(seen.gaps[0]?.latestSeq, result.latestSeq);
      assert.equal(client.lastSeq, result.latestSeq);

      await fixture.daemon.createDoc({ live: true });
      await waitFor(() => seen.events.length === 1, { what: 'the live event' });
      assert.equal(seen.events[0]?.seq, result.latestSeq + 1);
    } finally {
      await fixture.close();
    }
  });

  it('cuts a subscriber that stops reading off with an overflow gap, and it resumes from the log', async () => {
    const dir = await tempDir('soledad-sock-');
    const socketPath = join(dir.path, 'rpc.sock');
    const fixture = await startRpcFixture({
      rpc: { socketPath, subscriberBufferLimit: 64 * 1024 },
    });
    try {
      const slow = await RawRpc.open(unixSocketUrl(socketPath), {
        Authorization: `Bearer ${fixture.token}`,
      });
      const { latestSeq: start } = await slow.ok<Subscribed>('events.subscribe');
      const fast = await fixture.connect();
      const seenByFast = record(fast);
      await fast.subscribe();

      slow.ws.pause();
      const overflowed = () =>
        fixture.logs.some((line) => line.msg === 'RPC subscriber overflowed');
      while (!overflowed()) {
        await Promise.all(Array.from({ length: 50 }, (_, i) => fixture.daemon.createDoc({ i })));
      }
      const end = (await fixture.daemon.status()).events.latestSeq;
      slow.ws.resume();

      const gap = await slow.until(() => slow.notificationsOf('events.gap')[0], 'the gap notice');
      assert.equal(gap.reason, 'overflow');
      const received = slow.notificationsOf('events.event').map((e) => e.seq);
      assert.deepEqual(received, range(start + 1, gap.afterSeq));

      await slow.ok('events.subscribe', { after: gap.afterSeq, epoch: gap.epoch });
      const all = slow.notificationsOf('events.event').map((e) => e.seq);
      assert.deepEqual(all, range(start + 1, end));

      // The other subscriber was never held back.
      await waitFor(() => seenByFast.events.at(-1)?.seq === end, { what: 'the fast subscriber' });
      assert.deepEqual(seenByFast.seqs(), range(start + 1, end));
      await slow.close();
    } finally {
      await fixture.close();
      await dir.remove();
    }
  });
});
