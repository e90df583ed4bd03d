import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type DownloadEntry,
  decodeDownloadStream,
  encodeDownloadEntryHeader,
  encodeDownloadRequest,
  encodeUploadManifest,
  encodeUploadStream,
  FrameReader,
  parseDownloadEntryHeader,
  parseDownloadRequest,
  parseUploadManifest,
  parseUploadResults,
  StreamFramingError,
} from '../../wire/stream.js';

/** Yields `bytes` cut at the given offsets. */
async function* pieces(bytes: Buffer, cuts: number[] = []) {
  let start = 0;
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
    if (cut <= start || cut >= bytes.length) continue;
    yield bytes.subarray(start, cut);
    start = cut;
  }
  yield bytes.subarray(start);
}

async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(chunk);
  return Buffer.concat(parts);
}

function framing(reason: string) {
  return (error: unknown) => error instanceof StreamFramingError && error.reason === reason;
}

describe('download request', () => {
  it('round-trips a list of distinct ids', () => {
    assert.deepEqual(parseDownloadRequest(encodeDownloadRequest(['a', 'b-2'])), ['a', 'b-2']);
  });

  it('refuses invalid and repeated ids and bodies that are not arrays', () => {
    assert.throws(() => parseDownloadRequest('["a","a"]'), framing('repeated_id'));
    assert.throws(() => parseDownloadRequest('["a","../b"]'), framing('invalid_entry'));
    assert.throws(() => parseDownloadRequest('[1]'), framing('invalid_entry'));
    assert.throws(() => parseDownloadRequest('{"a":1}'), framing('invalid_entry'));
    assert.throws(() => parseDownloadRequest('nope'), framing('invalid_json'));
    assert.throws(() => encodeDownloadRequest(['x', 'x']), framing('repeated_id'));
  });
});

describe('download entry headers', () => {
  it('round-trips size and error headers as one line', () => {
    const sized = encodeDownloadEntryHeader({ id: 'a', size: 5 });
    assert.equal(sized.toString(), '{"id":"a","size":5}\n');
    assert.deepEqual(parseDownloadEntryHeader(sized.toString().trim()), { id: 'a', size: 5 });
    assert.deepEqual(parseDownloadEntryHeader('{"id":"b","error":"not_found"}'), {
      id: 'b',
      error: 'not_found',
    });
  });

  it('refuses headers with both, neither, a bad id or a bad size', () => {
    for (const line of [
      '{"id":"a","size":1,"error":"x"}',
      '{"id":"a"}',
      '{"id":"a/b","size":1}',
      '{"id":"a","size":-1}',
      '{"id":"a","size":1.5}',
      '[]',
    ]) {
      assert.throws(() => parseDownloadEntryHeader(line), StreamFramingError, line);
    }
  });
});

describe('upload manifest', () => {
  it('round-trips [id, size] pairs', () => {
    const line = encodeUploadManifest([
      { id: 'a', size: 0 },
      { id: 'b', size: 7 },
    ]);
    assert.equal(line.toString(), '[["a",0],["b",7]]\n');
    assert.deepEqual(parseUploadManifest(line.toString().trim()), [
      { id: 'a', size: 0 },
      { id: 'b', size: 7 },
    ]);
  });

  it('refuses repeated or invalid ids and malformed pairs', () => {
    assert.throws(() => parseUploadManifest('[["a",1],["a",2]]'), framing('repeated_id'));
    for (const line of ['[["a"]]', '[["a",1,2]]', '[["a",-1]]', '[["a","1"]]', '[[".",1]]', '{}']) {
      assert.throws(() => parseUploadManifest(line), StreamFramingError, line);
    }
  });

  it('parses upload results of created and error codes only', () => {
    assert.deepEqual(parseUploadResults('{"a":"created","b":"blob_exists"}'), {
      a: 'created',
      b: 'blob_exists',
    });
    assert.throws(() => parseUploadResults('{"a":"exploded"}'), StreamFramingError);
    assert.throws(() => parseUploadResults('[]'), StreamFramingError);
  });
});

