import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, SimulatedClock, waitFor } from 'xstate';
import {
  type AttachmentActor,
  type AttachmentEvent,
  asPersistedAttachmentSnapshot,
  attachmentStatePath,
  prepareRestoredSnapshot,
  restoreAttachmentActor,
} from '../../machines/index.js';
import { INPUT, recordedMachine } from './effects.js';

const SECOND = 1000;
const T0 = 5_000_000;

type Recorded = ReturnType<typeof recordedMachine>;

/** The persisted snapshot as the store keeps it: through JSON and back. */
function persist(actor: AttachmentActor): unknown {
  return JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
}

/**
 * Drives a fresh actor with `events`; `settle` may resolve or reject the effects it
 * recorded. Returns the persisted snapshot and the original actor (stopped).
 */
async function persistAfter(
  events: AttachmentEvent[],
  settle?: (recorded: Recorded) => void,
  expected?: string,
) {
  const recorded = recordedMachine();
  const clock = new SimulatedClock();
  clock.set(T0);
  const actor = createActor(recorded.machine, { input: INPUT, clock }).start();
  for (const event of events) actor.send(event);
  settle?.(recorded);
  if (expected !== undefined) {
    await waitFor(actor, (s) => attachmentStatePath(s) === expected, { timeout: 2000 });
  }
  const persisted = persist(actor);
  actor.stop();
  return { persisted, recorded };
}

/** Restores as the daemon does (prepare, start, RESUME), with a fresh clock at `now`. */
function restore(persisted: unknown, now: number) {
  const recorded = recordedMachine();
  const clock = new SimulatedClock();
  clock.set(now);
  const actor = restoreAttachmentActor(recorded.machine, persisted, { clock });
  const path = () => attachmentStatePath(actor.getSnapshot());
  return { ...recorded, clock, actor, path };
}

/** Restores without sending RESUME, optionally without preparing the snapshot either. */
function restoreOnly(persisted: unknown, now: number, { prepare = true } = {}) {
  const recorded = recordedMachine();
  const clock = new SimulatedClock();
  clock.set(now);
  const snapshot = prepare
    ? prepareRestoredSnapshot(persisted)
    : asPersistedAttachmentSnapshot(persisted);
  const actor = createActor(recorded.machine, { snapshot, input: INPUT, clock }).start();
  const path = () => attachmentStatePath(actor.getSnapshot());
  return { ...recorded, clock, actor, path };
}

const failUpload = (code: string) => (r: Recorded) => r.lastUpload().reject(code);

