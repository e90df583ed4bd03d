import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AttachmentState,
  classifyFailure,
  failureInfo,
  isPriority,
  isSettled,
  publicStateOf,
  retryDelay,
  statePath,
} from '../../machines/index.js';

describe('publicStateOf', () => {
  it('maps every machine state to its public flag', () => {
    const expected: Record<string, number> = {
      none: AttachmentState.NONE,
      'local.queued': AttachmentState.LOCAL,
      'local.uploading': AttachmentState.LOCAL,
      'local.retrying': AttachmentState.LOCAL,
      'local.rejected': AttachmentState.LOCAL,
      synced: AttachmentState.SYNCED,
      evicting: AttachmentState.REMOTE,
      'remote.idle': AttachmentState.REMOTE,
      'remote.queued': AttachmentState.REMOTE,
      'remote.downloading': AttachmentState.REMOTE,
      'remote.retrying': AttachmentState.REMOTE,
      failed: AttachmentState.REMOTE,
      'deleting.removing': AttachmentState.NONE,
      'deleting.retrying': AttachmentState.NONE,
      deleted: AttachmentState.NONE,
    };
    for (const [path, flag] of Object.entries(expected)) {
      assert.equal(publicStateOf(path), flag, path);
    }
    assert.equal(publicStateOf({ local: 'uploading' }), AttachmentState.LOCAL);
    assert.equal(publicStateOf({ deleting: 'removing' }), AttachmentState.NONE);
  });

  it('keeps SYNCED equal to LOCAL | REMOTE', () => {
    assert.equal(AttachmentState.SYNCED, AttachmentState.LOCAL | AttachmentState.REMOTE);
  });

  it('throws on a state the machine does not have', () => {
    assert.throws(() => publicStateOf('uploading'), TypeError);
  });
});

describe('isSettled', () => {
  it('is true only for none, synced, remote.idle, failed and local.rejected', () => {
    const settled = ['none', 'synced', 'remote.idle', 'failed', 'local.rejected'];
    for (const path of settled) assert.equal(isSettled(path), true, path);
    for (const path of [
      'local.queued',
      'local.uploading',
      'local.retrying',
      'remote.queued',
      'remote.downloading',
      'remote.retrying',
      'evicting',
      'deleting.removing',
      'deleting.retrying',
      'deleted',
    ]) {
      assert.equal(isSettled(path), false, path);
    }
    assert.equal(isSettled({ remote: 'idle' }), true);
  });
});

describe('statePath', () => {
  it('joins nested state values with dots', () => {
    assert.equal(statePath('synced'), 'synced');
    assert.equal(statePath({ local: 'retrying' }), 'local.retrying');
    assert.equal(statePath({ a: { b: 'c' } }), 'a.b.c');
  });
});

describe('classifyFailure', () => {
  it('classifies failure codes per operation', () => {
    const table: Array<[Parameters<typeof classifyFailure>[0], string, string]> = [
      ['upload', 'network', 'retry'],
      ['upload', 'internal', 'retry'],
      ['upload', 'quota_exceeded', 'retry'],
      ['upload', 'something_new', 'retry'],
      ['upload', 'unauthorized', 'pause'],
      ['download', 'forbidden', 'pause'],
      ['upload', 'too_large', 'reject'],
      ['upload', 'blob_deleted', 'deleted'],
      ['download', 'blob_deleted', 'deleted'],
      ['download', 'integrity_error', 'corrupt'],
      ['upload', 'integrity_error', 'retry'],
      ['download', 'not_found', 'retry'],
      ['evict', 'not_found', 'lost'],
      ['remove', 'network', 'retry'],
    ];
    for (const [operation, code, kind] of table) {
      assert.equal(classifyFailure(operation, code), kind, `${operation} ${code}`);
    }
  });
});

describe('failureInfo', () => {
  it('reads code and message, defaulting the code to unknown', () => {
    assert.deepEqual(failureInfo(Object.assign(new Error('m'), { code: 'network' })), {
      code: 'network',
      message: 'm',
    });
    assert.deepEqual(failureInfo(new Error('plain')), { code: 'unknown', message: 'plain' });
    assert.deepEqual(failureInfo('text'), { code: 'unknown', message: 'text' });
  });
});

describe('retryDelay', () => {
  it('repeats the last delay once the list is exhausted', () => {
    const delays = [10, 20, 30];
    assert.deepEqual(
      [1, 2, 3, 4, 9].map((n) => retryDelay(delays, n)),
      [10, 20, 30, 30, 30],
    );
    assert.throws(() => retryDelay([], 1), RangeError);
  });
});

describe('isPriority', () => {
  it('accepts the four priorities only', () => {
    for (const p of ['LOW', 'MEDIUM', 'HIGH', 'URGENT']) assert.equal(isPriority(p), true);
    assert.equal(isPriority('low'), false);
  });
});
