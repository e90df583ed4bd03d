// The daemon end to end. The daemon runs in a child process (this same file with
// `--daemon`), driven in-process through its library API (createDoc, putAttachment,
// putDoc, evictAttachment, downloadAttachment), so its RSS is its own and the figures are
// the daemon's, not the RPC's. A real `soledad server` child process on a loopback port
// holds the blobs; a bare node:http peer (child process) is the baseline.
//
// 1. The original Soledad's workloads: 1000 × 10 KB, 100 × 100 KB, 10 × 1 MB, 1 × 10 MB
//    and 1 × 1 GiB (SOLEDAD_BENCH_BIG_BYTES, a multiple of 1 MiB). For each: put every
//    attachment (and the document pointing at it), 16 at once, and time until all are
//    SYNCED (the daemon's own upload queue, MEDIUM priority, small blobs batched through
//    `/stream`); then evict all and download all back. Beside it, in the same run: raw
//    loopback PUTs (and GETs) of as many bytes to (from) the bare peer, 8 at once; for
//    1000 × 10 KB the disk's own time to durably create as many files (bench/lib/
//    disk-publish); for the big one a PUT of the same file straight to the blobs server.
//    Targets: 1000 × 10 KB SYNCED in < 2 s; the 1 GiB upload (LOCAL → SYNCED) at ≥ 0.5 of
//    the raw PUT throughput; daemon RSS < 200 MB throughout (VmRSS every 100 ms).
// 2. Scale: SOLEDAD_BENCH_RECORDS (default 1,000,000) settled SYNCED attachment records
//    and the documents pointing at them, written straight into a daemon store through
//    `Store.commit` in large batches (no envelope files, no server blobs: only start-up
//    is measured). Then a daemon child on that data folder with no remote sync
//    (`initialSyncDelayMs: -1`): time from spawn to ready and to the first answered
//    request (target < 5 s), RSS through start and over the 10 s after ready (target
//    < 300 MB); `status` must count every record at once (the counts are kept in LevelDB).
// 3. In motion: SOLEDAD_BENCH_IN_MOTION (default 10,000) small attachments put into a
//    fresh daemon whose blobs server is unreachable, so they stay in motion (LOCAL:
//    `local.queued` / `local.retrying`; past 1000 the waiting ones are passivated to their
//    records, and the unreachable server is only probed), watched for 12 s more: RSS
//    target < 300 MB with all of them still LOCAL.
// Each workload starts after `sync(1)`; 1000 × 10 KB also with the page cache dropped when
// run as root (bench/lib/settle-disk.ts says why), and the disk baseline's files stay until
// the end: on ext4 without a journal, files created soon after a removal are slowed by it.
// The 1 GiB source file is read once before its baselines, so they read it from the page
// cache, as the daemon reads its envelope.
// RSS is VmRSS, shown with its split into anonymous memory and mapped files (RssFile:
// code, and LevelDB tables, which LevelDB reads through mmap).
//
// Other knobs: SOLEDAD_BENCH_PARTS (any of `workloads`, `scale`, `motion`, comma-separated),
// SOLEDAD_BENCH_WORKLOADS (label fragments, e.g. `1000 ×,GiB`), SOLEDAD_BENCH_CHILD_FLAGS
// (node flags for the daemon child, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
// Exits 0 whether targets pass or fail (the table says which); non-zero only when the
// bench itself breaks.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { createActor, fromPromise, waitFor } from 'xstate';
import { NODE_FLAGS } from '../cli/node-flags.js';
import { DocumentSealer } from '../daemon/crypto/document-sealer.js';
import { envelopeSize } from '../daemon/crypto/envelope-size.js';
import { Daemon, type DaemonOptions } from '../daemon/daemon.js';
import type { DaemonStatus } from '../daemon/daemon-api.js';
import { Store } from '../daemon/store/index.js';
import {
  attachmentMachine,
  attachmentStatePath,
  DEFAULT_MAX_CORRUPTIONS,
  DEFAULT_RETRY_DELAYS_MS,
  type TransferInput,
} from '../machines/index.js';
import {
  type ServerProcess,
  type ServerUser,
  startServer,
} from '../test/helpers/server-process.js';
import { DEFAULT_NAMESPACE } from '../wire/ids.js';
import { RawPeerProcess } from './lib/child-processes.js';
import { diskPublishRate } from './lib/disk-publish.js';
import { type RssBreakdown, readRss, sampleRssBreakdown } from './lib/rss-sampler.js';
import { settleDisk, syncDisk } from './lib/settle-disk.js';
import { markdownTable, megabytes, perSecond, seconds } from './lib/stats.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BIG_BYTES = Number(process.env.SOLEDAD_BENCH_BIG_BYTES ?? GiB);
const RECORDS = Number(process.env.SOLEDAD_BENCH_RECORDS ?? 1_000_000);
const IN_MOTION = Number(process.env.SOLEDAD_BENCH_IN_MOTION ?? 10_000);
const PARTS = new Set((process.env.SOLEDAD_BENCH_PARTS ?? 'workloads,scale,motion').split(','));
/** Only the workloads whose label contains one of these (comma-separated); default all. */
const ONLY = process.env.SOLEDAD_BENCH_WORKLOADS?.split(',');
/**
 * Node flags of the daemon child: those the `soledad` binary runs with, unless
 * SOLEDAD_BENCH_CHILD_FLAGS says otherwise (e.g. add `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 */
const CHILD_FLAGS = (process.env.SOLEDAD_BENCH_CHILD_FLAGS ?? NODE_FLAGS.join(' '))
  .split(' ')
  .filter(Boolean);
