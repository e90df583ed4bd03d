import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { type Logger, pino } from 'pino';
import { type DaemonConfig, loadDaemonConfig } from '../daemon/config.js';
import { readPassphrase } from '../daemon/crypto/passphrase.js';
import { openSecretsFile } from '../daemon/crypto/secrets-file.js';
import { Daemon } from '../daemon/daemon.js';
import { secretsFilePath } from '../daemon/paths.js';
import { RPC_INFO_FILE, RPC_TOKEN_FILE } from '../rpc/rpc-paths.js';
import { type RpcServer, startRpcServer } from '../rpc/rpc-server.js';

interface DaemonCommandOptions {
  config?: string;
}

/** Share of `stop_timeout_ms` given to transfers in flight; the rest is for closing. */
const TRANSFER_SHARE = 0.8;

/** `soledad daemon [--config F]`: runs the sync daemon in the foreground. */
export function registerDaemonCommand(program: Command): void {
  program
    .command('daemon')
    .description('run the sync daemon (documents, attachments, transfers, local RPC)')
    .option(
      '-c, --config <file>',
      'config file, TOML or JSON (default: $XDG_CONFIG_HOME/soledad/daemon.toml if present)',
    )
    .action(async (options: DaemonCommandOptions) => {
      await runDaemon(options);
    });
}

function fail(message: string): never {
  process.stderr.write(`soledad daemon: ${message}\n`);
  process.exit(1);
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? `${error.message} (${code})` : error.message;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** The blobs server settings with the token read from its file; undefined when none. */
async function remoteOf(config: DaemonConfig) {
  if (config.server === undefined) return undefined;
  const token = (await readFile(config.server.tokenFile, 'utf8')).trim();
  if (token === '') throw new Error(`${config.server.tokenFile} is empty`);
  return { url: config.server.url, uuid: config.server.uuid, token };
}

/** A daemon and its RPC listener running in this process. */
export interface RunningDaemon {
  daemon: Daemon;
  rpc: RpcServer;
  /** Closes the RPC listener, then the daemon (watch folders, transfers, store). */
  close(): Promise<void>;
}

/**
 * Opens the daemon described by `config` with the storage secret unlocked by `passphrase`,
 * and starts its RPC listener. Errors carry a message fit for the user.
 */
export async function startDaemon(
  config: DaemonConfig,
  passphrase: string,
  logger: Logger,
): Promise<RunningDaemon> {
  const secretsPath = secretsFilePath(config.dataDir);
  if (!(await exists(secretsPath))) {
    throw new Error(
      `${secretsPath} does not exist: run \`soledad init --data-dir ${config.dataDir}\` first`,
    );
  }
  const secrets = await openSecretsFile(secretsPath, passphrase);
  const remote = await remoteOf(config).catch((error: unknown) => {
    throw new Error(`cannot read the server token: ${describe(error)}`, { cause: error });
  });
  if (remote === undefined) {
    logger.warn('no blobs server configured: attachments stay on this device');
  }
  const daemon = await Daemon.open({
    dataDir: config.dataDir,
    secret: secrets.secret,
    deviceId: secrets.deviceId,
    remote,
    transfers: config.transfers,
    syncIntervalMs: config.syncIntervalMs,
    eventLogSize: config.eventLogSize,
    orphanGraceMs: config.orphanGraceMs,
    stopTimeoutMs: Math.floor(config.stopTimeoutMs * TRANSFER_SHARE),
    watch: { folders: config.watch },
    logger,
  });
  let rpc: RpcServer;
  try {
    rpc = await startRpcServer({
      daemon,
      host: config.rpc.host,
      port: config.rpc.port,
      socketPath: config.rpc.socket,
      tokenFile: join(config.configDir, RPC_TOKEN_FILE),
      infoFile: join(config.configDir, RPC_INFO_FILE),
      allowedOrigins: config.rpc.allowedOrigins,
      logger,
    });
  } catch (error) {
    await daemon.close().catch(() => undefined);
    throw new Error(`the RPC listener failed to start: ${describe(error)}`, { cause: error });
  }
  logger.info(
    {
      url: rpc.url,
      socketPath: rpc.socketPath ?? null,
      infoFile: join(config.configDir, RPC_INFO_FILE),
      watch: config.watch.map((folder) => folder.path),
    },
    'daemon listening',
  );
  let closing: Promise<void> | undefined;
  return {
    daemon,
    rpc,
    close: () => {
      closing ??= rpc.close().then(() => daemon.close());
      return closing;
    },
  };
}

async function runDaemon(options: DaemonCommandOptions): Promise<void> {
  const configPath = options.config;
  const config = await loadDaemonConfig(configPath === undefined ? {} : { configPath }).catch(
    (error: unknown) => fail(describe(error)),
  );
  const passphrase = await readPassphrase({ file: config.passphraseFile }).catch((error: unknown) =>
    fail(describe(error)),
  );

  // Synchronous writes: the last lines before `process.exit` are not lost.
  const logger = pino(
    { level: config.logLevel, base: { pid: process.pid } },
    pino.destination({ dest: 1, sync: true }),
  );
  logger.info({ config: config.source ?? null, dataDir: config.dataDir }, 'daemon starting');
  const starting = startDaemon(config, passphrase, logger).catch((error: unknown) => {
    logger.fatal({ err: error }, 'daemon failed to start');
    return fail(describe(error));
  });
  // Installed before the start-up does any I/O: a signal while it runs is not lost, and
  // the stop waits for the start to finish.
  process.on('SIGHUP', () => {
    void reloadLogLevel(logger, configPath);
  });
  handleSignals(logger, config.stopTimeoutMs, async () => (await starting).close());
  await starting;
}

/**
 * SIGHUP: re-reads the configuration file and applies its `log_level`. Every other field
 * needs a restart (they shape open stores, listeners and transfers); a changed one is named.
 */
async function reloadLogLevel(logger: Logger, configPath: string | undefined): Promise<void> {
  try {
    const config = await loadDaemonConfig(configPath === undefined ? {} : { configPath });
    logger.level = config.logLevel;
    logger.info(
      { logLevel: config.logLevel },
      'configuration reloaded: log level applied; other changes need a restart',
    );
  } catch (error) {
    logger.warn({ err: describe(error) }, 'configuration reload failed; nothing changed');
  }
}

function handleSignals(logger: Logger, stopTimeoutMs: number, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.info({ signal }, 'already stopping');
      return;
    }
    stopping = true;
    logger.info({ signal }, 'daemon stopping');
    const deadline = setTimeout(() => {
      logger.error({ stopTimeoutMs }, 'daemon did not stop in time');
      process.exit(1);
    }, stopTimeoutMs);
    deadline.unref();
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'daemon stopped with errors');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
