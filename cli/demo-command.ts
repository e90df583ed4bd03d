import { mkdir, open, readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { resolveServerConfig } from '../server/config.js';
import { type RunningServer, runServer } from '../server/run-server.js';
import { encodeTokenAuth } from '../wire/auth.js';

interface DemoOptions {
  dir: string;
  port: string;
}

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

async function demo(options: DemoOptions): Promise<void> {
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`soledad demo: --port must be 0..65535, not ${options.port}\n`);
    process.exit(2);
  }
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
  const shown = (path: string): string => relative(process.cwd(), path) || '.';
  const curl = `curl -K ${shown(join(dir, 'curl-auth.conf'))}`;
  process.stdout.write(
    [
      'Soledad demo is running.',
      `  blobs server  ${url}   (services listener ${running.server.services.url})`,
      `  data          ${shown(config.root)}`,
      `  logs          ${shown(logPath)}`,
      `  demo user     ${user.uuid}`,
      `  credentials   ${shown(join(dir, 'demo-user.json'))} (uuid and token, mode 0600)`,
      '',
      'Try it:',
      `  ${curl} -X PUT --data-binary 'hello' ${url}/blobs/${user.uuid}/hello-1`,
      `  ${curl} ${url}/blobs/${user.uuid}/hello-1`,
      `  ${curl} ${url}/blobs/${user.uuid}?order_by=date`,
      '',
      'Ctrl-C stops the demo.',
      '',
    ].join('\n'),
  );

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write('Stopping the demo...\n');
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`soledad demo: ${error instanceof Error ? error.message : error}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** `soledad demo`: a blobs server on loopback with a demo user, data in `.demo/`. */
export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run a demo on loopback: a blobs server with a demo user, data in .demo/')
    .option('--dir <dir>', 'folder for the demo data', '.demo')
    .option('--port <port>', 'port of the blobs server (0 picks a free one)', '0')
    .action(async (options: DemoOptions) => {
      await demo(options);
    });
}
