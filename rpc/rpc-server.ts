import { once } from 'node:events';
import { chmod, lstat, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, STATUS_CODES } from 'node:http';
import { connect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  createJSONRPCErrorResponse,
  JSONRPCErrorCode,
  JSONRPCErrorException,
  JSONRPCServer,
} from 'json-rpc-2.0';
import { type Logger, pino } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import type { DaemonApi } from '../daemon/daemon-api.js';
import { daemonMethods } from './daemon-methods.js';
import { METHODS, type MethodName } from './methods.js';
import { ProgressFanout } from './progress-fanout.js';
import { RpcConnection } from './rpc-connection.js';
import { DEFAULT_RPC_HOST, DEFAULT_RPC_PORT, type RpcInfo, writeRpcInfo } from './rpc-paths.js';
import { loadOrCreateToken } from './rpc-token.js';
import { isDomainCode, rpcCodeFor } from './soledad-error.js';
import { FRAME_HEADER_BYTES, MAX_MESSAGE_BYTES } from './stream-frames.js';
import { checkUpgrade } from './upgrade-guard.js';

export interface RpcServerOptions {
  daemon: DaemonApi;
  /** TCP address; default 127.0.0.1. Anything but loopback is refused by the Host check. */
  host?: string;
  /** Default 2426; 0 picks a free port (see `url`). */
  port?: number;
  /** Also listen on this Unix socket (mode 0600; the token is still required). */
  socketPath?: string;
  /** Read, or created on first start with 256 random bits and mode 0600. */
  tokenFile: string;
  /** Where to write `{ url, socketPath, pid }` once listening; removed by `close()`. */
  infoFile?: string;
  /** Exact `Origin` header values allowed to connect; default none. */
  allowedOrigins?: readonly string[];
  /** Default: silent. */
  logger?: Logger;
  /**
   * Bytes queued on a subscriber's socket past which its live event stream stops with an
   * `overflow` gap notice. Default 8 MiB.
   */
  subscriberBufferLimit?: number;
}

export interface RpcServer {
  /** `ws://host:port` of the TCP listener, with the port actually chosen. */
  url: string;
  socketPath?: string;
  /** Idempotent: closes every connection (1001), the listeners, and removes the files. */
  close(): Promise<void>;
}

const DEFAULT_SUBSCRIBER_BUFFER_LIMIT = 8 * 1024 * 1024;
/** How long closing connections get to finish their close handshake. */
const CLOSE_GRACE_MS = 2000;

