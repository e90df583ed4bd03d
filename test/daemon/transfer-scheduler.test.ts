import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Priority } from '../../daemon/daemon-api.js';
import {
  CancelledError,
  type JobEndInfo,
  TransferScheduler,
} from '../../daemon/transfer-scheduler.js';
import { withTimeout } from '../helpers/wait.js';

interface Gate {
  promise: Promise<void>;
  open(): void;
  fail(error: unknown): void;
}

function gate(): Gate {
  let open!: () => void;
  let fail!: (error: unknown) => void;
  const promise = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { promise, open, fail };
}

/** A job that records its start in `log` and ends when `until` settles. */
function job(
  log: string[],
  name: string,
  priority: Priority,
  until: Promise<void> = Promise.resolve(),
  kind: 'upload' | 'download' = 'upload',
) {
  return {
    kind,
    priority,
    run: async () => {
      log.push(name);
      await until;
    },
  };
}

describe('TransferScheduler', () => {
  describe('ordering', () => {
    it('runs higher priorities first and keeps FIFO order within a priority', async () => {
      const log: string[] = [];
      const scheduler = new TransferScheduler({ limits: { upload: 1 }, paused: true });
      scheduler.enqueue('l1', job(log, 'l1', 'LOW'));
      scheduler.enqueue('m1', job(log, 'm1', 'MEDIUM'));
      scheduler.enqueue('u1', job(log, 'u1', 'URGENT'));
      scheduler.enqueue('m2', job(log, 'm2', 'MEDIUM'));
      scheduler.enqueue('h1', job(log, 'h1', 'HIGH'));
      scheduler.enqueue('l2', job(log, 'l2', 'LOW'));
      scheduler.enqueue('u2', job(log, 'u2', 'URGENT'));
      scheduler.resume();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['u1', 'u2', 'h1', 'm1', 'm2', 'l1', 'l2']);
    });

    it('starts an urgent job before queued ones that arrived earlier', async () => {
      const log: string[] = [];
      const first = gate();
      const scheduler = new TransferScheduler({ limits: { upload: 1 } });
      scheduler.enqueue('a', job(log, 'a', 'MEDIUM', first.promise));
      scheduler.enqueue('b', job(log, 'b', 'MEDIUM'));
      scheduler.enqueue('c', job(log, 'c', 'URGENT'));
      first.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['a', 'c', 'b']);
    });
  });

  describe('limits', () => {
    it('never runs more jobs of a kind at once than its limit', async () => {
      const scheduler = new TransferScheduler({ limits: { upload: 3, download: 2 } });
      const running = { upload: 0, download: 0 };
      const peak = { upload: 0, download: 0 };
      let done = 0;
      const priorities: Priority[] = ['LOW', 'MEDIUM', 'HIGH', 'URGENT'];
      for (let i = 0; i < 60; i++) {
        const kind = i % 3 === 0 ? 'download' : 'upload';
        scheduler.enqueue(`job-${i}`, {
          kind,
          priority: priorities[i % 4]!,
          run: async () => {
            running[kind] += 1;
            peak[kind] = Math.max(peak[kind], running[kind]);
            for (let turn = 0; turn < (i % 5) + 1; turn++) await nextTurn();
            running[kind] -= 1;
            done += 1;
          },
        });
      }
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.equal(done, 60);
      assert.deepEqual(peak, { upload: 3, download: 2 });
    });

    it('defaults to four uploads and four downloads at once', async () => {
      const scheduler = new TransferScheduler();
      const gates = Array.from({ length: 6 }, () => gate());
      gates.forEach((g, i) => {
        scheduler.enqueue(`u${i}`, job([], `u${i}`, 'MEDIUM', g.promise, 'upload'));
        scheduler.enqueue(`d${i}`, job([], `d${i}`, 'MEDIUM', g.promise, 'download'));
      });
      assert.deepEqual(scheduler.counts(), {
        upload: { queued: 2, running: 4 },
        download: { queued: 2, running: 4 },
      });
      for (const g of gates) g.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(scheduler.counts(), {
        upload: { queued: 0, running: 0 },
        download: { queued: 0, running: 0 },
      });
    });

    it('runs one kind while the other kind is at its limit', async () => {
      const log: string[] = [];
      const blocker = gate();
      const scheduler = new TransferScheduler({ limits: { upload: 1, download: 1 } });
      scheduler.enqueue('u1', job(log, 'u1', 'URGENT', blocker.promise, 'upload'));
      scheduler.enqueue('u2', job(log, 'u2', 'URGENT', undefined, 'upload'));
      scheduler.enqueue('d1', job(log, 'd1', 'LOW', undefined, 'download'));
      await withTimeout(
        new Promise<void>((resolve) => {
          const check = () => (log.includes('d1') ? resolve() : setImmediate(check));
          check();
        }),
        5000,
        'download start',
      );
      assert.deepEqual(log, ['u1', 'd1']);
      blocker.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['u1', 'd1', 'u2']);
    });

    it('applies a raised limit to queued jobs at once', async () => {
      const gates = [gate(), gate(), gate()];
      const scheduler = new TransferScheduler({ limits: { upload: 1 } });
      gates.forEach((g, i) => {
        scheduler.enqueue(`u${i}`, job([], `u${i}`, 'MEDIUM', g.promise));
      });
      assert.equal(scheduler.counts().upload.running, 1);
      scheduler.setLimit('upload', 3);
      assert.equal(scheduler.counts().upload.running, 3);
      for (const g of gates) g.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
    });

    it('accepts kinds beyond upload and download', async () => {
      const log: string[] = [];
      const scheduler = new TransferScheduler<'upload' | 'download' | 'delete'>({
        limits: { upload: 1, download: 1, delete: 2 },
      });
      scheduler.enqueue('x', {
        kind: 'delete',
        priority: 'LOW',
        run: async () => void log.push('x'),
      });
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['x']);
      assert.deepEqual(scheduler.counts().delete, { queued: 0, running: 0 });
    });
  });

  describe('enqueue of a known key', () => {
    it('raises the priority of a queued job without adding a second one', async () => {
      const log: string[] = [];
      const scheduler = new TransferScheduler({ limits: { upload: 1 }, paused: true });
      scheduler.enqueue('a', job(log, 'a', 'MEDIUM'));
      scheduler.enqueue('b', job(log, 'b', 'MEDIUM'));
      scheduler.enqueue('c', job(log, 'c', 'LOW'));
      assert.equal(scheduler.enqueue('c', job(log, 'c-again', 'URGENT')), 'updated');
      assert.equal(scheduler.counts().upload.queued, 3);
      scheduler.resume();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['c', 'a', 'b']);
    });

    it('never lowers a queued priority, while reprioritize does', async () => {
      const log: string[] = [];
      const scheduler = new TransferScheduler({ limits: { upload: 1 }, paused: true });
      scheduler.enqueue('a', job(log, 'a', 'HIGH'));
      scheduler.enqueue('b', job(log, 'b', 'MEDIUM'));
      scheduler.enqueue('c', job(log, 'c', 'HIGH'));
      scheduler.enqueue('a', job(log, 'a', 'LOW'));
      assert.equal(scheduler.reprioritize('c', 'LOW'), true);
      assert.equal(scheduler.reprioritize('missing', 'LOW'), false);
      scheduler.resume();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['a', 'b', 'c']);
    });

    it('leaves a running job alone', async () => {
      const log: string[] = [];
      const running = gate();
      const scheduler = new TransferScheduler();
      scheduler.enqueue('a', job(log, 'a', 'LOW', running.promise));
      assert.equal(scheduler.enqueue('a', job(log, 'a-again', 'URGENT')), 'running');
      assert.equal(scheduler.state('a'), 'running');
      running.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['a']);
    });

    it('throws when a queued key comes back with another kind', () => {
      const scheduler = new TransferScheduler({ paused: true });
      scheduler.enqueue('a', job([], 'a', 'LOW', undefined, 'upload'));
      assert.throws(() => scheduler.enqueue('a', job([], 'a', 'LOW', undefined, 'download')), {
        name: 'TypeError',
      });
    });
  });

  describe('cancel', () => {
    it('removes a queued job so that it never runs', async () => {
      const log: string[] = [];
      const scheduler = new TransferScheduler({ paused: true });
      scheduler.enqueue('a', job(log, 'a', 'LOW'));
      scheduler.enqueue('b', job(log, 'b', 'LOW'));
      assert.equal(scheduler.cancel('a'), true);
      assert.equal(scheduler.cancel('a'), false);
      assert.equal(scheduler.state('a'), undefined);
      scheduler.resume();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['b']);
    });

    it('aborts a running job, which keeps its slot until it settles', async () => {
      const ends: JobEndInfo[] = [];
      const log: string[] = [];
      const scheduler = new TransferScheduler({
        limits: { upload: 1 },
        onEnd: (info) => ends.push(info),
      });
      const started = gate();
      const aborted = gate();
      const release = gate();
      let reason: unknown;
      scheduler.enqueue('a', {
        kind: 'upload',
        priority: 'LOW',
        run: async (signal) => {
          signal.addEventListener('abort', () => {
            reason = signal.reason;
            aborted.open();
          });
          started.open();
          await release.promise;
        },
      });
      scheduler.enqueue('b', job(log, 'b', 'LOW'));
      await withTimeout(started.promise, 5000, 'a starts');
      assert.equal(scheduler.cancel('a'), true);
      assert.equal(scheduler.state('a'), undefined);
      await withTimeout(aborted.promise, 5000, 'a sees the abort');
      assert.ok(reason instanceof CancelledError);
      await nextTurn();
      assert.deepEqual(log, []);
      assert.equal(scheduler.counts().upload.running, 1);
      release.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['b']);
      assert.deepEqual(
        ends.map((e) => [e.key, e.cancelled]),
        [
          ['a', true],
          ['b', false],
        ],
      );
    });

    it('never calls run of a job cancelled right after it was started', async () => {
      const log: string[] = [];
      const ends: JobEndInfo[] = [];
      const scheduler = new TransferScheduler({ onEnd: (info) => ends.push(info) });
      scheduler.enqueue('a', {
        kind: 'upload',
        priority: 'LOW',
        run: async () => void log.push('a'),
      });
      assert.equal(scheduler.state('a'), 'running');
      scheduler.cancel('a');
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, []);
      assert.deepEqual(
        ends.map((e) => [e.key, e.cancelled]),
        [['a', true]],
      );
    });

    it('holds back a key queued again until its cancelled run settles', async () => {
      const log: string[] = [];
      const started = gate();
      const release = gate();
      const scheduler = new TransferScheduler();
      scheduler.enqueue('a', {
        kind: 'upload',
        priority: 'LOW',
        run: async () => {
          log.push('first');
          started.open();
          await release.promise;
        },
      });
      await withTimeout(started.promise, 5000, 'first run starts');
      scheduler.cancel('a');
      assert.equal(scheduler.enqueue('a', job(log, 'second', 'LOW')), 'queued');
      assert.equal(scheduler.state('a'), 'queued');
      await nextTurn();
      assert.deepEqual(log, ['first']);
      release.open();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['first', 'second']);
    });
  });

  describe('pause and resume', () => {
    it('starts nothing while paused and lets running jobs finish', async () => {
      const log: string[] = [];
      const ends: string[] = [];
      const running = gate();
      const scheduler = new TransferScheduler({ onEnd: (info) => ends.push(info.key) });
      scheduler.enqueue('a', job(log, 'a', 'LOW', running.promise));
      scheduler.pause();
      assert.equal(scheduler.paused, true);
      scheduler.enqueue('b', job(log, 'b', 'URGENT'));
      running.open();
      await withTimeout(
        (async () => {
          while (ends.length === 0) await nextTurn();
        })(),
        5000,
        'a ends',
      );
      await nextTurn();
      assert.deepEqual(log, ['a']);
      assert.deepEqual(scheduler.counts().upload, { queued: 1, running: 0 });
      scheduler.resume();
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['a', 'b']);
    });
  });

  describe('failures', () => {
    it('goes on after jobs that reject or throw and reports their errors', async () => {
      const log: string[] = [];
      const ends: JobEndInfo[] = [];
      const scheduler = new TransferScheduler({
        limits: { upload: 1 },
        onEnd: (info) => ends.push(info),
      });
      const boom = new Error('boom');
      scheduler.enqueue('rejects', {
        kind: 'upload',
        priority: 'URGENT',
        run: async () => {
          throw boom;
        },
      });
      scheduler.enqueue('throws', {
        kind: 'upload',
        priority: 'URGENT',
        run: () => {
          throw boom;
        },
      });
      scheduler.enqueue('ok', job(log, 'ok', 'LOW'));
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['ok']);
      assert.deepEqual(
        ends.map((e) => [e.key, e.error]),
        [
          ['rejects', boom],
          ['throws', boom],
          ['ok', undefined],
        ],
      );
      assert.deepEqual(scheduler.counts().upload, { queued: 0, running: 0 });
    });
  });

  describe('idle and events', () => {
    it('resolves idle at once when empty and after the last job otherwise', async () => {
      const scheduler = new TransferScheduler();
      await withTimeout(scheduler.idle(), 1000, 'empty idle');
      const release = gate();
      scheduler.enqueue('a', job([], 'a', 'LOW', release.promise));
      let idle = false;
      const waiting = scheduler.idle().then(() => {
        idle = true;
      });
      await nextTurn();
      assert.equal(idle, false);
      release.open();
      await withTimeout(waiting, 5000, 'idle');
      assert.equal(idle, true);
    });

    it('reports each start before the job runs and each end with its duration', async () => {
      const events: string[] = [];
      const scheduler = new TransferScheduler({
        onStart: (info) => events.push(`start ${info.key} ${info.kind} ${info.priority}`),
        onEnd: (info) => {
          assert.ok(info.ms >= 0);
          events.push(`end ${info.key}`);
        },
      });
      scheduler.enqueue('a', {
        kind: 'download',
        priority: 'HIGH',
        run: async () => void events.push('run a'),
      });
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(events, ['start a download HIGH', 'run a', 'end a']);
    });
  });

  describe('throttle (probing an unreachable server)', () => {
    it('runs one job at a time, one start per interval, and all at once when lifted', async () => {
      const log: string[] = [];
      const startedAt: number[] = [];
      const timed = (name: string, kind: 'upload' | 'download' = 'upload') => ({
        kind,
        priority: 'MEDIUM' as const,
        run: async () => {
          startedAt.push(performance.now());
          log.push(name);
        },
      });
      const scheduler = new TransferScheduler({ limits: { upload: 4, download: 4 } });
      scheduler.throttle(80);
      assert.equal(scheduler.throttled, true);
      const throttledAt = performance.now();
      for (const name of ['a', 'b', 'c', 'd']) scheduler.enqueue(name, timed(name));
      scheduler.enqueue('e', timed('e', 'download'));
      await nextTurn();
      assert.deepEqual(log, [], 'the first probe waits a full interval after throttling');

      await waitForLength(log, 2);
      assert.ok(startedAt[0]! - throttledAt >= 70, 'not before the interval');
      assert.ok(startedAt[1]! - startedAt[0]! >= 70, 'one start per interval');
      assert.equal(log.length, 2);

      scheduler.throttle(null);
      await waitForLength(log, 5);
      assert.deepEqual([...log].sort(), ['a', 'b', 'c', 'd', 'e']);
      await withTimeout(scheduler.idle(), 5000, 'idle');
    });

    it('lets an URGENT job through at once', async () => {
      const log: string[] = [];
      const scheduler = new TransferScheduler({ limits: { upload: 2 } });
      scheduler.throttle(60_000);
      scheduler.enqueue('queued', job(log, 'queued', 'MEDIUM'));
      scheduler.enqueue('now', job(log, 'now', 'URGENT'));
      await waitForLength(log, 1);
      assert.deepEqual(log, ['now']);
      assert.equal(scheduler.state('queued'), 'queued');
      scheduler.throttle(null);
      await withTimeout(scheduler.idle(), 5000, 'idle');
      assert.deepEqual(log, ['now', 'queued']);
    });

    it('refuses a bad interval', () => {
      const scheduler = new TransferScheduler();
      assert.throws(() => scheduler.throttle(-1), TypeError);
      assert.throws(() => scheduler.throttle(Number.NaN), TypeError);
    });
  });
});

/** Polls until `log` has `length` entries (deadline 5 s). */
async function waitForLength(log: string[], length: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (log.length < length) {
    if (Date.now() > deadline) throw new Error(`only ${log.length} of ${length} jobs started`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