describe('restoring a persisted attachment snapshot', () => {
  it('re-arms a back-off timer with the time left on RESUME', async () => {
    const { persisted } = await persistAfter(
      [{ type: 'STORED' }, { type: 'START' }],
      failUpload('network'),
      'local.retrying',
    );
    const t = restore(persisted, T0 + 4 * SECOND);
    assert.equal(t.path(), 'local.retrying');
    t.clock.increment(6 * SECOND - 1);
    assert.equal(t.path(), 'local.retrying');
    t.clock.increment(1);
    assert.equal(t.path(), 'local.queued');
  });

  it('keeps a restored back-off waiting until RESUME arrives', async () => {
    const { persisted } = await persistAfter(
      [{ type: 'STORED' }, { type: 'START' }],
      failUpload('network'),
      'local.retrying',
    );
    const t = restoreOnly(persisted, T0);
    t.clock.increment(120 * SECOND);
    assert.equal(t.path(), 'local.retrying');
  });

  it('retries at once when the back-off ran out while the daemon was down', async () => {
    const { persisted } = await persistAfter(
      [{ type: 'STORED' }, { type: 'START' }],
      failUpload('network'),
      'local.retrying',
    );
    const t = restore(persisted, T0 + 3600 * SECOND);
    t.clock.increment(0);
    assert.equal(t.path(), 'local.queued');
    assert.equal(t.actor.getSnapshot().context.attempts, 1);
  });

  it('re-arms remote and deleting back-offs as well', async () => {
    const remote = await persistAfter(
      [{ type: 'REMOTE_FOUND' }, { type: 'DOWNLOAD' }, { type: 'START' }],
      (r) => r.lastDownload().reject('internal'),
      'remote.retrying',
    );
    const deleting = await persistAfter(
      [{ type: 'DELETE' }],
      (r) => r.lastRemove().reject('network'),
      'deleting.retrying',
    );
    for (const [persisted, next] of [
      [remote.persisted, 'remote.queued'],
      [deleting.persisted, 'deleting.removing'],
    ] as const) {
      const t = restore(persisted, T0 + 9 * SECOND);
      t.clock.increment(SECOND - 1);
      assert.notEqual(t.path(), next);
      t.clock.increment(1);
      assert.equal(t.path(), next);
    }
  });

  it('requeues an interrupted upload without starting it', async () => {
    const { persisted, recorded } = await persistAfter([{ type: 'STORED' }, { type: 'START' }]);
    assert.equal(recorded.calls.upload.length, 1);
    assert.deepEqual((persisted as { value: unknown }).value, { local: 'uploading' });

    const t = restore(persisted, T0);
    assert.equal(t.path(), 'local.queued');
    assert.equal(t.calls.upload.length, 0);
    t.actor.send({ type: 'START' });
    assert.equal(t.calls.upload.length, 1);
  });

  it('requeues an interrupted upload on RESUME even when the snapshot was not prepared', async () => {
    const { persisted } = await persistAfter([{ type: 'STORED' }, { type: 'START' }]);
    const t = restoreOnly(persisted, T0, { prepare: false });
    // XState restarts the persisted promise actor by itself; RESUME stops it.
    assert.equal(t.calls.upload.length, 1);
    t.actor.send({ type: 'RESUME' });
    assert.equal(t.path(), 'local.queued');
    assert.equal(t.lastUpload().signal.aborted, true);
  });

  it('requeues an interrupted download', async () => {
    const { persisted } = await persistAfter([
      { type: 'REMOTE_FOUND' },
      { type: 'DOWNLOAD' },
      { type: 'START' },
    ]);
    const t = restore(persisted, T0);
    assert.equal(t.path(), 'remote.queued');
    assert.equal(t.calls.download.length, 0);
  });

  it('runs an interrupted eviction again on RESUME', async () => {
    const { persisted } = await persistAfter(
      [{ type: 'STORED' }, { type: 'START' }],
      (r) => r.lastUpload().resolve(),
      'synced',
    );
    const synced = restore(persisted, T0);
    synced.actor.send({ type: 'EVICT' });
    const evicting = persist(synced.actor);

    const t = restoreOnly(evicting, T0);
    assert.equal(t.path(), 'evicting');
    assert.equal(t.calls.evict.length, 0);
    t.actor.send({ type: 'RESUME' });
    assert.equal(t.calls.evict.length, 1);
    t.lastEvict().resolve();
    await waitFor(t.actor, (s) => s.matches({ remote: 'idle' }), { timeout: 2000 });
  });

  it('runs an interrupted removal again on RESUME', async () => {
    const { persisted } = await persistAfter([
      { type: 'REMOTE_FOUND' },
      { type: 'REMOTE_DELETED' },
    ]);
    const t = restoreOnly(persisted, T0);
    assert.equal(t.path(), 'deleting.removing');
    assert.equal(t.calls.remove.length, 0);
    t.actor.send({ type: 'RESUME' });
    assert.equal(t.lastRemove().input.deletion, 'remote');
    t.lastRemove().resolve();
    const done = await waitFor(t.actor, (s) => s.status === 'done', { timeout: 2000 });
    assert.equal(attachmentStatePath(done), 'deleted');
  });

  it('restores settled states unchanged and ignores RESUME in them', async () => {
    const cases: Array<[string, AttachmentEvent[], ((r: Recorded) => void)?, string?]> = [
      ['none', []],
      [
        'synced',
        [{ type: 'STORED' }, { type: 'START' }],
        (r) => r.lastUpload().resolve(),
        'synced',
      ],
      ['remote.idle', [{ type: 'REMOTE_FOUND' }]],
      [
        'local.rejected',
        [{ type: 'STORED' }, { type: 'START' }],
        failUpload('too_large'),
        'local.rejected',
      ],
    ];
    for (const [expected, events, settle, reach] of cases) {
      const { persisted } = await persistAfter(events, settle, reach);
      const t = restore(persisted, T0);
      const before = t.actor.getSnapshot();
      t.actor.send({ type: 'RESUME' });
      t.clock.increment(3600 * SECOND);
      assert.equal(t.path(), expected);
      assert.deepEqual(t.actor.getSnapshot().context, before.context);
      assert.deepEqual(persist(t.actor), persisted);
    }
  });

  it('restores a failed attachment with its corruption count', async () => {
    const recorded = recordedMachine();
    const clock = new SimulatedClock();
    const actor = createActor(recorded.machine, {
      input: { ...INPUT, maxCorruptions: 1 },
      clock,
    }).start();
    actor.send({ type: 'REMOTE_FOUND' });
    actor.send({ type: 'DOWNLOAD' });
    actor.send({ type: 'START' });
    recorded.lastDownload().reject('integrity_error');
    await waitFor(actor, (s) => s.matches('failed'), { timeout: 2000 });

    const t = restore(persist(actor), T0);
    assert.equal(t.path(), 'failed');
    assert.equal(t.actor.getSnapshot().context.corruptions, 1);
    t.actor.send({ type: 'DOWNLOAD' });
    assert.equal(t.path(), 'remote.queued');
  });

  it('restores a snapshot taken after the actor was stopped', () => {
    const recorded = recordedMachine();
    const actor = createActor(recorded.machine, { input: INPUT }).start();
    actor.send({ type: 'STORED' });
    actor.stop();
    const persisted = persist(actor);
    assert.equal((persisted as { status: string }).status, 'stopped');

    const t = restore(persisted, T0);
    assert.equal(t.actor.getSnapshot().status, 'active');
    t.actor.send({ type: 'START' });
    assert.equal(t.path(), 'local.uploading');
  });

  it('leaves the persisted snapshot it prepares untouched', async () => {
    const { persisted } = await persistAfter([{ type: 'STORED' }, { type: 'START' }]);
    const copy = structuredClone(persisted);
    const prepared = prepareRestoredSnapshot(persisted);
    assert.deepEqual(persisted, copy);
    assert.deepEqual(prepared.value, { local: 'queued' });
    assert.deepEqual(prepared.children, {});
  });

  it('rejects values that are not persisted attachment snapshots', () => {
    const context = { blobId: 'b', docId: 'd' };
    for (const bad of [
      null,
      3,
      'synced',
      {},
      { status: 'active', value: 'synced' },
      { status: 'error', value: 'synced', context },
    ]) {
      assert.throws(() => prepareRestoredSnapshot(bad), TypeError);
    }
  });
});