/** Attachments put at once by the driver in the daemon child. */
const PUTS_IN_FLIGHT = 16;
/** How long the scale part watches the daemon after ready. */
const AFTER_READY_MS = 10_000;
/** Raw PUTs / GETs at once for the baseline. */
const RAW_IN_FLIGHT = 8;
/** Records (and documents) per commit when populating the store. */
const POPULATE_BATCH = 5000;
/** Plaintext size of each populated record and each attachment in motion. */
const SCALE_SIZE = 10_000;
/** How long the attachments in motion are watched after the last put (one retry wave). */
const IN_MOTION_HOLD_MS = 12_000;
const SERVER_CONFIG = { max_blob_size: '4 GiB', default_quota: '1 TiB' };
const BLOCK = randomBytes(MiB);

if (!Number.isSafeInteger(BIG_BYTES) || BIG_BYTES <= 0 || BIG_BYTES % MiB !== 0) {
  throw new Error('SOLEDAD_BENCH_BIG_BYTES must be a positive multiple of 1 MiB');
}
if (!Number.isSafeInteger(RECORDS) || RECORDS < POPULATE_BATCH) {
  throw new Error(`SOLEDAD_BENCH_RECORDS must be an integer ≥ ${POPULATE_BATCH}`);
}
if (!Number.isSafeInteger(IN_MOTION) || IN_MOTION < 1) {
  throw new Error('SOLEDAD_BENCH_IN_MOTION must be a positive integer');
}

interface Workload {
  label: string;
  count: number;
  size: number;
  /** Read from a file (the big one) rather than from memory. */
  fromFile: boolean;
}

const WORKLOADS: Workload[] = [
  { label: '1000 × 10 KB', count: 1000, size: 10_000, fromFile: false },
  { label: '100 × 100 KB', count: 100, size: 100_000, fromFile: false },
  { label: '10 × 1 MB', count: 10, size: 1_000_000, fromFile: false },
  { label: '1 × 10 MB', count: 1, size: 10_000_000, fromFile: false },
  { label: `1 × ${sizeLabel(BIG_BYTES)}`, count: 1, size: BIG_BYTES, fromFile: true },
];

// ---------------------------------------------------------------------------------------
// The daemon child: `--daemon <json args>`; commands as JSON lines on stdin, answers as
// JSON lines on stdout.

interface ChildArgs {
  dataDir: string;
  secret: string;
  deviceId: string;
  remote: { url: string; uuid: string; token: string };
}

interface WorkloadArgs {
  count: number;
  size: number;
  file?: string;
}

interface WorkloadResult {
  envelopeBytes: number;
  putSeconds: number;
  syncedSeconds: number;
  /** From the last `putAttachment` resolving to the last SYNCED. */
  uploadTailSeconds: number;
  evictSeconds: number;
  downloadSeconds: number;
  liveAfter: number;
  /** process.memoryUsage() of the daemon child at its largest RSS (sampled every 100 ms). */
  memoryAtPeak: NodeJS.MemoryUsage;
}

interface InMotionResult {
  putSeconds: number;
  live: number;
  local: number;
  uploadsQueued: number;
  reachable: boolean | null;
  lastError: string | null;
  memory: NodeJS.MemoryUsage;
}

type Command =
  | { cmd: 'workload'; args: WorkloadArgs }
  | { cmd: 'probe'; blobId: string }
  | { cmd: 'status' }
  | { cmd: 'memory'; gc?: boolean }
  | { cmd: 'inMotion'; count: number; size: number };

async function runDaemonChild(args: ChildArgs): Promise<void> {
  const openStarted = performance.now();
  const options: DaemonOptions = {
    dataDir: args.dataDir,
    secret: Buffer.from(args.secret, 'hex'),
    deviceId: args.deviceId,
    remote: args.remote,
    syncIntervalMs: 0,
    initialSyncDelayMs: -1,
    stopTimeoutMs: 5000,
  };
  const daemon = await Daemon.open(options);
  const openMs = performance.now() - openStarted;
  const send = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
  // performance.now() counts from this process's start.
  send({ ready: true, openMs, sinceStartMs: performance.now(), live: daemon.liveAttachmentCount });

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const { id, command } = JSON.parse(line) as { id: number; command: Command };
    handle(daemon, command).then(
      (result) => send({ id, result }),
      (error: unknown) => send({ id, error: String((error as Error)?.stack ?? error) }),
    );
  });
  // SIGTERM or a vanished parent (stdin closed) stop the daemon cleanly.
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    lines.once('close', () => resolve());
  });
  await daemon.close();
  process.exit(0);
}

async function handle(daemon: Daemon, command: Command): Promise<unknown> {
  switch (command.cmd) {
    case 'workload':
      return workload(daemon, command.args);
    case 'probe': {
      const started = performance.now();
      const info = await daemon.getAttachmentInfo(command.blobId);
      return { ms: performance.now() - started, state: info?.state, sinceStartMs: started };
    }
    case 'status':
      return { status: await daemon.status(), live: daemon.liveAttachmentCount };
    case 'inMotion':
      return inMotion(daemon, command.count, command.size);
    case 'memory':
      if (command.gc === true) globalThis.gc?.();
      return process.memoryUsage();
  }
}

/** `count` workers pulling indexes 0..total-1 until none are left. */
async function inParallel(
  total: number,
  workers: number,
  fn: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(workers, total) }, worker));
}

