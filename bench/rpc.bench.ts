// Local RPC benchmark. The daemon and its RPC listener run in a child process (this same
// file with `--daemon`), next to a bare WebSocket echo server as the baseline; clients
// run here. Prints latency percentiles, rates, throughput and peak RSS: sampled every
// 100 ms during the 1 GiB put and get (the RSS target), and the whole run's VmHWM beside.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';
import { NODE_FLAGS } from '../cli/node-flags.js';
import { Daemon } from '../daemon/daemon.js';
import type { DaemonApi } from '../daemon/daemon-api.js';
import { Soledad } from '../rpc/client.js';
import { RPC_TOKEN_FILE } from '../rpc/rpc-paths.js';
import { startRpcServer } from '../rpc/rpc-server.js';
import { sampleRss } from './lib/rss-sampler.js';

const GIB = 1024 * 1024 * 1024;
const MIB = 1024 * 1024;
const BIG_BYTES = Number(process.env.SOLEDAD_BENCH_BIG_BYTES ?? GIB);

interface ChildReady {
  url: string;
  echoUrl: string;
  token: string;
}

if (process.argv[2] === '--daemon') {
  await runDaemonChild(process.argv[3]!);
} else {
  await main();
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'soledad-bench-rpc-'));
  const child = spawn(
    process.execPath,
    [...NODE_FLAGS, fileURLToPath(import.meta.url), '--daemon', dir],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  try {
    const ready = await childReady(child);
    const soledad = await Soledad.connect({ url: ready.url, token: ready.token });
    const echo = new WebSocket(ready.echoUrl, { perMessageDeflate: false });
    await new Promise((resolve, reject) => echo.once('open', resolve).once('error', reject));

    console.log('| what | figure |');
    console.log('| --- | --- |');
    const p50Ratio = await roundTrips(soledad, echo);
    await notifications(ready, child);
    // RSS is sampled during the 1 GiB transfers, which the target is about; the peaks of
    // the whole run (round trips and 20,000 documents' notifications included) beside.
    const daemonSampler = sampleRss(child.pid!);
    const clientSampler = sampleRss(process.pid);
    let clientRss = 0;
    let daemonRss = 0;
    let transfer: Awaited<ReturnType<typeof bigTransfer>>;
    try {
      transfer = await bigTransfer(soledad, dir);
    } finally {
      clientRss = clientSampler.stop();
      daemonRss = daemonSampler.stop();
    }
    console.log(`| peak RSS during the 1 GiB put and get, client process | ${mib(clientRss)} |`);
    console.log(`| peak RSS during the 1 GiB put and get, daemon process | ${mib(daemonRss)} |`);
    console.log(
      `| peak RSS of the whole run (VmHWM), client / daemon | ${mib(process.resourceUsage().maxRSS * 1024)} / ${mib(await peakRss(child.pid!))} |`,
    );

    const verdict = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
    console.log('\n| target | measured | result |');
    console.log('| --- | --- | --- |');
    console.log(
      `| attachment.info p50, 1 in flight, ≤ 2× the echo's | ${p50Ratio.toFixed(2)}× | ${verdict(p50Ratio <= 2)} |`,
    );
    console.log(
      `| put through the client ≥ 0.5 of read + write with fsync | ${transfer.put.toFixed(2)} | ${verdict(transfer.put >= 0.5)} |`,
    );
    console.log(
      `| get through the client ≥ 0.5 of read + write with fsync | ${transfer.get.toFixed(2)} | ${verdict(transfer.get >= 0.5)} |`,
    );
    const rssOk = clientRss < 200 * MIB && daemonRss < 200 * MIB;
    console.log(
      `| client and daemon RSS each < 200 MB during the 1 GiB put and get | ${mib(clientRss)}, ${mib(daemonRss)} | ${verdict(rssOk)} |`,
    );

    echo.close();
    await soledad.close();
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    await rm(dir, { recursive: true, force: true });
  }
}

