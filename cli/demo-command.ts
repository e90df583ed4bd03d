import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { pino } from 'pino';
import { loadDaemonConfig } from '../daemon/config.js';
import { createSecretsFile, WEAK_TEST_SCRYPT_PARAMS } from '../daemon/crypto/secrets-file.js';
import { secretsFilePath } from '../daemon/paths.js';
import { RPC_TOKEN_FILE } from '../rpc/rpc-paths.js';
import { resolveServerConfig } from '../server/config.js';
import { type RunningServer, runServer } from '../server/run-server.js';
import { encodeTokenAuth } from '../wire/auth.js';
import { type RunningDaemon, startDaemon } from './daemon-command.js';

interface DemoOptions {
  dir: string;
  port: string;
  watch?: string;
}

/** This command's own entry point, for the CLI lines the demo prints. */
const CLI_MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

interface DemoUser {
  uuid: string;
  token: string;
}

/** Writes a secret file that must not exist yet, readable by its owner only. */
async function writeSecret(path: string, text: string): Promise<void> {
  const handle = await open(path, 'w', 0o600);
  try {
    await handle.chmod(0o600);
    await handle.writeFile(text, 'utf8');
  } finally {
    await handle.close();
  }
}

/**
 * The demo user: read from `demo-user.json` when an earlier run created it and the server
 * still knows it, else created now. Its token lives only in files of mode 0600.
 */
async function demoUser(running: RunningServer, dir: string): Promise<DemoUser> {
  const path = join(dir, 'demo-user.json');
  try {
    const saved = JSON.parse(await readFile(path, 'utf8')) as DemoUser;
    if ((await running.users.authenticate(saved.uuid, saved.token)) !== undefined) return saved;
  } catch {
    // no usable saved user: make one
  }
  const { user, token } = await running.users.add();
  const created = { uuid: user.uuid, token };
  await writeSecret(path, `${JSON.stringify(created, null, 2)}\n`);
  await writeSecret(
    join(dir, 'curl-auth.conf'),
    `header = "Authorization: ${encodeTokenAuth(user.uuid, token)}"\n`,
  );
  return created;
}

/** Reads the demo passphrase, creating it (random, mode 0600) on the first run. */
async function demoPassphrase(path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const passphrase = randomBytes(24).toString('base64url');
  await writeSecret(path, `${passphrase}\n`);
  return passphrase;
}

/** Creates the demo device's storage secret unless an earlier run did. */
async function ensureSecrets(dataDir: string, passphrase: string): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const weak = process.env.SOLEDAD_TEST_WEAK_SCRYPT === '1';
  try {
    await createSecretsFile(secretsFilePath(dataDir), passphrase, {
      ...(weak ? { scrypt: { ...WEAK_TEST_SCRYPT_PARAMS } } : {}),
    });
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'secrets_file_exists') throw error;
  }
}

/** Writes the token file the daemon reads, with the demo user's current token. */
async function writeServerToken(path: string, token: string): Promise<void> {
  await rm(path, { force: true });
  await writeSecret(path, `${token}\n`);
}

