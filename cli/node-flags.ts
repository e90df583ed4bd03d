/**
 * V8 flags every long-running `soledad` process runs with: the `#!` line of `main.js`,
 * the units that `install-units` writes, `npm start` and the benchmarks all pass these
 * (a test keeps them in step).
 *
 * - `--max-semi-space-size=8`: a young generation of at most 8 MiB semi-spaces (V8's
 *   default is 16) keeps the daemon's RSS about 25 MB lower under a burst of small puts at
 *   the same speed.
 * - `--heap-growing-percent=100`: after a full collection, the old generation may grow to
 *   twice what survived it before the next one (V8 picks up to four times on its own).
 *   Under a burst, most of what the daemon promotes is garbage a second later (snapshots,
 *   batches, envelopes of attachments already settled). Three runs each of 1000 × 10 KB
 *   put + upload (`SOLEDAD_BENCH_PARTS=workloads SOLEDAD_BENCH_WORKLOADS='1000 ×'`):
 *   daemon RSS max 144–150 MB against 181–185 MB without it, SYNCED after 1.24–1.42 s
 *   against 1.41–1.49 s. `--optimize-for-size` went lower (116–124 MB) but took 1.39–1.65 s.
 * - `--expose-gc` lets the daemon run a full collection when it goes idle after a burst
 *   (`daemon/idle-collector.ts`), which hands back the heap V8 grew for it.
 */
export const NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=8',
  '--heap-growing-percent=100',
  '--expose-gc',
];
