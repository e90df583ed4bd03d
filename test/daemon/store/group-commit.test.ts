import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GroupCommit } from '../../../daemon/store/group-commit.js';

/** A write function that records each group and is released by the test. */
function gatedWriter() {
  const groups: number[][] = [];
  const gates: Array<() => void> = [];
  const write = (items: number[]) => {
    groups.push(items);
    return new Promise<Array<number | Error>>((resolve) => {
      gates.push(() => resolve(items.map((n) => (n < 0 ? new Error(`bad ${n}`) : n * 10))));
    });
  };
  return { groups, gates, write };
}

describe('GroupCommit', () => {
  it('writes items submitted in the same tick as one group', async () => {
    const { groups, gates, write } = gatedWriter();
    const group = new GroupCommit(write);
    const pending = [1, 2, 3].map((n) => group.submit(n));
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.deepEqual(groups, [[1, 2, 3]]);
    gates.shift()!();
    assert.deepEqual(await Promise.all(pending), [10, 20, 30]);
    assert.deepEqual(group.stats, { groups: 1, items: 3 });
  });

  it('coalesces items that arrive while a group is being written', async () => {
    const { groups, gates, write } = gatedWriter();
    const group = new GroupCommit(write);
    const first = group.submit(1);
    await new Promise<void>((resolve) => setImmediate(resolve));
    const later = [2, 3, 4].map((n) => group.submit(n));
    assert.equal(groups.length, 1);

    gates.shift()!();
    assert.equal(await first, 10);
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.deepEqual(groups, [[1], [2, 3, 4]]);
    gates.shift()!();
    assert.deepEqual(await Promise.all(later), [20, 30, 40]);
  });

  it('rejects only the item whose result is an error', async () => {
    const { gates, write } = gatedWriter();
    const group = new GroupCommit(write);
    const good = group.submit(1);
    const bad = group.submit(-1);
    await new Promise<void>((resolve) => setImmediate(resolve));
    gates.shift()!();
    assert.equal(await good, 10);
    await assert.rejects(bad, /bad -1/);
  });

  it('rejects every item of a group whose write throws', async () => {
    const group = new GroupCommit<number, number>(async () => {
      throw new Error('disk full');
    });
    const results = await Promise.allSettled([group.submit(1), group.submit(2)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected'],
    );
  });

  it('caps a group at maxItems', async () => {
    const groups: number[][] = [];
    const group = new GroupCommit<number, number>(
      async (items) => {
        groups.push(items);
        return items;
      },
      { maxItems: 2 },
    );
    await Promise.all([1, 2, 3, 4, 5].map((n) => group.submit(n)));
    assert.deepEqual(groups, [[1, 2], [3, 4], [5]]);
  });

  it('drains once everything queued is written', async () => {
    const { gates, write } = gatedWriter();
    const group = new GroupCommit(write);
    await group.drain();
    const pending = group.submit(1);
    let drained = false;
    const drain = group.drain().then(() => {
      drained = true;
    });
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(drained, false);
    gates.shift()!();
    await drain;
    assert.equal(await pending, 10);
  });
});
