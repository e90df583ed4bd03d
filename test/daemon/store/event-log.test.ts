import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DocumentSealer } from '../../../daemon/crypto/document-sealer.js';
import { Store, type StoreOptions } from '../../../daemon/store/index.js';
import { tempDir } from '../../helpers/tmp.js';

const SECRET = randomBytes(32);

/** Runs `body` with a store in a fresh temp folder; `reopen` closes and opens it again. */
async function withStore(
  options: Partial<StoreOptions>,
  body: (t: {
    store: Store;
    reopen(more?: Partial<StoreOptions>): Promise<Store>;
  }) => Promise<void>,
) {
  const dir = await tempDir('soledad-events-');
  const path = join(dir.path, 'db');
  const open = (more: Partial<StoreOptions> = {}) =>
    Store.open(path, { sealer: new DocumentSealer(SECRET), now: () => 1000, ...options, ...more });
  const t = {
    store: await open(),
    async reopen(more?: Partial<StoreOptions>) {
      await t.store.close();
      t.store = await open(more);
      return t.store;
    },
  };
  try {
    await body(t);
  } finally {
    await t.store.close();
    await dir.remove();
  }
}

async function append(store: Store, count: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = 0; i < count; i++) seqs.push(await store.appendEvent({ kind: 'test', i }));
  return seqs;
}

