#!/usr/bin/env node
// Runs the compiled benchmarks under dist/bench, one process each, in name order.
// Usage: node scripts/run-bench.mjs [name-fragment ...]
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = join(process.env.SOLEDAD_DIST ?? 'dist', 'bench');
const filters = process.argv.slice(2);
const files = readdirSync(root)
  .filter((name) => name.endsWith('.bench.js'))
  .filter((name) => filters.length === 0 || filters.some((f) => name.includes(f)))
  .sort();
let failed = 0;
for (const name of files) {
  console.log(`\n## ${name.replace(/\.bench\.js$/, '')}\n`);
  const result = spawnSync(process.execPath, ['--expose-gc', join(root, name)], {
    stdio: 'inherit',
  });
  if (result.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
