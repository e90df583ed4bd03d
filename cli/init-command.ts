import type { Command } from 'commander';

export function registerInitCommand(_program: Command): void {}
