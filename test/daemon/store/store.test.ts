import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Level } from 'level';
import { createActor, fromPromise } from 'xstate';
import { DocumentSealer } from '../../../daemon/crypto/document-sealer.js';
import { IntegrityError } from '../../../daemon/crypto/integrity-error.js';
import { Store, type StoreOptions, Transaction } from '../../../daemon/store/index.js';
import {
  type AttachmentEvent,
  AttachmentState,
  attachmentMachine,
  restoreAttachmentActor,
} from '../../../machines/index.js';
import { tempDir } from '../../helpers/tmp.js';

const SECRET = randomBytes(32);

/** A store in a fresh temp folder; `reopen()` closes it and opens the same folder again. */
async function tempStore(options: Partial<StoreOptions> = {}) {
  const dir = await tempDir('soledad-store-');
  const path = join(dir.path, 'db');
  const open = () => Store.open(path, { sealer: new DocumentSealer(SECRET), ...options });
  const ctx = {
    path,
    store: await open(),
    async reopen() {
      await ctx.store.close();
      ctx.store = await open();
      return ctx.store;
    },
    async remove() {
      await ctx.store.close();
      await dir.remove();
    },
  };
  return ctx;
}

/** Reads one raw value from a closed store's folder. */
async function rawGet(path: string, sublevel: string, key: string): Promise<string | undefined> {
  const db = new Level<string, string>(path, { valueEncoding: 'utf8' });
  try {
    return await db.sublevel<string, string>(sublevel, { valueEncoding: 'utf8' }).get(key);
  } finally {
    await db.close();
  }
}

/** A persisted attachment snapshot after `events`. */
function snapshotAfter(blobId: string, events: AttachmentEvent[], docId = 'doc-1') {
  const actor = createActor(attachmentMachine, {
    input: { blobId, docId, namespace: 'default', size: 10 },
  }).start();
  for (const event of events) actor.send(event);
  const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
  actor.stop();
  return persisted;
}

