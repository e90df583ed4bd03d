// The blobs server against what the machine itself can do, measured in the same run:
//
// 1. 1 GiB PUT and GET through a `soledad server` child process against a bare node:http
//    peer (also a child process) that discards / serves the same bytes; same undici client,
//    body streamed from one reused random 1 MiB buffer. Target ≥ 0.7 of raw both ways.
//    The server's RSS (VmRSS every 100 ms) during the transfers: target max < 100 MB.
// 2. 1000 × 10 KB blobs as keep-alive PUTs (8 in flight) and as one `/stream` upload,
//    against the disk's own limit: create, write, fsync and link 1000 files of 10 KB with
//    16 in flight on the same filesystem. Target: stream ≥ 0.7 of the disk limit. Both the
//    bench and the server run with libuv's default four threads, so at most four of the
//    baseline's 16 files are in a system call at once; with UV_THREADPOOL_SIZE=16 set for
//    both, the baseline measured 10,394/s here and the stream 2,678/s. One uncounted
//    warm-up (1000 blobs each way) comes first.
// 3. Listing 100,000 blobs of one user (`order_by=date`, and `only_count=true`). Target < 1 s.
//    Beside it: the raw peer serving a JSON array of as many ids, fetched and parsed the same
//    way. The blobs (random UUID ids, 64 B each) are written by default straight through
//    `FilesystemBackend` in a child process while the server is stopped, then the server is
//    started again on the same root: through `/stream` (SOLEDAD_BENCH_POPULATE=stream, 8
//    requests of 1000 blobs in flight) they took ~200 s here, most of the time budget.
//
// Each figure is the median of SOLEDAD_BENCH_REPS rounds (default 3; the small blobs take
// two more, a second each, because the disk's small-file rate swings most), with the spread.
// Disk-bound measures start after `sync(1)`, so none pays for the writeback of the one
// before, and alternate their order between rounds; the small-file ones also start with the
// page cache dropped (when run as root), because on ext4 without a journal every file
// created soon after many removals is slowed by them (bench/lib/settle-disk.ts). Files are
// removed only at the end.
// Knobs for quick runs: SOLEDAD_BENCH_BYTES (a multiple of 1 MiB, default 1 GiB),
// SOLEDAD_BENCH_REPS, SOLEDAD_BENCH_LIST_BLOBS (default 100000), SOLEDAD_BENCH_POPULATE
// (backend or stream). Exits 0 whether targets pass or fail (the table says which);
// non-zero only when the bench itself breaks.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Pool } from 'undici';
import {
  type ServerProcess,
  type ServerUser,
  startServer,
} from '../test/helpers/server-process.js';
import { encodeUploadManifest, encodeUploadStream, parseUploadResults } from '../wire/stream.js';
import { RawPeerProcess, runChildScript } from './lib/child-processes.js';
import { diskDirectWriteRate, diskPublishRate, diskWriteRate } from './lib/disk-publish.js';
import { readRss, sampleRss } from './lib/rss-sampler.js';
import { settleDisk, syncDisk } from './lib/settle-disk.js';
import {
  gbPerSecond,
  markdownTable,
  median,
  megabytes,
  perSecond,
  seconds,
  spread,
} from './lib/stats.js';

const MiB = 1024 * 1024;
const TOTAL = Number(process.env.SOLEDAD_BENCH_BYTES ?? 1024 * MiB);
const REPS = Number(process.env.SOLEDAD_BENCH_REPS ?? 3);
const LIST_BLOBS = Number(process.env.SOLEDAD_BENCH_LIST_BLOBS ?? 100_000);
const SMALL_COUNT = 1000;
const SMALL_SIZE = 10_000;
const PUTS_IN_FLIGHT = 8;
const DISK_IN_FLIGHT = 16;
/** Blobs of the uncounted warm-up upload and PUTs before the small-blob rounds. */
const WARMUP_COUNT = SMALL_COUNT;
const LIST_BLOB_SIZE = 64;
const LIST_BATCH = 1000;
const LIST_STREAMS_IN_FLIGHT = 8;
/** Writes in flight (and libuv threads) of the child that populates through the backend. */
const LIST_BACKEND_IN_FLIGHT = 128;
const POPULATE = process.env.SOLEDAD_BENCH_POPULATE ?? 'backend';
const SERVER_CONFIG = { max_blob_size: '4 GiB', default_quota: '1 TiB' };
const BLOCK = randomBytes(MiB);

