/**
 * Coalesces work items into serial group writes. Items submitted in the same tick, or
 * while the previous group is being written, go out together in the next group, so many
 * small durable changes cost one `fsync` instead of one each. One group is written at a
 * time, in submission order.
 *
 * `write(items)` returns one entry per item: its result, or an `Error` that rejects that
 * item alone (it must then have written nothing for it). If `write` throws, every item of
 * the group rejects with that error.
 */
export class GroupCommit<TItem, TResult> {
  readonly #write: (items: TItem[]) => Promise<Array<TResult | Error>>;
  readonly #maxItems: number;
  #queue: Array<{ item: TItem; resolve(value: TResult): void; reject(error: unknown): void }> = [];
  #writing = false;
  #scheduled = false;
  #idle: Array<() => void> = [];
  #groups = 0;
  #items = 0;

  /** `maxItems` caps one group (default 4096); the rest waits for the next. */
  constructor(
    write: (items: TItem[]) => Promise<Array<TResult | Error>>,
    { maxItems = 4096 } = {},
  ) {
    this.#write = write;
    this.#maxItems = maxItems;
  }

  /** Queues an item; resolves with its result once its group is written. */
  submit(item: TItem): Promise<TResult> {
    return new Promise<TResult>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#schedule();
    });
  }

  /** Resolves once nothing is queued or being written. */
  drain(): Promise<void> {
    if (!this.#writing && !this.#scheduled && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Groups written so far and the items they carried. */
  get stats(): { groups: number; items: number } {
    return { groups: this.#groups, items: this.#items };
  }

  #schedule(): void {
    if (this.#writing || this.#scheduled) return;
    this.#scheduled = true;
    // setImmediate runs after every promise continuation of the current tick, so
    // commits issued from the same burst of callbacks share one group.
    setImmediate(() => {
      this.#scheduled = false;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    const group = this.#queue.splice(0, this.#maxItems);
    if (group.length === 0) return this.#settleIdle();

    this.#writing = true;
    try {
      const results = await this.#write(group.map((entry) => entry.item));
      this.#groups += 1;
      this.#items += group.length;
      group.forEach((entry, i) => {
        const result = results[i];
        if (result instanceof Error) entry.reject(result);
        else entry.resolve(result as TResult);
      });
    } catch (error) {
      for (const entry of group) entry.reject(error);
    } finally {
      this.#writing = false;
    }

    // Whatever arrived while this group was being written goes out now, together.
    if (this.#queue.length > 0) void this.#flush();
    else this.#settleIdle();
  }

  #settleIdle(): void {
    if (this.#writing || this.#scheduled || this.#queue.length > 0) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }
}
