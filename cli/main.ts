#!/usr/bin/env node
import { Command } from 'commander';
import { registerDemoCommand } from './demo-command.js';
import { registerInitCommand } from './init-command.js';
import { registerServerCommands } from './server-command.js';

const program = new Command()
  .name('soledad')
  .description('Encrypted document attachments: blobs server, sync daemon and client')
  .showHelpAfterError();

registerServerCommands(program);
registerInitCommand(program);
registerDemoCommand(program);

await program.parseAsync(process.argv);