if (!Number.isSafeInteger(TOTAL) || TOTAL <= 0 || TOTAL % MiB !== 0) {
  throw new Error('SOLEDAD_BENCH_BYTES must be a positive multiple of 1 MiB');
}
if (!Number.isSafeInteger(REPS) || REPS < 1 || REPS > 20) {
  throw new Error('SOLEDAD_BENCH_REPS must be an integer in 1..20');
}
if (POPULATE !== 'backend' && POPULATE !== 'stream') {
  throw new Error('SOLEDAD_BENCH_POPULATE must be backend or stream');
}
if (!Number.isSafeInteger(LIST_BLOBS) || LIST_BLOBS < LIST_BATCH) {
  throw new Error(`SOLEDAD_BENCH_LIST_BLOBS must be an integer ≥ ${LIST_BATCH}`);
}

interface Row {
  measure: string;
  values: number[];
  format: (value: number) => string;
  baseline?: { label: string; values: number[] };
  /** How the ratio reads: figure / baseline. Absent: no ratio. */
  ratioTarget?: number;
  /** An absolute bound the median must stay under. */
  below?: number;
  targetText: string;
}

const rows: Row[] = [];

function progress(text: string): void {
  console.log(`  … ${text}`);
}

function loadText(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
}

async function* blocks(total: number): AsyncGenerator<Buffer, void, undefined> {
  for (let sent = 0; sent < total; sent += BLOCK.length) yield BLOCK;
}

async function expectStatus(
  response: { statusCode: number; body: { text(): Promise<string> } },
  what: string,
  status = 200,
): Promise<string> {
  const text = await response.body.text();
  if (response.statusCode !== status) {
    throw new Error(`${what}: HTTP ${response.statusCode}: ${text.slice(0, 300)}`);
  }
  return text;
}

/** Seconds to PUT `TOTAL` bytes to `path`, streamed from the reused block. */
async function timedPut(pool: Pool, path: string, headers: Record<string, string>) {
  const started = performance.now();
  const response = await pool.request({
    method: 'PUT',
    path,
    headers: { ...headers, 'content-length': String(TOTAL) },
    body: Readable.from(blocks(TOTAL), { objectMode: false, highWaterMark: MiB }),
  });
  await expectStatus(response, `PUT ${path}`);
  return (performance.now() - started) / 1000;
}

/** Seconds to GET `path` and read exactly `TOTAL` bytes of it. */
async function timedGet(pool: Pool, path: string, headers: Record<string, string>) {
  const started = performance.now();
  const response = await pool.request({ method: 'GET', path, headers });
  if (response.statusCode !== 200) await expectStatus(response, `GET ${path}`);
  let received = 0;
  for await (const chunk of response.body) received += (chunk as Buffer).length;
  if (received !== TOTAL) throw new Error(`GET ${path}: ${received} bytes, not ${TOTAL}`);
  return (performance.now() - started) / 1000;
}

/** Runs `task` while sampling the RSS of `pid`; returns its result and the largest RSS. */
async function withRss<T>(pid: number, task: () => Promise<T>): Promise<[T, number]> {
  const sampler = sampleRss(pid, 100);
  try {
    const result = await task();
    return [result, sampler.stop()];
  } finally {
    sampler.stop();
  }
}

/** Runs `raw` then `server`, or the other way round. */
async function inOrder<T>(
  rawFirst: boolean,
  raw: () => Promise<T>,
  server: () => Promise<T>,
): Promise<{ raw: T; server: T }> {
  if (rawFirst) {
    const rawResult = await raw();
    return { raw: rawResult, server: await server() };
  }
  const serverResult = await server();
  return { raw: await raw(), server: serverResult };
}

