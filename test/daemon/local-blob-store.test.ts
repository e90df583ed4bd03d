import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { DocumentSealer } from '../../daemon/crypto/document-sealer.js';
import { LocalBlobError, LocalBlobStore } from '../../daemon/local-blob-store.js';
import { smallEnvelopesIn } from '../../daemon/small-envelopes.js';
import { Store } from '../../daemon/store/store.js';
import { tempDir } from '../helpers/tmp.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function collect(iterable: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const item of iterable) out.push(item);
  return out.sort();
}

function isCode(code: string) {
  return (error: unknown) => error instanceof LocalBlobError && error.code === code;
}

describe('LocalBlobStore', () => {
  let dir: { path: string; remove(): Promise<void> };
  let store: LocalBlobStore;
  let serial = 0;
  const freshId = () => `blob-${process.pid}-${serial++}`;

  before(async () => {
    dir = await tempDir();
    store = await LocalBlobStore.open(join(dir.path, 'blobs'));
  });

  after(async () => {
    await store.close();
    await dir.remove();
  });

  describe('write and read', () => {
    it('stores the bytes of a Readable and reads them back', async () => {
      const id = freshId();
      const bytes = randomBytes(200_000);
      assert.deepEqual(await store.write(id, Readable.from([bytes])), { size: 200_000 });
      assert.equal(await store.has(id), true);
      assert.equal(await store.size(id), 200_000);
      assert.deepEqual(await readAll(await store.createReadStream(id)), bytes);
    });

    it('places a blob at DIR/{first two characters}/{id}', async () => {
      const id = 'AbCdef';
      await store.write(id, Readable.from([Buffer.from('x')]));
      assert.deepEqual(await readdir(join(store.dir, 'Ab')), ['AbCdef']);
    });

    it('stores many chunks from an async iterable in order', async () => {
      const id = freshId();
      const chunks = Array.from({ length: 80 }, () => randomBytes(65_536 + 17));
      async function* source() {
        for (const chunk of chunks) yield chunk;
      }
      const { size } = await store.write(id, source());
      assert.equal(size, 80 * (65_536 + 17));
      const expected = createHash('sha256').update(Buffer.concat(chunks)).digest('hex');
      const hash = createHash('sha256');
      for await (const chunk of await store.createReadStream(id)) hash.update(chunk as Buffer);
      assert.equal(hash.digest('hex'), expected);
    });

    it('stores an empty blob', async () => {
      const id = freshId();
      assert.deepEqual(await store.write(id, Readable.from([])), { size: 0 });
      assert.equal(await store.size(id), 0);
      assert.equal((await readAll(await store.createReadStream(id))).length, 0);
    });

    it('reads an inclusive byte range', async () => {
      const id = freshId();
      const bytes = randomBytes(1000);
      await store.write(id, Readable.from([bytes]));
      const middle = await readAll(await store.createReadStream(id, { start: 10, end: 19 }));
      assert.deepEqual(middle, bytes.subarray(10, 20));
      const tail = await readAll(await store.createReadStream(id, { start: 990 }));
      assert.deepEqual(tail, bytes.subarray(990));
      await assert.rejects(store.createReadStream(id, { start: 5, end: 4 }), {
        name: 'RangeError',
      });
    });

    it('fails with not_found for a blob that is not stored', async () => {
      await assert.rejects(store.createReadStream('missing'), isCode('not_found'));
      await assert.rejects(store.size('missing'), isCode('not_found'));
      assert.equal(await store.has('missing'), false);
    });

    it('refuses ids outside the wire rule', async () => {
      for (const bad of ['', '../x', 'a/b', 'a.b', 'x'.repeat(129)]) {
        await assert.rejects(store.write(bad, Readable.from([])), isCode('invalid_id'));
        await assert.rejects(store.createReadStream(bad), isCode('invalid_id'));
      }
    });

    it('refuses to overwrite a stored blob, keeps its bytes and destroys the source', async () => {
      const id = freshId();
      await store.write(id, Readable.from([Buffer.from('first')]));
      const second = Readable.from([Buffer.from('second')]);
      await assert.rejects(store.write(id, second), isCode('exists'));
      assert.equal(second.destroyed, true);
      assert.equal((await readAll(await store.createReadStream(id))).toString(), 'first');
    });
  });

  describe('atomicity', () => {
    it('leaves nothing visible and no temporary file when the source fails', async () => {
      const id = freshId();
      const failure = new Error('source broke');
      async function* source() {
        yield randomBytes(100_000);
        throw failure;
      }
      await assert.rejects(store.write(id, source()), (error) => error === failure);
      assert.equal(await store.has(id), false);
      assert.deepEqual(await readdir(join(store.dir, '.tmp')), []);
    });

    it('keeps a blob invisible while it is written and until commit', async () => {
      const id = freshId();
      const writer = await store.writer(id);
      await writer.write(randomBytes(50_000));
      assert.equal(await store.has(id), false);
      assert.equal((await collect(store.list())).includes(id), false);
      await assert.rejects(store.createReadStream(id), isCode('not_found'));
      await writer.write(Buffer.from('end'));
      assert.deepEqual(await writer.commit(), { size: 50_003 });
      assert.equal(await store.size(id), 50_003);
      assert.deepEqual(await readdir(join(store.dir, '.tmp')), []);
    });

    it('removes everything an aborted writer wrote', async () => {
      const id = freshId();
      const writer = await store.writer(id);
      await writer.write(randomBytes(10_000));
      await writer.abort();
      await writer.abort();
      assert.equal(await store.has(id), false);
      assert.deepEqual(await readdir(join(store.dir, '.tmp')), []);
      await assert.rejects(writer.write(Buffer.from('late')), isCode('closed'));
      await assert.rejects(writer.commit(), isCode('closed'));
    });

    it('takes a pipeline through writable() and commits only when asked', async () => {
      const id = freshId();
      const bytes = randomBytes(300_000);
      const writer = await store.writer(id);
      await pipeline(
        Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]),
        writer.writable(),
      );
      assert.equal(await store.has(id), false);
      await writer.commit();
      assert.deepEqual(await readAll(await store.createReadStream(id)), bytes);
    });

    it('lets exactly one of several concurrent writers of one id win', async () => {
      const id = freshId();
      const writers = await Promise.all([0, 1, 2, 3].map(() => store.writer(id)));
      await Promise.all(writers.map((w, i) => w.write(Buffer.from(`writer ${i}`))));
      const results = await Promise.allSettled(writers.map((w) => w.commit()));
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r) => r.status === 'rejected');
      assert.equal(won.length, 1);
      assert.equal(lost.length, 3);
      for (const r of lost) assert.ok(isCode('exists')(r.reason));
      const winner = results.findIndex((r) => r.status === 'fulfilled');
      assert.equal(
        (await readAll(await store.createReadStream(id))).toString(),
        `writer ${winner}`,
      );
      assert.deepEqual(await readdir(join(store.dir, '.tmp')), []);
    });
  });

  describe('delete and list', () => {
    it('deletes a blob and reports whether it was there', async () => {
      const id = freshId();
      await store.write(id, Readable.from([Buffer.from('bye')]));
      assert.equal(await store.delete(id), true);
      assert.equal(await store.has(id), false);
      assert.equal(await store.delete(id), false);
    });

    it('lists every stored blob and nothing in progress', async () => {
      const own = await tempDir();
      try {
        const listed = await LocalBlobStore.open(own.path);
        const ids = ['a', 'ab', 'abc', 'zz-1', 'Q_9'];
        for (const id of ids) await listed.write(id, Readable.from([Buffer.from(id)]));
        const pending = await listed.writer('pending');
        await pending.write(Buffer.from('half'));
        assert.deepEqual(await collect(listed.list()), [...ids].sort());
        await listed.close();
      } finally {
        await own.remove();
      }
    });
  });

  describe('open and close', () => {
    it('removes temporary files left by an earlier process and keeps stored blobs', async () => {
      const own = await tempDir();
      try {
        const first = await LocalBlobStore.open(own.path);
        await first.write('kept', Readable.from([Buffer.from('kept')]));
        await writeFile(join(own.path, '.tmp', 'stale.0123'), 'partial');
        await mkdir(join(own.path, '.tmp', 'odd-folder'));
        const reopened = await LocalBlobStore.open(own.path);
        assert.deepEqual(await readdir(join(own.path, '.tmp')), []);
        assert.deepEqual(await collect(reopened.list()), ['kept']);
      } finally {
        await own.remove();
      }
    });

    it('aborts open writers on close and refuses new ones', async () => {
      const own = await tempDir();
      try {
        const closing = await LocalBlobStore.open(own.path);
        const writer = await closing.writer('open-writer');
        await writer.write(Buffer.from('data'));
        const closed = closing.close();
        assert.equal(closing.close(), closed);
        await closed;
        assert.deepEqual(await readdir(join(own.path, '.tmp')), []);
        await assert.rejects(closing.writer('another'), isCode('closed'));
        assert.equal(await closing.has('open-writer'), false);
      } finally {
        await own.remove();
      }
    });
  });
});