async function demo(options: DemoOptions): Promise<void> {
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`soledad demo: --port must be 0..65535, not ${options.port}\n`);
    process.exit(2);
  }
  // Installed first: Ctrl-C while the demo starts stops it cleanly once it is up.
  let stopRequested = false;
  let stopNow: (() => void) | undefined;
  const onSignal = (): void => {
    if (stopRequested) return;
    stopRequested = true;
    stopNow?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const dir = resolve(options.dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const config = resolveServerConfig(
    { public: { port }, services: { port: 0 } },
    { root: join(dir, 'server') },
  );
  const logPath = join(dir, 'server.log');
  const logger = pino({ level: 'info' }, pino.destination({ dest: logPath, sync: true }));
  const running = await runServer(config, logger);
  const user = await demoUser(running, dir);
  const url = running.server.public.url;

  const paths = {
    data: join(dir, 'daemon'),
    config: join(dir, 'config'),
    watch: options.watch === undefined ? join(dir, 'watch') : resolve(options.watch),
    passphrase: join(dir, 'passphrase'),
    serverToken: join(dir, 'server-token'),
    daemonConfig: join(dir, 'daemon.toml'),
    daemonLog: join(dir, 'daemon.log'),
  };
  let daemon: RunningDaemon;
  try {
    await mkdir(paths.watch, { recursive: true });
    const passphrase = await demoPassphrase(paths.passphrase);
    await ensureSecrets(paths.data, passphrase);
    await writeServerToken(paths.serverToken, user.token);
    await writeFile(
      paths.daemonConfig,
      [
        '# Written by `soledad demo` on every start: the server port changes between runs.',
        `data_dir = ${JSON.stringify(paths.data)}`,
        `passphrase_file = ${JSON.stringify(paths.passphrase)}`,
        '',
        '[server]',
        `url = ${JSON.stringify(url)}`,
        `uuid = ${JSON.stringify(user.uuid)}`,
        `token_file = ${JSON.stringify(paths.serverToken)}`,
        '',
        '[rpc]',
        'port = 0',
        '',
        '[sync]',
        'interval_ms = 10000',
        '',
        '[[watch]]',
        `path = ${JSON.stringify(paths.watch)}`,
        '',
      ].join('\n'),
    );
    const daemonConfig = await loadDaemonConfig({
      configPath: paths.daemonConfig,
      env: { ...process.env, XDG_CONFIG_HOME: paths.config },
    });
    const daemonLogger = pino(
      { level: daemonConfig.logLevel },
      pino.destination({ dest: paths.daemonLog, sync: true }),
    );
    daemon = await startDaemon(daemonConfig, passphrase, daemonLogger);
  } catch (error) {
    await running.close().catch(() => undefined);
    throw error;
  }

  const shown = (path: string): string => relative(process.cwd(), path) || '.';
  const curl = `curl -K ${shown(join(dir, 'curl-auth.conf'))}`;
  const cli = `XDG_CONFIG_HOME=${paths.config} node ${shown(CLI_MAIN)}`;
  process.stdout.write(
    [
      'Soledad demo is running.',
      `  blobs server  ${url}   (services listener ${running.server.services.url})`,
      `  daemon RPC    ${daemon.rpc.url}   (token in ${shown(join(paths.config, 'soledad', RPC_TOKEN_FILE))}, mode 0600)`,
      `  watch folder  ${shown(paths.watch)}   (files dropped here are encrypted and uploaded)`,
      `  data          server ${shown(config.root)}, daemon ${shown(paths.data)}`,
      `  logs          ${shown(logPath)}, ${shown(paths.daemonLog)}`,
      `  demo user     ${user.uuid}`,
      `  credentials   ${shown(join(dir, 'demo-user.json'))} (uuid and token, mode 0600)`,
      `  passphrase    ${shown(paths.passphrase)} (mode 0600)`,
      '',
      'Try it:',
      `  cp README.md ${shown(paths.watch)}/`,
      `  ${cli} ls`,
      `  ${cli} put package.json --upload`,
      `  ${cli} status`,
      `  ${curl} ${url}/blobs/${user.uuid}?order_by=date`,
      '',
      'Ctrl-C stops the demo.',
      '',
    ].join('\n'),
  );

  stopNow = (): void => {
    process.stdout.write('Stopping the demo...\n');
    daemon
      .close()
      .finally(() => running.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          process.stderr.write(`soledad demo: ${error instanceof Error ? error.message : error}\n`);
          process.exit(1);
        },
      );
  };
  if (stopRequested) stopNow();
}

/**
 * `soledad demo`: a blobs server with a demo user and a daemon with a watch folder, all on
 * loopback, data in `.demo/`.
 */
export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'run a demo on loopback: a blobs server, a daemon and a watch folder, data in .demo/',
    )
    .option('--dir <dir>', 'folder for the demo data', '.demo')
    .option('--port <port>', 'port of the blobs server (0 picks a free one)', '0')
    .option('--watch <dir>', 'the watch folder (default: watch/ in the demo folder)')
    .action(async (options: DemoOptions) => {
      await demo(options);
    });
}