/** Plaintext of attachment `index`: a slice of the random block, or repeated blocks. */
function memorySource(index: number, size: number): Readable {
  if (size < BLOCK.length) {
    const offset = (index * 7919) % (BLOCK.length - size);
    return Readable.from([BLOCK.subarray(offset, offset + size)], { objectMode: false });
  }
  async function* blocks(): AsyncGenerator<Buffer> {
    for (let sent = 0; sent < size; sent += BLOCK.length) {
      yield BLOCK.subarray(0, Math.min(BLOCK.length, size - sent));
    }
  }
  return Readable.from(blocks(), { objectMode: false });
}

/** Puts `count` attachments, waits until all are SYNCED, evicts all and downloads all back. */
async function workload(daemon: Daemon, args: WorkloadArgs): Promise<WorkloadResult> {
  const { count, size } = args;
  const ids: string[] = [];
  const synced = new Set<string>();
  let wanted = Number.POSITIVE_INFINITY;
  let allSynced!: () => void;
  const allSyncedPromise = new Promise<void>((resolve) => {
    allSynced = resolve;
  });
  let lastSyncedAt = 0;
  const check = () => {
    if (synced.size >= wanted && ids.every((id) => synced.has(id))) allSynced();
  };
  // Uploads may finish before the put that queued them resolves: record every SYNCED.
  const off = daemon.onEvent((event) => {
    if (event.type !== 'attachment.state' || event.machineState !== 'synced') return;
    synced.add(event.blobId);
    lastSyncedAt = performance.now();
    if (synced.size >= wanted) check();
  });
  let envelopeBytes = 0;
  let lastPutAt = 0;
  const memory = sampleMemory();
  const started = performance.now();
  try {
    await inParallel(count, PUTS_IN_FLIGHT, async (i) => {
      const doc = await daemon.createDoc({ name: `bench-${i}`, size });
      const source =
        args.file === undefined
          ? memorySource(i, size)
          : createReadStream(args.file, { highWaterMark: MiB });
      const info = await daemon.putAttachment(doc.id, source);
      lastPutAt = performance.now();
      ids.push(info.blobId);
      envelopeBytes += info.size;
      await daemon.putDoc(doc.id, { ...doc.content, blob_id: info.blobId }, doc.rev);
    });
    const putDone = performance.now();
    wanted = count;
    check();
    await withDeadline(allSyncedPromise, 900_000, () => `${synced.size} of ${count} SYNCED`);
    const syncedDone = Math.max(lastSyncedAt, putDone);
    off();

    const evictStarted = performance.now();
    await inParallel(count, PUTS_IN_FLIGHT, async (i) => {
      const info = await daemon.evictAttachment(ids[i]!);
      if (info.state !== 2) throw new Error(`evicted ${ids[i]} is in state ${info.machineState}`);
    });
    const evictDone = performance.now();
    await inParallel(count, PUTS_IN_FLIGHT, async (i) => {
      const info = await daemon.downloadAttachment(ids[i]!);
      if (info.state !== 3) throw new Error(`downloaded ${ids[i]} is in ${info.machineState}`);
    });
    const downloadDone = performance.now();

    // Outside the timings: the first and the last come back whole.
    for (const blobId of new Set([ids[0]!, ids.at(-1)!])) {
      let bytes = 0;
      for await (const chunk of await daemon.openAttachment(blobId)) {
        bytes += (chunk as Buffer).length;
      }
      if (bytes !== size) throw new Error(`${blobId} came back with ${bytes} of ${size} bytes`);
    }
    return {
      envelopeBytes,
      putSeconds: (putDone - started) / 1000,
      syncedSeconds: (syncedDone - started) / 1000,
      uploadTailSeconds: (syncedDone - lastPutAt) / 1000,
      evictSeconds: (evictDone - evictStarted) / 1000,
      downloadSeconds: (downloadDone - evictDone) / 1000,
      liveAfter: daemon.liveAttachmentCount,
      memoryAtPeak: memory.stop(),
    };
  } finally {
    off();
    memory.stop();
  }
}

/** process.memoryUsage() every 100 ms until `stop()`, which returns the one of largest RSS. */
function sampleMemory(): { stop(): NodeJS.MemoryUsage } {
  let peak = process.memoryUsage();
  const timer = setInterval(() => {
    const now = process.memoryUsage();
    if (now.rss > peak.rss) peak = now;
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return peak;
    },
  };
}

/** Puts `count` small attachments that cannot be uploaded (the server is unreachable). */
async function inMotion(daemon: Daemon, count: number, size: number): Promise<InMotionResult> {
  const started = performance.now();
  await inParallel(count, PUTS_IN_FLIGHT, async (i) => {
    const doc = await daemon.createDoc({ name: `motion-${i}`, size });
    const info = await daemon.putAttachment(doc.id, memorySource(i, size));
    await daemon.putDoc(doc.id, { ...doc.content, blob_id: info.blobId }, doc.rev);
  });
  const putSeconds = (performance.now() - started) / 1000;
  const status = await daemon.status();
  return {
    putSeconds,
    live: daemon.liveAttachmentCount,
    local: status.attachments.local,
    uploadsQueued: status.queues.uploadsQueued,
    reachable: status.server.reachable,
    lastError: status.server.lastError,
    memory: process.memoryUsage(),
  };
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what()}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------
// The parent.

/** The daemon child process, spoken to with JSON lines. */
class DaemonChild {
  readonly pid: number;
  readonly ready: { openMs: number; sinceStartMs: number; live: number };
  /** ms from spawn to the ready line. */
  readonly readyMs: number;
  readonly spawnedAt: number;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  readonly #waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  #next = 0;

