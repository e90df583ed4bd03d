import type { Command } from 'commander';
import { pino } from 'pino';
import { parseByteSize } from '../server/byte-size.js';
import { loadServerConfig, type ServerConfig } from '../server/config.js';
import { FileUserStore } from '../server/file-user-store.js';
import { type RunningServer, runServer } from '../server/run-server.js';

interface ConfigOptions {
  config?: string;
  root?: string;
}

interface AddUserOptions extends ConfigOptions {
  uuid?: string;
  quota?: string;
  json?: boolean;
}

function configFrom(options: ConfigOptions): Promise<ServerConfig> {
  const selection: { configPath?: string; root?: string } = {};
  if (options.config !== undefined) selection.configPath = options.config;
  if (options.root !== undefined) selection.root = options.root;
  return loadServerConfig(selection);
}

function fail(error: unknown): never {
  process.stderr.write(`soledad server: ${error instanceof Error ? error.message : error}\n`);
  process.exit(1);
}

async function serve(options: ConfigOptions): Promise<void> {
  const config = await configFrom(options).catch(fail);
  const logger = pino({ level: config.logLevel, base: { pid: process.pid } });
  logger.info({ config: config.source ?? null, root: config.root }, 'server starting');
  let running: RunningServer | undefined;
  let stopping = false;
  const finish = (server: RunningServer): void => {
    logger.info({ requests: server.server.inFlight }, 'server stopping');
    server.close().then(
      () => {
        logger.info('server stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'server stopped with errors');
        process.exit(1);
      },
    );
  };
  // Installed before the listeners open: a signal during start-up stops it cleanly too.
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.info({ signal }, 'already stopping');
      return;
    }
    stopping = true;
    logger.info({ signal }, 'stop requested');
    if (running !== undefined) finish(running);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Users and service tokens are re-read as their files change; SIGHUP applies the
  // config file's log level. Every other field needs a restart.
  process.on('SIGHUP', () => {
    configFrom(options).then(
      (next) => {
        logger.level = next.logLevel;
        logger.info(
          { logLevel: next.logLevel },
          'configuration reloaded: log level applied; other changes need a restart',
        );
      },
      (error: unknown) => {
        logger.warn(
          { err: error instanceof Error ? error.message : String(error) },
          'configuration reload failed; nothing changed',
        );
      },
    );
  });
  running = await runServer(config, logger).catch((error: unknown) => {
    logger.fatal({ err: error }, 'server failed to start');
    fail(error);
  });
  if (stopping) finish(running);
}

async function addUser(options: AddUserOptions): Promise<void> {
  const config = await configFrom(options).catch(fail);
  let quota: number | null = null;
  if (options.quota !== undefined) {
    const bytes = parseByteSize(options.quota);
    if (bytes === undefined) fail(new Error(`--quota: not a byte size: ${options.quota}`));
    quota = bytes;
  }
  const store = await FileUserStore.open(config.root).catch(fail);
  const addition: { uuid?: string; quota: number | null } = { quota };
  if (options.uuid !== undefined) addition.uuid = options.uuid;
  const { user, token } = await store.add(addition).catch(fail);
  await store.close();
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ uuid: user.uuid, token, quota: user.quota })}\n`);
    return;
  }
  const quotaText =
    user.quota === null ? `server default (${config.defaultQuota} bytes)` : `${user.quota} bytes`;
  process.stdout.write(
    [
      `uuid:  ${user.uuid}`,
      `token: ${token}`,
      `quota: ${quotaText}`,
      'The token is shown only this once; the server keeps only its hash.',
      '',
    ].join('\n'),
  );
}

/**
 * `soledad server [--config F] [--root DIR]` runs the blobs server;
 * `soledad server add-user [--uuid U] [--quota BYTES] [--json]` adds a user to it.
 */
export function registerServerCommands(program: Command): void {
  const server = program
    .command('server')
    .description('run the blobs HTTP server')
    .option(
      '-c, --config <file>',
      'config file, JSON or TOML (default /etc/soledad/server.toml if present)',
    )
    .option('--root <dir>', 'storage root, overriding the config file')
    .action(async (options: ConfigOptions) => {
      await serve(options);
    });

  server
    .command('add-user')
    .description('add a user and print its uuid and token (shown only once)')
    .option('--uuid <uuid>', 'uuid of the new user (default: a random one)')
    .option(
      '--quota <bytes>',
      'quota in bytes, or with a unit such as 5GiB (default: the server default)',
    )
    .option('--json', 'print {"uuid", "token", "quota"} as JSON')
    .action(async (_options: AddUserOptions, command: Command) => {
      await addUser(command.optsWithGlobals<AddUserOptions>());
    });
}
