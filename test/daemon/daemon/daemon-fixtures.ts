import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Daemon } from '../../../daemon/daemon.js';
import type { AttachmentInfo } from '../../../daemon/daemon-api.js';
import { waitFor } from '../../helpers/wait.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A readable of `bytes`, in 64 KiB pieces. */
export function sourceOf(bytes: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 64 * KiB) pieces.push(bytes.subarray(i, i + 64 * KiB));
  return Readable.from(pieces);
}

/**
 * Creates a document, puts `size` random bytes as its attachment and commits the pointer.
 * Returns the plaintext, the attachment and the document's revision after the pointer.
 */
export async function docWithAttachment(daemon: Daemon, size: number) {
  const plaintext = randomBytes(size);
  const doc = await daemon.createDoc({ name: 'file.bin' });
  const info = await daemon.putAttachment(doc.id, sourceOf(plaintext));
  const stored = await daemon.putDoc(doc.id, { ...doc.content, blob_id: info.blobId }, doc.rev);
  return { plaintext, info, doc: stored, blobId: info.blobId };
}

/** Waits until the attachment's durable machine state satisfies `accept`. */
export function waitForAttachment(
  daemon: Daemon,
  blobId: string,
  accept: (info: AttachmentInfo) => boolean,
  what: string,
  timeoutMs = 15_000,
): Promise<AttachmentInfo> {
  return waitFor(
    async () => {
      const info = await daemon.getAttachmentInfo(blobId);
      return info !== undefined && accept(info) ? info : undefined;
    },
    { timeoutMs, what: `${blobId} ${what}` },
  );
}

/** Whether the daemon holds a local envelope of `blobId` (a file or a small one in LevelDB). */
export function hasLocalEnvelope(daemon: Daemon, blobId: string): Promise<boolean> {
  return daemon.localBlobs.has(blobId);
}

/** Where the envelope of `blobId` is when it is a file (envelopes over 64 KiB). */
export function localEnvelopePath(dataDir: string, blobId: string): string {
  return join(dataDir, 'blobs', blobId.slice(0, 2), blobId);
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** An assertion predicate for `assert.rejects`: a DaemonError with `code`. */
export function hasCode(code: string) {
  return (error: unknown) => {
    const actual = (error as { code?: unknown }).code;
    if (actual !== code) {
      throw new Error(`expected code ${code}, got ${String(actual)}: ${String(error)}`);
    }
    return true;
  };
}
