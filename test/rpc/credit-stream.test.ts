import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { CreditReceiver } from '../../rpc/credit-receiver.js';
import { CreditSender } from '../../rpc/credit-sender.js';
import { decodeFrame, encodeFrame, MAX_FRAME_PAYLOAD } from '../../rpc/stream-frames.js';
import { withTimeout } from '../helpers/wait.js';

const WINDOW = 256 * 1024;

/** A sender wired to a receiver in memory, the way the two ends of a socket are. */
function pair(window = WINDOW) {
  const frames: Buffer[] = [];
  let sender: CreditSender | undefined;
  const receiver = new CreditReceiver({
    window,
    onCredit: (limit) => sender?.credit(limit),
    onAbandon: (error) => sender?.abort(error ?? new Error('abandoned')),
  });
  sender = new CreditSender(7, window, (frame) => {
    frames.push(frame);
    const decoded = decodeFrame(frame);
    assert.ok(decoded);
    assert.equal(decoded.streamId, 7);
    assert.equal(receiver.push(decoded.payload), true, 'the sender stays within its credit');
    return undefined;
  });
  return { sender, receiver, frames };
}

async function readAll(readable: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of readable) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('stream frames', () => {
  it('round-trip a stream id and a payload', () => {
    const payload = Buffer.from('hello');
    const decoded = decodeFrame(encodeFrame(0xfeed_beef, payload));
    assert.equal(decoded?.streamId, 0xfeed_beef);
    assert.deepEqual(decoded?.payload, payload);
  });

  it('reject a frame too short for a header', () => {
    assert.equal(decodeFrame(Buffer.alloc(3)), undefined);
  });
});

describe('CreditSender and CreditReceiver', () => {
  it('carry every byte in order through a window much smaller than the data', async () => {
    const { sender, receiver } = pair();
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const pieces = [data.subarray(0, 5), data.subarray(5, 700_000), data.subarray(700_000)];
    const [sent, received] = await withTimeout(
      Promise.all([
        sender.pump(Readable.from(pieces)).then((bytes) => {
          receiver.end();
          return bytes;
        }),
        readAll(receiver.readable),
      ]),
      10_000,
      'the transfer',
    );
    assert.equal(sent, data.length);
    assert.ok(received.equals(data));
  });

  it('gathers small chunks into frames no larger than the maximum payload', async () => {
    const { sender, receiver, frames } = pair(4 * MAX_FRAME_PAYLOAD);
    const chunks = Array.from({ length: 64 }, () => randomBytes(48 * 1024));
    await Promise.all([
      sender.pump(Readable.from(chunks)).then(() => receiver.end()),
      readAll(receiver.readable),
    ]);
    assert.ok(frames.length < chunks.length / 8, `${frames.length} frames`);
    for (const frame of frames) assert.ok(frame.length <= MAX_FRAME_PAYLOAD + 4);
  });

  it('stops sending at the credit limit while nobody reads', async () => {
    const { sender, receiver } = pair();
    const pumping = sender.pump(Readable.from([randomBytes(4 * WINDOW)]));
    pumping.catch(() => {});
    for (let i = 0; i < 20; i++) await nextTurn();
    assert.equal(sender.sent, WINDOW);
    assert.equal(receiver.received, WINDOW);
    sender.abort(new Error('test over'));
    await assert.rejects(pumping, /test over/);
  });

  it('grants credit only as the consumer reads', async () => {
    const { sender, receiver } = pair();
    const pumping = sender.pump(Readable.from([randomBytes(4 * WINDOW)]));
    for (let i = 0; i < 20; i++) await nextTurn();
    assert.equal(receiver.granted, WINDOW);
    const first = receiver.readable.read((WINDOW * 3) / 4) as Buffer;
    assert.equal(first.length, (WINDOW * 3) / 4);
    for (let i = 0; i < 20; i++) await nextTurn();
    assert.equal(receiver.granted, WINDOW + (WINDOW * 3) / 4);
    assert.ok(receiver.readable.readableLength <= WINDOW, 'never more than a window buffered');
    receiver.readable.resume();
    await pumping;
  });

  it('rejects the pump and destroys its source when aborted', async () => {
    const { sender } = pair();
    const source = Readable.from([randomBytes(4 * WINDOW)]);
    const pumping = sender.pump(source);
    sender.abort(new Error('cancelled by test'));
    await assert.rejects(pumping, /cancelled by test/);
    assert.equal(source.destroyed, true);
  });

  it('tells the sender when the consumer abandons the stream', async () => {
    const { sender, receiver } = pair();
    const pumping = sender.pump(Readable.from([randomBytes(4 * WINDOW)]));
    receiver.readable.destroy();
    await assert.rejects(pumping, /abandoned/);
  });

  it('refuses a payload past the granted credit', () => {
    const receiver = new CreditReceiver({ window: 10, onCredit: () => {}, onAbandon: () => {} });
    assert.equal(receiver.push(Buffer.alloc(10)), true);
    assert.equal(receiver.push(Buffer.alloc(1)), false);
  });

  it('delivers a failure to the consumer', async () => {
    const { receiver } = pair();
    receiver.push(Buffer.from('partial'));
    receiver.fail(Object.assign(new Error('source broke'), { code: 'integrity_error' }));
    await assert.rejects(readAll(receiver.readable), { code: 'integrity_error' });
  });
});