  private constructor(
    child: ChildProcess,
    exited: Promise<void>,
    ready: DaemonChild['ready'],
    spawnedAt: number,
    readyAt: number,
    lines: ReturnType<typeof createInterface>,
  ) {
    this.#child = child;
    this.pid = child.pid!;
    this.#exited = exited;
    this.ready = ready;
    this.spawnedAt = spawnedAt;
    this.readyMs = readyAt - spawnedAt;
    lines.on('line', (line) => {
      if (!line.startsWith('{')) return;
      const message = JSON.parse(line) as { id?: number; result?: unknown; error?: string };
      if (message.id === undefined) return;
      const waiter = this.#waiting.get(message.id);
      this.#waiting.delete(message.id);
      if (message.error !== undefined) waiter?.reject(new Error(`daemon child: ${message.error}`));
      else waiter?.resolve(message.result);
    });
    void exited.then(() => {
      for (const waiter of this.#waiting.values()) waiter.reject(new Error('daemon child exited'));
      this.#waiting.clear();
    });
  }

  /**
   * Spawns the child; `onSpawn(pid)` runs at once (to start sampling its RSS). Resolves
   * once the daemon is open.
   */
  static async start(args: ChildArgs, onSpawn?: (pid: number) => void): Promise<DaemonChild> {
    const spawnedAt = performance.now();
    const child = spawn(
      process.execPath,
      [
        '--expose-gc',
        ...CHILD_FLAGS,
        fileURLToPath(import.meta.url),
        '--daemon',
        JSON.stringify(args),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (child.pid !== undefined) onSpawn?.(child.pid);
    const lines = createInterface({ input: child.stdout! });
    try {
      const ready = await new Promise<DaemonChild['ready']>((resolve, reject) => {
        const onLine = (line: string) => {
          if (!line.startsWith('{')) return;
          const message = JSON.parse(line) as { ready?: boolean } & DaemonChild['ready'];
          if (message.ready !== true) return;
          lines.off('line', onLine);
          resolve(message);
        };
        lines.on('line', onLine);
        child.once('error', reject);
        void exited.then(() => reject(new Error('the daemon child exited before it was ready')));
        setTimeout(() => reject(new Error('the daemon child was not ready in 120 s')), 120_000);
      });
      return new DaemonChild(child, exited, ready, spawnedAt, performance.now(), lines);
    } catch (error) {
      killQuietly(child.pid);
      await exited;
      throw error;
    }
  }

  call<T>(command: Command): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.stdin!.write(`${JSON.stringify({ id, command })}\n`);
    });
  }

  /** SIGTERM (the daemon closes cleanly), SIGKILL by PID if it takes over 20 s. */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    killQuietly(this.pid, 'SIGTERM');
    const timer = setTimeout(() => killQuietly(this.pid), 20_000);
    await this.#exited;
    clearTimeout(timer);
  }
}

function killQuietly(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

interface Row {
  measure: string;
  figure: string;
  baselineLabel: string;
  baseline: string;
  ratio: string;
  target: string;
  result: string;
}

const rows: Row[] = [];

function row(fields: Partial<Row> & Pick<Row, 'measure' | 'figure'>): void {
  rows.push({
    baselineLabel: '—',
    baseline: '—',
    ratio: '—',
    target: '(info)',
    result: '—',
    ...fields,
  });
}

function progress(text: string): void {
  console.log(`  … ${text}`);
}

function loadText(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
}

function sizeLabel(bytes: number): string {
  if (bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes % MiB === 0) return `${bytes / MiB} MiB`;
  return `${bytes} B`;
}

function mbps(bytes: number, secs: number): string {
  return `${(bytes / 1e6 / secs).toFixed(0)} MB/s`;
}

function timeAndRate(secs: number, bytes: number): string {
  return `${seconds(secs)} (${mbps(bytes, secs)})`;
}

function memoryText(usage: NodeJS.MemoryUsage): string {
  const mb = (bytes: number) => (bytes / 1e6).toFixed(0);
  return (
    `rss ${mb(usage.rss)} MB, heap ${mb(usage.heapUsed)}/${mb(usage.heapTotal)} MB, ` +
    `external ${mb(usage.external)} MB (array buffers ${mb(usage.arrayBuffers)} MB)`
  );
}

function passFail(ok: boolean): string {
  return ok ? 'PASS' : 'FAIL';
}

async function expectOk(response: { statusCode: number; body: { text(): Promise<string> } }) {
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`raw peer: HTTP ${response.statusCode}`);
  return text;
}

/** Seconds for `count` raw PUTs of `size` bytes each, `RAW_IN_FLIGHT` at once. */
async function rawPuts(
  pool: Pool,
  count: number,
  size: number,
  file?: string,
  path = '/sink',
): Promise<number> {
  const started = performance.now();
  await inParallel(count, RAW_IN_FLIGHT, async (i) => {
    let body: Buffer | Readable;
    if (file !== undefined) body = createReadStream(file, { highWaterMark: MiB });
    else if (size < BLOCK.length) {
      const offset = (i * 7919) % (BLOCK.length - size);
      body = BLOCK.subarray(offset, offset + size);
    } else body = memorySource(i, size);
    await expectOk(
      await pool.request({
        method: 'PUT',
        path,
        headers: { 'content-length': String(size) },
        body,
      }),
    );
  });
  return (performance.now() - started) / 1000;
}