/** Attachment-state calls vs bare echo, 1 and 32 in flight. */
/** Returns the ratio of the RPC's p50 to the echo's, with 1 in flight. */
async function roundTrips(soledad: Soledad, echo: WebSocket): Promise<number> {
  let p50Ratio = Number.NaN;
  const doc = await soledad.createDoc({});
  const { blobId } = await doc.putAttachment(Buffer.from('state probe'));
  const rpcCall = () => soledad.getAttachmentInfo(blobId);
  const echoCall = echoCaller(echo);
  for (const inFlight of [1, 32]) {
    const total = inFlight === 1 ? 5_000 : 40_000;
    await measure(echoCall, 1_000, inFlight);
    await measure(rpcCall, 1_000, inFlight);
    const bare = await measure(echoCall, total, inFlight);
    const rpc = await measure(rpcCall, total, inFlight);
    if (inFlight === 1) p50Ratio = rpc.p50 / bare.p50;
    console.log(
      `| bare ws echo, ${inFlight} in flight | p50 ${us(bare.p50)}, p99 ${us(bare.p99)}, ${rate(bare.perSecond)} calls/s |`,
    );
    console.log(
      `| attachment.info, ${inFlight} in flight | p50 ${us(rpc.p50)}, p99 ${us(rpc.p99)}, ${rate(rpc.perSecond)} calls/s |`,
    );
  }
  return p50Ratio;
}

function echoCaller(ws: WebSocket): () => Promise<void> {
  const waiting = new Map<number, () => void>();
  let next = 0;
  ws.on('message', (data) => {
    const id = Number(data.toString());
    waiting.get(id)?.();
    waiting.delete(id);
  });
  return () =>
    new Promise<void>((resolve) => {
      const id = next++;
      waiting.set(id, resolve);
      ws.send(String(id));
    });
}

async function measure(call: () => Promise<unknown>, total: number, inFlight: number) {
  const latencies = new Float64Array(total);
  let issued = 0;
  const started = process.hrtime.bigint();
  const worker = async () => {
    while (issued < total) {
      const index = issued++;
      const t0 = process.hrtime.bigint();
      await call();
      latencies[index] = Number(process.hrtime.bigint() - t0) / 1e3;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort();
  return {
    p50: latencies[Math.floor(total * 0.5)]!,
    p99: latencies[Math.floor(total * 0.99)]!,
    perSecond: total / seconds,
  };
}

/**
 * Events fanned out to 10 subscribers. The daemon process makes the events itself
 * (document creations, 64 at once), so the figure is the fan-out, not an RPC writer.
 */
async function notifications(ready: ChildReady, child: ChildProcess): Promise<void> {
  const subscribers = await Promise.all(
    Array.from({ length: 10 }, () => Soledad.connect({ url: ready.url, token: ready.token })),
  );
  let received = 0;
  for (const subscriber of subscribers) {
    subscriber.on('event', () => {
      received++;
    });
    await subscriber.subscribe();
  }
  const docs = 20_000;
  const expected = docs * 10;
  const started = process.hrtime.bigint();
  child.stdin!.write(`burst ${docs}\n`);
  while (received < expected) await new Promise((resolve) => setTimeout(resolve, 1));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(
    `| live events to 10 subscribers (${docs} documents made in the daemon, 64 at once) | ${rate(docs / seconds)} events/s, ${rate(expected / seconds)} notifications/s |`,
  );

  // Replay: 10 new subscribers ask for the last 10,000 kept events at once.
  const kept = 10_000;
  const { latestSeq } = (await subscribers[0]!.status()).events;
  await Promise.all(subscribers.map((client) => client.close()));
  const replaying = await Promise.all(
    Array.from({ length: 10 }, () => Soledad.connect({ url: ready.url, token: ready.token })),
  );
  let replayed = 0;
  for (const client of replaying) {
    client.on('event', () => {
      replayed++;
    });
  }
  const t0 = process.hrtime.bigint();
  await Promise.all(replaying.map((client) => client.subscribe({ after: latestSeq - kept })));
  const replaySeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (replayed !== kept * 10) throw new Error(`replayed ${replayed} of ${kept * 10} events`);
  console.log(
    `| replay of ${kept} kept events to 10 subscribers at once | ${rate((kept * 10) / replaySeconds)} notifications/s |`,
  );
  await Promise.all(replaying.map((client) => client.close()));
}

/** 1 GiB through the client (put from a file, get into a file with fsync) vs a plain copy. */
async function bigTransfer(soledad: Soledad, dir: string): Promise<{ put: number; get: number }> {
  const source = join(dir, 'big.bin');
  const block = randomBytes(MIB);
  const out = await open(source, 'w');
  for (let written = 0; written < BIG_BYTES; written += MIB) await out.write(block);
  await out.close();
  const size = (await stat(source)).size;

  const copy = join(dir, 'copy.bin');
  const t0 = process.hrtime.bigint();
  await pipeline(
    createReadStream(source, { highWaterMark: MIB }),
    createWriteStream(copy, { flush: true }),
  );
  const copySeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await rm(copy);

  const doc = await soledad.createDoc({ name: 'big.bin' });
  const t1 = process.hrtime.bigint();
  const info = await doc.putAttachment(source);
  const putSeconds = Number(process.hrtime.bigint() - t1) / 1e9;
  await soledad.putDoc(doc);

  const got = join(dir, 'got.bin');
  const t2 = process.hrtime.bigint();
  await pipeline(
    await soledad.openAttachment(info.blobId),
    createWriteStream(got, { flush: true }),
  );
  const getSeconds = Number(process.hrtime.bigint() - t2) / 1e9;
  if ((await stat(got)).size !== size) throw new Error('the attachment came back truncated');

  const label = size === GIB ? '1 GiB' : mib(size);
  console.log(`| ${label} read + write with fsync (baseline) | ${mbps(size, copySeconds)} |`);
  console.log(`| ${label} put through the client (file source) | ${mbps(size, putSeconds)} |`);
  console.log(
    `| ${label} get through the client (into a file, fsync) | ${mbps(size, getSeconds)} |`,
  );
  await rm(got);
  await rm(source);
  return { put: copySeconds / putSeconds, get: copySeconds / getSeconds };
}

async function childReady(child: ChildProcess): Promise<ChildReady> {
  let buffered = '';
  for await (const chunk of child.stdout!) {
    buffered += String(chunk);
    const line = buffered.split('\n').find((l) => l.startsWith('{'));
    if (line) return JSON.parse(line) as ChildReady;
  }
  throw new Error('the daemon child exited before it was ready');
}

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kib ?? 0) * 1024;
}