describe('event log', () => {
  it('numbers events from 1 and keeps counting across reopen', () =>
    withStore({}, async (t) => {
      assert.deepEqual(await append(t.store, 3), [1, 2, 3]);
      const store = await t.reopen();
      assert.deepEqual(await append(store, 2), [4, 5]);
      const read = await store.readEventsAfter(0);
      assert.equal(read.gap, false);
      assert.deepEqual(
        read.gap ? [] : read.events.map((e) => [e.seq, e.kind, e.i, e.at]),
        [1, 2, 3, 4, 5].map((seq) => [seq, 'test', seq <= 3 ? seq - 1 : seq - 4, 1000]),
      );
    }));

  it('reports document changes in the same commit that makes them', () =>
    withStore({}, async (t) => {
      const doc = await t.store.createDoc({ a: 1 }, 'doc-1');
      await t.store.putDoc('doc-1', { a: 2 }, doc.rev);
      const read = await t.store.readEventsAfter(0);
      assert.ok(!read.gap);
      assert.deepEqual(
        read.events.map(({ kind, docId, rev, deleted }) => ({ kind, docId, rev, deleted })),
        [
          { kind: 'doc', docId: 'doc-1', rev: doc.rev, deleted: false },
          { kind: 'doc', docId: 'doc-1', rev: `${t.store.deviceId}:2`, deleted: false },
        ],
      );
    }));

  it('reads events after a seq in order, at most limit at a time', () =>
    withStore({}, async (t) => {
      await append(t.store, 10);
      const page = await t.store.readEventsAfter(3, { limit: 4 });
      assert.ok(!page.gap);
      assert.deepEqual(
        page.events.map((e) => e.seq),
        [4, 5, 6, 7],
      );
      assert.equal(page.lastSeq, 10);
      const rest = await t.store.readEventsAfter(7, { limit: 100 });
      assert.ok(!rest.gap);
      assert.deepEqual(
        rest.events.map((e) => e.seq),
        [8, 9, 10],
      );
      const none = await t.store.readEventsAfter(10);
      assert.deepEqual(none, {
        gap: false,
        epoch: t.store.eventLog.epoch,
        events: [],
        lastSeq: 10,
      });
    }));

  it('keeps only the newest maxEvents events', () =>
    withStore({ maxEvents: 5 }, async (t) => {
      await append(t.store, 12);
      assert.deepEqual(t.store.eventLog, {
        epoch: t.store.eventLog.epoch,
        oldestSeq: 8,
        lastSeq: 12,
      });
      const read = await t.store.readEventsAfter(7);
      assert.ok(!read.gap);
      assert.deepEqual(
        read.events.map((e) => e.seq),
        [8, 9, 10, 11, 12],
      );
      const store = await t.reopen();
      assert.equal(store.eventLog.oldestSeq, 8);
    }));

  it('trims within one commit that adds more than maxEvents', () =>
    withStore({ maxEvents: 3 }, async (t) => {
      const { seqs } = await t.store.commit((tx) => {
        for (let i = 0; i < 7; i++) tx.event({ kind: 'bulk', i });
      });
      assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7]);
      const read = await t.store.readEventsAfter(4);
      assert.ok(!read.gap);
      assert.deepEqual(
        read.events.map((e) => e.seq),
        [5, 6, 7],
      );
    }));

  it('trims down to a lowered maxEvents on the next commit after reopening', () =>
    withStore({ maxEvents: 100 }, async (t) => {
      await append(t.store, 20);
      const store = await t.reopen({ maxEvents: 4 });
      await append(store, 1);
      assert.equal(store.eventLog.oldestSeq, 18);
      const read = await store.readEventsAfter(17);
      assert.ok(!read.gap);
      assert.equal(read.events.length, 4);
    }));

  it('returns a gap with the epoch and oldest seq when events were trimmed', () =>
    withStore({ maxEvents: 5 }, async (t) => {
      await append(t.store, 12);
      const read = await t.store.readEventsAfter(6);
      assert.deepEqual(read, {
        gap: true,
        epoch: t.store.eventLog.epoch,
        oldestSeq: 8,
        lastSeq: 12,
      });
    }));

  it('returns a gap for a seq beyond the last one or another epoch', () =>
    withStore({}, async (t) => {
      await append(t.store, 2);
      assert.equal((await t.store.readEventsAfter(3)).gap, true);
      assert.equal((await t.store.readEventsAfter(0, { epoch: 'other' })).gap, true);
      assert.equal(
        (await t.store.readEventsAfter(0, { epoch: t.store.eventLog.epoch })).gap,
        false,
      );
    }));

  it('keeps its epoch across reopen', () =>
    withStore({}, async (t) => {
      const { epoch } = t.store.eventLog;
      assert.match(epoch, /^[0-9a-f-]{36}$/);
      await append(t.store, 1);
      assert.equal((await t.reopen()).eventLog.epoch, epoch);
    }));

  it('starts a new epoch on reset, drops kept events and keeps counting', () =>
    withStore({}, async (t) => {
      const { epoch } = t.store.eventLog;
      await append(t.store, 3);
      await t.store.resetEventLog();
      const log = t.store.eventLog;
      assert.notEqual(log.epoch, epoch);
      assert.equal(log.oldestSeq, 4);
      assert.equal((await t.store.readEventsAfter(0)).gap, true);
      assert.equal((await t.store.readEventsAfter(3)).gap, false);
      assert.deepEqual(await append(t.store, 1), [4]);

      const store = await t.reopen();
      assert.deepEqual(store.eventLog, { epoch: log.epoch, oldestSeq: 4, lastSeq: 4 });
    }));

  it('leaves no hole in the numbering when a commit is rejected', () =>
    withStore({}, async (t) => {
      const { rev } = await t.store.createDoc({}, 'd');
      await t.store.putDoc('d', { v: 1 }, rev);
      const results = await Promise.allSettled([
        t.store.commit((tx) => {
          tx.event({ kind: 'before-conflict' });
          tx.putDoc('d', { v: 2 }, rev);
        }),
        t.store.appendEvent({ kind: 'after' }),
      ]);
      assert.equal(results[0].status, 'rejected');
      assert.deepEqual(results[1], { status: 'fulfilled', value: 3 });
    }));

  it('rejects events without a kind', () =>
    withStore({}, async (t) => {
      await assert.rejects(t.store.appendEvent({} as never), TypeError);
      await assert.rejects(t.store.readEventsAfter(-1), TypeError);
    }));
});