describe('Store', () => {
  describe('documents', () => {
    let t: Awaited<ReturnType<typeof tempStore>>;
    before(async () => {
      t = await tempStore({ deviceId: 'dev-a' });
    });
    after(() => t.remove());

    it('creates a document under a random UUID at revision <device>:1', async () => {
      const doc = await t.store.createDoc({ title: 'hello' });
      assert.match(doc.id, /^[0-9a-f-]{36}$/);
      assert.equal(doc.rev, 'dev-a:1');
      assert.deepEqual(await t.store.getDoc(doc.id), {
        id: doc.id,
        rev: 'dev-a:1',
        content: { title: 'hello' },
        deleted: false,
        lastSeenServerGeneration: null,
      });
    });

    it('creates a document under a given id and refuses to create it twice', async () => {
      await t.store.createDoc({ n: 1 }, 'given-id');
      await assert.rejects(t.store.createDoc({ n: 2 }, 'given-id'), { code: 'conflict' });
      assert.deepEqual((await t.store.getDoc('given-id'))?.content, { n: 1 });
    });

    it('puts on the current revision and increments this device counter', async () => {
      const { id, rev } = await t.store.createDoc({ v: 1 });
      const put = await t.store.putDoc(id, { v: 2, blob_id: 'b-1' }, rev);
      assert.deepEqual(put, { id, rev: 'dev-a:2', deleted: false });
      const doc = await t.store.getDoc(id);
      assert.deepEqual(doc?.content, { v: 2, blob_id: 'b-1' });
      assert.equal(doc?.rev, 'dev-a:2');
    });

    it('rejects a put on a stale revision with a conflict and keeps the stored one', async () => {
      const { id, rev } = await t.store.createDoc({ v: 1 });
      await t.store.putDoc(id, { v: 2 }, rev);
      await assert.rejects(t.store.putDoc(id, { v: 3 }, rev), (error: unknown) => {
        assert.equal((error as { code: string }).code, 'conflict');
        assert.equal((error as { currentRev: string }).currentRev, 'dev-a:2');
        return true;
      });
      assert.deepEqual((await t.store.getDoc(id))?.content, { v: 2 });
    });

    it('lets exactly one of two concurrent puts on the same base win', async () => {
      const { id, rev } = await t.store.createDoc({ v: 0 });
      const results = await Promise.allSettled([
        t.store.putDoc(id, { v: 'a' }, rev),
        t.store.putDoc(id, { v: 'b' }, rev),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected'],
      );
      assert.deepEqual((await t.store.getDoc(id))?.content, { v: 'a' });
    });

    it('creates a missing document on a put with an empty base revision', async () => {
      assert.equal((await t.store.putDoc('fresh', { a: 1 }, '')).rev, 'dev-a:1');
      await assert.rejects(t.store.putDoc('missing', { a: 1 }, 'dev-a:1'), { code: 'not_found' });
      await assert.rejects(t.store.putDoc('fresh', { a: 1 }, ''), { code: 'conflict' });
    });

    it('deletes into a tombstone that listing skips unless asked', async () => {
      const { id, rev } = await t.store.createDoc({ v: 1 }, 'to-delete');
      const deleted = await t.store.deleteDoc(id, rev);
      assert.deepEqual(deleted, { id, rev: 'dev-a:2', deleted: true });
      const doc = await t.store.getDoc(id);
      assert.equal(doc?.deleted, true);
      assert.equal(doc?.content, null);

      assert.equal((await t.store.listDocIds()).includes(id), false);
      assert.equal((await t.store.listDocIds({ includeDeleted: true })).includes(id), true);
      await assert.rejects(t.store.deleteDoc(id, 'dev-a:2'), { code: 'already_deleted' });
      await assert.rejects(t.store.deleteDoc(id, rev), { code: 'conflict' });
      await assert.rejects(t.store.deleteDoc('nope', ''), { code: 'not_found' });

      await t.store.putDoc(id, { v: 'back' }, 'dev-a:2');
      assert.equal((await t.store.getDoc(id))?.deleted, false);
    });

    it('reads many documents at once, undefined for unknown ids', async () => {
      const a = await t.store.createDoc({ a: 1 });
      const b = await t.store.createDoc({ b: 1 });
      const docs = await t.store.getDocs([a.id, 'unknown', b.id]);
      assert.deepEqual(
        docs.map((d) => d?.content),
        [{ a: 1 }, undefined, { b: 1 }],
      );
    });

    it('records the last seen server generation without changing the revision', async () => {
      const { id, rev } = await t.store.createDoc({ v: 1 });
      const { seqs } = await t.store.commit((tx) => tx.setDocGeneration(id, 42));
      assert.deepEqual(seqs, []);
      assert.equal((await t.store.getDoc(id))?.rev, rev);
      await t.store.putDoc(id, { v: 2 }, rev);
      assert.equal((await t.store.getDoc(id))?.lastSeenServerGeneration, 42);
      await assert.rejects(
        t.store.commit((tx) => tx.setDocGeneration('missing-doc', 1)),
        { code: 'not_found' },
      );
    });

    it('rejects content that is not a JSON object and writes nothing', async () => {
      for (const bad of [null, [1], 'text', new Date(), { n: 1n }]) {
        await assert.rejects(t.store.createDoc(bad as never, 'bad-content'), TypeError);
      }
      assert.equal(await t.store.getDoc('bad-content'), undefined);
    });
  });

  describe('sealing at rest', () => {
    it('keeps the plaintext out of the stored value and the database files', async () => {
      const t = await tempStore();
      try {
        const secret = 'attack-at-dawn-7f3a91';
        await t.store.createDoc({ message: secret }, 'secret-doc');
        await t.store.close();

        const raw = await rawGet(t.path, 'doc', 'secret-doc');
        assert.ok(raw);
        assert.equal(raw.includes(secret), false);
        assert.equal(raw.includes('message'), false);
        for (const file of await readdir(t.path)) {
          const bytes = await readFile(join(t.path, file));
          assert.equal(bytes.includes(secret), false, file);
        }
        const reopened = await t.reopen();
        assert.deepEqual((await reopened.getDoc('secret-doc'))?.content, { message: secret });
      } finally {
        await t.remove();
      }
    });

    it('fails with IntegrityError when sealed values are swapped between documents', async () => {
      const t = await tempStore();
      try {
        await t.store.createDoc({ who: 'a' }, 'doc-a');
        await t.store.createDoc({ who: 'b' }, 'doc-b');
        await t.store.close();

        const db = new Level<string, string>(t.path, { valueEncoding: 'utf8' });
        const docs = db.sublevel<string, string>('doc', { valueEncoding: 'utf8' });
        const a = JSON.parse((await docs.get('doc-a'))!);
        const b = JSON.parse((await docs.get('doc-b'))!);
        await docs.put('doc-a', JSON.stringify({ ...a, sealed: b.sealed }));
        await db.close();

        const store = await t.reopen();
        await assert.rejects(store.getDoc('doc-a'), IntegrityError);
        assert.deepEqual((await store.getDoc('doc-b'))?.content, { who: 'b' });
        // A put over the unreadable version still works (its old pointer is unknown).
        await store.putDoc('doc-a', { who: 'a again' }, a.rev);
        assert.deepEqual((await store.getDoc('doc-a'))?.content, { who: 'a again' });
      } finally {
        await t.remove();
      }
    });
  });

  describe('attachments', () => {
    let t: Awaited<ReturnType<typeof tempStore>>;
    before(async () => {
      t = await tempStore({ now: () => 1_700_000_000_000 });
    });
    after(() => t.remove());

    it('stores a snapshot with its fields and lists it as active while unsettled', async () => {
      const queued = snapshotAfter('blob-q', [
        { type: 'STORED' },
        { type: 'PRIORITIZE', priority: 'HIGH' },
      ]);
      await t.store.putAttachment(queued);
      const record = await t.store.getAttachment('blob-q');
      assert.deepEqual(
        { ...record, snapshot: undefined },
        {
          blobId: 'blob-q',
          docId: 'doc-1',
          namespace: 'default',
          size: 10,
          state: 'local.queued',
          publicState: AttachmentState.LOCAL,
          priority: 'HIGH',
          attempts: 0,
          pinned: false,
          updatedAt: 1_700_000_000_000,
          snapshot: undefined,
        },
      );
      assert.deepEqual(record?.snapshot, queued);
      assert.deepEqual(await t.store.listActiveAttachments(), [
        { blobId: 'blob-q', state: 'local.queued' },
      ]);
    });

    it('drops a settled attachment from the active index', async () => {
      await t.store.putAttachment(
        snapshotAfter('blob-r', [{ type: 'REMOTE_FOUND' }, { type: 'PIN' }]),
      );
      assert.equal(
        (await t.store.listActiveAttachments()).some((a) => a.blobId === 'blob-r'),
        true,
      );
      await t.store.putAttachment(snapshotAfter('blob-r', [{ type: 'REMOTE_FOUND' }]));
      assert.equal(
        (await t.store.listActiveAttachments()).some((a) => a.blobId === 'blob-r'),
        false,
      );
      assert.equal((await t.store.getAttachment('blob-r'))?.publicState, AttachmentState.REMOTE);
    });

    it('restores a live actor from a stored snapshot', async () => {
      await t.store.putAttachment(snapshotAfter('blob-live', [{ type: 'STORED' }]));
      const record = await t.store.getAttachment('blob-live');
      const uploads: string[] = [];
      const machine = attachmentMachine.provide({
        actors: {
          upload: fromPromise(async ({ input }) => {
            uploads.push(input.blobId);
          }),
        },
      });
      const actor = restoreAttachmentActor(machine, record?.snapshot);
      actor.send({ type: 'START' });
      assert.deepEqual(uploads, ['blob-live']);
      actor.stop();
    });

    it('removes the record and the active entry for a deleted snapshot', async () => {
      await t.store.putAttachment(snapshotAfter('blob-d', [{ type: 'STORED' }]));
      const deleted = { ...snapshotAfter('blob-d', [{ type: 'STORED' }]), value: 'deleted' };
      const { seqs } = await t.store.putAttachment(deleted);
      assert.equal(seqs.length, 1);
      assert.equal(await t.store.getAttachment('blob-d'), undefined);
      assert.equal(
        (await t.store.listActiveAttachments()).some((a) => a.blobId === 'blob-d'),
        false,
      );
    });

    it('reads many records at once and pages through all of them', async () => {
      await t.store.commit((tx) => {
        for (const id of ['p-1', 'p-2', 'p-3']) tx.putAttachment(snapshotAfter(id, []));
      });
      const many = await t.store.getAttachments(['p-2', 'nope', 'p-1']);
      assert.deepEqual(
        many.map((r) => r?.blobId),
        ['p-2', undefined, 'p-1'],
      );
      const first = await t.store.listAttachments({ after: 'p', limit: 2 });
      assert.deepEqual(
        first.map((r) => r.blobId),
        ['p-1', 'p-2'],
      );
      const next = await t.store.listAttachments({ after: 'p-2', limit: 2 });
      assert.equal(next[0]?.blobId, 'p-3');
    });

    it('rejects something that is not an attachment snapshot', async () => {
      await assert.rejects(t.store.putAttachment({ value: 'synced' }), TypeError);
    });
  });

  describe('attachment counts', () => {
    const counts = (local: number, remote: number) => ({
      local,
      remote,
      synced: 0,
      failed: 0,
      rejected: 0,
    });

    it('keeps the counts with every change, within a group, across groups and a reopen', async () => {
      const t = await tempStore();
      try {
        assert.deepEqual(t.store.attachmentCounts, counts(0, 0));
        // One group: a new record, and another record written twice.
        await Promise.all([
          t.store.putAttachment(snapshotAfter('c-1', [{ type: 'STORED' }])),
          t.store.commit((tx) => {
            tx.putAttachment(snapshotAfter('c-2', [{ type: 'STORED' }]));
            tx.putAttachment(snapshotAfter('c-2', [{ type: 'REMOTE_FOUND' }]));
          }),
        ]);
        assert.deepEqual(t.store.attachmentCounts, counts(1, 1));
        await t.store.putAttachment(snapshotAfter('c-1', [{ type: 'REMOTE_FOUND' }]));
        assert.deepEqual(t.store.attachmentCounts, counts(0, 2));
        await t.store.commit((tx) => tx.deleteAttachment('c-2'));
        await t.store.commit((tx) => tx.deleteAttachment('never-there'));
        assert.deepEqual(t.store.attachmentCounts, counts(0, 1));
        // A commit that fails its document check changes no count.
        await assert.rejects(
          t.store.commit((tx) => {
            tx.putAttachment(snapshotAfter('c-3', [{ type: 'STORED' }]));
            tx.deleteDoc('no-such-doc', 'dev:1');
          }),
          { code: 'not_found' },
        );
        assert.deepEqual(t.store.attachmentCounts, counts(0, 1));
        await t.reopen();
        assert.deepEqual(t.store.attachmentCounts, counts(0, 1));
      } finally {
        await t.remove();
      }
    });

    it('counts a store that has records but no kept counts once, when it opens', async () => {
      const t = await tempStore();
      try {
        for (const id of ['m-1', 'm-2', 'm-3']) {
          await t.store.putAttachment(snapshotAfter(id, [{ type: 'STORED' }]));
        }
        await t.store.putAttachment(snapshotAfter('m-4', [{ type: 'REMOTE_FOUND' }]));
        await t.store.close();
        // As a store of the first counts version leaves it: only the old key, whose
        // buckets (evicting was SYNCED then) are not to be trusted.
        const db = new Level<string, string>(t.path, { valueEncoding: 'utf8' });
        const meta = db.sublevel<string, string>('meta', { valueEncoding: 'utf8' });
        await meta.del('attachmentCounts.v2');
        await meta.put('attachmentCounts', JSON.stringify(counts(99, 99)));
        await db.close();
        assert.equal(await rawGet(t.path, 'meta', 'attachmentCounts.v2'), undefined);

        await t.reopen();
        assert.deepEqual(t.store.attachmentCounts, counts(3, 1));
        await t.store.close();
        assert.deepEqual(
          JSON.parse((await rawGet(t.path, 'meta', 'attachmentCounts.v2'))!),
          counts(3, 1),
        );
        assert.equal(await rawGet(t.path, 'meta', 'attachmentCounts'), undefined);
        await t.reopen();
      } finally {
        await t.remove();
      }
    });
  });

  describe('orphan candidates (unclaimed index)', () => {
    const ids = async (store: Store) => (await store.listUnclaimed()).map((c) => c.blobId);

    it('lists a new record until a document points at it', async () => {
      const t = await tempStore({ now: () => 5000 });
      try {
        await t.store.putAttachment(snapshotAfter('alone', [{ type: 'STORED' }], 'doc-alone'));
        assert.deepEqual(await t.store.listUnclaimed(), [{ blobId: 'alone', at: 5000 }]);
        const doc = await t.store.createDoc({ blob_id: 'alone' }, 'doc-alone');
        assert.deepEqual(await ids(t.store), []);
        // Pointing again (another field changed) adds nothing.
        await t.store.putDoc(doc.id, { blob_id: 'alone', title: 'x' }, doc.rev);
        assert.deepEqual(await ids(t.store), []);
      } finally {
        await t.remove();
      }
    });

    it('does not list a record whose document points at it in the same group', async () => {
      const t = await tempStore();
      try {
        await t.store.commit((tx) => {
          tx.createDoc({ blob_id: 'together' }, 'doc-together');
          tx.putAttachment(snapshotAfter('together', [{ type: 'STORED' }], 'doc-together'));
        });
        assert.deepEqual(await ids(t.store), []);
      } finally {
        await t.remove();
      }
    });

    it('lists the blob a document stops pointing at, by a change or a deletion', async () => {
      const t = await tempStore();
      try {
        await t.store.commit((tx) => {
          tx.createDoc({ blob_id: 'a' }, 'doc-1');
          tx.putAttachment(snapshotAfter('a', [{ type: 'STORED' }], 'doc-1'));
          tx.putAttachment(snapshotAfter('b', [{ type: 'STORED' }], 'doc-1'));
        });
        assert.deepEqual(await ids(t.store), ['b']);
        const doc = (await t.store.getDoc('doc-1'))!;
        const moved = await t.store.putDoc('doc-1', { blob_id: 'b' }, doc.rev);
        assert.deepEqual(await ids(t.store), ['a']);
        await t.store.deleteDoc('doc-1', moved.rev);
        assert.deepEqual(await ids(t.store), ['a', 'b']);
        // Removing a record ends its candidacy.
        await t.store.commit((tx) => tx.deleteAttachment('a'));
        assert.deepEqual(await ids(t.store), ['b']);
      } finally {
        await t.remove();
      }
    });

    it('lets a claim with a stale time lose to a newer candidacy', async () => {
      let now = 1000;
      const t = await tempStore({ now: () => now });
      try {
        await t.store.putAttachment(snapshotAfter('c', [{ type: 'STORED' }], 'doc-c'));
        const doc = await t.store.createDoc({ blob_id: 'c' }, 'doc-c');
        now = 2000;
        await t.store.putDoc('doc-c', { blob_id: 'other' }, doc.rev);
        assert.deepEqual(await t.store.listUnclaimed(), [{ blobId: 'c', at: 2000 }]);
        await t.store.commit((tx) => tx.claim('c', 1000));
        assert.deepEqual(await ids(t.store), ['c']);
        await t.store.commit((tx) => tx.claim('c', 2000));
        assert.deepEqual(await ids(t.store), []);
        assert.throws(() => new Transaction(0).claim('c', Number.NaN), TypeError);
      } finally {
        await t.remove();
      }
    });
  });

  describe('clean stop mark', () => {
    it('reads true once after a clean stop, and false after any other open', async () => {
      const t = await tempStore();
      try {
        assert.equal(t.store.openedAfterCleanStop, false);
        await t.store.commit((tx) => tx.markCleanStop());
        assert.equal((await t.reopen()).openedAfterCleanStop, true);
        // Taken by that open: a crash now would not look clean.
        assert.equal((await t.reopen()).openedAfterCleanStop, false);
      } finally {
        await t.remove();
      }
    });
  });

  describe('settings and watch index', () => {
    it('puts, gets and deletes settings as JSON', async () => {
      const t = await tempStore();
      try {
        await t.store.putSetting('transfers', { uploads: 4, paused: false });
        assert.deepEqual(await t.store.getSetting('transfers'), { uploads: 4, paused: false });
        await t.store.deleteSetting('transfers');
        assert.equal(await t.store.getSetting('transfers'), undefined);
        await assert.rejects(t.store.putSetting('bad', undefined), TypeError);
      } finally {
        await t.remove();
      }
    });

    it('keeps watch entries by path and lists them by folder prefix', async () => {
      const t = await tempStore();
      try {
        const entry = { docId: 'd1', blobId: 'b1', size: 5, mtimeMs: 1234.5 };
        await t.store.putWatchEntry('/w/a/x.txt', entry);
        await t.store.putWatchEntry('/w/a/y.txt', { ...entry, docId: 'd2', blobId: null });
        await t.store.putWatchEntry('/w/b/z.txt', { ...entry, docId: 'd3' });
        assert.deepEqual(await t.store.getWatchEntry('/w/a/x.txt'), entry);

        const listed = await t.store.listWatchEntries({ prefix: '/w/a/' });
        assert.deepEqual(
          listed.map((e) => [e.path, e.docId]),
          [
            ['/w/a/x.txt', 'd1'],
            ['/w/a/y.txt', 'd2'],
          ],
        );
        await t.store.deleteWatchEntry('/w/a/x.txt');
        assert.equal(await t.store.getWatchEntry('/w/a/x.txt'), undefined);
        assert.equal((await t.store.listWatchEntries()).length, 2);
        await assert.rejects(t.store.putWatchEntry('/w/c', { ...entry, size: -1 }), TypeError);
      } finally {
        await t.remove();
      }
    });
  });

  describe('commit', () => {
    it('writes a document, an attachment and an event in one commit', async () => {
      const t = await tempStore();
      try {
        let docId = '';
        const result = await t.store.commit((tx) => {
          docId = tx.createDoc({ blob_id: 'blob-x' });
          tx.putAttachment(snapshotAfter('blob-x', [{ type: 'STORED' }], docId));
          tx.event({ kind: 'custom', note: 'both written' });
        });
        assert.deepEqual(result.seqs, [1, 2, 3]);
        assert.equal(result.docs[0]?.id, docId);
        assert.equal((await t.store.getAttachment('blob-x'))?.docId, docId);
      } finally {
        await t.remove();
      }
    });

    it('writes nothing of a commit with an invalid operation', async () => {
      const t = await tempStore();
      try {
        await assert.rejects(
          t.store.commit((tx) => {
            tx.createDoc({ a: 1 }, 'atomic-doc');
            tx.putAttachment(snapshotAfter('atomic-blob', [{ type: 'STORED' }]));
            tx.putSetting('bad', { n: 10n });
          }),
          TypeError,
        );
        assert.equal(await t.store.getDoc('atomic-doc'), undefined);
        assert.equal(await t.store.getAttachment('atomic-blob'), undefined);
        assert.deepEqual(await t.store.listActiveAttachments(), []);
        assert.equal(t.store.eventLog.lastSeq, 0);
      } finally {
        await t.remove();
      }
    });

    it('writes nothing of a commit whose document check fails, and the rest of its group', async () => {
      const t = await tempStore();
      try {
        const { id, rev } = await t.store.createDoc({ v: 1 });
        const [stale, fine] = await Promise.allSettled([
          t.store.commit((tx) => {
            tx.putAttachment(snapshotAfter('stale-blob', [{ type: 'STORED' }]));
            tx.putDoc(id, { v: 2 }, 'someone:7');
          }),
          t.store.commit((tx) => tx.putSetting('fine', true)),
        ]);
        assert.equal(stale.status, 'rejected');
        assert.equal(fine.status, 'fulfilled');
        assert.equal(await t.store.getAttachment('stale-blob'), undefined);
        assert.equal((await t.store.getDoc(id))?.rev, rev);
        assert.equal(await t.store.getSetting('fine'), true);
        assert.equal(t.store.writeStats.batches, 2);
      } finally {
        await t.remove();
      }
    });

    it('groups 100 concurrent commits into far fewer durable batches', async () => {
      const t = await tempStore();
      try {
        const before = t.store.writeStats;
        const results = await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            t.store.commit((tx) => {
              tx.createDoc({ i }, `doc-${i}`);
              tx.putAttachment(snapshotAfter(`blob-${i}`, [{ type: 'STORED' }], `doc-${i}`));
            }),
          ),
        );
        const stats = t.store.writeStats;
        assert.equal(stats.commits - before.commits, 100);
        assert.ok(stats.batches - before.batches <= 5, `batches: ${stats.batches}`);

        const seqs = results.flatMap((r) => r.seqs);
        assert.deepEqual(
          seqs,
          Array.from({ length: 200 }, (_, i) => i + 1),
        );

        const store = await t.reopen();
        const docs = await store.getDocs(Array.from({ length: 100 }, (_, i) => `doc-${i}`));
        assert.equal(docs.filter((d) => d !== undefined).length, 100);
        assert.equal((await store.listActiveAttachments()).length, 100);
        assert.equal(store.eventLog.lastSeq, 200);
      } finally {
        await t.remove();
      }
    });

    it('writes pending commits on close and refuses commits afterwards', async () => {
      const t = await tempStore();
      try {
        const pending = t.store.putSetting('late', 1);
        const closing = t.store.close();
        assert.equal(t.store.close(), closing);
        await closing;
        await pending;
        await assert.rejects(t.store.putSetting('after', 1), { code: 'store_closed' });
        await assert.rejects(t.store.getDoc('x'), { code: 'store_closed' });
        const store = await t.reopen();
        assert.equal(await store.getSetting('late'), 1);
      } finally {
        await t.remove();
      }
    });

    it('refuses a transaction used after its commit callback returned', async () => {
      const t = await tempStore();
      try {
        let escaped: { putSetting(k: string, v: unknown): void } | undefined;
        await t.store.commit((tx) => {
          escaped = tx;
        });
        assert.throws(() => escaped?.putSetting('k', 1), TypeError);
      } finally {
        await t.remove();
      }
    });
  });

  describe('device id', () => {
    it('keeps the device id it was created with', async () => {
      const t = await tempStore();
      try {
        const id = t.store.deviceId;
        assert.match(id, /^[0-9a-f-]{36}$/);
        assert.equal((await t.reopen()).deviceId, id);
        await t.store.close();
        await assert.rejects(
          Store.open(t.path, { sealer: new DocumentSealer(SECRET), deviceId: 'other' }),
          TypeError,
        );
        await t.reopen();
      } finally {
        await t.remove();
      }
    });
  });
});
