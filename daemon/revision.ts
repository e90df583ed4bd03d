/**
 * Document revisions as version vectors: one counter per device that changed the
 * document. The canonical text is the `device:counter` pairs sorted by device id (by
 * UTF-16 code unit, as `<` compares strings) and joined by `,`; the empty string is "no
 * revision". Two revisions are equal exactly when their canonical texts are equal.
 */
export type Revision = ReadonlyMap<string, number>;

/** How revision `a` relates to revision `b`. */
export type RevisionOrder = 'equal' | 'ancestor' | 'descendant' | 'concurrent';

/** A revision text or device id that is not valid. */
export class RevisionError extends Error {
  readonly code = 'invalid_revision';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RevisionError';
  }
}

const DEVICE_ID = /^[A-Za-z0-9_-]{1,128}$/;
const COUNTER = /^[1-9][0-9]{0,15}$/;

/** Device ids are 1 to 128 letters, digits, `-` or `_`. */
export function isValidDeviceId(value: unknown): value is string {
  return typeof value === 'string' && DEVICE_ID.test(value);
}

/**
 * Parses canonical revision text. Rejects anything that is not canonical: unsorted or
 * repeated devices, zero or leading-zero counters, bad device ids, stray separators.
 */
export function parseRevision(text: string): Revision {
  if (typeof text !== 'string') throw new RevisionError('revision must be a string');
  const revision = new Map<string, number>();
  if (text === '') return revision;

  let previous: string | undefined;
  for (const pair of text.split(',')) {
    const colon = pair.indexOf(':');
    const device = colon === -1 ? pair : pair.slice(0, colon);
    const counter = colon === -1 ? '' : pair.slice(colon + 1);
    if (!isValidDeviceId(device)) {
      throw new RevisionError(`revision ${JSON.stringify(text)} has a bad device id`);
    }
    if (!COUNTER.test(counter) || !Number.isSafeInteger(Number(counter))) {
      throw new RevisionError(`revision ${JSON.stringify(text)} has a bad counter for ${device}`);
    }
    if (previous !== undefined && !(previous < device)) {
      throw new RevisionError(`revision ${JSON.stringify(text)} is not sorted by device id`);
    }
    previous = device;
    revision.set(device, Number(counter));
  }
  return revision;
}

/** Formats a revision as canonical text; zero counters are left out. */
export function formatRevision(revision: Revision): string {
  const pairs: string[] = [];
  for (const device of [...revision.keys()].sort(byCodeUnit)) {
    const counter = revision.get(device)!;
    if (!isValidDeviceId(device)) throw new RevisionError(`bad device id ${device}`);
    if (!Number.isSafeInteger(counter) || counter < 0) {
      throw new RevisionError(`bad counter ${counter} for ${device}`);
    }
    if (counter > 0) pairs.push(`${device}:${counter}`);
  }
  return pairs.join(',');
}

/** The revision after `deviceId` changed a document at `revision`. */
export function incrementRevision(revision: Revision, deviceId: string): Revision {
  if (!isValidDeviceId(deviceId)) throw new RevisionError(`bad device id ${deviceId}`);
  const next = new Map(revision);
  next.set(deviceId, (revision.get(deviceId) ?? 0) + 1);
  return next;
}

/** Canonical text in, canonical text out: `incrementRevision` on text. */
export function nextRevisionText(text: string, deviceId: string): string {
  return formatRevision(incrementRevision(parseRevision(text), deviceId));
}

/**
 * Compares two revisions: `ancestor` when `a` happened before `b` (every counter of `a`
 * is at most `b`'s, and one is lower), `descendant` for the reverse, `concurrent` when
 * each has a change the other lacks.
 */
export function compareRevisions(a: Revision, b: Revision): RevisionOrder {
  let aAhead = false;
  let bAhead = false;
  for (const device of new Set([...a.keys(), ...b.keys()])) {
    const x = a.get(device) ?? 0;
    const y = b.get(device) ?? 0;
    if (x > y) aAhead = true;
    if (y > x) bAhead = true;
  }
  if (aAhead && bAhead) return 'concurrent';
  if (aAhead) return 'descendant';
  if (bAhead) return 'ancestor';
  return 'equal';
}

/** The smallest revision that descends from both: the per-device maximum. */
export function mergeRevisions(a: Revision, b: Revision): Revision {
  const merged = new Map(a);
  for (const [device, counter] of b) {
    merged.set(device, Math.max(counter, merged.get(device) ?? 0));
  }
  return merged;
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