async function largeTransfers(server: ServerProcess, user: ServerUser, raw: RawPeerProcess) {
  const serverPool = new Pool(server.url, { connections: 1 });
  const rawPool = new Pool(raw.url, { connections: 1 });
  const auth = { authorization: user.authorization };
  const put = {
    server: [] as number[],
    raw: [] as number[],
    rawFile: [] as number[],
    disk: [] as number[],
    direct: [] as number[],
  };
  const get = { server: [] as number[], raw: [] as number[] };
  const rss = {
    put: [] as number[],
    get: [] as number[],
    rawPut: [] as number[],
    rawGet: [] as number[],
  };
  const idle = readRss(server.pid) ?? 0;
  try {
    for (let rep = 1; rep <= REPS; rep++) {
      globalThis.gc?.();
      const id = randomUUID();
      const blobPath = `/blobs/${user.uuid}/${id}`;
      // Odd rounds measure the raw peer first, even rounds the server, so order cancels out.
      const rawFirst = rep % 2 === 1;
      const rawPut = async () => {
        await syncDisk();
        return withRss(raw.pid, () => timedPut(rawPool, '/sink', {}));
      };
      const serverPut = async () => {
        await syncDisk();
        return withRss(server.pid, () => timedPut(serverPool, blobPath, auth));
      };
      const rawGet = () => withRss(raw.pid, () => timedGet(rawPool, `/source?bytes=${TOTAL}`, {}));
      const serverGet = () => withRss(server.pid, () => timedGet(serverPool, blobPath, auth));
      const puts = await inOrder(rawFirst, rawPut, serverPut);
      const gets = await inOrder(rawFirst, rawGet, serverGet);
      const [rawPutSeconds, rawPutRss] = puts.raw;
      const [putSeconds, putRss] = puts.server;
      const [rawGetSeconds, rawGetRss] = gets.raw;
      const [getSeconds, getRss] = gets.server;
      await syncDisk();
      put.disk.push(await diskWriteRate(scratch, BLOCK, TOTAL, true));
      await syncDisk();
      put.direct.push(await diskDirectWriteRate(scratch, BLOCK, TOTAL, true));
      await syncDisk();
      put.rawFile.push(TOTAL / (await timedPut(rawPool, '/file-sink', {})));
      put.raw.push(TOTAL / rawPutSeconds);
      put.server.push(TOTAL / putSeconds);
      get.raw.push(TOTAL / rawGetSeconds);
      get.server.push(TOTAL / getSeconds);
      rss.put.push(putRss);
      rss.get.push(getRss);
      rss.rawPut.push(rawPutRss);
      rss.rawGet.push(rawGetRss);
      progress(
        `round ${rep}: PUT ${gbPerSecond(put.server.at(-1)!)} (raw ${gbPerSecond(put.raw.at(-1)!)}), ` +
          `GET ${gbPerSecond(get.server.at(-1)!)} (raw ${gbPerSecond(get.raw.at(-1)!)}), ` +
          `server RSS max ${megabytes(Math.max(putRss, getRss))}; disk write+fsync ${gbPerSecond(put.disk.at(-1)!)}, ` +
          `O_DIRECT ${gbPerSecond(put.direct.at(-1)!)}`,
      );
    }
  } finally {
    await Promise.all([serverPool.close(), rawPool.close()]);
  }
  const size = TOTAL === 1024 * MiB ? '1 GiB' : `${TOTAL / MiB} MiB`;
  rows.push(
    {
      measure: `${size} PUT through the server`,
      values: put.server,
      format: gbPerSecond,
      baseline: { label: 'raw node:http sink (child process)', values: put.raw },
      ratioTarget: 0.7,
      targetText: '≥ 0.70 of raw',
    },
    {
      measure: `${size} PUT through the server, beside a durable raw sink`,
      values: put.server,
      format: gbPerSecond,
      baseline: {
        label:
          'raw node:http sink writing the body to a file (buffered, 1 MiB writev) + fsync (child process)',
        values: put.rawFile,
      },
      ratioTarget: 0.7,
      targetText: '≥ 0.70 of raw (same durable work)',
    },
    {
      measure: `${size} PUT through the server, beside the disk`,
      values: put.server,
      format: gbPerSecond,
      baseline: { label: `disk: write ${size} in 1 MiB writes + fsync`, values: put.disk },
      targetText: '(info)',
    },
    {
      measure: `${size} PUT through the server, beside the device`,
      values: put.server,
      format: gbPerSecond,
      baseline: {
        label: `disk: write ${size} with O_DIRECT (2 MiB, aligned, 1 in flight) + fsync`,
        values: put.direct,
      },
      targetText: '(info)',
    },
    {
      measure: `${size} GET through the server`,
      values: get.server,
      format: gbPerSecond,
      baseline: { label: 'raw node:http source (child process)', values: get.raw },
      ratioTarget: 0.7,
      targetText: '≥ 0.70 of raw',
    },
    {
      measure: 'server RSS, max during the PUT',
      values: rss.put,
      format: megabytes,
      baseline: {
        label: `raw sink's RSS max (server idle: ${megabytes(idle)})`,
        values: rss.rawPut,
      },
      below: 100e6,
      targetText: '< 100 MB',
    },
    {
      measure: 'server RSS, max during the GET',
      values: rss.get,
      format: megabytes,
      baseline: { label: `raw source's RSS max`, values: rss.rawGet },
      below: 100e6,
      targetText: '< 100 MB',
    },
  );
}

