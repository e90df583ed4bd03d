import { WebSocket } from 'ws';
import { SEND_QUEUE_HIGH_WATER } from './stream-frames.js';

/**
 * Writes messages to one WebSocket and tells the caller when to slow down: `send`
 * returns a promise only when the socket's queue is past `highWater`; it resolves once
 * that message has been handed to the kernel. Messages to a closed socket are dropped
 * (the close handler cleans up whoever sent them).
 */
export class SocketWriter {
  readonly #ws: WebSocket;
  readonly #highWater: number;
  readonly #socket: Corkable | undefined;
  #corked = false;

  /**
   * With `socket` (the connection under `ws`), messages sent in one tick leave in one
   * system call: the socket is corked at the first and uncorked on the next tick.
   */
  constructor(ws: WebSocket, options: { socket?: Corkable; highWater?: number } = {}) {
    this.#ws = ws;
    this.#socket = options.socket;
    this.#highWater = options.highWater ?? SEND_QUEUE_HIGH_WATER;
  }

  /** Bytes queued in ws and in the socket, not yet handed to the kernel. */
  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  get open(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  send(data: string | Buffer): Promise<void> | undefined {
    if (this.#ws.readyState !== WebSocket.OPEN) return undefined;
    this.#cork();
    if (this.#ws.bufferedAmount < this.#highWater) {
      this.#ws.send(data);
      return undefined;
    }
    return new Promise((resolve) => this.#ws.send(data, () => resolve()));
  }

  notify(method: string, params: unknown): Promise<void> | undefined {
    return this.send(JSON.stringify({ jsonrpc: '2.0', method, params }));
  }

  #cork(): void {
    const socket = this.#socket;
    if (socket === undefined || this.#corked) return;
    this.#corked = true;
    socket.cork();
    process.nextTick(() => {
      this.#corked = false;
      socket.uncork();
    });
  }
}

/** What `SocketWriter` needs of a socket to batch writes. */
export interface Corkable {
  cork(): void;
  uncork(): void;
}