/** The child: a daemon with its RPC listener, and a bare echo server beside it. */
async function runDaemonChild(dir: string): Promise<void> {
  const { daemon, stop } = await startBenchDaemon(join(dir, 'data'));
  const tokenFile = join(dir, RPC_TOKEN_FILE);
  const rpc = await startRpcServer({ daemon, port: 0, tokenFile });
  const echo = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  echo.on('connection', (ws) => ws.on('message', (data) => ws.send(data)));
  await new Promise((resolve) => echo.once('listening', resolve));
  const { port } = echo.address() as { port: number };
  const token = (await readFile(tokenFile, 'utf8')).trim();
  const ready: ChildReady = { url: rpc.url, echoUrl: `ws://127.0.0.1:${port}`, token };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  process.stdin.setEncoding('utf8').on('data', (line: string) => {
    const count = Number(/^burst (\d+)/.exec(line)?.[1] ?? 0);
    void burst(daemon, count);
  });
  await new Promise((resolve) => process.once('SIGTERM', resolve));
  process.stdin.destroy();
  echo.close();
  await rpc.close();
  await stop();
}

/** Creates `count` documents in the daemon, 64 at once. */
async function burst(daemon: DaemonApi, count: number): Promise<void> {
  let made = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (made < count) {
        made++;
        await daemon.createDoc({ n: made });
      }
    }),
  );
}

/** A daemon without a blobs server: attachments stay local, nothing runs behind the bench. */
async function startBenchDaemon(
  dataDir: string,
): Promise<{ daemon: DaemonApi; stop(): Promise<void> }> {
  const daemon = await Daemon.open({
    dataDir,
    secret: randomBytes(32),
    deviceId: randomBytes(8).toString('hex'),
    syncIntervalMs: 0,
    initialSyncDelayMs: -1,
  });
  return { daemon, stop: () => daemon.close() };
}

function us(value: number): string {
  return `${value.toFixed(0)} µs`;
}

function rate(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

function mbps(bytes: number, seconds: number): string {
  return `${(bytes / 1e6 / seconds).toFixed(0)} MB/s (${seconds.toFixed(2)} s)`;
}

function mib(bytes: number): string {
  return `${(bytes / MIB).toFixed(0)} MiB`;
}