/** Seconds for `count` raw GETs of `size` bytes each, `RAW_IN_FLIGHT` at once. */
async function rawGets(pool: Pool, count: number, size: number): Promise<number> {
  const started = performance.now();
  await inParallel(count, RAW_IN_FLIGHT, async () => {
    const response = await pool.request({ method: 'GET', path: `/source?bytes=${size}` });
    let received = 0;
    for await (const chunk of response.body) received += (chunk as Buffer).length;
    if (response.statusCode !== 200 || received !== size) throw new Error('raw GET failed');
  });
  return (performance.now() - started) / 1000;
}

/** Reads all of `path` once, so that it is in the page cache when a baseline reads it. */
async function readWhole(path: string): Promise<void> {
  for await (const _ of createReadStream(path, { highWaterMark: MiB })) {
    // Only the reading matters.
  }
}

async function writeSourceFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let written = 0; written < bytes; written += MiB) await handle.write(BLOCK);
  } finally {
    await handle.close();
  }
}

function childArgs(dataDir: string, remote: ChildArgs['remote'], secret: Buffer, device: string) {
  return { dataDir, secret: secret.toString('hex'), deviceId: device, remote };
}

/** Seconds for one PUT of `file` to the blobs server itself (undici, 1 MiB reads); deleted after. */
async function serverPut(server: ServerProcess, user: ServerUser, file: string): Promise<number> {
  const pool = new Pool(server.url, { connections: 1 });
  const path = `/blobs/${user.uuid}/${randomUUID()}`;
  const headers = { authorization: user.authorization };
  try {
    const started = performance.now();
    const { size } = await stat(file);
    await expectOk(
      await pool.request({
        method: 'PUT',
        path,
        headers: { ...headers, 'content-length': String(size) },
        body: createReadStream(file, { highWaterMark: MiB }),
      }),
    );
    const secs = (performance.now() - started) / 1000;
    await expectOk(await pool.request({ method: 'DELETE', path, headers }));
    return secs;
  } finally {
    await pool.close();
  }
}

function rssText(rss: RssBreakdown): string {
  return `${megabytes(rss.rss)} (anon ${megabytes(rss.anon)}, files ${megabytes(rss.file)})`;
}

async function workloads(dir: string, server: ServerProcess, raw: RawPeerProcess): Promise<void> {
  const user = await server.addUser({ quota: '1 TiB' });
  const remote = { url: server.url, uuid: user.uuid, token: user.token };
  const selected = WORKLOADS.filter(
    (w) => ONLY === undefined || ONLY.some((part) => w.label.includes(part)),
  );
  const bigFile = join(dir, 'big.bin');
  if (selected.some((w) => w.fromFile)) {
    progress(`writing the ${sizeLabel(BIG_BYTES)} source file`);
    await writeSourceFile(bigFile, BIG_BYTES);
  }
  const pool = new Pool(raw.url, { connections: RAW_IN_FLIGHT });
  let overall: RssBreakdown = { rss: 0, anon: 0, file: 0 };
  let idle = 0;
  const child = await DaemonChild.start(
    childArgs(join(dir, 'daemon1'), remote, randomBytes(32), 'bench-device-1'),
  );
  try {
    idle = readRss(child.pid) ?? 0;
    for (const w of selected) {
      globalThis.gc?.();
      const bytes = w.count * w.size;
      const isSmall = w.count === 1000;
      const isBig = w.fromFile;
      // Only the small files are bound by creating them (see settleDisk); the others start
      // after a plain sync, with the source file in the page cache like the daemon's envelopes.
      if (isSmall) await settleDisk();
      else await syncDisk();
      if (isBig) await readWhole(bigFile);
      // Baselines first: the disk's own limit for as many small durable files, the raw
      // peer, and for the big one the blobs server alone.
      const disk = isSmall
        ? w.count /
          (await diskPublishRate({
            keep: true,
            parent: dir,
            files: w.count,
            data: BLOCK,
            size: w.size,
            inFlight: PUTS_IN_FLIGHT,
            syncDir: true,
          }))
        : undefined;
      const rawPut = await rawPuts(pool, w.count, w.size, isBig ? bigFile : undefined);
      const rawGet = await rawGets(pool, w.count, w.size);
      const direct = isBig ? await serverPut(server, user, bigFile) : undefined;
      const durable = isBig ? await rawPuts(pool, 1, w.size, bigFile, '/file-sink') : undefined;
      const sampler = sampleRssBreakdown(child.pid, 100);
      let result: WorkloadResult;
      let rss: RssBreakdown;
      try {
        result = await child.call<WorkloadResult>({
          cmd: 'workload',
          args: { count: w.count, size: w.size, ...(isBig ? { file: bigFile } : {}) },
        });
      } finally {
        rss = sampler.stop();
      }
      if (rss.rss > overall.rss) overall = rss;
      progress(
        `${w.label}: SYNCED ${seconds(result.syncedSeconds)} (put ${seconds(result.putSeconds)}), ` +
          `raw PUTs ${seconds(rawPut)}; evict ${seconds(result.evictSeconds)}, ` +
          `download ${seconds(result.downloadSeconds)}; RSS max ${rssText(rss)}; ` +
          `live actors after ${result.liveAfter}; at peak: ${memoryText(result.memoryAtPeak)}`,
      );
      row({
        measure: `${w.label}: put + upload, all SYNCED`,
        figure: timeAndRate(result.syncedSeconds, bytes),
        baselineLabel: `raw PUTs to a node:http sink, ${RAW_IN_FLIGHT} at once`,
        baseline: timeAndRate(rawPut, bytes),
        ratio: (rawPut / result.syncedSeconds).toFixed(2),
        ...(isSmall ? { target: '< 2 s', result: passFail(result.syncedSeconds < 2) } : {}),
      });
      if (disk !== undefined) {
        row({
          measure: `${w.label}: put + upload, all SYNCED, beside the disk`,
          figure: seconds(result.syncedSeconds),
          baselineLabel: `disk: create+write+fsync+link+fsync folder of ${w.count} files, ${PUTS_IN_FLIGHT} at once`,
          baseline: seconds(disk),
          ratio: (disk / result.syncedSeconds).toFixed(2),
        });
      }
      row({
        measure: `${w.label}: of which put (encrypt to the local store, ${PUTS_IN_FLIGHT} at once, putDoc)`,
        figure: timeAndRate(result.putSeconds, bytes),
      });
      if (isBig) {
        const uploadRate = result.envelopeBytes / result.uploadTailSeconds;
        const rawRate = bytes / rawPut;
        row({
          measure: `${w.label}: upload alone (LOCAL → SYNCED, envelope from the local store)`,
          figure: timeAndRate(result.uploadTailSeconds, result.envelopeBytes),
          baselineLabel: 'raw PUT of the source file (1 MiB reads)',
          baseline: timeAndRate(rawPut, bytes),
          ratio: (uploadRate / rawRate).toFixed(2),
          target: '≥ 0.50 of raw',
          result: passFail(uploadRate / rawRate >= 0.5),
        });
        row({
          measure: `${w.label}: upload alone, beside a durable raw sink`,
          figure: timeAndRate(result.uploadTailSeconds, result.envelopeBytes),
          baselineLabel: 'raw PUT of the source file to a sink that writes it to a file + fsync',
          baseline: timeAndRate(durable!, bytes),
          ratio: (uploadRate / (bytes / durable!)).toFixed(2),
          target: '≥ 0.50 of raw (same durable work)',
          result: passFail(uploadRate / (bytes / durable!) >= 0.5),
        });
        row({
          measure: `${w.label}: upload alone, beside the blobs server alone`,
          figure: timeAndRate(result.uploadTailSeconds, result.envelopeBytes),
          baselineLabel:
            'PUT of the source file straight to the blobs server (undici, 1 MiB reads)',
          baseline: timeAndRate(direct!, bytes),
          ratio: (uploadRate / (bytes / direct!)).toFixed(2),
        });
      }
      row({
        measure: `${w.label}: evict all + download all back`,
        figure: timeAndRate(result.evictSeconds + result.downloadSeconds, bytes),
        baselineLabel: `raw GETs from a node:http source, ${RAW_IN_FLIGHT} at once`,
        baseline: timeAndRate(rawGet, bytes),
        ratio: (rawGet / (result.evictSeconds + result.downloadSeconds)).toFixed(2),
      });
      row({
        measure: `${w.label}: of which evict / download`,
        figure: `${seconds(result.evictSeconds)} / ${seconds(result.downloadSeconds)}`,
      });
      row({
        measure: `${w.label}: daemon RSS, max`,
        figure: rssText(rss),
        baselineLabel: 'daemon RSS idle, after open',
        baseline: megabytes(idle),
        target: '< 200 MB',
        result: passFail(rss.rss < 200e6),
      });
    }
  } finally {
    await Promise.allSettled([child.stop(), pool.close()]);
    await rm(bigFile, { force: true });
  }
  row({
    measure: 'daemon RSS, max over every workload',
    figure: rssText(overall),
    baselineLabel: 'daemon RSS idle, after open',
    baseline: megabytes(idle),
    target: '< 200 MB',
    result: passFail(overall.rss < 200e6),
  });
}

