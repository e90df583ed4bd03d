import { AttachmentState, publicStateOf } from '../../machines/index.js';

/** How many attachment records are in each status bucket. */
export interface CountsByState {
  local: number;
  remote: number;
  synced: number;
  failed: number;
  rejected: number;
}

export type CountCategory = keyof CountsByState;

export function emptyCounts(): CountsByState {
  return { local: 0, remote: 0, synced: 0, failed: 0, rejected: 0 };
}

/** The status bucket of a machine state; null for `none`, `deleting.*` and `deleted`. */
export function categoryOf(state: string | null | undefined): CountCategory | null {
  if (state === null || state === undefined) return null;
  if (state === 'local.rejected') return 'rejected';
  if (state === 'failed') return 'failed';
  switch (publicStateOf(state)) {
    case AttachmentState.LOCAL:
      return 'local';
    case AttachmentState.REMOTE:
      return 'remote';
    case AttachmentState.SYNCED:
      return 'synced';
    default:
      return null;
  }
}

/** Whether `value` is a well-formed stored `CountsByState`. */
export function isCounts(value: unknown): value is CountsByState {
  if (typeof value !== 'object' || value === null) return false;
  return Object.keys(emptyCounts()).every((key) => {
    const n = (value as Record<string, unknown>)[key];
    return Number.isSafeInteger(n) && (n as number) >= 0;
  });
}
