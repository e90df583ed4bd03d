import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { link, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { BlobRef, ByteRange, WriteOptions } from '../../../server/backends/blobs-backend.js';
import { FilesystemBackend, RootInUseError } from '../../../server/backends/filesystem-backend.js';
import { BlobsError } from '../../../server/errors.js';
import type { BlobsErrorCode } from '../../../wire/errors.js';
import { tempDir } from '../../helpers/tmp.js';
import { withTimeout } from '../../helpers/wait.js';

const USER = 'user-1';
const NS = 'default';
const LIMITS: WriteOptions = { quota: 1_000_000, maxSize: 100_000 };

function ref(id: string, namespace = NS, user = USER): BlobRef {
  return { user, namespace, id };
}

function layoutPath(root: string, r: BlobRef): string {
  return join(root, r.user, r.namespace, r.id);
}

async function* chunks(...parts: (string | Buffer)[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.from(part);
}

async function* failingBody(): AsyncGenerator<Buffer> {
  yield Buffer.alloc(1000, 1);
  throw new Error('connection reset');
}

/** A body that yields `first`, then waits until `finish()` is called before yielding `rest`. */
function gatedBody(first: string, rest: string) {
  let finish!: () => void;
  let started!: () => void;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const firstTaken = new Promise<void>((resolve) => {
    started = resolve;
  });
  async function* body(): AsyncGenerator<Buffer> {
    yield Buffer.from(first);
    started();
    await finished;
    yield Buffer.from(rest);
  }
  return { body: body(), firstTaken, finish };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

async function rejectsWith(promise: Promise<unknown>, code: BlobsErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof BlobsError, `expected a BlobsError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

/** Every file under `root` but the index and `.layout`, as paths relative to `root`. */
async function filesOutsideIndex(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(root, join(entry.parentPath, entry.name)))
    .filter((path) => !path.startsWith('.index') && path !== '.layout');
}

describe('FilesystemBackend', () => {
  let dir: { path: string; remove(): Promise<void> };
  let root: string;
  let backend: FilesystemBackend;

  beforeEach(async () => {
    dir = await tempDir();
    root = join(dir.path, 'root');
    backend = await FilesystemBackend.open(root);
  });

  afterEach(async () => {
    await backend.close();
    await dir.remove();
  });

  async function reopen(): Promise<void> {
    await backend.close();
    backend = await FilesystemBackend.open(root);
  }

  /** Closes, then removes the clean-close record, which leaves ROOT as a crash would. */
  async function closeAsIfCrashed(): Promise<void> {
    await backend.close();
    await rm(join(root, '.clean'));
  }

  describe('open', () => {
    it('creates the root folder when it does not exist', async () => {
      assert.ok((await stat(root)).isDirectory());
    });

    it('refuses a second open of the same root while the first is open', async () => {
      await assert.rejects(FilesystemBackend.open(root), RootInUseError);
      await assert.rejects(FilesystemBackend.open(`${root}/.`), RootInUseError);
      await backend.write(ref('still-works'), chunks('x'), LIMITS);
      await reopen();
      assert.equal(await backend.size(ref('still-works')), 1);
    });

    it('refuses an open from another process while the root is open', async () => {
      const moduleUrl = new URL('../../../server/backends/filesystem-backend.js', import.meta.url);
      const script = `
        const { FilesystemBackend } = await import(${JSON.stringify(moduleUrl.href)});
        try {
          const backend = await FilesystemBackend.open(${JSON.stringify(root)});
          await backend.close();
          console.log('opened');
        } catch (error) {
          console.log(error.code);
        }`;
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--input-type=module', '-e', script],
        { timeout: 20_000 },
      );
      assert.equal(stdout.trim(), 'root_in_use');
    });

    it('removes stale temp files', async () => {
      await backend.close();
      await writeFile(join(root, '.tmp', 'left-by-a-crash.tmp'), 'partial upload');
      backend = await FilesystemBackend.open(root);
      assert.deepEqual(await readdir(join(root, '.tmp')), []);
    });
  });

  describe('write and open', () => {
    it('stores a blob in its namespace folder and reads it back', async () => {
      const result = await backend.write(ref('abcdefgh'), chunks('hello ', 'world'), LIMITS);
      assert.deepEqual(result, { size: 11 });
      assert.equal(await readFile(join(root, USER, NS, 'abcdefgh'), 'utf8'), 'hello world');
      const opened = await backend.open(ref('abcdefgh'));
      assert.equal(opened.size, 11);
      assert.equal((await readAll(opened.stream())).toString(), 'hello world');
    });

    it('reads inclusive byte ranges and reports the full size', async () => {
      await backend.write(ref('ranged'), chunks('0123456789'), LIMITS);
      const middle = await backend.open(ref('ranged'), { start: 2, end: 5 });
      assert.equal(middle.size, 10);
      assert.equal((await readAll(middle.stream())).toString(), '2345');
      const last = await backend.open(ref('ranged'), { start: 9, end: 9 });
      assert.equal((await readAll(last.stream())).toString(), '9');
      await rejectsWith(
        backend.open(ref('ranged'), { start: 10, end: 10 }),
        'range_not_satisfiable',
      );
    });

    it('pipes a blob of several read chunks, whole and by range, to a sink that copies', async () => {
      const bytes = Buffer.alloc(2.5 * 1024 * 1024);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 12)) & 0xff;
      await backend.write(ref('large'), chunks(bytes), {
        quota: bytes.length,
        maxSize: bytes.length,
      });
      const collect = async (range?: { start: number; end: number }) => {
        const copies: Buffer[] = [];
        const opened = await backend.open(ref('large'), range);
        await opened.pipeTo(async (chunk) => {
          // The next chunk may be read into this memory once the promise settles.
          copies.push(Buffer.from(chunk));
          await new Promise((resolve) => setImmediate(resolve));
        });
        return Buffer.concat(copies);
      };
      assert.ok((await collect()).equals(bytes));
      const range = { start: 1_000_000, end: 2_200_000 };
      assert.ok((await collect(range)).equals(bytes.subarray(range.start, range.end + 1)));
    });

    it('stores a large body of odd-sized chunks byte for byte', async () => {
      // Chunks that straddle the 1 MiB write batches and the early fdatasync points.
      const bytes = Buffer.alloc(5 * 1024 * 1024 + 123);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + (i >> 16)) & 0xff;
      async function* oddChunks(): AsyncGenerator<Buffer> {
        for (let at = 0, n = 1; at < bytes.length; n = (n * 7 + 3) % 200_000) {
          const size = Math.min(bytes.length - at, 1 + n);
          yield bytes.subarray(at, at + size);
          at += size;
        }
      }
      const limits = { quota: bytes.length, maxSize: bytes.length, expectedSize: bytes.length };
      assert.deepEqual(await backend.write(ref('odd'), oddChunks(), limits), {
        size: bytes.length,
      });
      assert.ok((await readFile(layoutPath(root, ref('odd')))).equals(bytes));
    });

    describe('direct I/O of large bodies', () => {
      // Not a multiple of the 4 KiB blocks, and over DIRECT_MIN_BYTES (8 MiB).
      const SIZE = 9 * 1024 * 1024 + 4097;
      const pattern = (size: number) => {
        const bytes = Buffer.alloc(size);
        for (let i = 0; i < size; i++) bytes[i] = (i * 13 + (i >> 11)) & 0xff;
        return bytes;
      };
      async function* oddChunks(bytes: Buffer): AsyncGenerator<Buffer> {
        for (let at = 0, n = 1; at < bytes.length; n = (n * 7 + 3) % 300_000) {
          const size = Math.min(bytes.length - at, 1 + n);
          yield bytes.subarray(at, at + size);
          at += size;
        }
      }
      const limits = { quota: 100 * SIZE, maxSize: 2 * SIZE, expectedSize: SIZE };

      async function collect(backend: FilesystemBackend, id: string, range?: ByteRange) {
        const copies: Buffer[] = [];
        const opened = await backend.open(ref(id), range);
        await opened.pipeTo(async (chunk) => {
          copies.push(Buffer.from(chunk));
          await new Promise((resolve) => setImmediate(resolve));
        });
        return Buffer.concat(copies);
      }

      it('writes and reads back byte for byte, whole and by unaligned ranges', async (t) => {
        if (!backend.directIo) t.skip('this filesystem has no O_DIRECT');
        const bytes = pattern(SIZE);
        assert.deepEqual(await backend.write(ref('direct'), oddChunks(bytes), limits), {
          size: SIZE,
        });
        // The padded last block is cut off again.
        assert.equal((await stat(layoutPath(root, ref('direct')))).size, SIZE);
        assert.ok((await readFile(layoutPath(root, ref('direct')))).equals(bytes));
        assert.ok((await collect(backend, 'direct')).equals(bytes));
        for (const range of [
          { start: 1, end: SIZE - 2 },
          { start: 4095, end: 4095 + 8 * 1024 * 1024 },
          { start: 2 * 1024 * 1024 - 1, end: SIZE - 1 },
        ]) {
          const got = await collect(backend, 'direct', range);
          assert.ok(got.equals(bytes.subarray(range.start, range.end + 1)), JSON.stringify(range));
        }
      });

      it('finishes a direct read of a blob deleted after it was opened', async (t) => {
        if (!backend.directIo) t.skip('this filesystem has no O_DIRECT');
        const bytes = pattern(SIZE);
        await backend.write(ref('going'), oddChunks(bytes), limits);
        const opened = await backend.open(ref('going'));
        await backend.delete(ref('going'));
        const copies: Buffer[] = [];
        await opened.pipeTo(async (chunk) => {
          copies.push(Buffer.from(chunk));
        });
        assert.ok(Buffer.concat(copies).equals(bytes));
      });

      it('stores and reads every body right when more are in flight than the buffers allow', async () => {
        // Eight writes of 9 MiB held open at once: the pool (12 buffers, 2 a write) runs out
        // and the last ones take the buffered path; then eight reads (4 buffers each) at once.
        const bodies = Array.from({ length: 8 }, (_, i) => {
          const bytes = pattern(SIZE);
          bytes.fill(i, 0, 64);
          return bytes;
        });
        let release!: () => void;
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        let holding = 0;
        let allHolding!: () => void;
        const allHeld = new Promise<void>((resolve) => {
          allHolding = resolve;
        });
        async function* held(bytes: Buffer): AsyncGenerator<Buffer> {
          yield bytes.subarray(0, 3 * 1024 * 1024);
          if (++holding === bodies.length) allHolding();
          await gate;
          yield bytes.subarray(3 * 1024 * 1024);
        }
        const writes = bodies.map((bytes, i) =>
          backend.write(ref(`many-${i}`), held(bytes), limits),
        );
        await withTimeout(allHeld, 10_000, 'every write to take its first chunk');
        release();
        await Promise.all(writes);
        const reads = await Promise.all(bodies.map((_, i) => collect(backend, `many-${i}`)));
        for (const [i, got] of reads.entries()) assert.ok(got.equals(bodies[i]!), `blob ${i}`);
      });

      it('takes the buffered path, byte for byte, when opened with directIo: false', async () => {
        const other = await FilesystemBackend.open(join(dir.path, 'buffered-root'), {
          directIo: false,
        });
        try {
          assert.equal(other.directIo, false);
          const bytes = pattern(SIZE);
          await other.write(ref('buffered'), oddChunks(bytes), limits);
          const got = await collect(other, 'buffered', { start: 5, end: SIZE - 1 });
          assert.ok(got.equals(bytes.subarray(5)));
        } finally {
          await other.close();
        }
      });
    });

    it('stops reading when the sink fails, and can close a blob it never reads', async () => {
      await backend.write(ref('piped'), chunks('abc'), LIMITS);
      const opened = await backend.open(ref('piped'));
      await assert.rejects(
        opened.pipeTo(async () => {
          throw new Error('client gone');
        }),
        /client gone/,
      );
      await assert.rejects(
        opened.pipeTo(async () => {}),
        /read once/,
      );
      const unread = await backend.open(ref('piped'));
      await unread.close();
      await unread.close();
    });

    it('stores an empty blob', async () => {
      assert.deepEqual(await backend.write(ref('empty'), chunks(), LIMITS), { size: 0 });
      const opened = await backend.open(ref('empty'));
      assert.equal(opened.size, 0);
      assert.equal((await readAll(opened.stream())).length, 0);
    });

    it('keeps users and namespaces apart', async () => {
      await backend.write(ref('same', 'ns-a'), chunks('a'), LIMITS);
      await backend.write(ref('same', 'ns-b'), chunks('bb'), LIMITS);
      await backend.write(ref('same', 'ns-a', 'user-2'), chunks('ccc'), LIMITS);
      assert.equal(await backend.size(ref('same', 'ns-a')), 1);
      assert.equal(await backend.size(ref('same', 'ns-b')), 2);
      assert.equal(await backend.size(ref('same', 'ns-a', 'user-2')), 3);
      await rejectsWith(backend.size(ref('same')), 'not_found');
      assert.equal(await backend.usage(USER), 3);
      assert.equal(await backend.usage('user-2'), 3);
    });

    it('refuses a second write of the same id', async () => {
      await backend.write(ref('once'), chunks('first'), LIMITS);
      await rejectsWith(backend.write(ref('once'), chunks('second'), LIMITS), 'blob_exists');
      assert.equal((await readAll((await backend.open(ref('once'))).stream())).toString(), 'first');
    });

    it('refuses to write a deleted id again', async () => {
      await backend.write(ref('gone'), chunks('data'), LIMITS);
      await backend.delete(ref('gone'));
      await rejectsWith(backend.write(ref('gone'), chunks('data'), LIMITS), 'blob_deleted');
      await reopen();
      await rejectsWith(backend.write(ref('gone'), chunks('data'), LIMITS), 'blob_deleted');
    });

    it('answers not_found for a missing or deleted blob', async () => {
      await rejectsWith(backend.open(ref('missing')), 'not_found');
      await rejectsWith(backend.size(ref('missing')), 'not_found');
      await rejectsWith(backend.getFlags(ref('missing')), 'not_found');
      await rejectsWith(backend.setFlags(ref('missing'), ['PENDING']), 'not_found');
      await rejectsWith(backend.delete(ref('missing')), 'not_found');
      await backend.write(ref('deleted'), chunks('x'), LIMITS);
      await backend.delete(ref('deleted'));
      await rejectsWith(backend.open(ref('deleted')), 'not_found');
      await rejectsWith(backend.size(ref('deleted')), 'not_found');
      await rejectsWith(backend.getFlags(ref('deleted')), 'not_found');
      await rejectsWith(backend.delete(ref('deleted')), 'not_found');
    });

    // An announced size of 64 KiB or less takes the path that gathers the body first.
    // 9 MiB takes the direct path (direct-io.ts) where the filesystem has it.
    for (const announced of [undefined, 2000, 90_000, 9 * 1024 * 1024]) {
      const label = announced === undefined ? 'not announced' : `announced as ${announced} bytes`;
      const limits =
        announced === undefined
          ? LIMITS
          : { quota: 10 * 1024 * 1024, maxSize: 10 * 1024 * 1024, expectedSize: announced };

      it(`leaves no file and charges nothing when a body ${label} fails midway`, async () => {
        await assert.rejects(
          backend.write(ref('broken'), failingBody(), limits),
          /connection reset/,
        );
        assert.deepEqual(await filesOutsideIndex(root), []);
        assert.equal(await backend.usage(USER), 0);
        await rejectsWith(backend.open(ref('broken')), 'not_found');
        await backend.write(ref('broken'), chunks('retried'), LIMITS);
        assert.equal(await backend.size(ref('broken')), 7);
      });
    }

    it('refuses a body over the maximum size, streamed or announced', async () => {
      const options = { ...LIMITS, maxSize: 10 };
      await rejectsWith(backend.write(ref('big'), chunks('123456', '78901'), options), 'too_large');
      await rejectsWith(
        backend.write(ref('big'), chunks('x'), { ...options, expectedSize: 11 }),
        'too_large',
      );
      assert.deepEqual(await filesOutsideIndex(root), []);
      assert.equal(await backend.usage(USER), 0);
      assert.deepEqual(await backend.write(ref('big'), chunks('1234567890'), options), {
        size: 10,
      });
    });

    it('refuses a body whose length differs from the announced size', async () => {
      const longer = backend.write(ref('liar'), chunks('12345'), { ...LIMITS, expectedSize: 4 });
      await rejectsWith(longer, 'invalid_request');
      const shorter = backend.write(ref('liar'), chunks('123'), { ...LIMITS, expectedSize: 4 });
      await rejectsWith(shorter, 'invalid_request');
      assert.deepEqual(await filesOutsideIndex(root), []);
      assert.equal(await backend.usage(USER), 0);
    });

    it('refuses a write that would pass the quota and stores nothing', async () => {
      const options = { ...LIMITS, quota: 100 };
      await backend.write(ref('first'), chunks(Buffer.alloc(60)), options);
      await rejectsWith(
        backend.write(ref('second'), chunks(Buffer.alloc(41)), options),
        'quota_exceeded',
      );
      await rejectsWith(
        backend.write(ref('third'), chunks('x'), { ...options, expectedSize: 41 }),
        'quota_exceeded',
      );
      assert.equal(await backend.usage(USER), 60);
      await rejectsWith(backend.open(ref('second')), 'not_found');
      await backend.write(ref('fourth'), chunks(Buffer.alloc(40)), options);
      assert.equal(await backend.usage(USER), 100);
    });

    it('lets exactly as many concurrent announced writes through as the quota holds', async () => {
      const options = { ...LIMITS, quota: 1000, expectedSize: 100 };
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          backend.write(ref(`race-${i}`), chunks(Buffer.alloc(50), Buffer.alloc(50)), options),
        ),
      );
      const stored = results.filter((r) => r.status === 'fulfilled');
      assert.equal(stored.length, 10);
      for (const r of results) {
        if (r.status === 'rejected') {
          assert.equal((r.reason as BlobsError).code, 'quota_exceeded');
        }
      }
      assert.equal(await backend.usage(USER), 1000);
      assert.equal(await backend.count(USER, { namespace: NS }), 10);
    });

    it('never ends above the quota when concurrent writes announce no size', async () => {
      const options = { ...LIMITS, quota: 1000 };
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          backend.write(ref(`race-${i}`), chunks(Buffer.alloc(40), Buffer.alloc(60)), options),
        ),
      );
      const stored = results.filter((r) => r.status === 'fulfilled').length;
      const usage = await backend.usage(USER);
      assert.equal(usage, stored * 100);
      assert.ok(usage <= 1000, `usage ${usage} is over the quota`);
      assert.equal(await backend.count(USER, { namespace: NS }), stored);
    });

    for (const announced of [false, true]) {
      it(`lets exactly one of concurrent writes of one id win, with its own bytes (sizes ${announced ? '' : 'not '}announced)`, async () => {
        const bodies = Array.from({ length: 20 }, (_, i) =>
          Buffer.alloc(10_000 + i * 997, String.fromCharCode(65 + i)),
        );
        const results = await Promise.allSettled(
          bodies.map((body) =>
            backend.write(
              ref('contested'),
              chunks(body.subarray(0, 5000), body.subarray(5000)),
              announced ? { ...LIMITS, expectedSize: body.length } : LIMITS,
            ),
          ),
        );
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1);
        for (const r of results) {
          if (r.status === 'rejected') assert.equal((r.reason as BlobsError).code, 'blob_exists');
        }
        const stored = await readAll((await backend.open(ref('contested'))).stream());
        assert.ok(stored.equals(bodies[winners[0]!]!));
        assert.equal(await backend.usage(USER), stored.length);
        assert.deepEqual(await readdir(join(root, '.tmp')), []);
      });
    }

    it('keeps a blob invisible until its write has completed', async () => {
      const gated = gatedBody('first half, ', 'second half');
      const writing = backend.write(ref('slow'), gated.body, LIMITS);
      await withTimeout(gated.firstTaken, 5000, 'the first chunk to be read');
      await rejectsWith(backend.open(ref('slow')), 'not_found');
      await rejectsWith(backend.size(ref('slow')), 'not_found');
      assert.deepEqual(await backend.list(USER, { namespace: NS }), []);
      gated.finish();
      assert.deepEqual(await writing, { size: 23 });
      const opened = await backend.open(ref('slow'));
      assert.equal((await readAll(opened.stream())).toString(), 'first half, second half');
    });

    it('finishes a read that started before the blob was deleted', async () => {
      const body = Buffer.alloc(3 * 1024 * 1024, 7);
      await backend.write(ref('reading'), chunks(body), {
        quota: body.length,
        maxSize: body.length,
      });
      const opened = await backend.open(ref('reading'));
      await backend.delete(ref('reading'));
      assert.ok((await readAll(opened.stream())).equals(body));
    });

    it('stores flags given with the write from the moment the blob is visible', async () => {
      await backend.write(ref('incoming', 'MX'), chunks('mail'), { ...LIMITS, flags: ['PENDING'] });
      assert.deepEqual(await backend.getFlags(ref('incoming', 'MX')), ['PENDING']);
      const flagsFile = `${layoutPath(root, ref('incoming', 'MX'))}.flags`;
      assert.deepEqual(JSON.parse(await readFile(flagsFile, 'utf8')), ['PENDING']);
    });
  });

  describe('delete', () => {
    it('frees the bytes at once and removes the files', async () => {
      await backend.write(ref('keep'), chunks('12345'), LIMITS);
      await backend.write(ref('drop'), chunks('1234567'), { ...LIMITS, flags: ['FAILED'] });
      assert.equal(await backend.usage(USER), 12);
      await backend.delete(ref('drop'));
      assert.equal(await backend.usage(USER), 5);
      await assert.rejects(stat(layoutPath(root, ref('drop'))), { code: 'ENOENT' });
      await assert.rejects(stat(`${layoutPath(root, ref('drop'))}.flags`), { code: 'ENOENT' });
    });

    it('leaves tombstones that deleted listings show', async () => {
      for (const id of ['t-2', 't-1', 'live']) await backend.write(ref(id), chunks(id), LIMITS);
      await backend.delete(ref('t-2'));
      await backend.delete(ref('t-1'));
      assert.deepEqual(await backend.list(USER, { namespace: NS, deleted: true }), ['t-1', 't-2']);
      assert.deepEqual(
        await backend.list(USER, { namespace: NS, deleted: true, orderBy: 'date' }),
        ['t-2', 't-1'],
      );
      assert.deepEqual(
        await backend.list(USER, { namespace: NS, deleted: true, orderBy: '-date' }),
        ['t-1', 't-2'],
      );
      assert.equal(await backend.count(USER, { namespace: NS, deleted: true }), 2);
      assert.deepEqual(await backend.list(USER, { namespace: NS }), ['live']);
    });
  });

  describe('list and count', () => {
    it('orders by upload time, oldest first for date and +date, newest first for -date', async () => {
      for (const id of ['c', 'a', 'b']) await backend.write(ref(id), chunks(id), LIMITS);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: 'date' }), [
        'c',
        'a',
        'b',
      ]);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: '+date' }), [
        'c',
        'a',
        'b',
      ]);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: '-date' }), [
        'b',
        'a',
        'c',
      ]);
      assert.deepEqual((await backend.list(USER, { namespace: NS })).sort(), ['a', 'b', 'c']);
    });

    it('breaks ties in upload time by id in both directions', async () => {
      await closeAsIfCrashed();
      const same = new Date('2024-05-01T12:00:00.123Z');
      const older = new Date('2024-05-01T11:00:00.000Z');
      for (const [id, time] of [
        ['tie-b', same],
        ['tie-c', same],
        ['tie-a', same],
        ['old', older],
      ] as const) {
        const path = layoutPath(root, ref(id));
        await mkdir(join(path, '..'), { recursive: true });
        await writeFile(path, id);
        await utimes(path, time, time);
      }
      backend = await FilesystemBackend.open(root);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: 'date' }), [
        'old',
        'tie-a',
        'tie-b',
        'tie-c',
      ]);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: '-date' }), [
        'tie-a',
        'tie-b',
        'tie-c',
        'old',
      ]);
    });

    it('filters by flag and counts', async () => {
      await backend.write(ref('p1'), chunks('1'), { ...LIMITS, flags: ['PENDING'] });
      await backend.write(ref('none'), chunks('2'), LIMITS);
      await backend.write(ref('p2'), chunks('3'), { ...LIMITS, flags: ['PROCESSING', 'PENDING'] });
      await backend.write(ref('done'), chunks('4'), { ...LIMITS, flags: ['PROCESSED'] });
      const pending = { namespace: NS, filterFlag: 'PENDING' as const };
      assert.deepEqual(await backend.list(USER, pending), ['p1', 'p2']);
      assert.deepEqual(await backend.list(USER, { ...pending, orderBy: '-date' }), ['p2', 'p1']);
      assert.equal(await backend.count(USER, pending), 2);
      assert.equal(await backend.count(USER, { namespace: NS }), 4);
      assert.equal(await backend.count(USER, { namespace: 'other' }), 0);
      assert.equal(await backend.count('nobody', { namespace: NS }), 0);
      await backend.setFlags(ref('p1'), ['PROCESSED']);
      assert.deepEqual(await backend.list(USER, { ...pending, orderBy: 'date' }), ['p2']);
      assert.deepEqual(
        await backend.list(USER, { namespace: NS, deleted: true, filterFlag: 'PENDING' }),
        [],
      );
    });

    it('does not mix users whose ids share a prefix', async () => {
      await backend.write(ref('x', NS, 'ab'), chunks('1'), LIMITS);
      await backend.write(ref('y', NS, 'ab-c'), chunks('2'), LIMITS);
      await backend.write(ref('z', `${NS}-2`, 'ab'), chunks('3'), LIMITS);
      assert.deepEqual(await backend.list('ab', { namespace: NS }), ['x']);
      assert.deepEqual(await backend.list('ab', { namespace: NS, orderBy: 'date' }), ['x']);
      assert.equal(await backend.count('ab', { namespace: NS }), 1);
    });
  });

  describe('flags', () => {
    it('replaces the flag set of a live blob and mirrors it in the flags file', async () => {
      await backend.write(ref('flagged'), chunks('x'), LIMITS);
      assert.deepEqual(await backend.getFlags(ref('flagged')), []);
      await backend.setFlags(ref('flagged'), ['PROCESSING', 'FAILED']);
      assert.deepEqual(await backend.getFlags(ref('flagged')), ['PROCESSING', 'FAILED']);
      const flagsFile = `${layoutPath(root, ref('flagged'))}.flags`;
      assert.deepEqual(JSON.parse(await readFile(flagsFile, 'utf8')), ['PROCESSING', 'FAILED']);
      await backend.setFlags(ref('flagged'), []);
      assert.deepEqual(await backend.getFlags(ref('flagged')), []);
      await assert.rejects(stat(flagsFile), { code: 'ENOENT' });
    });
  });

  describe('close', () => {
    it('returns the same promise on every call and refuses calls afterwards', async () => {
      const first = backend.close();
      assert.equal(backend.close(), first);
      await first;
      await rejectsWith(backend.list(USER, { namespace: NS }), 'internal');
      await rejectsWith(backend.write(ref('late'), chunks('x'), LIMITS), 'internal');
    });

    it('waits for a write in flight to finish', async () => {
      const gated = gatedBody('begun ', 'and done');
      const events: string[] = [];
      const writing = backend.write(ref('in-flight'), gated.body, LIMITS).then((r) => {
        events.push('written');
        return r;
      });
      await withTimeout(gated.firstTaken, 5000, 'the first chunk to be read');
      const closing = backend.close().then(() => events.push('closed'));
      gated.finish();
      await withTimeout(Promise.all([writing, closing]), 5000, 'write and close');
      assert.deepEqual(events, ['written', 'closed']);
      backend = await FilesystemBackend.open(root);
      assert.equal(await backend.size(ref('in-flight')), 14);
    });
  });

  describe('restart', () => {
    it('keeps blobs, flags, tombstones, usage and upload order across close and open', async () => {
      for (const id of ['third', 'first', 'second']) {
        await backend.write(ref(id), chunks(`${id} body`), LIMITS);
      }
      await backend.write(ref('mail', 'MX'), chunks('mail'), { ...LIMITS, flags: ['PENDING'] });
      await backend.setFlags(ref('first'), ['PROCESSED']);
      await backend.write(ref('deleted'), chunks('soon gone'), LIMITS);
      await backend.delete(ref('deleted'));
      const usage = await backend.usage(USER);
      await reopen();
      assert.equal(await backend.usage(USER), usage);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: 'date' }), [
        'third',
        'first',
        'second',
      ]);
      assert.deepEqual(await backend.getFlags(ref('first')), ['PROCESSED']);
      assert.deepEqual(await backend.getFlags(ref('mail', 'MX')), ['PENDING']);
      assert.deepEqual(await backend.list(USER, { namespace: NS, deleted: true }), ['deleted']);
      await rejectsWith(backend.write(ref('deleted'), chunks('x'), LIMITS), 'blob_deleted');
      const opened = await backend.open(ref('second'));
      assert.equal((await readAll(opened.stream())).toString(), 'second body');
      await backend.write(ref('fourth'), chunks('x'), LIMITS);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: '-date' }), [
        'fourth',
        'second',
        'first',
        'third',
      ]);
    });
  });

  describe('layout', () => {
    /** Puts a blob of layout 1 (0.1.0) in place by hand: `{ns}/{id[0..2]}/{id}`. */
    async function writeLayout1(id: string, content: string, flags?: string): Promise<string> {
      const shard = join(root, USER, NS, id.slice(0, 2));
      await mkdir(shard, { recursive: true });
      await writeFile(join(shard, id), content);
      if (flags !== undefined) await writeFile(join(shard, `${id}.flags`), flags);
      return shard;
    }

    it('records the layout of a new root', async () => {
      assert.deepEqual(JSON.parse(await readFile(join(root, '.layout'), 'utf8')), { layout: 2 });
    });

    it('moves the blobs of a layout-1 tree into their namespace folder, flags and all', async () => {
      await backend.write(ref('kept-in-index'), chunks('indexed'), LIMITS);
      await closeAsIfCrashed();
      // As 0.1.0 left it: no .layout, blobs in shard folders.
      await rm(join(root, '.layout'));
      await rm(layoutPath(root, ref('kept-in-index')));
      const shardA = await writeLayout1('kept-in-index', 'indexed');
      const shardB = await writeLayout1('by-hand', 'written by 0.1.0', '["PENDING"]');
      backend = await FilesystemBackend.open(root);
      assert.equal(
        (await readAll((await backend.open(ref('kept-in-index'))).stream())).toString(),
        'indexed',
      );
      assert.equal(
        (await readAll((await backend.open(ref('by-hand'))).stream())).toString(),
        'written by 0.1.0',
      );
      assert.deepEqual(await backend.getFlags(ref('by-hand')), ['PENDING']);
      await assert.rejects(stat(shardA), { code: 'ENOENT' });
      await assert.rejects(stat(shardB), { code: 'ENOENT' });
      assert.equal(await readFile(layoutPath(root, ref('by-hand')), 'utf8'), 'written by 0.1.0');
      assert.deepEqual(JSON.parse(await readFile(join(root, '.layout'), 'utf8')), { layout: 2 });
      assert.equal(await backend.usage(USER), 7 + 16);
    });

    it('finishes a move that a crash cut between its link and its unlink', async () => {
      await closeAsIfCrashed();
      await rm(join(root, '.layout'));
      const shard = await writeLayout1('halfway', 'both names');
      await link(join(shard, 'halfway'), layoutPath(root, ref('halfway')));
      backend = await FilesystemBackend.open(root);
      assert.equal(await backend.size(ref('halfway')), 10);
      await assert.rejects(stat(shard), { code: 'ENOENT' });
    });

    it('never replaces a file while moving, and leaves what is not a blob', async () => {
      await closeAsIfCrashed();
      await rm(join(root, '.layout'));
      const shard = await writeLayout1('taken', 'old copy');
      await writeFile(layoutPath(root, ref('taken')), 'already here');
      await writeFile(join(shard, 'not an id'), 'stray');
      backend = await FilesystemBackend.open(root);
      assert.equal(await readFile(layoutPath(root, ref('taken')), 'utf8'), 'already here');
      assert.equal(await readFile(join(shard, 'taken'), 'utf8'), 'old copy');
      assert.equal(await readFile(join(shard, 'not an id'), 'utf8'), 'stray');
    });

    it('refuses a root of a later layout, and a .layout that does not parse', async () => {
      await backend.close();
      await writeFile(join(root, '.layout'), '{"layout": 3}');
      await assert.rejects(FilesystemBackend.open(root), {
        code: 'unknown_layout',
        message: /layout 3/,
      });
      await writeFile(join(root, '.layout'), 'not json');
      await assert.rejects(FilesystemBackend.open(root), { code: 'unknown_layout' });
      await writeFile(join(root, '.layout'), '{"layout": 2}');
      backend = await FilesystemBackend.open(root);
    });
  });

  describe('reconciliation at open', () => {
    it('trusts the index after a clean close and checks every file after an unclean one', async () => {
      await backend.close();
      const path = layoutPath(root, ref('unnoticed'));
      await mkdir(join(path, '..'), { recursive: true });
      await writeFile(path, 'added while stopped');
      backend = await FilesystemBackend.open(root);
      await rejectsWith(backend.open(ref('unnoticed')), 'not_found');
      await closeAsIfCrashed();
      backend = await FilesystemBackend.open(root);
      assert.equal(await backend.size(ref('unnoticed')), 19);
    });

    it('recovers after the process holding the root is killed mid-write', async () => {
      await backend.close();
      const moduleUrl = new URL('../../../server/backends/filesystem-backend.js', import.meta.url);
      const script = `
        import { readdirSync } from 'node:fs';
        const { FilesystemBackend } = await import(${JSON.stringify(moduleUrl.href)});
        const root = ${JSON.stringify(root)};
        const backend = await FilesystemBackend.open(root);
        const limits = { quota: 1e6, maxSize: 1e6 };
        const ref = (id) => ({ user: ${JSON.stringify(USER)}, namespace: 'default', id });
        async function* once() {
          yield Buffer.from('made it');
        }
        await backend.write(ref('survivor'), once(), limits);
        async function* endless() {
          yield Buffer.alloc(1000, 1);
          await new Promise(() => {});
        }
        backend.write(ref('cut-short'), endless(), limits).catch(() => {});
        const timer = setInterval(() => {
          if (readdirSync(root + '/.tmp').length > 0) {
            clearInterval(timer);
            console.log('ready');
            setInterval(() => {}, 1000);
          }
        }, 5);`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      try {
        const ready = new Promise<void>((resolve, reject) => {
          child.stdout.on('data', (data: Buffer) => {
            if (data.toString().includes('ready')) resolve();
          });
          child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
        });
        await withTimeout(ready, 20_000, 'the child to start a write');
      } finally {
        child.kill('SIGKILL');
        await withTimeout(exited, 20_000, 'the child to exit');
      }
      await assert.rejects(stat(join(root, '.clean')), { code: 'ENOENT' });
      assert.equal((await readdir(join(root, '.tmp'))).length, 1);
      backend = await FilesystemBackend.open(root);
      assert.deepEqual(await readdir(join(root, '.tmp')), []);
      assert.deepEqual(await backend.list(USER, { namespace: NS }), ['survivor']);
      assert.equal(await backend.usage(USER), 7);
      await backend.write(ref('cut-short'), chunks('second try'), LIMITS);
    });

    it('indexes a blob file the index does not list, using its mtime, size and flags', async () => {
      await backend.write(ref('indexed'), chunks('12345'), LIMITS);
      await closeAsIfCrashed();
      const path = layoutPath(root, ref('by-hand'));
      await mkdir(join(path, '..'), { recursive: true });
      await writeFile(path, 'written by hand');
      await writeFile(`${path}.flags`, '["PENDING"]');
      const past = new Date(Date.now() - 60_000);
      await utimes(path, past, past);
      backend = await FilesystemBackend.open(root);
      assert.deepEqual(await backend.list(USER, { namespace: NS, orderBy: 'date' }), [
        'by-hand',
        'indexed',
      ]);
      assert.equal(await backend.usage(USER), 5 + 15);
      assert.deepEqual(await backend.getFlags(ref('by-hand')), ['PENDING']);
      await rejectsWith(backend.write(ref('by-hand'), chunks('x'), LIMITS), 'blob_exists');
    });

    it('drops an index entry whose blob file is gone', async () => {
      await backend.write(ref('kept'), chunks('123'), LIMITS);
      await backend.write(ref('lost'), chunks('1234567'), { ...LIMITS, flags: ['PENDING'] });
      await closeAsIfCrashed();
      await rm(layoutPath(root, ref('lost')));
      backend = await FilesystemBackend.open(root);
      await rejectsWith(backend.open(ref('lost')), 'not_found');
      assert.deepEqual(await backend.list(USER, { namespace: NS }), ['kept']);
      assert.deepEqual(
        await backend.list(USER, { namespace: NS, filterFlag: 'PENDING', orderBy: 'date' }),
        [],
      );
      assert.equal(await backend.usage(USER), 3);
      await assert.rejects(stat(`${layoutPath(root, ref('lost'))}.flags`), { code: 'ENOENT' });
    });

    it('drops every entry of a namespace folder that is gone', async () => {
      await backend.write(ref('a', 'vanished'), chunks('123'), LIMITS);
      await backend.write(ref('b', 'vanished'), chunks('456'), LIMITS);
      await closeAsIfCrashed();
      await rm(join(root, USER, 'vanished'), { recursive: true });
      backend = await FilesystemBackend.open(root);
      assert.equal(await backend.count(USER, { namespace: 'vanished' }), 0);
      assert.equal(await backend.usage(USER), 0);
    });

    it('removes a blob file whose id is tombstoned', async () => {
      await backend.write(ref('zombie'), chunks('brains'), LIMITS);
      await backend.delete(ref('zombie'));
      await closeAsIfCrashed();
      const path = layoutPath(root, ref('zombie'));
      await mkdir(join(path, '..'), { recursive: true });
      await writeFile(path, 'brains');
      backend = await FilesystemBackend.open(root);
      await rejectsWith(backend.open(ref('zombie')), 'not_found');
      await assert.rejects(stat(path), { code: 'ENOENT' });
      assert.equal(await backend.usage(USER), 0);
    });
  });
});