function smallIds(count: number): string[] {
  return Array.from({ length: count }, () => randomUUID());
}

/** Blobs per second for `SMALL_COUNT` separate PUTs, `PUTS_IN_FLIGHT` at once. */
async function separatePuts(
  pool: Pool,
  user: ServerUser,
  namespace: string,
  count = SMALL_COUNT,
): Promise<number> {
  const ids = smallIds(count);
  const body = BLOCK.subarray(0, SMALL_SIZE);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const response = await pool.request({
        method: 'PUT',
        path: `/blobs/${user.uuid}/${id}?namespace=${namespace}`,
        headers: { authorization: user.authorization, 'content-length': String(SMALL_SIZE) },
        body,
      });
      await expectStatus(response, `PUT ${id}`);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: PUTS_IN_FLIGHT }, worker));
  return count / ((performance.now() - started) / 1000);
}

/** Uploads `count` blobs of `size` bytes in one `/stream` request; resolves with its seconds. */
async function streamUpload(
  pool: Pool,
  user: ServerUser,
  namespace: string,
  count: number,
  size: number,
): Promise<number> {
  const sources = smallIds(count).map((id, i) => {
    const offset = (i * size) % (BLOCK.length - size);
    const bytes = BLOCK.subarray(offset, offset + size);
    return {
      id,
      size,
      async *body() {
        yield bytes;
      },
    };
  });
  const length = encodeUploadManifest(sources).length + count * size;
  const started = performance.now();
  const response = await pool.request({
    method: 'POST',
    path: `/stream/${user.uuid}?direction=upload&namespace=${namespace}`,
    headers: { authorization: user.authorization, 'content-length': String(length) },
    body: Readable.from(encodeUploadStream(sources), { objectMode: false }),
  });
  const results = parseUploadResults(await expectStatus(response, 'stream upload'));
  const seconds = (performance.now() - started) / 1000;
  const refused = Object.entries(results).filter(([, result]) => result !== 'created');
  if (refused.length > 0 || Object.keys(results).length !== count) {
    throw new Error(`stream upload: ${refused.length} refused, e.g. ${JSON.stringify(refused[0])}`);
  }
  return seconds;
}