/**
 * A persisted snapshot of an attachment in `synced`, made by a real actor whose upload
 * succeeds at once; records are this with their own ids and size.
 */
async function syncedTemplate(size: number) {
  const machine = attachmentMachine.provide({
    actors: { upload: fromPromise<void, TransferInput>(async () => undefined) },
  });
  const actor = createActor(machine, {
    input: {
      blobId: 'template',
      docId: 'template',
      namespace: DEFAULT_NAMESPACE,
      size,
      priority: 'MEDIUM',
      retryDelaysMs: [...DEFAULT_RETRY_DELAYS_MS],
      maxCorruptions: DEFAULT_MAX_CORRUPTIONS,
    },
  });
  actor.start();
  actor.send({ type: 'STORED', size });
  actor.send({ type: 'START' });
  await waitFor(actor, (snapshot) => attachmentStatePath(snapshot) === 'synced', {
    timeout: 5000,
  });
  const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot())) as {
    context: Record<string, unknown>;
  };
  actor.stop();
  return persisted;
}

/**
 * Writes `RECORDS` SYNCED attachment records and their documents into a new store in
 * `dataDir`, `POPULATE_BATCH` of each per commit, two commits in flight.
 */
async function populate(
  dataDir: string,
  secret: Buffer,
  deviceId: string,
): Promise<{ seconds: number; sample: string }> {
  const started = performance.now();
  const store = await Store.open(join(dataDir, 'db'), {
    sealer: new DocumentSealer(secret),
    deviceId,
  });
  let sample = '';
  try {
    const size = envelopeSize(SCALE_SIZE, { blobId: randomUUID() });
    const template = await syncedTemplate(size);
    const inFlight = new Set<Promise<unknown>>();
    let reported = performance.now();
    for (let done = 0; done < RECORDS; done += POPULATE_BATCH) {
      const count = Math.min(POPULATE_BATCH, RECORDS - done);
      const commit = store.commit((tx) => {
        for (let i = 0; i < count; i++) {
          const docId = randomUUID();
          const blobId = randomUUID();
          tx.createDoc({ name: `file-${done + i}`, size: SCALE_SIZE, blob_id: blobId }, docId);
          tx.putAttachment(
            { ...template, context: { ...template.context, blobId, docId, size } },
            { event: false },
          );
          sample = blobId;
        }
      });
      inFlight.add(commit);
      void commit.finally(() => inFlight.delete(commit));
      if (inFlight.size >= 2) await Promise.race(inFlight);
      if (performance.now() - reported > 15_000) {
        reported = performance.now();
        progress(`populating: ${done + count} of ${RECORDS} records`);
      }
    }
    await Promise.all(inFlight);
  } finally {
    await store.close();
  }
  return { seconds: (performance.now() - started) / 1000, sample };
}

