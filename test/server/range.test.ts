import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decideRange } from '../../server/range.js';

describe('decideRange', () => {
  it('sends the whole blob without a Range header', () => {
    assert.deepEqual(decideRange(undefined, 10), { kind: 'whole' });
  });

  it('reads a-b inclusive and clamps an end past the blob', () => {
    assert.deepEqual(decideRange('bytes=2-5', 10), {
      kind: 'partial',
      range: { start: 2, end: 5 },
    });
    assert.deepEqual(decideRange('bytes=2-50', 10), {
      kind: 'partial',
      range: { start: 2, end: 9 },
    });
    assert.deepEqual(decideRange('bytes=0-99999999999999999999', 10), {
      kind: 'partial',
      range: { start: 0, end: 9 },
    });
  });

  it('reads an open range a- and a suffix range -n', () => {
    assert.deepEqual(decideRange('bytes=4-', 10), { kind: 'partial', range: { start: 4, end: 9 } });
    assert.deepEqual(decideRange('bytes=-4', 10), { kind: 'partial', range: { start: 6, end: 9 } });
    assert.deepEqual(decideRange('bytes=-40', 10), {
      kind: 'partial',
      range: { start: 0, end: 9 },
    });
  });

  it('accepts the unit in any case, surrounding whitespace and empty list elements', () => {
    assert.deepEqual(decideRange(' Bytes=1-1 ', 10), {
      kind: 'partial',
      range: { start: 1, end: 1 },
    });
    assert.deepEqual(decideRange('bytes=1-1,', 10), {
      kind: 'partial',
      range: { start: 1, end: 1 },
    });
  });

  it('finds a start at or past the end, a zero suffix and any range of an empty blob unsatisfiable', () => {
    for (const [header, size] of [
      ['bytes=10-', 10],
      ['bytes=10-12', 10],
      ['bytes=-0', 10],
      ['bytes=0-0', 0],
      ['bytes=0-', 0],
      ['bytes=-1', 0],
    ] as const) {
      assert.deepEqual(
        decideRange(header, size),
        { kind: 'unsatisfiable' },
        `${header} of ${size}`,
      );
    }
  });

  it('ignores invalid syntax, other units and multiple ranges', () => {
    for (const header of [
      'bytes=5-2',
      'bytes=a-b',
      'bytes=',
      'bytes=-',
      'bytes=1',
      'bytes=--1',
      'bytes=1--2',
      'bytes = 1-2',
      'bytes=0x1-2',
      'bytes=1.5-2',
      'items=1-2',
      'bytes=1-2,4-5',
      'bytes=0-0,-1',
      'bytes=1-2,,3-4',
    ]) {
      assert.deepEqual(decideRange(header, 10), { kind: 'whole' }, header);
    }
  });
});
