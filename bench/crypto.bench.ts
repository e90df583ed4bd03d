// Envelope encryption and decryption of a 1 GiB stream against a raw AES-256-GCM loop over
// the same bytes (one cipher per 64 KiB chunk, no streams). Targets: each direction at least
// 0.6 of the raw loop, RSS growth < 50 MB. The envelope to decrypt is made first and kept in
// memory, so both decryptions measure crypto and framing rather than the disk; a decryption
// from a file is shown for information. SOLEDAD_BENCH_BYTES overrides the size (a multiple
// of 1 MiB).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecryptStream } from '../daemon/crypto/decrypt-stream.js';
import { createEncryptStream } from '../daemon/crypto/encrypt-stream.js';
import {
  chunkNonce,
  DEFAULT_CHUNK_SIZE,
  deriveBlobKey,
  parseHeader,
  TAG_BYTES,
} from '../daemon/crypto/envelope-format.js';
import { envelopeSize, headerSize } from '../daemon/crypto/envelope-size.js';

const MiB = 1024 * 1024;
const TOTAL = Number(process.env.SOLEDAD_BENCH_BYTES ?? 1024 * MiB);
const BLOCK = randomBytes(MiB);
const SECRET = randomBytes(32);
const BLOB_ID = '6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f';

interface Run {
  seconds: number;
  rssGrowth: number;
}

function plaintextSource(): Readable {
  let sent = 0;
  return new Readable({
    highWaterMark: MiB,
    read() {
      if (sent >= TOTAL) {
        this.push(null);
        return;
      }
      sent += BLOCK.length;
      this.push(BLOCK);
    },
  });
}

function sink(): Writable {
  return new Writable({
    highWaterMark: MiB,
    writev(_chunks, callback) {
      callback();
    },
  });
}

async function measure(work: () => Promise<void>): Promise<Run> {
  globalThis.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const start = process.hrtime.bigint();
  await work();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { seconds, rssGrowth: peak - before };
}

/** One cipher per 64 KiB chunk of the plaintext, as the envelope does, minus the streams. */
function rawEncrypt(header: Buffer): void {
  const key = deriveBlobKey(SECRET, parseHeader(header).salt, BLOB_ID);
  let index = 0;
  for (let done = 0; done < TOTAL; done += BLOCK.length) {
    for (let offset = 0; offset < BLOCK.length; offset += DEFAULT_CHUNK_SIZE) {
      const cipher = createCipheriv('aes-256-gcm', key, chunkNonce(index++, false));
      cipher.setAAD(header);
      cipher.update(BLOCK.subarray(offset, offset + DEFAULT_CHUNK_SIZE));
      cipher.final();
      cipher.getAuthTag();
    }
  }
}

/** Opens every chunk of the in-memory envelope, one decipher per chunk. */
function rawDecrypt(envelope: Buffer, header: Buffer): void {
  const key = deriveBlobKey(SECRET, parseHeader(header).salt, BLOB_ID);
  const sealed = DEFAULT_CHUNK_SIZE + TAG_BYTES;
  let index = 0;
  for (let offset = header.length; offset < envelope.length; offset += sealed) {
    const end = Math.min(offset + sealed, envelope.length);
    const decipher = createDecipheriv(
      'aes-256-gcm',
      key,
      chunkNonce(index++, end === envelope.length),
    );
    decipher.setAAD(header);
    decipher.update(envelope.subarray(offset, end - TAG_BYTES));
    decipher.setAuthTag(envelope.subarray(end - TAG_BYTES, end));
    decipher.final();
  }
}

/** The envelope in 1 MiB pieces, which do not line up with its chunks, as from a socket. */
function envelopeSource(envelope: Buffer): Readable {
  let offset = 0;
  return new Readable({
    highWaterMark: MiB,
    read() {
      if (offset >= envelope.length) {
        this.push(null);
        return;
      }
      this.push(envelope.subarray(offset, offset + MiB));
      offset += MiB;
    },
  });
}

async function encryptToMemory(): Promise<Buffer> {
  const envelope = Buffer.allocUnsafe(envelopeSize(TOTAL, { blobId: BLOB_ID }));
  let filled = 0;
  const collect = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      filled += chunk.copy(envelope, filled);
      callback();
    },
  });
  await pipeline(
    plaintextSource(),
    createEncryptStream({ secret: SECRET, blobId: BLOB_ID }),
    collect,
  );
  return envelope;
}

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

async function main(): Promise<void> {
  // Made before any measurement, so its gigabyte is not counted as growth.
  const envelope = await encryptToMemory();
  const header = Buffer.from(envelope.subarray(0, headerSize({ blobId: BLOB_ID })));

  const encrypt = await measure(() =>
    pipeline(plaintextSource(), createEncryptStream({ secret: SECRET, blobId: BLOB_ID }), sink()),
  );
  const rawEnc = await measure(async () => rawEncrypt(header));
  const decrypt = await measure(() =>
    pipeline(
      envelopeSource(envelope),
      createDecryptStream({ secret: SECRET, blobId: BLOB_ID }),
      sink(),
    ),
  );
  const rawDec = await measure(async () => rawDecrypt(envelope, header));

  // For information: the same decryption from a file, as the daemon reads its local store.
  const dir = await mkdtemp(join(tmpdir(), 'soledad-bench-'));
  const path = join(dir, 'envelope');
  let fromFile: Run;
  let readOnly: Run;
  try {
    await pipeline(envelopeSource(envelope), createWriteStream(path));
    readOnly = await measure(() =>
      pipeline(createReadStream(path, { highWaterMark: MiB }), sink()),
    );
    fromFile = await measure(() =>
      pipeline(
        createReadStream(path, { highWaterMark: MiB }),
        createDecryptStream({ secret: SECRET, blobId: BLOB_ID }),
        sink(),
      ),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const rate = (run: Run) => TOTAL / run.seconds / 1e6;
  const mb = (run: Run) => (run.rssGrowth / 1e6).toFixed(1);
  console.log(`${TOTAL / MiB} MiB plaintext, ${DEFAULT_CHUNK_SIZE / 1024} KiB chunks\n`);
  console.log(
    row(['direction', 'envelope stream MB/s', 'raw GCM loop MB/s', 'ratio', 'RSS growth MB']),
  );
  console.log(row(['---', '---:', '---:', '---:', '---:']));
  let ok = true;
  for (const [name, stream, raw] of [
    ['encrypt', encrypt, rawEnc],
    ['decrypt', decrypt, rawDec],
  ] as const) {
    const ratio = rate(stream) / rate(raw);
    ok &&= ratio >= 0.6 && stream.rssGrowth < 50e6;
    console.log(
      row([name, rate(stream).toFixed(0), rate(raw).toFixed(0), ratio.toFixed(2), mb(stream)]),
    );
  }
  console.log(
    row(['decrypt from a file (page cache)', rate(fromFile).toFixed(0), '', '', mb(fromFile)]),
  );
  console.log(row(['  the file read alone', rate(readOnly).toFixed(0), '', '', mb(readOnly)]));
  console.log(`\ntargets (ratio >= 0.6, RSS growth < 50 MB): ${ok ? 'met' : 'NOT met'}`);
}

await main();