async function smallBlobs(server: ServerProcess, user: ServerUser) {
  const pool = new Pool(server.url, { connections: PUTS_IN_FLIGHT });
  const disk: number[] = [];
  const diskDirSync: number[] = [];
  const puts: number[] = [];
  const streams: number[] = [];
  try {
    // Uncounted: the rounds measure the server's steady state, not V8 compiling the routes.
    await streamUpload(pool, user, 'warmup-stream', WARMUP_COUNT, SMALL_SIZE);
    await separatePuts(pool, user, 'warmup-puts', WARMUP_COUNT);
    for (let rep = 1; rep <= REPS + 2; rep++) {
      const common = {
        parent: scratch,
        keep: true,
        files: SMALL_COUNT,
        data: BLOCK,
        size: SMALL_SIZE,
        inFlight: DISK_IN_FLIGHT,
      };
      const measureDisk = async (): Promise<void> => {
        await settle();
        disk.push(await diskPublishRate({ ...common, syncDir: false }));
        await settle();
        diskDirSync.push(await diskPublishRate({ ...common, syncDir: true }));
      };
      const measurePuts = async (): Promise<void> => {
        await settle();
        puts.push(await separatePuts(pool, user, `small${rep}`));
      };
      const measureStream = async (): Promise<void> => {
        await settle();
        const seconds = await streamUpload(pool, user, `stream${rep}`, SMALL_COUNT, SMALL_SIZE);
        streams.push(SMALL_COUNT / seconds);
      };
      // The disk goes first in odd rounds and last in even ones; the stream upload goes
      // before the separate PUTs in odd rounds and after them in even ones.
      if (rep % 2 === 1) await measureDisk();
      if (rep % 2 === 1) await measureStream();
      await measurePuts();
      if (rep % 2 === 0) await measureStream();
      if (rep % 2 === 0) await measureDisk();
      progress(
        `round ${rep}: disk ${perSecond(disk.at(-1)!)} (with folder fsync ${perSecond(diskDirSync.at(-1)!)}), ` +
          `PUTs ${perSecond(puts.at(-1)!)}, stream ${perSecond(streams.at(-1)!)}`,
      );
    }
  } finally {
    await pool.close();
  }
  const diskLabel = `disk: create+write+fsync+link, ${DISK_IN_FLIGHT} in flight`;
  rows.push(
    {
      measure: `${SMALL_COUNT} × 10 KB, one \`/stream\` upload`,
      values: streams,
      format: perSecond,
      baseline: { label: diskLabel, values: disk },
      ratioTarget: 0.7,
      targetText: '≥ 0.70 of disk',
    },
    {
      measure: `${SMALL_COUNT} × 10 KB, separate keep-alive PUTs, ${PUTS_IN_FLIGHT} in flight`,
      values: puts,
      format: perSecond,
      baseline: { label: diskLabel, values: disk },
      targetText: '(info)',
    },
    {
      measure: 'disk, same, plus fsync of the folder after each link',
      values: diskDirSync,
      format: perSecond,
      baseline: { label: diskLabel, values: disk },
      targetText: '(info)',
    },
  );
}

async function timedJson(pool: Pool, path: string, headers: Record<string, string>) {
  const started = performance.now();
  const response = await pool.request({ method: 'GET', path, headers });
  const value = JSON.parse(await expectStatus(response, `GET ${path}`)) as unknown;
  return { value, seconds: (performance.now() - started) / 1000 };
}

/** Fills `user`'s default namespace through `/stream`, in concurrent batches; returns seconds. */
async function populateThroughStream(server: ServerProcess, user: ServerUser): Promise<number> {
  const pool = new Pool(server.url, { connections: LIST_STREAMS_IN_FLIGHT });
  try {
    const batches = Math.ceil(LIST_BLOBS / LIST_BATCH);
    let nextBatch = 0;
    let done = 0;
    const started = performance.now();
    let reported = started;
    const worker = async (): Promise<void> => {
      while (nextBatch < batches) {
        const batch = nextBatch++;
        const count = Math.min(LIST_BATCH, LIST_BLOBS - batch * LIST_BATCH);
        await streamUpload(pool, user, 'default', count, LIST_BLOB_SIZE);
        done += count;
        if (performance.now() - reported > 15_000) {
          reported = performance.now();
          progress(`populating: ${done} of ${LIST_BLOBS} blobs`);
        }
      }
    };
    await Promise.all(Array.from({ length: LIST_STREAMS_IN_FLIGHT }, worker));
    return (performance.now() - started) / 1000;
  } finally {
    await pool.close();
  }
}

/** Fills `user`'s default namespace through `FilesystemBackend` in a child process, with the server stopped. */
async function populateThroughBackend(root: string, user: ServerUser): Promise<number> {
  const { seconds } = await runChildScript<{ seconds: number }>(
    'populate-backend.js',
    {
      root,
      user: user.uuid,
      namespace: 'default',
      count: LIST_BLOBS,
      size: LIST_BLOB_SIZE,
      inFlight: LIST_BACKEND_IN_FLIGHT,
    },
    { env: { UV_THREADPOOL_SIZE: String(LIST_BACKEND_IN_FLIGHT) }, timeoutMs: 600_000 },
  );
  return seconds;
}