/** A loopback port with nothing listening on it (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function scale(dir: string): Promise<void> {
  const secret = randomBytes(32);
  const deviceId = 'bench-device-2';
  const dataDir = join(dir, 'daemon2');
  const n = RECORDS.toLocaleString('en-US');
  progress(`populating ${n} SYNCED attachment records and their documents`);
  const { seconds: populateSeconds, sample } = await populate(dataDir, secret, deviceId);
  const dbBytes = await folderBytes(join(dataDir, 'db'));
  progress(`populated in ${seconds(populateSeconds)}: ${perSecond(RECORDS / populateSeconds)}`);
  row({
    measure: `populate: ${n} SYNCED records + documents, ${POPULATE_BATCH} of each per commit`,
    figure: `${seconds(populateSeconds)} (${perSecond(RECORDS / populateSeconds)}; LevelDB ${megabytes(dbBytes)})`,
  });

  // The remote is unreachable: no sync runs before ready, and the attachments put later
  // stay in motion.
  const remote = { url: `http://127.0.0.1:${await closedPort()}`, uuid: randomUUID(), token: 'x' };
  let sampler: { stop(): RssBreakdown } | undefined;
  let child: DaemonChild;
  try {
    child = await DaemonChild.start(childArgs(dataDir, remote, secret, deviceId), (pid) => {
      sampler = sampleRssBreakdown(pid, 50);
    });
  } catch (error) {
    sampler?.stop();
    throw error;
  }
  try {
    const probe = await child.call<{ ms: number; state: number; sinceStartMs: number }>({
      cmd: 'probe',
      blobId: sample,
    });
    const answeredMs = performance.now() - child.spawnedAt;
    const readyRss = sampler!.stop();
    if (probe.state !== 3) throw new Error(`the sample record is in state ${probe.state}`);
    progress(
      `ready ${seconds(child.readyMs / 1000)} after spawn (Daemon.open ${seconds(child.ready.openMs / 1000)}), ` +
        `first answer ${seconds(answeredMs / 1000)} after spawn; RSS max ${rssText(readyRss)}; ` +
        `live actors ${child.ready.live}`,
    );
    row({
      measure: `start on ${n} settled records: spawn → ready`,
      figure: seconds(child.readyMs / 1000),
      baselineLabel: 'of which Daemon.open',
      baseline: seconds(child.ready.openMs / 1000),
      target: '< 5 s',
      result: passFail(child.readyMs < 5000),
    });
    row({
      measure: `start on ${n} settled records: spawn → first request answered (attachment info)`,
      figure: seconds(answeredMs / 1000),
      target: '< 5 s',
      result: passFail(answeredMs < 5000),
    });
    row({
      measure: 'daemon RSS, max from spawn to first answer',
      figure: rssText(readyRss),
      target: '< 300 MB',
      result: passFail(readyRss.rss < 300e6),
    });

    // Status counts are kept in LevelDB with every change: exact at once, with no pass
    // over the records. Then the background start-up work (the orphan sweep reads only
    // the `unclaimed` index) is watched for AFTER_READY_MS.
    const afterReady = sampleRssBreakdown(child.pid, 100);
    let counted = 0;
    let afterReadyRss: RssBreakdown;
    try {
      const { status } = await child.call<{ status: DaemonStatus }>({ cmd: 'status' });
      counted = status.attachments.synced;
      await new Promise((resolve) => setTimeout(resolve, AFTER_READY_MS));
    } finally {
      afterReadyRss = afterReady.stop();
    }
    const afterMemory = await child.call<NodeJS.MemoryUsage>({ cmd: 'memory' });
    progress(
      `status at ready: ${counted} synced; RSS max over ${AFTER_READY_MS / 1000} s after ready ` +
        `${rssText(afterReadyRss)}; now ${memoryText(afterMemory)}`,
    );
    row({
      measure: 'status counts right after ready (SYNCED)',
      figure: counted.toLocaleString('en-US'),
      target: RECORDS.toLocaleString('en-US'),
      result: passFail(counted === RECORDS),
    });
    row({
      measure: `daemon RSS, max over the ${AFTER_READY_MS / 1000} s after ready (background start-up work)`,
      figure: rssText(afterReadyRss),
      target: '< 300 MB',
      result: passFail(afterReadyRss.rss < 300e6),
    });
  } finally {
    sampler?.stop();
    await child.stop();
  }
}

/**
 * `IN_MOTION` small attachments put into a fresh daemon whose blobs server is unreachable:
 * every one stays a live actor (queued, uploading or retrying) and the retries come round.
 */
