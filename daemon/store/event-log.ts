import { randomUUID } from 'node:crypto';
import { type EventInput, type StoreEvent, SUBLEVELS, seqKey } from './records.js';
import type { StoreOp } from './transaction.js';

/** The event log's durable position. */
export interface EventLogState {
  /** Random id made when the log was created or reset. */
  epoch: string;
  /** Oldest seq kept; `lastSeq + 1` when the log is empty. */
  oldestSeq: number;
  /** Last seq assigned; 0 before the first event. */
  lastSeq: number;
}

/** Meta keys of the event log. */
export const EVENT_META = { epoch: 'eventEpoch', lastSeq: 'eventLastSeq' } as const;

/**
 * The event-log part of one group write: assigns seqs, trims the oldest events beyond
 * `maxEvents` and collects the ops. The store adopts `state` once the batch is durable,
 * so a failed write leaves no hole in the numbering.
 */
export class EventLogPlan {
  readonly #ops: StoreOp[] = [];
  readonly #maxEvents: number;
  readonly #start: EventLogState;
  #state: EventLogState;

  constructor(state: EventLogState, maxEvents: number) {
    this.#start = state;
    this.#state = { ...state };
    this.#maxEvents = maxEvents;
  }

  get state(): EventLogState {
    return { ...this.#state };
  }

  /** Assigns the next seq to an event and returns it. */
  append(data: EventInput, at: number): number {
    const seq = this.#state.lastSeq + 1;
    const event: StoreEvent = { ...data, seq, at };
    this.#ops.push({
      type: 'put',
      sublevel: SUBLEVELS.events,
      key: seqKey(seq),
      value: JSON.stringify(event),
    });
    this.#state.lastSeq = seq;
    this.#trimTo(seq - this.#maxEvents + 1);
    return seq;
  }

  /** Drops every kept event and starts a new epoch. */
  reset(): void {
    this.#trimTo(this.#state.lastSeq + 1);
    this.#state.epoch = randomUUID();
  }

  /** The ops for this group, meta updates included. */
  ops(): StoreOp[] {
    const ops = [...this.#ops];
    if (this.#state.lastSeq !== this.#start.lastSeq) {
      ops.push(metaPut(EVENT_META.lastSeq, this.#state.lastSeq));
    }
    if (this.#state.epoch !== this.#start.epoch) {
      ops.push(metaPut(EVENT_META.epoch, this.#state.epoch));
    }
    return ops;
  }

  #trimTo(oldest: number): void {
    for (let seq = this.#state.oldestSeq; seq < oldest; seq++) {
      this.#ops.push({ type: 'del', sublevel: SUBLEVELS.events, key: seqKey(seq) });
    }
    this.#state.oldestSeq = Math.max(this.#state.oldestSeq, oldest);
  }
}

function metaPut(key: string, value: unknown): StoreOp {
  return { type: 'put', sublevel: SUBLEVELS.meta, key, value: JSON.stringify(value) };
}
