import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdleCollector } from '../../daemon/idle-collector.js';
import { waitFor } from '../helpers/wait.js';

function counting(options: { busy?: () => boolean; growthBytes?: number } = {}) {
  const counter = { calls: 0 };
  const collector = new IdleCollector({
    busy: options.busy ?? (() => false),
    quietMs: 20,
    growthBytes: options.growthBytes ?? 0,
    gc: () => {
      counter.calls += 1;
    },
  });
  return { collector, counter };
}

describe('IdleCollector', () => {
  it('collects once quiet after a call ends, and not while a call is in flight', async () => {
    const { collector, counter } = counting();
    collector.start();
    try {
      collector.enter();
      collector.settle();
      await new Promise((resolve) => setTimeout(resolve, 80));
      assert.equal(counter.calls, 0, 'a call is in flight');
      collector.leave();
      await waitFor(() => collector.collections === 1, { timeoutMs: 5000, what: 'a collection' });
      assert.equal(collector.collections, 1);
    } finally {
      collector.stop();
    }
  });

  it('waits while transfers run and collects once they are done', async () => {
    let busy = true;
    const { collector, counter } = counting({ busy: () => busy });
    collector.start();
    try {
      collector.settle();
      await new Promise((resolve) => setTimeout(resolve, 80));
      assert.equal(counter.calls, 0);
      busy = false;
      collector.settle();
      await waitFor(() => collector.collections === 1, { timeoutMs: 5000, what: 'a collection' });
    } finally {
      collector.stop();
    }
  });

  it('leaves a heap that did not grow alone, and does nothing without gc', async () => {
    const { collector, counter } = counting({ growthBytes: Number.MAX_SAFE_INTEGER });
    collector.start();
    collector.settle();
    const without = new IdleCollector({ busy: () => false, quietMs: 10, growthBytes: 0 });
    without.start();
    without.settle();
    await new Promise((resolve) => setTimeout(resolve, 100));
    collector.stop();
    without.stop();
    assert.equal(counter.calls, 0);
    if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
      assert.equal(without.collections, 0);
    }
  });
});
