import { Readable, type Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecryptStream } from '../../../daemon/crypto/decrypt-stream.js';
import {
  createEncryptStream,
  type EncryptStreamOptions,
} from '../../../daemon/crypto/encrypt-stream.js';

/** Cuts `data` into pieces at the given offsets (sorted, deduplicated, within bounds). */
export function split(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => Math.min(Math.max(c, 0), data.length)))].sort(
    (a, b) => a - b,
  );
  const pieces: Buffer[] = [];
  let start = 0;
  for (const point of [...points, data.length]) {
    if (point > start) pieces.push(data.subarray(start, point));
    start = point;
  }
  return pieces;
}

/** Cuts `data` into pieces of `size` bytes. */
export function slices(data: Buffer, size: number): Buffer[] {
  const pieces: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += size) {
    pieces.push(data.subarray(offset, offset + size));
  }
  return pieces;
}

/** Runs `pieces` through `transform`; resolves with the output and the error, if any. */
export async function run(
  transform: Transform,
  pieces: Buffer[],
): Promise<{ output: Buffer; error: unknown }> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      callback();
    },
  });
  try {
    await pipeline(Readable.from(pieces, { objectMode: false }), transform, sink);
    return { output: Buffer.concat(out), error: undefined };
  } catch (error) {
    return { output: Buffer.concat(out), error };
  }
}

export async function encrypt(
  plaintext: Buffer,
  options: EncryptStreamOptions,
  pieces: Buffer[] = [plaintext],
): Promise<Buffer> {
  const { output, error } = await run(createEncryptStream(options), pieces);
  if (error) throw error;
  return output;
}

export async function decrypt(
  envelope: Buffer,
  options: { secret: Buffer; blobId: string },
  pieces: Buffer[] = [envelope],
): Promise<{ output: Buffer; error: unknown }> {
  return run(createDecryptStream(options), pieces);
}
