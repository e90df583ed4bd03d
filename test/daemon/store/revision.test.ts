import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compareRevisions,
  formatRevision,
  incrementRevision,
  isValidDeviceId,
  mergeRevisions,
  nextRevisionText,
  parseRevision,
  RevisionError,
} from '../../../daemon/revision.js';

const rev = (text: string) => parseRevision(text);

describe('parseRevision and formatRevision', () => {
  it('round-trips canonical text', () => {
    for (const text of ['', 'a:1', 'A:3,a:1,b:20', 'dev-1:9007199254740991']) {
      assert.equal(formatRevision(parseRevision(text)), text);
    }
  });

  it('parses pairs into a map of counters', () => {
    assert.deepEqual(
      [...rev('a:2,b:5')],
      [
        ['a', 2],
        ['b', 5],
      ],
    );
    assert.equal(rev('').size, 0);
  });

  it('formats sorted by device id and leaves zero counters out', () => {
    const revision = new Map([
      ['zed', 1],
      ['abc', 4],
      ['mid', 0],
    ]);
    assert.equal(formatRevision(revision), 'abc:4,zed:1');
  });

  it('rejects text that is not canonical', () => {
    for (const bad of [
      ',',
      'a',
      'a:',
      ':1',
      'a:0',
      'a:01',
      'a:-1',
      'a:1.5',
      'a:1,',
      'a:1,,b:1',
      'b:1,a:1',
      'a:1,a:2',
      'a b:1',
      'a:1:2',
      'a:99999999999999999',
    ]) {
      assert.throws(
        () => parseRevision(bad),
        (error: unknown) => error instanceof RevisionError && error.code === 'invalid_revision',
        bad,
      );
    }
  });
});

describe('incrementRevision', () => {
  it('adds one to the device counter, starting from zero', () => {
    assert.equal(formatRevision(incrementRevision(rev(''), 'dev')), 'dev:1');
    assert.equal(formatRevision(incrementRevision(rev('a:1,dev:4'), 'dev')), 'a:1,dev:5');
    assert.equal(nextRevisionText('b:2', 'a'), 'a:1,b:2');
  });

  it('leaves the original revision unchanged', () => {
    const original = rev('a:1');
    incrementRevision(original, 'a');
    assert.equal(formatRevision(original), 'a:1');
  });

  it('rejects a bad device id', () => {
    assert.throws(() => incrementRevision(rev(''), 'a:b'), RevisionError);
    assert.equal(isValidDeviceId('a,b'), false);
    assert.equal(isValidDeviceId('3f2c-aa_01'), true);
  });
});

describe('compareRevisions', () => {
  it('tells equal, ancestor, descendant and concurrent apart', () => {
    assert.equal(compareRevisions(rev('a:1,b:2'), rev('a:1,b:2')), 'equal');
    assert.equal(compareRevisions(rev(''), rev('')), 'equal');
    assert.equal(compareRevisions(rev('a:1'), rev('a:2')), 'ancestor');
    assert.equal(compareRevisions(rev(''), rev('a:1')), 'ancestor');
    assert.equal(compareRevisions(rev('a:1'), rev('a:1,b:1')), 'ancestor');
    assert.equal(compareRevisions(rev('a:3,b:1'), rev('a:2')), 'descendant');
    assert.equal(compareRevisions(rev('a:2'), rev('b:1')), 'concurrent');
    assert.equal(compareRevisions(rev('a:2,b:1'), rev('a:1,b:2')), 'concurrent');
  });

  it('merges two revisions into a descendant of both', () => {
    const a = rev('a:2,b:1');
    const b = rev('a:1,b:3,c:1');
    const merged = mergeRevisions(a, b);
    assert.equal(formatRevision(merged), 'a:2,b:3,c:1');
    assert.equal(compareRevisions(merged, a), 'descendant');
    assert.equal(compareRevisions(merged, b), 'descendant');
  });
});
