import type { StateValue } from 'xstate';

/**
 * Public attachment states, as bit flags: `SYNCED` is `LOCAL | REMOTE`, so
 * `state & AttachmentState.LOCAL` tells whether a local copy exists.
 */
export const AttachmentState = { NONE: 0, LOCAL: 1, REMOTE: 2, SYNCED: 3 } as const;

export type AttachmentStateFlag = (typeof AttachmentState)[keyof typeof AttachmentState];

/** Transfer priorities, lowest first; the scheduler serves higher ones first. */
export const PRIORITIES = ['LOW', 'MEDIUM', 'HIGH', 'URGENT'] as const;

export type Priority = (typeof PRIORITIES)[number];

export function isPriority(value: unknown): value is Priority {
  return typeof value === 'string' && (PRIORITIES as readonly string[]).includes(value);
}

/**
 * Dotted path of a machine state value: `'synced'`, `'local.uploading'`,
 * `'deleting.retrying'`. This is the form stored beside a persisted snapshot.
 */
export function statePath(value: StateValue): string {
  if (typeof value === 'string') return value;
  const [key] = Object.keys(value);
  if (key === undefined) throw new TypeError('empty state value');
  const child = value[key];
  return child === undefined ? key : `${key}.${statePath(child)}`;
}

function topLevel(value: StateValue | string): string {
  const path = typeof value === 'string' ? value : statePath(value);
  const dot = path.indexOf('.');
  return dot === -1 ? path : path.slice(0, dot);
}

/**
 * Maps a machine state value (or its dotted path) to the public flag: `local.*` → LOCAL,
 * `synced` → SYNCED, `evicting`, `remote.*` and `failed` → REMOTE, `none`, `deleting.*`
 * and `deleted` → NONE. `evicting` is REMOTE because its local copy may be gone at any
 * moment: the flags never promise a copy that is being dropped. (A refused eviction goes
 * back to `synced`.)
 */
export function publicStateOf(value: StateValue | string): AttachmentStateFlag {
  switch (topLevel(value)) {
    case 'local':
      return AttachmentState.LOCAL;
    case 'synced':
      return AttachmentState.SYNCED;
    case 'evicting':
    case 'remote':
    case 'failed':
      return AttachmentState.REMOTE;
    case 'none':
    case 'deleting':
    case 'deleted':
      return AttachmentState.NONE;
    default:
      throw new TypeError(`unknown attachment state ${JSON.stringify(value)}`);
  }
}

const SETTLED = new Set(['none', 'synced', 'remote.idle', 'failed', 'local.rejected']);

/**
 * True for the states in which nothing happens until an outside event arrives: `none`,
 * `synced`, `remote.idle`, `failed`, `local.rejected`. The daemon keeps live actors only
 * for unsettled attachments. `deleted` is final, not settled: its record is removed.
 */
export function isSettled(value: StateValue | string): boolean {
  return SETTLED.has(typeof value === 'string' ? value : statePath(value));
}