describe('LocalBlobStore with small envelopes in the daemon store', () => {
  const SMALL = 1024;
  let dir: { path: string; remove(): Promise<void> };
  let db: Store;
  let store: LocalBlobStore;

  before(async () => {
    dir = await tempDir();
    db = await Store.open(join(dir.path, 'db'), { sealer: new DocumentSealer(randomBytes(32)) });
    store = await LocalBlobStore.open(join(dir.path, 'blobs'), {
      small: smallEnvelopesIn(db, SMALL),
    });
  });

  after(async () => {
    await store.close();
    await db.close();
    await dir.remove();
  });

  const filePath = (id: string) => join(dir.path, 'blobs', id.slice(0, 2), id);

  it('keeps a blob of at most maxBytes in LevelDB and a larger one in a file', async () => {
    const small = randomBytes(SMALL);
    const large = randomBytes(SMALL + 1);
    await store.write('small-1', Readable.from([small.subarray(0, 100), small.subarray(100)]));
    await store.write('large-1', Readable.from([large]));
    assert.deepEqual(Buffer.from((await db.getEnvelope('small-1'))!), small);
    assert.equal(await db.getEnvelope('large-1'), undefined);
    await assert.rejects(readFile(filePath('small-1')), { code: 'ENOENT' });
    assert.deepEqual(await readFile(filePath('large-1')), large);
    for (const [id, bytes] of [
      ['small-1', small],
      ['large-1', large],
    ] as const) {
      assert.equal(await store.has(id), true);
      assert.equal(await store.size(id), bytes.length);
      assert.deepEqual(await readAll(await store.createReadStream(id)), bytes);
    }
    assert.deepEqual(await readdir(join(store.dir, '.tmp')), []);
  });

  it('reads inclusive ranges of a small blob', async () => {
    await store.write('small-range', Readable.from([Buffer.from('0123456789')]));
    const range = async (start?: number, end?: number) =>
      (await readAll(await store.createReadStream('small-range', { start, end }))).toString();
    assert.equal(await range(2, 5), '2345');
    assert.equal(await range(9, 9), '9');
    assert.equal(await range(7), '789');
    assert.equal(await range(undefined, 1), '01');
  });

  it('stores an empty blob in LevelDB', async () => {
    await store.write('small-empty', Readable.from([]));
    assert.equal(await store.size('small-empty'), 0);
    assert.deepEqual(await readAll(await store.createReadStream('small-empty')), Buffer.alloc(0));
  });

  it('lets exactly one of several concurrent small writers of one id win', async () => {
    const writers = await Promise.all([0, 1, 2].map(() => store.writer('small-race')));
    await Promise.all(writers.map((w, i) => w.write(Buffer.from(`writer ${i}`))));
    const results = await Promise.allSettled(writers.map((w) => w.commit()));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) {
      if (r.status === 'rejected') assert.ok(isCode('exists')(r.reason));
    }
    const winner = results.findIndex((r) => r.status === 'fulfilled');
    assert.equal(
      (await readAll(await store.createReadStream('small-race'))).toString(),
      `writer ${winner}`,
    );
  });

  it('refuses a small write of an id stored as a file, and a file write of a small one', async () => {
    await store.write('as-file', Readable.from([randomBytes(SMALL * 2)]));
    const small = await store.writer('as-file').catch((error: unknown) => error);
    assert.ok(isCode('exists')(small));
    await store.write('as-small', Readable.from([Buffer.from('tiny')]));
    await assert.rejects(
      store.write('as-small', Readable.from([randomBytes(SMALL * 2)])),
      isCode('exists'),
    );
    assert.equal((await readAll(await store.createReadStream('as-small'))).toString(), 'tiny');
  });

  it('deletes and lists small and file blobs alike', async () => {
    await store.write('small-del', Readable.from([Buffer.from('x')]));
    await store.write('large-del', Readable.from([randomBytes(SMALL * 3)]));
    const listed = await collect(store.list());
    assert.ok(listed.includes('small-del') && listed.includes('large-del'));
    assert.equal(await store.delete('small-del'), true);
    assert.equal(await store.delete('large-del'), true);
    assert.equal(await store.has('small-del'), false);
    assert.equal(await store.has('large-del'), false);
    assert.equal(await store.delete('small-del'), false);
    const after = await collect(store.list());
    assert.equal(after.includes('small-del') || after.includes('large-del'), false);
  });

  it('keeps small blobs across a reopen of both stores', async () => {
    await store.write('small-kept', Readable.from([Buffer.from('still here')]));
    await store.close();
    await db.close();
    db = await Store.open(join(dir.path, 'db'), { sealer: new DocumentSealer(randomBytes(32)) });
    store = await LocalBlobStore.open(join(dir.path, 'blobs'), {
      small: smallEnvelopesIn(db, SMALL),
    });
    assert.equal(
      (await readAll(await store.createReadStream('small-kept'))).toString(),
      'still here',
    );
  });
});