/**
 * Populates a new user with LIST_BLOBS blobs, then times listings. With the backend
 * population the first server is stopped and a second one started on the same root;
 * the caller's `cleanup()` of the first still removes that root.
 */
async function listing(first: ServerProcess, raw: RawPeerProcess) {
  const user = await first.addUser({ quota: '1 TiB' });
  let server = first;
  let how: string;
  let populateSeconds: number;
  if (POPULATE === 'stream') {
    progress(`populating ${LIST_BLOBS} blobs through /stream`);
    populateSeconds = await populateThroughStream(server, user);
    how = `through \`/stream\`, ${LIST_STREAMS_IN_FLIGHT} × ${LIST_BATCH}-blob requests in flight`;
  } else {
    const status = await first.stop('SIGTERM');
    if (status.code !== 0) throw new Error(`the server stopped with ${JSON.stringify(status)}`);
    progress(`populating ${LIST_BLOBS} blobs through FilesystemBackend, server stopped`);
    populateSeconds = await populateThroughBackend(first.root, user);
    how = `through \`FilesystemBackend\` (server stopped), ${LIST_BACKEND_IN_FLIGHT} writes in flight`;
    server = await startServer({ root: first.root, config: SERVER_CONFIG });
  }
  progress(
    `populated ${LIST_BLOBS} blobs of ${LIST_BLOB_SIZE} B ${how} in ${seconds(populateSeconds)}: ` +
      `${perSecond(LIST_BLOBS / populateSeconds)}`,
  );
  rows.push({
    measure: `populate: ${LIST_BLOBS} × ${LIST_BLOB_SIZE} B, ${how}`,
    values: [LIST_BLOBS / populateSeconds],
    format: perSecond,
    targetText: '(info)',
  });
  const pool = new Pool(server.url, { connections: 1 });
  const rawPool = new Pool(raw.url, { connections: 1 });
  const auth = { authorization: user.authorization };
  const ordered: number[] = [];
  const unordered: number[] = [];
  const counts: number[] = [];
  const rawIds: number[] = [];
  try {
    // The peer makes its id list on the first request; that is not what it stands for.
    await timedJson(rawPool, `/ids?n=${LIST_BLOBS}`, {});
    const base = `/blobs/${user.uuid}`;
    for (let rep = 1; rep <= REPS; rep++) {
      globalThis.gc?.();
      const rawRun = await timedJson(rawPool, `/ids?n=${LIST_BLOBS}`, {});
      const orderedRun = await timedJson(pool, `${base}?order_by=date`, auth);
      const unorderedRun = await timedJson(pool, base, auth);
      const countRun = await timedJson(pool, `${base}?only_count=true`, auth);
      for (const run of [orderedRun, unorderedRun]) {
        const length = (run.value as unknown[]).length;
        if (length !== LIST_BLOBS) throw new Error(`listing has ${length} ids, not ${LIST_BLOBS}`);
      }
      const { count } = countRun.value as { count: number };
      if (count !== LIST_BLOBS) throw new Error(`only_count says ${count}, not ${LIST_BLOBS}`);
      rawIds.push(rawRun.seconds);
      ordered.push(orderedRun.seconds);
      unordered.push(unorderedRun.seconds);
      counts.push(countRun.seconds);
      progress(
        `round ${rep}: order_by=date ${seconds(orderedRun.seconds)}, unordered ${seconds(unorderedRun.seconds)}, ` +
          `only_count ${seconds(countRun.seconds)}, raw JSON of as many ids ${seconds(rawRun.seconds)}`,
      );
    }
  } finally {
    await Promise.all([pool.close(), rawPool.close()]);
    if (server !== first) await server.cleanup();
  }
  const n = LIST_BLOBS.toLocaleString('en-US');
  const rawLabel = `raw node:http: JSON array of ${n} ids, fetched and parsed`;
  rows.push(
    {
      measure: `list ${n} blobs, \`order_by=date\``,
      values: ordered,
      format: seconds,
      baseline: { label: rawLabel, values: rawIds },
      below: 1,
      targetText: '< 1 s',
    },
    {
      measure: `list ${n} blobs, no order`,
      values: unordered,
      format: seconds,
      baseline: { label: rawLabel, values: rawIds },
      targetText: '(info)',
    },
    {
      measure: `count ${n} blobs, \`only_count=true\``,
      values: counts,
      format: seconds,
      baseline: { label: rawLabel, values: rawIds },
      targetText: '(info)',
    },
  );
}