/** Starts the daemon's JSON-RPC listener(s). */
export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const logger = (options.logger ?? pino({ level: 'silent' })).child({ component: 'rpc' });
  const host = options.host ?? DEFAULT_RPC_HOST;
  const token = await loadOrCreateToken(options.tokenFile, (mode) =>
    logger.warn({ path: options.tokenFile, mode: mode.toString(8) }, 'token file narrowed to 0600'),
  );
  const allowedOrigins = options.allowedOrigins ?? [];
  const rpc = createJsonRpcServer(options.daemon, logger);
  const progress = new ProgressFanout(options.daemon);
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_MESSAGE_BYTES + FRAME_HEADER_BYTES,
    perMessageDeflate: false,
  });
  const connections = new Set<RpcConnection>();
  let connectionCount = 0;
  let closing: Promise<void> | undefined;

  const onConnection = (ws: WebSocket, socket: Duplex) => {
    const connection = new RpcConnection(ws, socket, {
      rpc,
      daemon: options.daemon,
      logger: logger.child({ connection: ++connectionCount }),
      progress,
      subscriberBufferLimit: options.subscriberBufferLimit ?? DEFAULT_SUBSCRIBER_BUFFER_LIMIT,
    });
    connections.add(connection);
    ws.on('close', () => connections.delete(connection));
  };

  const handleUpgrade =
    (checkHost: boolean) => (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy());
      if (closing !== undefined) return refuse(socket, 503, 'daemon stopping');
      const verdict = checkUpgrade(req.headers, { token, allowedOrigins, checkHost });
      if (!verdict.ok) {
        logger.info(
          { status: verdict.status, reason: verdict.reason, remote: req.socket.remoteAddress },
          'refused an RPC connection',
        );
        return refuse(socket, verdict.status, verdict.reason);
      }
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, socket));
    };

  const servers: Server[] = [];
  const tcp = createHttpServer(handleUpgrade(true));
  servers.push(tcp);
  await listen(tcp, (s) => s.listen(options.port ?? DEFAULT_RPC_PORT, host));
  const address = tcp.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const url = `ws://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
  if (!['127.0.0.1', '::1', 'localhost'].includes(host)) {
    logger.warn({ host }, 'RPC host is not loopback; the Host check refuses remote clients');
  }

  const { socketPath } = options;
  if (socketPath !== undefined) {
    await clearStaleSocket(socketPath);
    const unix = createHttpServer(handleUpgrade(false));
    servers.push(unix);
    await listen(unix, (s) => s.listen(socketPath));
    await chmod(socketPath, 0o600);
  }

  const info: RpcInfo = { url, pid: process.pid, ...(socketPath ? { socketPath } : {}) };
  if (options.infoFile !== undefined) await writeRpcInfo(options.infoFile, info);
  logger.info({ url, socketPath }, 'RPC listening');

  const close = async () => {
    progress.close();
    for (const connection of connections) connection.close();
    const killer = setTimeout(() => {
      for (const ws of wss.clients) ws.terminate();
    }, CLOSE_GRACE_MS);
    killer.unref();
    await Promise.all(servers.map((server) => closeServer(server)));
    clearTimeout(killer);
    wss.close();
    if (socketPath !== undefined) await rm(socketPath, { force: true });
    if (options.infoFile !== undefined) await removeIfOurs(options.infoFile, info);
    logger.info({ url }, 'RPC stopped');
  };

  return {
    url,
    ...(socketPath ? { socketPath } : {}),
    close: () => {
      closing ??= close();
      return closing;
    },
  };
}

/** The JSON-RPC server shared by all connections; each call gets its connection. */
function createJsonRpcServer(daemon: DaemonApi, logger: Logger): JSONRPCServer<RpcConnection> {
  const rpc = new JSONRPCServer<RpcConnection>({
    errorListener: (message, error) => {
      if (error instanceof JSONRPCErrorException || isDomainCode(codeOf(error))) {
        logger.debug({ code: codeOf(error) ?? (error as JSONRPCErrorException).code }, message);
      } else {
        logger.error({ err: error }, message);
      }
    },
  });
  rpc.mapErrorToJSONRPCErrorResponse = (id, error: unknown) => {
    if (error instanceof JSONRPCErrorException) {
      return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
    }
    const code = codeOf(error);
    if (isDomainCode(code)) {
      const currentRev = (error as { currentRev?: unknown }).currentRev;
      return createJSONRPCErrorResponse(id, rpcCodeFor(code), (error as Error).message, {
        code,
        ...(typeof currentRev === 'string' ? { currentRev } : {}),
      });
    }
    return createJSONRPCErrorResponse(
      id,
      JSONRPCErrorCode.InternalError,
      'internal error; the daemon log has the details',
      { code: 'internal' },
    );
  };

  const handlers = daemonMethods(daemon) as Record<
    MethodName,
    (params: unknown, connection: RpcConnection) => unknown
  >;
  for (const name of Object.keys(METHODS) as MethodName[]) {
    const schema = METHODS[name].params;
    const handler = handlers[name];
    rpc.addMethod(name, (params, connection) =>
      handler(parseParams(name, schema, params), connection),
    );
  }
  return rpc;
}

/** Validates by-name params; anything else is -32602 with every issue and its path. */
function parseParams(
  name: string,
  schema: (typeof METHODS)[MethodName]['params'],
  params: unknown,
): unknown {
  if (Array.isArray(params)) {
    throw new JSONRPCErrorException(
      `invalid params for ${name}: params must be an object (by name), not an array`,
      JSONRPCErrorCode.InvalidParams,
      { code: 'invalid_params', issues: [] },
    );
  }
  const parsed = schema.safeParse(params ?? {});
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((issue) => ({
    path: issue.path.map(String).join('.'),
    message: issue.message,
  }));
  const text = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
  throw new JSONRPCErrorException(
    `invalid params for ${name}: ${text}`,
    JSONRPCErrorCode.InvalidParams,
    {
      code: 'invalid_params',
      issues,
    },
  );
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function createHttpServer(
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
): Server {
  const server = createServer((_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
    res.end('the Soledad daemon speaks JSON-RPC over WebSocket only\n');
  });
  server.on('upgrade', onUpgrade);
  return server;
}

function refuse(socket: Duplex, status: number, reason: string): void {
  const body = `${reason}\n`;
  const extra = status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
      'Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
  );
}

async function listen(server: Server, start: (server: Server) => void): Promise<void> {
  const failed = once(server, 'error').then(([err]) => {
    throw err;
  });
  start(server);
  await Promise.race([once(server, 'listening'), failed]);
  failed.catch(() => {});
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

/** Removes a socket file left by a daemon that died; refuses one that still answers. */
async function clearStaleSocket(path: string): Promise<void> {
  try {
    if (!(await lstat(path)).isSocket()) throw new Error(`${path} exists and is not a socket`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe: Socket = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`${path} is in use by another process`);
  await rm(path, { force: true });
}

async function removeIfOurs(path: string, info: RpcInfo): Promise<void> {
  try {
    const current = JSON.parse(await readFile(path, 'utf8')) as Partial<RpcInfo>;
    if (current.pid === info.pid && current.url === info.url) await rm(path, { force: true });
  } catch {
    // Already gone or rewritten by someone else: leave it.
  }
}
