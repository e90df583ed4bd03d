import { type BatchOperation, Level } from 'level';
import type { BlobFlag } from '../../wire/flags.js';
import type { BlobRef, ListOptions } from './blobs-backend.js';

/**
 * The filesystem backend's index: one LevelDB per ROOT, at `ROOT/.index`. It is the
 * authority on which blobs are live, their upload time, size and flags, and on
 * tombstones; the blob files hold the bytes. Keys are plain strings built from parts
 * that never contain `!` (ids match `^[A-Za-z0-9_-]+$`), so a `user!namespace!` prefix
 * selects exactly one namespace of one user.
 *
 * Sublevels:
 * - `live`      `user!ns!id` → `{ t, s, f }`: upload time (µs since the epoch), size, flags
 * - `date`      `user!ns!{t, 17 digits}!id` → flags joined by `,`: listing by upload time
 * - `tomb`      `user!ns!id` → `{ t }`: deletion time (µs)
 * - `tomb-date` `user!ns!{t}!id` → `''`: listing tombstones by deletion time
 * - `dirty`     `user!ns!id` → `''`: a flags file that may not match `live` yet
 */
export interface LiveEntry {
  /** Upload time in microseconds since the epoch; also the blob file's mtime. */
  t: number;
  /** Size in bytes. */
  s: number;
  /** Flags, as last set. */
  f: BlobFlag[];
}

export interface TombEntry {
  /** Deletion time in microseconds since the epoch. */
  t: number;
}

/** One live entry as the reconciliation scan sees it. */
export interface ScannedEntry {
  user: string;
  namespace: string;
  id: string;
  entry: LiveEntry;
}

const PAGE = 1000;
const TIME_DIGITS = 17;

function openSublevels(db: Level<string, string>) {
  return {
    live: db.sublevel<string, LiveEntry>('live', { valueEncoding: 'json' }),
    date: db.sublevel<string, string>('date', { valueEncoding: 'utf8' }),
    tomb: db.sublevel<string, TombEntry>('tomb', { valueEncoding: 'json' }),
    tombDate: db.sublevel<string, string>('tomb-date', { valueEncoding: 'utf8' }),
    dirty: db.sublevel<string, string>('dirty', { valueEncoding: 'utf8' }),
  };
}

type Sublevels = ReturnType<typeof openSublevels>;

/** A batch operation on one of the index's sublevels. */
export type IndexOp =
  | { type: 'put'; sublevel: Sublevels['live']; key: string; value: LiveEntry }
  | { type: 'put'; sublevel: Sublevels['tomb']; key: string; value: TombEntry }
  | { type: 'put'; sublevel: Sublevels['date']; key: string; value: string }
  | { type: 'del'; sublevel: Sublevels[keyof Sublevels]; key: string };

export function refKey(ref: BlobRef): string {
  return `${ref.user}!${ref.namespace}!${ref.id}`;
}

function dateKey(ref: BlobRef, t: number): string {
  return `${ref.user}!${ref.namespace}!${String(t).padStart(TIME_DIGITS, '0')}!${ref.id}`;
}

/** The range of keys that start with `prefix`, which ends in `!`; `"` is the next character. */
function prefixRange(prefix: string): { gte: string; lt: string } {
  return { gte: prefix, lt: `${prefix.slice(0, -1)}"` };
}

function afterLastBang(key: string): string {
  return key.slice(key.lastIndexOf('!') + 1);
}

/** Reverses each run of equal times, so that a newest-first listing still breaks ties by id. */
function idsInReverseDateOrder(keys: string[], prefixLength: number): string[] {
  const ids: string[] = [];
  let run: string[] = [];
  let runTime = '';
  for (const key of keys) {
    const time = key.slice(prefixLength, prefixLength + TIME_DIGITS);
    if (time !== runTime) {
      for (let i = run.length - 1; i >= 0; i--) ids.push(run[i]!);
      run = [];
      runTime = time;
    }
    run.push(key.slice(prefixLength + TIME_DIGITS + 1));
  }
  for (let i = run.length - 1; i >= 0; i--) ids.push(run[i]!);
  return ids;
}

export class BlobIndex {
  private readonly db: Level<string, string>;
  private readonly subs: Sublevels;
  /** Batches waiting for the next synced write. */
  private readonly queued: { ops: IndexOp[]; resolve(): void; reject(error: unknown): void }[] = [];
  private writing = false;

