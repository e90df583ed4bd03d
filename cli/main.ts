#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=100 --expose-gc
import { Command } from 'commander';

type Register = (program: Command) => void;

/**
 * Each command's module, loaded only when it runs: `soledad server` then holds none of the
 * daemon's code (about 20 MB of RSS), and a client command starts faster.
 */
const MODULES: Record<string, () => Promise<Register>> = {
  server: () => import('./server-command.js').then((m) => m.registerServerCommands),
  init: () => import('./init-command.js').then((m) => m.registerInitCommand),
  daemon: () => import('./daemon-command.js').then((m) => m.registerDaemonCommand),
  client: () => import('./client-commands.js').then((m) => m.registerClientCommands),
  demo: () => import('./demo-command.js').then((m) => m.registerDemoCommand),
  config: () => import('./config-command.js').then((m) => m.registerConfigCommand),
  'install-units': () => import('./units-command.js').then((m) => m.registerUnitsCommand),
};

const CLIENT_COMMANDS = new Set([
  'put',
  'get',
  'state',
  'ls',
  'rm',
  'evict',
  'pin',
  'unpin',
  'sync',
  'status',
  'events',
]);

/** The module of the command named first on the command line; all of them for help, errors. */
function modulesFor(args: readonly string[]): string[] {
  const first = args[0];
  if (first !== undefined && first in MODULES) return [first];
  if (first !== undefined && CLIENT_COMMANDS.has(first)) return ['client'];
  return Object.keys(MODULES);
}

const program = new Command()
  .name('soledad')
  .description('Encrypted document attachments: blobs server, sync daemon and client')
  .showHelpAfterError();

for (const name of modulesFor(process.argv.slice(2))) (await MODULES[name]!())(program);

await program.parseAsync(process.argv);
