import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdleCollector } from '../../daemon/idle-collector.js';
import { waitFor } from '../helpers/wait.js';

describe('IdleCollector', () => {
  it('collects once the daemon has been idle, and not again until the heap grows', async () => {
    let calls = 0;
    const collector = new IdleCollector({
      busy: () => false,
      idleMs: 20,
      growthBytes: 0,
      gc: () => {
        calls += 1;
      },
    });
    collector.start();
    try {
      await waitFor(() => calls === 1, { timeoutMs: 5000, what: 'a collection' });
      assert.equal(collector.collections, 1);
    } finally {
      collector.stop();
    }
  });

  it('does not collect while busy, nor while calls keep coming', async () => {
    let calls = 0;
    let busy = true;
    const collector = new IdleCollector({
      busy: () => busy,
      idleMs: 20,
      growthBytes: 0,
      gc: () => {
        calls += 1;
      },
    });
    collector.start();
    try {
      const until = Date.now() + 200;
      while (Date.now() < until) {
        collector.touch();
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (Date.now() > until - 100) busy = false;
      }
      assert.equal(calls, 0, 'busy, then touched every 5 ms');
      await waitFor(() => calls > 0, { timeoutMs: 5000, what: 'a collection once idle' });
    } finally {
      collector.stop();
    }
  });

  it('leaves a heap that did not grow alone, and does nothing without gc', async () => {
    let calls = 0;
    const grown = new IdleCollector({
      busy: () => false,
      idleMs: 10,
      growthBytes: Number.MAX_SAFE_INTEGER,
      gc: () => {
        calls += 1;
      },
    });
    grown.start();
    const without = new IdleCollector({ busy: () => false, idleMs: 10, growthBytes: 0 });
    without.start();
    await new Promise((resolve) => setTimeout(resolve, 100));
    grown.stop();
    without.stop();
    assert.equal(calls, 0);
    if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
      assert.equal(without.collections, 0);
    }
  });
});