async function inMotionPart(dir: string): Promise<void> {
  const remote = { url: `http://127.0.0.1:${await closedPort()}`, uuid: randomUUID(), token: 'x' };
  const child = await DaemonChild.start(
    childArgs(join(dir, 'daemon3'), remote, randomBytes(32), 'bench-device-3'),
  );
  try {
    const idleHeap = (await child.call<NodeJS.MemoryUsage>({ cmd: 'memory', gc: true })).heapUsed;
    const motion = sampleRssBreakdown(child.pid, 100);
    let motionResult: InMotionResult;
    let motionRss: RssBreakdown;
    let liveAfterHold = 0;
    let localAfterHold = 0;
    let heldMemory: NodeJS.MemoryUsage;
    try {
      motionResult = await child.call<InMotionResult>({
        cmd: 'inMotion',
        count: IN_MOTION,
        size: SCALE_SIZE,
      });
      await new Promise((resolve) => setTimeout(resolve, IN_MOTION_HOLD_MS));
      const held = await child.call<{ live: number; status: DaemonStatus }>({ cmd: 'status' });
      liveAfterHold = held.live;
      localAfterHold = held.status.attachments.local;
      heldMemory = await child.call<NodeJS.MemoryUsage>({ cmd: 'memory' });
    } finally {
      motionRss = motion.stop();
    }
    const m = IN_MOTION.toLocaleString('en-US');
    progress(
      `${m} in motion: put in ${seconds(motionResult.putSeconds)}, live actors ${motionResult.live} ` +
        `(${liveAfterHold} ${IN_MOTION_HOLD_MS / 1000} s later), LOCAL ${motionResult.local}, ` +
        `uploads queued ${motionResult.uploadsQueued}, server reachable ${motionResult.reachable} ` +
        `(${motionResult.lastError}); RSS max ${rssText(motionRss)}; after the puts: ` +
        `${memoryText(motionResult.memory)}; ${IN_MOTION_HOLD_MS / 1000} s later: ${memoryText(heldMemory)}`,
    );
    row({
      measure: `${m} × 10 KB put with the server unreachable`,
      figure: `${seconds(motionResult.putSeconds)} (${perSecond(IN_MOTION / motionResult.putSeconds)})`,
    });
    // In motion = still LOCAL (queued or waiting to retry) at the end of the hold; past
    // `maxLiveIdle` (1000) the waiting ones are passivated to their records.
    row({
      measure: `daemon RSS, max with ${m} in motion (${localAfterHold} LOCAL after ${IN_MOTION_HOLD_MS / 1000} s; live actors ${motionResult.live}, then ${liveAfterHold})`,
      figure: rssText(motionRss),
      baselineLabel: 'JS heap used (garbage included) / allocated, at the end',
      baseline: `${megabytes(heldMemory.heapUsed)} / ${megabytes(heldMemory.heapTotal)}`,
      target: '< 300 MB',
      result: passFail(motionRss.rss < 300e6 && localAfterHold >= IN_MOTION),
    });
    const live = await child.call<NodeJS.MemoryUsage>({ cmd: 'memory', gc: true });
    row({
      measure: `JS heap of the ${m} in motion after a full GC (live objects)`,
      figure: megabytes(live.heapUsed),
      baselineLabel: 'per attachment in motion',
      baseline: `${((live.heapUsed - idleHeap) / IN_MOTION / 1000).toFixed(1)} KB`,
    });
  } finally {
    await child.stop();
  }
}

async function folderBytes(path: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(path)) total += (await stat(join(path, name))).size;
  return total;
}

function report(): void {
  console.log(
    `\n${markdownTable(
      [
        'measure',
        'daemon',
        'baseline, same run',
        'baseline',
        'ratio (daemon rate / baseline rate)',
        'target',
        'result',
      ],
      rows.map((r) => [
        r.measure,
        r.figure,
        r.baselineLabel,
        r.baseline,
        r.ratio,
        r.target,
        r.result,
      ]),
    )}\n`,
  );
}

async function main(): Promise<void> {
  console.log(
    `command: ${process.execPath} ${process.execArgv.join(' ')} ${process.argv.slice(1).join(' ')}`,
  );
  console.log(
    `settings: big attachment ${sizeLabel(BIG_BYTES)}, ${RECORDS} records, ${IN_MOTION} in motion, ` +
      `parts ${[...PARTS].join(',')}; node ${process.version}; load average at start ${loadText()}`,
  );
  const started = performance.now();
  const dir = await mkdtemp(join(tmpdir(), 'soledad-bench-daemon-'));
  let raw: RawPeerProcess | undefined;
  let server: ServerProcess | undefined;
  try {
    if (PARTS.has('workloads')) {
      raw = await RawPeerProcess.start();
      server = await startServer({ config: SERVER_CONFIG });
      console.log(`1. workloads (server pid ${server.pid}, raw peer pid ${raw.pid})`);
      await workloads(dir, server, raw);
      await Promise.allSettled([server.cleanup(), raw.stop()]);
      server = undefined;
      raw = undefined;
    }
    if (PARTS.has('scale')) {
      console.log(`2. scale: ${RECORDS} settled records (load average ${loadText()})`);
      await scale(dir);
    }
    if (PARTS.has('motion')) {
      console.log(`3. ${IN_MOTION} attachments in motion (load average ${loadText()})`);
      await inMotionPart(dir);
    }
  } finally {
    await Promise.allSettled([server?.cleanup(), raw?.stop()]);
    await rm(dir, { recursive: true, force: true });
  }
  report();
  console.log(
    `load average at end ${loadText()}; whole bench ${seconds((performance.now() - started) / 1000)}`,
  );
}

// Last, so that every class above is initialised before either side runs.
if (process.argv[2] === '--daemon') {
  await runDaemonChild(JSON.parse(process.argv[3]!) as ChildArgs);
} else {
  await main().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error('the daemon bench broke:', error);
      process.exit(1);
    },
  );
}
