#!/usr/bin/env node
import { Command } from 'commander';
import { registerClientCommands } from './client-commands.js';
import { registerConfigCommand } from './config-command.js';
import { registerDaemonCommand } from './daemon-command.js';
import { registerDemoCommand } from './demo-command.js';
import { registerInitCommand } from './init-command.js';
import { registerServerCommands } from './server-command.js';
import { registerUnitsCommand } from './units-command.js';

const program = new Command()
  .name('soledad')
  .description('Encrypted document attachments: blobs server, sync daemon and client')
  .showHelpAfterError();

registerServerCommands(program);
registerInitCommand(program);
registerDaemonCommand(program);
registerClientCommands(program);
registerDemoCommand(program);
registerConfigCommand(program);
registerUnitsCommand(program);

await program.parseAsync(process.argv);
