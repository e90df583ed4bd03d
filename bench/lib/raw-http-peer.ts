// A bare node:http server, run as a child process by the server bench, to measure what
// loopback HTTP alone can do on this machine. It prints `{"port": n}` on stdout once
// listening, then serves until killed:
//   PUT  /sink          reads the body, discards it, answers {"bytes": n}
//   PUT  /file-sink     writes the body to a new file in a temp folder (1 MiB writes), fsyncs
//                       it, answers {"bytes": n}: the durable work of a blob PUT. The file is
//                       removed at once, or, when SOLEDAD_BENCH_SCRATCH names a folder, left
//                       in it for the bench to remove later (see DiskPublishOptions.keep)
//   GET  /source?bytes=n  n bytes, written from one reused random 1 MiB buffer with backpressure
//   GET  /ids?n=n         a JSON array of n random UUIDs (the shape of a blob listing)
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeAll } from '../../server/backends/filesystem-layout.js';

const BLOCK = randomBytes(1024 * 1024);
const MAX_COUNT = 10_000_000;
const MAX_BYTES = 2 ** 40;

function answer(res: ServerResponse, status: number, value: unknown): void {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

async function writeBytes(res: ServerResponse, total: number): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
  let sent = 0;
  while (sent < total && !res.destroyed) {
    const chunk = total - sent >= BLOCK.length ? BLOCK : BLOCK.subarray(0, total - sent);
    sent += chunk.length;
    if (!res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  }
  res.end();
}

const SCRATCH = process.env.SOLEDAD_BENCH_SCRATCH;

/** Bytes gathered before one `writev`, while the next ones arrive. */
const WRITE_BATCH = 1024 * 1024;

/**
 * The body into a new file, then fsync: 1 MiB `writev` calls, each overlapping the receipt
 * of the next MiB. (A `createWriteStream` pipeline measured 0.38–0.68 GB/s into tmpfs here,
 * where these batches keep up with the socket.)
 */
async function writeToFile(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const dir = await mkdtemp(join(SCRATCH ?? tmpdir(), 'soledad-bench-file-sink-'));
  try {
    const handle = await open(join(dir, 'body'), 'wx', 0o600);
    let bytes = 0;
    try {
      let batch: Buffer[] = [];
      let batchBytes = 0;
      let writing: Promise<void> = Promise.resolve();
      for await (const chunk of req as AsyncIterable<Buffer>) {
        batch.push(chunk);
        batchBytes += chunk.length;
        bytes += chunk.length;
        if (batchBytes < WRITE_BATCH) continue;
        await writing;
        writing = writeAll(handle, batch);
        writing.catch(() => {}); // awaited below; a body that fails first must not leave it unhandled
        batch = [];
        batchBytes = 0;
      }
      await writing;
      await writeAll(handle, batch);
      await handle.sync();
    } finally {
      await handle.close();
    }
    answer(res, 200, { bytes });
  } catch {
    res.destroy();
  } finally {
    if (SCRATCH === undefined) await rm(dir, { recursive: true, force: true });
  }
}

/** Cached, so that generating the ids is not part of what the client measures. */
const idLists = new Map<number, Buffer>();

function idsBody(count: number): Buffer {
  let body = idLists.get(count);
  if (body === undefined) {
    body = Buffer.from(JSON.stringify(Array.from({ length: count }, () => randomUUID())), 'utf8');
    idLists.set(count, body);
  }
  return body;
}

function readCount(url: URL, name: string, max: number): number | undefined {
  const value = Number(url.searchParams.get(name));
  return Number.isSafeInteger(value) && value >= 0 && value <= max ? value : undefined;
}

const server = createServer({ requestTimeout: 0 }, (req, res) => {
  const url = new URL(req.url ?? '/', 'http://peer');
  if (req.method === 'PUT' && url.pathname === '/sink') {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    req.on('end', () => answer(res, 200, { bytes }));
    req.on('error', () => res.destroy());
    return;
  }
  if (req.method === 'PUT' && url.pathname === '/file-sink') {
    void writeToFile(req, res);
    return;
  }
  if (req.method === 'GET' && url.pathname === '/source') {
    const bytes = readCount(url, 'bytes', MAX_BYTES);
    if (bytes === undefined) answer(res, 400, { error: 'bytes' });
    else void writeBytes(res, bytes);
    return;
  }
  if (req.method === 'GET' && url.pathname === '/ids') {
    const count = readCount(url, 'n', MAX_COUNT);
    if (count === undefined) {
      answer(res, 400, { error: 'n' });
      return;
    }
    const body = idsBody(count);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
    return;
  }
  req.resume();
  answer(res, 404, { error: 'not_found' });
});

server.listen({ host: '127.0.0.1', port: 0 }, () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

// The bench kills this process by PID; a vanished parent closes stdin, which also ends it.
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
