import assert from 'node:assert/strict';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DirSyncer } from '../../../server/backends/filesystem-layout.js';
import { tempDir } from '../../helpers/tmp.js';

/** A stand-in fsync whose calls are recorded and finish only when the test says so. */
function manualFsync() {
  const calls: { dir: string; finish: () => void }[] = [];
  const fsync = (dir: string) =>
    new Promise<void>((resolve) => {
      calls.push({ dir, finish: resolve });
    });
  return { calls, fsync };
}

/** Resolves with true if `promise` settled within a few turns of the event loop. */
async function settledSoon(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

describe('DirSyncer', () => {
  it('shares one queued fsync among callers that arrive while one is running', async () => {
    const { calls, fsync } = manualFsync();
    const syncer = new DirSyncer(fsync);
    const first = syncer.sync('/d');
    assert.equal(calls.length, 1);

    const during = Array.from({ length: 5 }, () => syncer.sync('/d'));
    assert.equal(calls.length, 1, 'no second fsync while the first runs');

    calls[0]!.finish();
    await first;
    // The first fsync may have started before their changes: they wait for a new one.
    assert.equal(await settledSoon(Promise.all(during)), false);
    assert.equal(calls.length, 2);

    calls[1]!.finish();
    await Promise.all(during);
    assert.equal(calls.length, 2, 'five callers, one fsync');
  });

  it('keeps folders apart and starts afresh once idle', async () => {
    const { calls, fsync } = manualFsync();
    const syncer = new DirSyncer(fsync);
    const a = syncer.sync('/a');
    const b = syncer.sync('/b');
    assert.deepEqual(
      calls.map((c) => c.dir),
      ['/a', '/b'],
    );
    for (const call of calls) call.finish();
    await Promise.all([a, b]);

    const again = syncer.sync('/a');
    assert.equal(calls.length, 3);
    calls[2]!.finish();
    await again;
  });

  it('passes a failed fsync to its callers and still runs the queued one', async () => {
    const calls: { fail: (error: Error) => void; finish: () => void }[] = [];
    const syncer = new DirSyncer(
      () =>
        new Promise<void>((resolve, reject) => {
          calls.push({ fail: reject, finish: resolve });
        }),
    );
    const first = syncer.sync('/d');
    const second = syncer.sync('/d');
    calls[0]!.fail(new Error('EIO'));
    await assert.rejects(first, /EIO/);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(calls.length, 2);
    calls[1]!.finish();
    await second;
  });

  describe('ensureDir', () => {
    let dir: string;
    let remove: () => Promise<void>;
    beforeEach(async () => {
      ({ path: dir, remove } = await tempDir('soledad-dirsync-'));
    });
    afterEach(() => remove());

    it('makes a caller that finds the folder just created wait for its parent fsync', async () => {
      const { calls, fsync } = manualFsync();
      const syncer = new DirSyncer(fsync);
      const leaf = join(dir, 'ns', 'ab');
      const creator = syncer.ensureDir(leaf);
      // Wait until the creator's mkdir is done and its first parent fsync is running.
      while (calls.length === 0) await new Promise((resolve) => setImmediate(resolve));
      assert.ok((await stat(leaf)).isDirectory());

      const finder = syncer.ensureDir(leaf);
      assert.equal(await settledSoon(finder), false, 'waits for the creator');
      // Two folders were made (ns, ab): their parents are fsynced outermost first.
      assert.equal(calls[0]!.dir, dir);
      calls[0]!.finish();
      while (calls.length < 2) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(calls[1]!.dir, join(dir, 'ns'));
      assert.equal(await settledSoon(finder), false);
      calls[1]!.finish();
      await Promise.all([creator, finder]);
    });

    it('costs nothing for a folder that existed already', async () => {
      const { calls, fsync } = manualFsync();
      const syncer = new DirSyncer(fsync);
      await mkdir(join(dir, 'old'));
      await syncer.ensureDir(join(dir, 'old'));
      assert.equal(calls.length, 0);
    });
  });
});

describe('DirSyncer with its own fsync', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => {
    ({ path: dir, remove } = await tempDir('soledad-dirsync-'));
  });
  afterEach(() => remove());

  it('fsyncs more folders than it keeps open, again and again, and closes', async () => {
    const syncer = new DirSyncer();
    const folders = Array.from({ length: 80 }, (_, i) => join(dir, `f${i}`));
    await Promise.all(folders.map((folder) => syncer.ensureDir(folder)));
    for (let round = 0; round < 2; round++) await Promise.all(folders.map((f) => syncer.sync(f)));
    await syncer.close();
    await syncer.sync(folders[0]!);
    await syncer.close();
  });

  it('fails the fsync of a folder that cannot be opened, and opens it afresh next time', async () => {
    const syncer = new DirSyncer();
    const folder = join(dir, 'not-yet');
    await assert.rejects(syncer.sync(folder), { code: 'ENOENT' });
    await mkdir(folder);
    await syncer.sync(folder);
    await syncer.close();
  });

  it('remembers a folder it has seen, without asking the filesystem again', async () => {
    const syncer = new DirSyncer();
    const folder = join(dir, 'seen');
    await syncer.ensureDir(folder);
    await rm(folder, { recursive: true });
    // Folders under ROOT are never removed while the backend runs, so it does not look.
    await syncer.ensureDir(folder);
    await assert.rejects(stat(folder), { code: 'ENOENT' });
    await syncer.close();
  });
});
