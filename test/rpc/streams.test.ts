import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { AttachmentInfo, DocRecord } from '../../rpc/methods.js';
import { DEFAULT_STREAM_WINDOW, encodeFrame, MIN_STREAM_WINDOW } from '../../rpc/stream-frames.js';
import { waitFor } from '../helpers/wait.js';
import { type RawRpc, type RpcFixture, startRpcFixture } from './rpc-fixture.js';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Sends `data` on an upload stream within the credit the daemon grants. */
async function sendWithinCredit(raw: RawRpc, streamId: number, data: Buffer): Promise<void> {
  let sent = 0;
  while (sent < data.length) {
    const limit = await raw.until(() => {
      const credits = raw.notificationsOf('stream.credit').filter((c) => c.streamId === streamId);
      const max = Math.max(0, ...credits.map((c) => c.limit));
      return max > sent ? max : undefined;
    }, 'credit');
    const end = Math.min(limit, data.length, sent + 64 * 1024);
    raw.ws.send(encodeFrame(streamId, data.subarray(sent, end)));
    sent = end;
  }
}

function uploadFailures(fixture: RpcFixture) {
  return fixture.logs.filter((line) => line.msg === 'upload stream failed');
}

describe('upload streams', () => {
  let fixture: RpcFixture;
  let doc: DocRecord;
  before(async () => {
    fixture = await startRpcFixture();
    const raw = await fixture.raw();
    doc = await raw.ok<DocRecord>('doc.create', { content: {} });
  });
  after(() => fixture.close());

  it('grants the initial window before any byte, then more as the daemon consumes', async () => {
    const raw = await fixture.raw();
    const data = randomBytes(3 * DEFAULT_STREAM_WINDOW + 12_345);
    const stored = raw.ok<AttachmentInfo>('attachment.put', { docId: doc.id, streamId: 1 });
    const first = await raw.until(
      () => raw.notificationsOf('stream.credit')[0],
      'the first credit',
    );
    assert.deepEqual(first, { streamId: 1, limit: DEFAULT_STREAM_WINDOW });
    await sendWithinCredit(raw, 1, data);
    assert.equal(await raw.ok('stream.end', { streamId: 1 }), true);
    const info = await stored;
    assert.equal(info.docId, doc.id);
    assert.ok(raw.notificationsOf('stream.credit').length > 3);

    const stream = await fixture.daemon.openAttachment(info.blobId);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.equal(sha256(Buffer.concat(chunks)), sha256(data));
  });

  it('closes a connection that sends past its credit with 1008', async () => {
    const raw = await fixture.raw();
    void raw.call('attachment.put', { docId: doc.id, streamId: 1 });
    await raw.until(() => raw.notificationsOf('stream.credit')[0], 'the first credit');
    const closed = once(raw.ws, 'close');
    raw.ws.send(encodeFrame(1, Buffer.alloc(DEFAULT_STREAM_WINDOW + 1)));
    const [code] = (await closed) as [number];
    assert.equal(code, 1008);
  });

  it('closes a connection that sends data for a stream it never opened', async () => {
    const raw = await fixture.raw();
    const closed = once(raw.ws, 'close');
    raw.ws.send(encodeFrame(9, Buffer.from('stray')));
    const [code] = (await closed) as [number];
    assert.equal(code, 1008);
  });

  it('refuses a stream id that does not increase', async () => {
    const raw = await fixture.raw();
    void raw.call('attachment.put', { docId: doc.id, streamId: 5 });
    const again = await raw.call('attachment.put', { docId: doc.id, streamId: 5 });
    assert.equal(again.error?.data?.code, 'invalid_params');
  });

  it('stores nothing when the client disconnects mid-upload', async () => {
    const raw = await fixture.raw();
    const fresh = await raw.ok<DocRecord>('doc.create', { content: {} });
    void raw.call('attachment.put', { docId: fresh.id, streamId: 1 });
    await sendWithinCredit(raw, 1, randomBytes(DEFAULT_STREAM_WINDOW / 2));
    const failures = uploadFailures(fixture).length;
    raw.ws.terminate();
    await waitFor(() => uploadFailures(fixture).length > failures, {
      what: 'the upload to fail',
    });
    assert.equal(uploadFailures(fixture).at(-1)?.code, 'cancelled');
    const stored = (await fixture.daemon.listAttachments()).filter((a) => a.docId === fresh.id);
    assert.deepEqual(stored, []);
  });

  it('stores nothing when the client cancels, and rejects the put with cancelled', async () => {
    const raw = await fixture.raw();
    const fresh = await raw.ok<DocRecord>('doc.create', { content: {} });
    const put = raw.call('attachment.put', { docId: fresh.id, streamId: 1 });
    await sendWithinCredit(raw, 1, randomBytes(100_000));
    assert.equal(await raw.ok('stream.cancel', { streamId: 1, reason: 'changed my mind' }), true);
    const response = await put;
    assert.equal(response.error?.data?.code, 'cancelled');
    const stored = (await fixture.daemon.listAttachments()).filter((a) => a.docId === fresh.id);
    assert.deepEqual(stored, []);
  });

  it('rejects an upload to an unknown document with not_found', async () => {
    const raw = await fixture.raw();
    const put = await raw.call('attachment.put', { docId: 'no-such-doc', streamId: 1 });
    assert.equal(put.error?.data?.code, 'not_found');
  });
});