  private constructor(db: Level<string, string>) {
    this.db = db;
    this.subs = openSublevels(db);
  }

  /** Opens (creating if needed) the index at `path`; fails with `LEVEL_LOCKED` in the cause when another process holds it. */
  static async open(path: string): Promise<BlobIndex> {
    const db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    await db.open();
    return new BlobIndex(db);
  }

  getLive(ref: BlobRef): Promise<LiveEntry | undefined> {
    return this.subs.live.get(refKey(ref));
  }

  getTomb(ref: BlobRef): Promise<TombEntry | undefined> {
    return this.subs.tomb.get(refKey(ref));
  }

  /**
   * Whether `ref` is live or tombstoned, read synchronously. A write asks this twice, and
   * two answers from LevelDB's memtable and block cache cost a few microseconds here,
   * against two round trips through libuv's threadpool (queued behind fsyncs under load)
   * for the asynchronous reads.
   */
  takenSync(ref: BlobRef): 'live' | 'deleted' | undefined {
    const key = refKey(ref);
    if (this.subs.live.getSync(key) !== undefined) return 'live';
    if (this.subs.tomb.getSync(key) !== undefined) return 'deleted';
    return undefined;
  }

  getTombs(refs: BlobRef[]): Promise<(TombEntry | undefined)[]> {
    return this.subs.tomb.getMany(refs.map(refKey));
  }

  /** The ops that make `ref` live with `entry`. */
  liveOps(ref: BlobRef, entry: LiveEntry): IndexOp[] {
    return [
      { type: 'put', sublevel: this.subs.live, key: refKey(ref), value: entry },
      {
        type: 'put',
        sublevel: this.subs.date,
        key: dateKey(ref, entry.t),
        value: entry.f.join(','),
      },
    ];
  }

  /** The ops that forget the live entry `entry` of `ref`, leaving no tombstone. */
  dropOps(ref: BlobRef, entry: LiveEntry): IndexOp[] {
    return [
      { type: 'del', sublevel: this.subs.live, key: refKey(ref) },
      { type: 'del', sublevel: this.subs.date, key: dateKey(ref, entry.t) },
    ];
  }

  /** Records a newly published blob; durable when the promise resolves. */
  async addLive(ref: BlobRef, entry: LiveEntry): Promise<void> {
    await this.batch(this.liveOps(ref, entry));
  }

  /** Replaces the flags of a live blob and marks its flags file dirty, durably, in one batch. */
  async setFlags(ref: BlobRef, entry: LiveEntry, flags: BlobFlag[]): Promise<void> {
    await this.batch([
      ...this.liveOps(ref, { ...entry, f: flags }),
      { type: 'put', sublevel: this.subs.dirty, key: refKey(ref), value: '' },
    ]);
  }

  /** Marks the flags file of `ref` as matching the index again. Not synced: losing it only costs a rewrite at open. */
  clearDirty(ref: BlobRef): Promise<void> {
    return this.subs.dirty.del(refKey(ref));
  }

  /** Records a tombstone for an id that was never live (its upload was still on its way). */
  async tombstoneUnborn(ref: BlobRef, t: number): Promise<void> {
    await this.batch([
      { type: 'put', sublevel: this.subs.tomb, key: refKey(ref), value: { t } },
      { type: 'put', sublevel: this.subs.tombDate, key: dateKey(ref, t), value: '' },
    ]);
  }

  /** Turns a live blob into a tombstone, durably, in one batch. */
  async tombstone(ref: BlobRef, entry: LiveEntry, t: number): Promise<void> {
    await this.batch([
      ...this.dropOps(ref, entry),
      { type: 'put', sublevel: this.subs.tomb, key: refKey(ref), value: { t } },
      { type: 'put', sublevel: this.subs.tombDate, key: dateKey(ref, t), value: '' },
    ]);
  }

