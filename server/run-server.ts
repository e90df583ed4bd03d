import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { FilesystemBackend } from './backends/filesystem-backend.js';
import { BlobsServer } from './blobs-server.js';
import type { ServerConfig } from './config.js';
import { FileUserStore } from './file-user-store.js';
import { removeListeningFile, writeListeningFile } from './listening-file.js';
import type { ServerContext } from './server-context.js';
import { loadServerInfo } from './server-info.js';
import { ServiceTokens } from './service-tokens.js';
import type { UserStore } from './user-store.js';

/** A server running in this process over the filesystem backend under `config.root`. */
export interface RunningServer {
  readonly config: ServerConfig;
  readonly server: BlobsServer;
  readonly users: UserStore;
  /** Stops the listeners (see `BlobsServer.close`), then closes storage. Idempotent. */
  close(): Promise<void>;
}

/**
 * Opens storage under `config.root` (taking its lock: one server process per root),
 * starts both listeners and writes `ROOT/listening.json`.
 */
export async function runServer(config: ServerConfig, logger: Logger): Promise<RunningServer> {
  await mkdir(config.root, { recursive: true, mode: 0o700 });
  const backend = await FilesystemBackend.open(config.root, { logger });
  let users: FileUserStore | undefined;
  let server: BlobsServer;
  try {
    users = await FileUserStore.open(config.root, { logger: logger.child({ component: 'users' }) });
    const context: ServerContext = {
      config,
      backend,
      users,
      services: new ServiceTokens(config.services.tokensFile, { logger }),
      info: await loadServerInfo(),
    };
    server = await BlobsServer.start(context, logger.child({ component: 'http' }));
    await writeListeningFile(config.root, {
      pid: process.pid,
      public: server.public,
      services: server.services,
      startedAt: new Date().toISOString(),
    });
  } catch (error) {
    await Promise.allSettled([backend.close(), users?.close()]);
    throw error;
  }
  const store = users;
  logger.info(
    { public: server.public.url, services: server.services.url, root: config.root },
    'server listening',
  );

  let closing: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    await server.close();
    const results = await Promise.allSettled([backend.close(), store.close()]);
    await removeListeningFile(config.root, process.pid);
    const failures = results.flatMap((result) =>
      result.status === 'rejected' ? [result.reason as unknown] : [],
    );
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, 'closing the server failed');
  };
  return {
    config,
    server,
    users: store,
    close: () => {
      closing ??= close();
      return closing;
    },
  };
}
