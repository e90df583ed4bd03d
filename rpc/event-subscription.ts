import type { Logger } from 'pino';
import type { DaemonApi, DaemonEvent, TransferProgress } from '../daemon/daemon-api.js';
import type { GapNotice, GapReason, Subscribed } from './methods.js';
import type { ProgressFanout } from './progress-fanout.js';
import type { SocketWriter } from './socket-writer.js';
import { SoledadError } from './soledad-error.js';

/** Events read from the log per `readEventsAfter` call while catching up. */
const PAGE_SIZE = 1000;

/** Live events held back while catching up; past this they are dropped and re-read. */
const MAX_PENDING = 10_000;

/** Every subscriber gets the same event object: serialise it once for all of them. */
const eventTexts = new WeakMap<DaemonEvent, string>();

function eventText(event: DaemonEvent): string {
  let text = eventTexts.get(event);
  if (text === undefined) {
    text = JSON.stringify({ jsonrpc: '2.0', method: 'events.event', params: event });
    eventTexts.set(event, text);
  }
  return text;
}

export interface EventSubscriptionOptions {
  daemon: Pick<DaemonApi, 'onEvent' | 'readEventsAfter' | 'status'>;
  writer: SocketWriter;
  /** Bytes queued on the socket past which a live subscriber is cut off with a gap notice. */
  bufferLimit: number;
  /** Set when the subscriber asked for transfer progress. */
  progress?: ProgressFanout;
  logger: Logger;
}

/**
 * One connection's subscription to daemon events.
 *
 * It listens to live events before it reads the log, so every event is either in what it
 * reads or in what it hears (or both: duplicates are dropped by seq). Catch-up waits for
 * the socket to drain and never overflows; a live subscriber whose socket queue passes
 * `bufferLimit` gets an `overflow` gap notice and its stream stops. Progress notices are
 * ephemeral: skipped, never queued, while the socket is more than half full.
 */
export class EventSubscription {
  readonly #daemon: EventSubscriptionOptions['daemon'];
  readonly #writer: SocketWriter;
  readonly #bufferLimit: number;
  readonly #progress: ProgressFanout | undefined;
  readonly #logger: Logger;
  #state: 'starting' | 'live' | 'stopped' = 'starting';
  #pending: DaemonEvent[] = [];
  /** Highest seq dropped from `#pending`: catch-up must read at least this far. */
  #droppedUpTo = 0;
  #epoch = '';
  #lastSeq = 0;
  #stopEvents: (() => void) | undefined;
  #stopProgress: (() => void) | undefined;

  constructor(options: EventSubscriptionOptions) {
    this.#daemon = options.daemon;
    this.#writer = options.writer;
    this.#bufferLimit = options.bufferLimit;
    this.#progress = options.progress;
    this.#logger = options.logger;
  }

  get active(): boolean {
    return this.#state !== 'stopped';
  }

  /**
   * Replays the kept events after `after` (nothing when it is omitted), then goes live.
   * Resolves once every replayed notification has been queued on the socket.
   */
  async start(params: {
    after?: number | undefined;
    epoch?: string | undefined;
  }): Promise<Subscribed> {
    this.#stopEvents = this.#daemon.onEvent((event) => this.#onEvent(event));
    try {
      const { events } = await this.#daemon.status();
      this.#epoch = events.epoch;
      const { after } = params;
      let from = after ?? events.latestSeq;
      if (after !== undefined) {
        if ((params.epoch ?? events.epoch) !== events.epoch || after > events.latestSeq) {
          this.#gap('reset', after, events.latestSeq);
          from = events.latestSeq;
        }
      }
      // Even from `latestSeq` there may be something to read: live events dropped
      // from a pending queue that overflowed while the status was read.
      this.#lastSeq = await this.#catchUp(from, events.latestSeq);
      if (!this.active) throw new SoledadError('cancelled', 'subscription ended');

      this.#state = 'live';
      const pending = this.#pending;
      this.#pending = [];
      for (const event of pending) if (event.seq > this.#lastSeq) this.#sendLive(event);
      if (this.#progress && this.active) {
        this.#stopProgress = this.#progress.add((progress) => this.#onProgress(progress));
      }
      return { epoch: this.#epoch, latestSeq: this.#lastSeq };
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  stop(): void {
    this.#state = 'stopped';
    this.#pending = [];
    this.#stopEvents?.();
    this.#stopProgress?.();
    this.#stopEvents = undefined;
    this.#stopProgress = undefined;
  }

  /** Sends the kept events after `after`; returns the seq the live stream continues from. */
  async #catchUp(after: number, latest: number): Promise<number> {
    let cursor = after;
    while (cursor < Math.max(latest, this.#droppedUpTo)) {
      const target = Math.max(latest, this.#droppedUpTo);
      const page = await this.#daemon.readEventsAfter(cursor, PAGE_SIZE);
      if (!this.active) return cursor;

      if (page.epoch !== this.#epoch) {
        // The log was reset while we read it: nothing before now can be replayed.
        const { events } = await this.#daemon.status();
        this.#epoch = events.epoch;
        this.#gap('reset', cursor, events.latestSeq);
        return events.latestSeq;
      }
      if (page.kind === 'gap') {
        this.#gap('trimmed', cursor, page.latestSeq);
        cursor = Math.max(cursor, page.latestSeq);
        continue;
      }
      if (page.events.length === 0) {
        // The log holds less than the status promised: say so rather than loop.
        this.#gap('trimmed', cursor, target);
        cursor = target;
        continue;
      }
      for (const event of page.events) {
        if (event.seq <= cursor) continue;
        const flushed = this.#writer.send(eventText(event));
        cursor = event.seq;
        if (flushed !== undefined) await flushed;
        if (!this.active) return cursor;
      }
    }
    return cursor;
  }

  #onEvent(event: DaemonEvent): void {
    if (this.#state === 'live') {
      this.#sendLive(event);
    } else if (this.#state === 'starting') {
      this.#pending.push(event);
      if (this.#pending.length > MAX_PENDING) {
        this.#droppedUpTo = event.seq;
        this.#pending = [];
      }
    }
  }

  #sendLive(event: DaemonEvent): void {
    if (this.#writer.bufferedAmount > this.#bufferLimit) {
      this.#logger.info(
        { afterSeq: this.#lastSeq, bytes: this.#writer.bufferedAmount },
        'RPC subscriber overflowed',
      );
      this.#gap('overflow', this.#lastSeq, event.seq);
      this.stop();
      return;
    }
    this.#writer.send(eventText(event));
    this.#lastSeq = event.seq;
  }

  #onProgress(progress: TransferProgress): void {
    if (this.#state !== 'live') return;
    if (this.#writer.bufferedAmount > this.#bufferLimit / 2) return;
    this.#writer.notify('events.progress', progress);
  }

  #gap(reason: GapReason, afterSeq: number, latestSeq: number): void {
    const notice: GapNotice = { reason, epoch: this.#epoch, afterSeq, latestSeq };
    this.#writer.notify('events.gap', notice);
  }
}