describe('FrameReader', () => {
  it('reads lines and sized bodies however the source is cut', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 5 }),
        fc.array(fc.nat(400)),
        async (bodies, cuts) => {
          const parts: Buffer[] = [];
          for (const [index, body] of bodies.entries()) {
            parts.push(Buffer.from(`line ${index}\n`), Buffer.from(body));
          }
          const reader = new FrameReader(pieces(Buffer.concat(parts), cuts));
          for (const [index, body] of bodies.entries()) {
            assert.equal(await reader.readLine(), `line ${index}`);
            assert.deepEqual(await readAll(reader.readBody(body.length)), Buffer.from(body));
          }
          assert.equal(await reader.atEnd(), true);
          assert.equal(await reader.readLine(), undefined);
        },
      ),
    );
  });

  it('skips the unread part of a body before the next read', async () => {
    const reader = new FrameReader(pieces(Buffer.from('a\n0123456789b\nxyz'), [3, 5, 12]));
    assert.equal(await reader.readLine(), 'a');
    const body = reader.readBody(10);
    assert.deepEqual((await body.next()).value, Buffer.from('0'));
    assert.equal(await reader.readLine(), 'b');
    assert.deepEqual(await readAll(reader.readBody(3)), Buffer.from('xyz'));
    await assert.rejects(body.next(), /moved past/);
  });

  it('skips a body never read at all', async () => {
    const reader = new FrameReader(pieces(Buffer.from('0123next\n'), [2]));
    reader.readBody(4);
    assert.equal(await reader.readLine(), 'next');
  });

  it('throws truncated when the source ends inside a line or a body', async () => {
    const inLine = new FrameReader(pieces(Buffer.from('no newline')));
    await assert.rejects(inLine.readLine(), framing('truncated'));
    const inBody = new FrameReader(pieces(Buffer.from('head\nabc')));
    await inBody.readLine();
    await assert.rejects(readAll(inBody.readBody(5)), framing('truncated'));
    const skipped = new FrameReader(pieces(Buffer.from('abc')));
    skipped.readBody(5);
    await assert.rejects(skipped.atEnd(), framing('truncated'));
  });

  it('refuses a line longer than the limit', async () => {
    const reader = new FrameReader(pieces(Buffer.from(`${'x'.repeat(100)}\n`), [10, 50]));
    await assert.rejects(reader.readLine(64), framing('line_too_long'));
  });

  it('rethrows errors of the source as they are', async () => {
    const failure = new Error('connection reset');
    async function* broken() {
      yield Buffer.from('he');
      throw failure;
    }
    const reader = new FrameReader(broken());
    await assert.rejects(reader.readLine(), (error) => error === failure);
  });
});

describe('download and upload streams', () => {
  it('decodes a download response into entries with their bodies', async () => {
    const response = Buffer.concat([
      encodeDownloadEntryHeader({ id: 'a', size: 3 }),
      Buffer.from('abc'),
      encodeDownloadEntryHeader({ id: 'b', error: 'not_found' }),
      encodeDownloadEntryHeader({ id: 'c', size: 0 }),
      encodeDownloadEntryHeader({ id: 'd', size: 2 }),
      Buffer.from('de'),
    ]);
    const seen: { id: string; bytes?: string; error?: string }[] = [];
    for await (const entry of decodeDownloadStream(pieces(response, [5, 21, 22]))) {
      if ('error' in entry) seen.push({ id: entry.id, error: entry.error });
      else if (entry.id !== 'd')
        seen.push({ id: entry.id, bytes: (await readAll(entry.body)).toString() });
      else seen.push({ id: entry.id });
    }
    assert.deepEqual(seen, [
      { id: 'a', bytes: 'abc' },
      { id: 'b', error: 'not_found' },
      { id: 'c', bytes: '' },
      { id: 'd' },
    ]);
  });

  it('fails a download response cut inside a body', async () => {
    const response = Buffer.concat([
      encodeDownloadEntryHeader({ id: 'a', size: 9 }),
      Buffer.from('abc'),
    ]);
    const entries = decodeDownloadStream(pieces(response));
    const first = (await entries.next()).value as DownloadEntry & { body: AsyncIterable<Buffer> };
    await assert.rejects(readAll(first.body), framing('truncated'));
  });

  it('encodes an upload as the manifest line then the bodies, which a reader splits back', async () => {
    const sources = [
      { id: 'x', size: 4, body: () => pieces(Buffer.from('wxyz'), [1]) },
      { id: 'y', size: 0, body: () => pieces(Buffer.alloc(0)) },
      { id: 'z', size: 2, body: () => pieces(Buffer.from('!!')) },
    ];
    const reader = new FrameReader(encodeUploadStream(sources));
    const entries = parseUploadManifest((await reader.readLine())!);
    const bodies: string[] = [];
    for (const entry of entries)
      bodies.push((await readAll(reader.readBody(entry.size))).toString());
    assert.deepEqual(bodies, ['wxyz', '', '!!']);
    assert.equal(await reader.atEnd(), true);
  });

  it('refuses an upload body longer or shorter than its declared size', async () => {
    const long = encodeUploadStream([{ id: 'x', size: 1, body: () => pieces(Buffer.from('ab')) }]);
    await assert.rejects(readAll(long), framing('invalid_entry'));
    const short = encodeUploadStream([{ id: 'x', size: 3, body: () => pieces(Buffer.from('ab')) }]);
    await assert.rejects(readAll(short), framing('invalid_entry'));
  });
});