  /**
   * Applies `ops` atomically and durably. Batches asked for while a synced write is under
   * way (or in the same tick) go out together in the next one, so concurrent uploads share
   * one fsync of the log instead of paying one each; a failed write fails all of them.
   */
  batch(ops: IndexOp[]): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.queued.push({ ops, resolve, reject });
      if (!this.writing && this.queued.length === 1) setImmediate(() => void this.writeQueued());
    });
  }

  private async writeQueued(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    while (this.queued.length > 0) {
      const group = this.queued.splice(0);
      // Each op names its sublevel, whose encodings apply; the root's declared types do not.
      const rootOps = group.flatMap((entry) => entry.ops) as unknown as BatchOperation<
        Level<string, string>,
        string,
        string
      >[];
      try {
        await this.db.batch(rootOps, { sync: true });
        for (const entry of group) entry.resolve();
      } catch (error) {
        for (const entry of group) entry.reject(error);
      }
    }
    this.writing = false;
  }

  // TODO: a listing returns every matching id at once; there is no paging (limit, after) yet.
  async list(user: string, options: ListOptions): Promise<string[]> {
    const prefix = `${user}!${options.namespace}!`;
    const range = prefixRange(prefix);
    const flag = options.filterFlag;
    const ids: string[] = [];
    if (options.deleted) {
      // Tombstones carry no flags.
      if (flag !== undefined) return ids;
      if (options.orderBy === undefined) {
        for await (const keys of this.pages(this.subs.tomb.keys(range))) {
          for (const key of keys) ids.push(afterLastBang(key));
        }
        return ids;
      }
      return this.listByDate(this.subs.tombDate, prefix, options.orderBy === '-date', undefined);
    }
    if (options.orderBy === undefined) {
      if (flag === undefined) {
        for await (const keys of this.pages(this.subs.live.keys(range))) {
          for (const key of keys) ids.push(afterLastBang(key));
        }
        return ids;
      }
      for await (const entries of this.pages(this.subs.live.iterator(range))) {
        for (const [key, entry] of entries) {
          if (entry.f.includes(flag)) ids.push(afterLastBang(key));
        }
      }
      return ids;
    }
    return this.listByDate(this.subs.date, prefix, options.orderBy === '-date', flag);
  }

  async count(user: string, options: ListOptions): Promise<number> {
    if (options.filterFlag !== undefined || options.orderBy !== undefined) {
      return (await this.list(user, { ...options, orderBy: undefined })).length;
    }
    const range = prefixRange(`${user}!${options.namespace}!`);
    const keys = options.deleted ? this.subs.tomb.keys(range) : this.subs.live.keys(range);
    let n = 0;
    for await (const page of this.pages(keys)) n += page.length;
    return n;
  }

  /** Every live entry, in key order (so grouped by user, then namespace), a page at a time. */
  async *scanLive(): AsyncGenerator<ScannedEntry[]> {
    for await (const entries of this.pages(this.subs.live.iterator())) {
      yield entries.map(([key, entry]) => {
        const [user, namespace, id] = key.split('!') as [string, string, string];
        return { user, namespace, id, entry };
      });
    }
  }

  /** Refs whose flags file may not match the index (a crash inside `setFlags`). */
  async dirtyRefs(): Promise<BlobRef[]> {
    const keys = await this.subs.dirty.keys().all();
    return keys.map((key) => {
      const [user, namespace, id] = key.split('!') as [string, string, string];
      return { user, namespace, id };
    });
  }

  close(): Promise<void> {
    return this.db.close();
  }

  private async listByDate(
    sub: Sublevels['date'],
    prefix: string,
    newestFirst: boolean,
    flag: BlobFlag | undefined,
  ): Promise<string[]> {
    const range = { ...prefixRange(prefix), reverse: newestFirst };
    const keys: string[] = [];
    if (flag === undefined) {
      for await (const page of this.pages(sub.keys(range))) {
        for (const key of page) keys.push(key);
      }
    } else {
      for await (const page of this.pages(sub.iterator(range))) {
        for (const [key, flags] of page) {
          if (flags.split(',').includes(flag)) keys.push(key);
        }
      }
    }
    if (newestFirst) return idsInReverseDateOrder(keys, prefix.length);
    return keys.map((key) => key.slice(prefix.length + TIME_DIGITS + 1));
  }

  private async *pages<T>(iterator: {
    nextv(size: number): Promise<T[]>;
    close(): Promise<void>;
  }): AsyncGenerator<T[]> {
    try {
      for (;;) {
        const page = await iterator.nextv(PAGE);
        if (page.length === 0) return;
        yield page;
      }
    } finally {
      await iterator.close();
    }
  }
}