describe('download streams', () => {
  let fixture: RpcFixture;
  let blob: AttachmentInfo;
  const data = randomBytes(2 * 1024 * 1024 + 7);
  before(async () => {
    fixture = await startRpcFixture();
    const client = await fixture.connect();
    const doc = await client.createDoc({});
    blob = await doc.putAttachment(data);
    await client.putDoc(doc);
  });
  after(() => fixture.close());

  it('sends no more than the window while the client grants no credit', async () => {
    const raw = await fixture.raw();
    const opened = await raw.ok<{ size: number | null }>('attachment.get', {
      blobId: blob.blobId,
      streamId: 1,
      window: MIN_STREAM_WINDOW,
    });
    assert.equal(opened.size, data.length);
    await raw.until(() => raw.bytesOf(1) === MIN_STREAM_WINDOW, 'a full window');
    // A round trip later, still no more than the window.
    await raw.ok('daemon.status');
    assert.equal(raw.bytesOf(1), MIN_STREAM_WINDOW);
    assert.equal(raw.notificationsOf('stream.end').length, 0);

    raw.send({
      jsonrpc: '2.0',
      method: 'stream.credit',
      params: { streamId: 1, limit: data.length },
    });
    const end = await raw.until(() => raw.notificationsOf('stream.end')[0], 'the end');
    assert.deepEqual(end, { streamId: 1, bytes: data.length });
    const received = Buffer.concat(raw.frames.map((f) => f.payload));
    assert.equal(sha256(received), sha256(data));
  });

  it('stops sending when the client cancels, and keeps the connection usable', async () => {
    const raw = await fixture.raw();
    await raw.ok('attachment.get', { blobId: blob.blobId, streamId: 1, window: MIN_STREAM_WINDOW });
    await raw.until(() => raw.bytesOf(1) === MIN_STREAM_WINDOW, 'a full window');
    assert.equal(await raw.ok('stream.cancel', { streamId: 1 }), true);
    raw.send({
      jsonrpc: '2.0',
      method: 'stream.credit',
      params: { streamId: 1, limit: data.length },
    });
    await raw.ok('daemon.status');
    assert.equal(raw.bytesOf(1), MIN_STREAM_WINDOW);
    assert.equal(raw.notificationsOf('stream.end').length, 0);
    assert.equal(raw.notificationsOf('stream.error').length, 0);
  });

  it('rejects a download of an unknown blob with not_found', async () => {
    const raw = await fixture.raw();
    const response = await raw.call('attachment.get', {
      blobId: 'no-such-blob',
      streamId: 1,
      window: MIN_STREAM_WINDOW,
    });
    assert.equal(response.error?.data?.code, 'not_found');
  });

  it('refuses data sent on a download stream', async () => {
    const raw = await fixture.raw();
    await raw.ok('attachment.get', { blobId: blob.blobId, streamId: 1, window: MIN_STREAM_WINDOW });
    const closed = once(raw.ws, 'close');
    raw.ws.send(encodeFrame(1, Buffer.from('wrong way')));
    const [code] = (await closed) as [number];
    assert.equal(code, 1008);
  });

  it('lets the client library read many downloads at once on one connection', async () => {
    const client = await fixture.connect();
    const streams = await Promise.all(
      Array.from({ length: 6 }, () => client.openAttachment(blob.blobId)),
    );
    const digests = await Promise.all(
      streams.map(async (stream) => {
        const hash = createHash('sha256');
        for await (const chunk of stream) hash.update(chunk as Buffer);
        return hash.digest('hex');
      }),
    );
    for (const digest of digests) assert.equal(digest, sha256(data));
  });
});
