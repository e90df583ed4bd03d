import { type ActorOptions, createActor, type Snapshot, type StateValue } from 'xstate';
import type {
  AttachmentActor,
  AttachmentContext,
  AttachmentMachine,
} from './attachment-machine.js';
import { statePath } from './attachment-state.js';

/**
 * A persisted attachment snapshot (`actor.getPersistedSnapshot()`), as stored in JSON.
 * Only the fields read here are spelled out; the rest is XState's and passes through.
 * It is what `createActor(machine, { snapshot })` takes.
 */
export type PersistedAttachmentSnapshot = Snapshot<unknown> & {
  value: StateValue;
  context: AttachmentContext;
  children?: Record<string, unknown>;
};

/** States whose side effect was interrupted and must wait for a scheduler slot again. */
const REQUEUE: Record<string, StateValue> = {
  'local.uploading': { local: 'queued' },
  'remote.downloading': { remote: 'queued' },
};

/**
 * Checks that a value looks like a persisted attachment snapshot and returns it typed.
 * Throws `TypeError` otherwise.
 */
export function asPersistedAttachmentSnapshot(value: unknown): PersistedAttachmentSnapshot {
  if (typeof value !== 'object' || value === null) {
    throw new TypeError('persisted attachment snapshot must be an object');
  }
  const { status, value: stateValue, context } = value as Record<string, unknown>;
  if (status !== 'active' && status !== 'done' && status !== 'stopped') {
    throw new TypeError(`persisted snapshot has status ${String(status)}`);
  }
  if (typeof stateValue !== 'string' && (typeof stateValue !== 'object' || stateValue === null)) {
    throw new TypeError('persisted snapshot has no state value');
  }
  if (typeof context !== 'object' || context === null) {
    throw new TypeError('persisted snapshot has no context');
  }
  const { blobId, docId } = context as Record<string, unknown>;
  if (typeof blobId !== 'string' || typeof docId !== 'string') {
    throw new TypeError('persisted snapshot context has no blobId or docId');
  }
  return value as PersistedAttachmentSnapshot;
}

/**
 * Rewrites a persisted snapshot so that restoring it starts no side effect by itself:
 * XState restarts a persisted in-flight promise actor on restore, which would bypass the
 * daemon's transfer slots. `local.uploading` becomes `local.queued` and
 * `remote.downloading` becomes `remote.queued`; in `evicting` and `deleting.removing` the
 * interrupted actor is dropped and the `RESUME` event starts it again. A snapshot taken
 * after the actor was stopped is made active again. Pure: the input is not modified.
 *
 * `restoreAttachmentActor` does this and the rest; use this directly only to inspect or
 * migrate stored snapshots.
 */
export function prepareRestoredSnapshot(persisted: unknown): PersistedAttachmentSnapshot {
  const snapshot = asPersistedAttachmentSnapshot(persisted);
  const path = statePath(snapshot.value);
  const requeued = REQUEUE[path];
  return {
    ...snapshot,
    // A snapshot taken after `actor.stop()` says `stopped`; restored as is, the actor
    // would ignore every event.
    ...(snapshot.status === 'stopped' ? { status: 'active', output: undefined } : {}),
    value: requeued ?? snapshot.value,
    children: {},
  } as PersistedAttachmentSnapshot;
}

/**
 * Restores a live actor from a persisted snapshot (as read from the store): prepares the
 * snapshot, creates and starts the actor and sends `RESUME`, which re-arms a back-off
 * timer with the time left and restarts an interrupted eviction or removal. Uploads and
 * downloads that were in flight come back queued. Pass the daemon's `clock`; observers
 * subscribed afterwards should read `actor.getSnapshot()` first.
 */
export function restoreAttachmentActor(
  machine: AttachmentMachine,
  persisted: unknown,
  options: Omit<ActorOptions<AttachmentMachine>, 'snapshot' | 'input'> = {},
): AttachmentActor {
  const snapshot = prepareRestoredSnapshot(persisted);
  // The input is ignored when a snapshot is given; it is passed to satisfy the types.
  const actor = createActor(machine, { ...options, snapshot, input: snapshot.context });
  actor.start();
  actor.send({ type: 'RESUME' });
  return actor;
}