function report(): void {
  const table = rows.map((row) => {
    const figure = median(row.values);
    const base = row.baseline === undefined ? undefined : median(row.baseline.values);
    const ratio = base === undefined ? undefined : figure / base;
    let result = '—';
    if (row.ratioTarget !== undefined && ratio !== undefined) {
      result = ratio >= row.ratioTarget ? 'PASS' : 'FAIL';
    } else if (row.below !== undefined) {
      result = figure < row.below ? 'PASS' : 'FAIL';
    }
    return [
      row.measure,
      row.format(figure),
      spread(row.values, row.format),
      row.baseline?.label ?? '—',
      base === undefined ? '—' : row.format(base),
      row.baseline === undefined ? '—' : spread(row.baseline.values, row.format),
      ratio === undefined ? '—' : ratio.toFixed(2),
      row.targetText,
      result,
    ];
  });
  console.log(
    `\n${markdownTable(
      [
        'measure',
        'server (median)',
        'spread',
        'baseline, same run',
        'baseline (median)',
        'spread',
        'ratio',
        'target',
        'result',
      ],
      table,
    )}\n`,
  );
}

/**
 * Where the baselines leave their files until the end of the bench: on ext4 without a
 * journal, files created in the minutes after a removal are slowed by it (see
 * bench/lib/settle-disk.ts), so nothing is removed between measures. The server's own blobs
 * of the large transfers are likewise deleted only at the end.
 */
let scratch = tmpdir();

/** Whether the small-file measures started with the page cache dropped (see `settleDisk`). */
let cacheDropped: boolean | undefined;

/** `settleDisk` before a small-file measure, remembering whether the cache could be dropped. */
async function settle(): Promise<void> {
  const dropped = await settleDisk();
  cacheDropped = (cacheDropped ?? true) && dropped;
}

async function main(): Promise<void> {
  console.log(
    `command: ${process.execPath} ${process.execArgv.join(' ')} ${process.argv.slice(1).join(' ')}`,
  );
  console.log(
    `settings: ${TOTAL / MiB} MiB large transfers, ${REPS} rounds, ${LIST_BLOBS} blobs listed; ` +
      `node ${process.version}; load average at start ${loadText()}`,
  );
  const started = performance.now();
  scratch = await mkdtemp(join(tmpdir(), 'soledad-bench-scratch-'));
  const raw = await RawPeerProcess.start({ scratch });
  let server: ServerProcess | undefined;
  try {
    server = await startServer({
      config: SERVER_CONFIG,
    });
    const user = await server.addUser({ quota: '1 TiB' });
    console.log(`server pid ${server.pid} at ${server.url}, raw peer pid ${raw.pid} at ${raw.url}`);
    console.log('1. large transfers');
    await largeTransfers(server, user, raw);
    console.log(`2. ${SMALL_COUNT} small blobs (load average ${loadText()})`);
    await smallBlobs(server, user);
    console.log(`3. listing (load average ${loadText()})`);
    await listing(server, raw);
  } finally {
    await Promise.allSettled([server?.cleanup(), raw.stop()]);
    await rm(scratch, { recursive: true, force: true });
  }
  report();
  if (cacheDropped === false) {
    console.log(
      'note: the page cache could not be dropped (not root), so the small-file figures include ' +
        'the slowdown of files created soon after removals (bench/lib/settle-disk.ts)',
    );
  }
  console.log(
    `load average at end ${loadText()}; whole bench ${seconds((performance.now() - started) / 1000)}`,
  );
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('the server bench broke:', error);
    process.exit(1);
  },
);
