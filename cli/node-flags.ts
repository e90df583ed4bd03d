/**
 * V8 flags every long-running `soledad` process runs with: the `#!` line of `main.js`,
 * the units that `install-units` writes, `npm start` and the benchmarks all pass these
 * (a test keeps them in step). A young generation of at most 8 MiB semi-spaces (V8's
 * default is 16) keeps the daemon's RSS about 25 MB lower under a burst of small puts at
 * the same speed (`npm run bench`, daemon workloads). `--expose-gc` lets the daemon run a
 * full collection when it goes idle after a burst (`daemon/idle-collector.ts`), which
 * hands back the heap V8 grew for it.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8', '--expose-gc'];
