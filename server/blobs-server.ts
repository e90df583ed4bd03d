import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ListenAddress } from './config.js';
import { type ListenerAddress, listenerAddress } from './listening-file.js';
import { createRequestHandler } from './request-handler.js';
import { publicRouter, type Router, servicesRouter } from './router.js';
import type { ServerContext } from './server-context.js';

/** Sockets silent this long in the middle of a request are closed. */
const IDLE_SOCKET_MS = 120_000;

async function listen(server: Server, address: ListenAddress): Promise<ListenerAddress> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address.host, port: address.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return listenerAddress(bound.address, bound.port);
}

/**
 * The two HTTP listeners of the blobs API over one `ServerContext`: public (users) and
 * services (incoming deliveries, loopback only). It does not own the context: closing
 * the server leaves the backend and user store open for their owner to close.
 */
export class BlobsServer {
  readonly #context: ServerContext;
  readonly #logger: Logger;
  readonly #servers: [Server, Server];
  readonly #inFlight = new Set<Promise<void>>();
  #addresses: [ListenerAddress, ListenerAddress] | undefined;
  #closing: Promise<void> | undefined;

  private constructor(context: ServerContext, logger: Logger) {
    this.#context = context;
    this.#logger = logger;
    this.#servers = [
      this.#makeServer(publicRouter(context), 'public'),
      this.#makeServer(servicesRouter(context), 'services'),
    ];
  }

  /** Binds both listeners (port 0 picks a free port) and starts answering. */
  static async start(context: ServerContext, logger: Logger): Promise<BlobsServer> {
    const server = new BlobsServer(context, logger);
    try {
      server.#addresses = [
        await listen(server.#servers[0], context.config.public),
        await listen(server.#servers[1], context.config.services),
      ];
    } catch (error) {
      for (const listener of server.#servers) listener.close();
      throw error;
    }
    return server;
  }

  #makeServer(router: Router, listener: string): Server {
    const track = (done: Promise<void>): void => {
      const settled = done.catch((err: unknown) => this.#logger.error({ err }, 'request handler'));
      this.#inFlight.add(settled);
      void settled.finally(() => this.#inFlight.delete(settled));
    };
    const logger = this.#logger.child({ listener });
    const handler = createRequestHandler(this.#context, router, logger, track);
    // TODO: no TLS of its own; expose the public listener through a TLS-terminating proxy.
    const server = createServer({ requestTimeout: 0, headersTimeout: 60_000 }, handler);
    server.on('checkContinue', handler);
    server.setTimeout(IDLE_SOCKET_MS);
    return server;
  }

  /** Where the public listener is bound. */
  get public(): ListenerAddress {
    return this.#addresses![0];
  }

  /** Where the services listener is bound. */
  get services(): ListenerAddress {
    return this.#addresses![1];
  }

  /** Requests being handled right now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Stops accepting connections, waits up to `shutdownTimeoutMs` for requests in flight,
   * then cuts the rest (their writes roll back) and every idle connection. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const closed = this.#servers.map(
      (server) => new Promise<void>((resolve) => server.close(() => resolve())),
    );
    const deadline = Date.now() + this.#context.config.shutdownTimeoutMs;
    while (this.#inFlight.size > 0 && Date.now() < deadline) {
      for (const server of this.#servers) server.closeIdleConnections();
      await Promise.race([Promise.all(this.#inFlight), delay(50)]);
    }
    if (this.#inFlight.size > 0) {
      this.#logger.warn({ requests: this.#inFlight.size }, 'cutting requests still in flight');
    }
    for (const server of this.#servers) server.closeAllConnections();
    await Promise.all(this.#inFlight);
    await Promise.all(closed);
  }
}
