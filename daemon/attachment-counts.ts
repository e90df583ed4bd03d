import { AttachmentState, publicStateOf } from '../machines/index.js';
import type { Store } from './store/index.js';

export interface CountsByState {
  local: number;
  remote: number;
  synced: number;
  failed: number;
  rejected: number;
}

type Category = keyof CountsByState;

/** The status bucket of a machine state; null for `none`, `deleting.*` and `deleted`. */
export function categoryOf(state: string | null): Category | null {
  if (state === null) return null;
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

const PAGE = 5000;

/**
 * Attachment counts per status bucket, without a scan before the daemon is ready: one
 * background pass over the records (`scan`) counts what is on disk, and every durable
 * change is applied as a delta. A change to a record the pass has not reached yet is
 * remembered and wins over what the pass reads, so the result is exact once the pass
 * is done; until then `counts()` is partial and `complete` is false.
 */
export class AttachmentCounts {
  readonly #counts: CountsByState = { local: 0, remote: 0, synced: 0, failed: 0, rejected: 0 };
  /** Key up to which the pass has counted; null before its first page. */
  #through: string | null = null;
  /** Changes ahead of the pass: blob id → bucket now (null: none or removed). */
  #ahead: Map<string, Category | null> | undefined = new Map();
  #seen = new Set<string>();

  get complete(): boolean {
    return this.#ahead === undefined;
  }

  counts(): CountsByState {
    return { ...this.#counts };
  }

  /** Records a durable change of `blobId` from state `previous` to `next`. */
  apply(blobId: string, previous: string | null, next: string | null): void {
    const after = categoryOf(next);
    if (this.#ahead !== undefined && (this.#through === null || blobId > this.#through)) {
      this.#ahead.set(blobId, after);
      return;
    }
    const before = categoryOf(previous);
    if (before === after) return;
    if (before !== null) this.#counts[before] -= 1;
    if (after !== null) this.#counts[after] += 1;
  }

  /** The one pass over every record; `stopped()` ends it early (counts stay partial). */
  async scan(store: Store, stopped: () => boolean): Promise<void> {
    const ahead = this.#ahead;
    if (ahead === undefined) return;
    let after: string | undefined;
    for (;;) {
      if (stopped()) return;
      const page = await store.listAttachments(
        after === undefined ? { limit: PAGE } : { after, limit: PAGE },
      );
      for (const record of page) {
        let category = categoryOf(record.state);
        if (ahead.has(record.blobId)) {
          category = ahead.get(record.blobId)!;
          this.#seen.add(record.blobId);
        }
        if (category !== null) this.#counts[category] += 1;
      }
      const last = page.at(-1);
      if (last === undefined || page.length < PAGE) break;
      after = last.blobId;
      this.#through = after;
      this.#countUnseen(ahead, after);
    }
    this.#countUnseen(ahead, undefined);
    this.#ahead = undefined;
    this.#seen = new Set();
  }

  /**
   * Counts changed records the pass has gone past without reading them (made after
   * their page was read), up to `through` (all when undefined).
   */
  #countUnseen(ahead: Map<string, Category | null>, through: string | undefined): void {
    for (const [blobId, category] of ahead) {
      if (this.#seen.has(blobId) || (through !== undefined && blobId > through)) continue;
      this.#seen.add(blobId);
      if (category !== null) this.#counts[category] += 1;
    }
  }
}
