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
import { startRpcServer } from '../rpc/rpc-server.js';

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

async function runDaemon(options: DaemonCommandOptions): Promise<void> {
  const config = await loadDaemonConfig(
    options.config === undefined ? {} : { configPath: options.config },
  ).catch((error: unknown) => fail(describe(error)));

  const secretsPath = secretsFilePath(config.dataDir);
  if (!(await exists(secretsPath))) {
    fail(`${secretsPath} does not exist: run \`soledad init --data-dir ${config.dataDir}\` first`);
  }
  const passphrase = await readPassphrase({ file: config.passphraseFile }).catch((error: unknown) =>
    fail(describe(error)),
  );
  const secrets = await openSecretsFile(secretsPath, passphrase).catch((error: unknown) =>
    fail(describe(error)),
  );
  const remote = await remoteOf(config).catch((error: unknown) =>
    fail(`cannot read the server token: ${describe(error)}`),
  );

  // Synchronous writes: the last lines before `process.exit` are not lost.
  const logger = pino(
    { level: config.logLevel, base: { pid: process.pid } },
    pino.destination({ dest: 1, sync: true }),
  );
  logger.info({ config: config.source ?? null, dataDir: config.dataDir }, 'daemon starting');
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
    logger,
  }).catch((error: unknown) => {
    logger.fatal({ err: error }, 'daemon failed to start');
    return fail(describe(error));
  });

  const rpc = await startRpcServer({
    daemon,
    host: config.rpc.host,
    port: config.rpc.port,
    socketPath: config.rpc.socket,
    tokenFile: join(config.configDir, RPC_TOKEN_FILE),
    infoFile: join(config.configDir, RPC_INFO_FILE),
    allowedOrigins: config.rpc.allowedOrigins,
    logger,
  }).catch(async (error: unknown) => {
    logger.fatal({ err: error }, 'the RPC listener failed to start');
    await daemon.close().catch(() => undefined);
    return fail(describe(error));
  });
  logger.info(
    {
      url: rpc.url,
      socketPath: rpc.socketPath ?? null,
      infoFile: join(config.configDir, RPC_INFO_FILE),
    },
    'daemon listening',
  );

  handleSignals(logger, config.stopTimeoutMs, async () => {
    await rpc.close();
    await daemon.close();
  });
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
