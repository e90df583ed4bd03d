import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, open, realpath, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { DocumentSealer } from '../../daemon/crypto/document-sealer.js';
import type { DaemonEvent, DocRecord } from '../../daemon/daemon-api.js';
import { Store } from '../../daemon/store/index.js';
import { REPLACED_BLOB_PREFIX, WatchFolders } from '../../daemon/watch-folders.js';
import { captureLogger, DaemonHarness, type LogLine } from '../helpers/daemon-harness.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { exists, readAll, waitForAttachment } from './daemon/daemon-fixtures.js';

const REMOTE = 2;
const SYNCED = 3;

describe('WatchFolders', () => {
  let h: DaemonHarness;
  // The daemon keeps its store private, so a second real store holds the watch index.
  let index: Store;
  let folder: string;
  let removeFolder: () => Promise<void>;
  let logs: LogLine[];
  const watchers: WatchFolders[] = [];

  beforeEach(async () => {
    h = await DaemonHarness.start();
    index = await Store.open(join(h.dir, 'watch-index'), {
      sealer: new DocumentSealer(randomBytes(32)),
    });
    const dir = await tempDir('soledad-watch-');
    folder = await realpath(dir.path);
    removeFolder = dir.remove;
  });

  afterEach(async () => {
    await Promise.allSettled(watchers.splice(0).map((w) => w.close()));
    await index?.close();
    await h?.cleanup();
    await removeFolder?.();
  });

  function watchFolders(options: { ignore?: string[]; stabilityMs?: number } = {}) {
    const captured = captureLogger();
    logs = captured.lines;
    const watcher = new WatchFolders({
      daemon: h.daemon,
      index,
      folders: [{ path: folder, ignore: options.ignore ?? [] }],
      logger: captured.logger,
      stabilityMs: options.stabilityMs ?? 100,
    });
    watchers.push(watcher);
    return watcher;
  }

  async function docsByPath(): Promise<Map<string, DocRecord>> {
    const docs = await h.daemon.listDocs();
    return new Map(docs.map((doc) => [String(doc.content.path), doc]));
  }

  /** Waits for the document of `path` with an attachment, that `accept` accepts. */
  function docAt(path: string, accept: (doc: DocRecord) => boolean = () => true) {
    return waitFor(
      async () => {
        const doc = (await docsByPath()).get(path);
        const ready = doc !== undefined && typeof doc.content.blob_id === 'string';
        return ready && accept(doc) ? doc : undefined;
      },
      { what: `the document of ${path}` },
    );
  }

  function imports(path: string): LogLine[] {
    return logs.filter((line) => line.msg === 'imported watched file' && line.path === path);
  }

  async function openBytes(blobId: string): Promise<Buffer> {
    return readAll(await h.daemon.openAttachment(blobId));
  }

  describe('start', () => {
    it('imports a new file as a document whose attachment reaches SYNCED with the same bytes', async () => {
      const watcher = watchFolders();
      await watcher.start();
      const marker = `plaintext-marker-${randomBytes(8).toString('hex')}`;
      const bytes = Buffer.concat([Buffer.from(marker), randomBytes(300 * 1024)]);
      await mkdir(join(folder, 'sub'));
      await writeFile(join(folder, 'sub', 'report.bin'), bytes);

      const doc = await docAt('sub/report.bin');
      const blobId = doc.content.blob_id as string;
      const info = await waitForAttachment(h.daemon, blobId, (i) => i.state === SYNCED, 'SYNCED');
      assert.equal(info.docId, doc.id);
      assert.deepEqual(await openBytes(blobId), bytes);
      assert.equal(doc.content.folder, folder);
      assert.equal(doc.content.size, bytes.length);
      assert.equal(doc.content.removed, false);
      // The index entry with the blob goes in the commit after the document's.
      const entry = await waitFor(
        async () => {
          const found = await index.getWatchEntry(join(folder, 'sub', 'report.bin'));
          return found?.blobId === blobId ? found : undefined;
        },
        { timeoutMs: 10_000, what: 'the watch index to record the blob' },
      );
      assert.equal(entry?.blobId, blobId);
      assert.equal(entry?.mtimeMs, doc.content.mtime);

      const [line] = imports('sub/report.bin');
      assert.equal(line?.bytes, bytes.length);
      assert.equal(typeof line?.ms, 'number');
      assert.equal(line?.level, 30);
      assert.equal(JSON.stringify(logs).includes(marker), false);
    });

    it('imports files added while it was closed at the next start, and skips unchanged ones', async () => {
      await writeFile(join(folder, 'kept.txt'), 'kept');
      await writeFile(join(folder, 'edited.txt'), 'first');
      await writeFile(join(folder, 'deleted.txt'), 'deleted');
      const first = watchFolders();
      await first.start();
      await first.idle();
      const before = await docsByPath();
      assert.deepEqual([...before.keys()].sort(), ['deleted.txt', 'edited.txt', 'kept.txt']);
      await first.close();

      await writeFile(join(folder, 'added.txt'), 'added');
      await writeFile(join(folder, 'edited.txt'), 'second version');
      await rm(join(folder, 'deleted.txt'));
      // Old enough that the start-up scan does not wait for them to settle.
      const past = new Date(Date.now() - 60_000);
      await utimes(join(folder, 'added.txt'), past, past);
      await utimes(join(folder, 'edited.txt'), past, past);
      const second = watchFolders();
      await second.start();

      const after = await docsByPath();
      assert.equal(imports('kept.txt').length, 0);
      assert.equal(imports('added.txt').length, 1);
      assert.equal(imports('edited.txt').length, 1);
      assert.equal(after.get('kept.txt')?.content.blob_id, before.get('kept.txt')?.content.blob_id);
      assert.equal(after.get('kept.txt')?.rev, before.get('kept.txt')?.rev);
      assert.equal(after.get('edited.txt')?.id, before.get('edited.txt')?.id);
      assert.notEqual(
        after.get('edited.txt')?.content.blob_id,
        before.get('edited.txt')?.content.blob_id,
      );
      assert.deepEqual(
        await openBytes(after.get('edited.txt')?.content.blob_id as string),
        Buffer.from('second version'),
      );
      assert.equal(after.get('deleted.txt')?.content.removed, true);
      const attachments = await h.daemon.listAttachments();
      const pointers = new Set([...after.values()].map((doc) => doc.content.blob_id));
      assert.equal(attachments.filter((a) => pointers.has(a.blobId)).length, 4);
    });

    it('does not import ignored files, by pattern or by default', async () => {
      await mkdir(join(folder, 'cache'));
      await writeFile(join(folder, 'cache', 'early.txt'), 'x');
      await writeFile(join(folder, 'early.log'), 'x');
      const watcher = watchFolders({ ignore: ['*.log', 'cache/', 'drafts/**/*.bak'] });
      await watcher.start();

      await mkdir(join(folder, 'drafts', 'a'), { recursive: true });
      await writeFile(join(folder, 'cache', 'late.txt'), 'x');
      await writeFile(join(folder, 'sub.log'), 'x');
      await writeFile(join(folder, 'drafts', 'a', 'b.bak'), 'x');
      await writeFile(join(folder, 'movie.mkv.part'), 'x');
      await writeFile(join(folder, '.~lock.report.odt#'), 'x');
      await writeFile(join(folder, 'drafts', 'a', 'b.txt'), 'x');
      await writeFile(join(folder, '.hidden'), 'x');

      await docAt('drafts/a/b.txt');
      await docAt('.hidden');
      await watcher.idle();
      assert.deepEqual([...(await docsByPath()).keys()].sort(), ['.hidden', 'drafts/a/b.txt']);
    });
  });

  describe('changes', () => {
    it('gives a modified file a new blob and deletes the old blob after the new one is SYNCED', async () => {
      const path = join(folder, 'notes.txt');
      await writeFile(path, 'version one');
      const watcher = watchFolders();
      await watcher.start();
      const first = await docAt('notes.txt');
      const oldBlob = first.content.blob_id as string;
      await waitForAttachment(h.daemon, oldBlob, (i) => i.state === SYNCED, 'SYNCED');

      const events: DaemonEvent[] = [];
      const unsubscribe = h.daemon.onEvent((event) => events.push(event));
      try {
        await writeFile(path, 'version two, longer');
        const second = await docAt('notes.txt', (d) => d.content.blob_id !== oldBlob);
        const newBlob = second.content.blob_id as string;
        assert.equal(second.id, first.id);
        await waitForAttachment(h.daemon, newBlob, (i) => i.state === SYNCED, 'SYNCED');
        await waitFor(async () => (await h.daemon.getAttachmentInfo(oldBlob)) === undefined, {
          what: 'the old blob to be deleted',
        });
        await waitFor(async () => !(await exists(h.serverBlobPath(oldBlob))), {
          what: 'the server copy of the old blob to go',
        });
        assert.deepEqual(await openBytes(newBlob), Buffer.from('version two, longer'));

        const synced = events.find(
          (e) => e.type === 'attachment.state' && e.blobId === newBlob && e.state === SYNCED,
        );
        const deleting = events.find((e) => e.type === 'attachment.state' && e.blobId === oldBlob);
        assert.ok(synced !== undefined && deleting !== undefined);
        assert.ok(synced.seq < deleting.seq, 'the old blob goes only after the new one is SYNCED');
        await watcher.idle();
        assert.deepEqual(await index.listWatchEntries({ prefix: REPLACED_BLOB_PREFIX }), []);
      } finally {
        unsubscribe();
      }
    });

    /**
     * Imports a file, changes it while the server is down and closes the watcher; then
     * reopens the daemon and lets the new blob reach SYNCED with no watcher running.
     */
    async function replaceWhileOffline(): Promise<{ oldBlob: string; newBlob: string }> {
      const path = join(folder, 'notes.txt');
      await writeFile(path, 'version one');
      const watcher = watchFolders();
      await watcher.start();
      const first = await docAt('notes.txt');
      const oldBlob = first.content.blob_id as string;
      await waitForAttachment(h.daemon, oldBlob, (i) => i.state === SYNCED, 'SYNCED');

      await h.stopServer();
      await writeFile(path, 'version two');
      const second = await docAt('notes.txt', (d) => d.content.blob_id !== oldBlob);
      const newBlob = second.content.blob_id as string;
      await watcher.close();
      assert.equal((await h.daemon.getAttachmentInfo(oldBlob))?.state, SYNCED);
      const pending = await index.listWatchEntries({ prefix: REPLACED_BLOB_PREFIX });
      assert.deepEqual(
        pending.map((p) => p.blobId),
        [oldBlob],
      );

      await h.openDaemon();
      await h.startServer();
      await waitForAttachment(h.daemon, newBlob, (i) => i.state === SYNCED, 'SYNCED');
      assert.equal((await h.daemon.getAttachmentInfo(oldBlob))?.state, SYNCED);
      return { oldBlob, newBlob };
    }

    async function expectOldBlobDeletedAtStart(oldBlob: string): Promise<void> {
      await watchFolders().start();
      await waitFor(async () => (await h.daemon.getAttachmentInfo(oldBlob)) === undefined, {
        what: 'the old blob to be deleted at start-up',
      });
      assert.deepEqual(await index.listWatchEntries({ prefix: REPLACED_BLOB_PREFIX }), []);
    }

    it('keeps the old blob until the new one is SYNCED, across a restart', async () => {
      const { oldBlob } = await replaceWhileOffline();
      await expectOldBlobDeletedAtStart(oldBlob);
    });

    it('deletes the old blob at start-up when the new one has been evicted since (REMOTE)', async () => {
      const { oldBlob, newBlob } = await replaceWhileOffline();
      await h.daemon.evictAttachment(newBlob);
      assert.equal((await h.daemon.getAttachmentInfo(newBlob))?.state, REMOTE);
      await expectOldBlobDeletedAtStart(oldBlob);
    });

    it('imports a file written in several slow appends once, complete', async () => {
      const watcher = watchFolders({ stabilityMs: 500 });
      await watcher.start();
      const path = join(folder, 'slow.bin');
      const pieces = Array.from({ length: 6 }, () => randomBytes(64 * 1024));
      const handle = await open(path, 'w');
      try {
        for (const piece of pieces) {
          await handle.write(piece);
          await handle.sync();
          // The writer's pace, well inside the stability window: part of the scenario.
          await delay(50);
        }
      } finally {
        await handle.close();
      }

      const doc = await docAt('slow.bin');
      await watcher.idle();
      assert.equal(imports('slow.bin').length, 1);
      assert.deepEqual(await openBytes(doc.content.blob_id as string), Buffer.concat(pieces));
      const attachments = await h.daemon.listAttachments();
      assert.equal(attachments.filter((a) => a.docId === doc.id).length, 1);
    });

    it('imports again a file that changes once more after its import', async () => {
      const watcher = watchFolders();
      await watcher.start();
      const path = join(folder, 'log.txt');
      await writeFile(path, 'one');
      await docAt('log.txt', (d) => d.content.size === 3);
      await appendFile(path, ' two');
      const doc = await docAt('log.txt', (d) => d.content.size === 7);
      assert.deepEqual(await openBytes(doc.content.blob_id as string), Buffer.from('one two'));
    });

    it('marks the document of a removed file as removed and keeps its attachment', async () => {
      const path = join(folder, 'gone.txt');
      await writeFile(path, 'keep me');
      const watcher = watchFolders();
      await watcher.start();
      const doc = await docAt('gone.txt');
      const blobId = doc.content.blob_id as string;

      await rm(path);
      const removed = await docAt('gone.txt', (d) => d.content.removed === true);
      assert.equal(removed.id, doc.id);
      assert.equal(removed.content.blob_id, blobId);
      assert.equal(typeof removed.content.removed_at, 'number');
      assert.deepEqual(await openBytes(blobId), Buffer.from('keep me'));
      // The index entry goes in the commit after the document's.
      await waitFor(async () => (await index.getWatchEntry(path)) === undefined, {
        timeoutMs: 10_000,
        what: 'the removed file to leave the watch index',
      });
    });

    it('marks every document under a removed folder as removed', async () => {
      await mkdir(join(folder, 'album', 'day'), { recursive: true });
      await writeFile(join(folder, 'album', 'a.jpg'), 'a');
      await writeFile(join(folder, 'album', 'day', 'b.jpg'), 'b');
      const watcher = watchFolders();
      await watcher.start();
      await docAt('album/a.jpg');
      await docAt('album/day/b.jpg');

      await rm(join(folder, 'album'), { recursive: true });
      await docAt('album/a.jpg', (d) => d.content.removed === true);
      await docAt('album/day/b.jpg', (d) => d.content.removed === true);
      await watcher.idle();
      assert.deepEqual(await index.listWatchEntries({ prefix: `${folder}/` }), []);
    });
  });

  describe('close', () => {
    it('returns the same promise on every call', async () => {
      const watcher = watchFolders();
      await watcher.start();
      const closing = watcher.close();
      assert.equal(watcher.close(), closing);
      await closing;
    });
  });
});
