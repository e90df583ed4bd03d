import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { RemoveInput, TransferInput } from '../machines/index.js';
import { ERROR_STATUS } from '../wire/errors.js';
import { createDecryptStream } from './crypto/decrypt-stream.js';
import { NotDecryptableError } from './crypto/not-decryptable-error.js';
import type { TransferProgress } from './daemon-api.js';
import { DaemonError } from './daemon-error.js';
import { LocalBlobError, type LocalBlobStore, type LocalBlobWriter } from './local-blob-store.js';
import { metered, ProgressMeter } from './progress-meter.js';
import type { BlobsClient } from './remote/blobs-client.js';
import { RemoteError } from './remote/remote-error.js';
import type { RemoteStatus } from './remote-status.js';
import { type BatchMember, type TransferBatcher, verifyRemoteSize } from './transfer-batcher.js';

export interface BlobTransfersOptions {
  /** Undefined when no server is configured: transfers fail with `remote_unavailable`. */
  client: BlobsClient | undefined;
  local: LocalBlobStore;
  secret: Buffer;
  remoteStatus: RemoteStatus;
  /** The batchers whose members claim their share of a `/stream` request. */
  uploads: TransferBatcher | undefined;
  downloads: TransferBatcher | undefined;
  /**
   * Resolves once the attachment's first record is durable: a put's small envelope is
   * written in that commit, so an upload reads the envelope only after it.
   */
  stored(blobId: string): Promise<void>;
  emitProgress(progress: TransferProgress): void;
  logger: Logger;
}

/**
 * The side effects of the attachment machine: upload, download, evict and remove. Each
 * rejects with an error whose string `code` the machine classifies (a RemoteError's code,
 * `integrity_error`, ...). Every byte is streamed; nothing holds a whole blob.
 */
export class BlobTransfers {
  readonly #options: BlobTransfersOptions;
  /** Uploads in flight (settled promises) by blob id, for `remove` to wait on. */
  readonly #uploads = new Map<string, Promise<void>>();

  constructor(options: BlobTransfersOptions) {
    this.#options = options;
  }

  /**
   * Sends the local envelope to the server: its share of a `/stream` batch when the
   * batcher started it, else one streamed PUT. `blob_exists` means an earlier attempt
   * landed: done once the server's size matches ours.
   */
  upload(input: TransferInput, signal: AbortSignal): Promise<void> {
    const running = this.#upload(input, signal);
    const settled = running.then(
      () => undefined,
      () => undefined,
    );
    this.#uploads.set(input.blobId, settled);
    void settled.then(() => {
      if (this.#uploads.get(input.blobId) === settled) this.#uploads.delete(input.blobId);
    });
    return running;
  }

  async #upload(input: TransferInput, signal: AbortSignal): Promise<void> {
    const claim = this.#options.uploads?.claim(input.blobId);
    if (claim) return claim;
    const { local, logger, remoteStatus } = this.#options;
    const client = this.#client();
    const started = performance.now();
    await this.#options.stored(input.blobId);
    signal.throwIfAborted();
    const file = await local.createReadStream(input.blobId);
    const meter = new ProgressMeter(input.blobId, 'upload', input.size, this.#options.emitProgress);
    try {
      await remoteStatus.track(
        client.put(input.blobId, metered(file, meter), input.size, {
          namespace: input.namespace,
          signal,
        }),
      );
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'blob_exists') throw error;
      await remoteStatus.track(
        verifyRemoteSize(client, input.blobId, input.size, signal, input.namespace),
      );
    } finally {
      file.destroy();
    }
    const ms = Math.round(performance.now() - started);
    logger.info({ blobId: input.blobId, bytes: input.size, ms }, 'upload finished');
  }

  /**
   * Fetches the envelope into a local-store writer while a decrypt stream verifies it
   * chunk by chunk; the writer is committed only after the final chunk verified, so a
   * tampered blob leaves nothing behind (`integrity_error`). An `external` envelope is
   * stored as it is.
   */
  async download(input: TransferInput, signal: AbortSignal): Promise<void> {
    const claim = this.#options.downloads?.claim(input.blobId);
    if (claim) return claim;
    const { logger, remoteStatus } = this.#options;
    const client = this.#client();
    const started = performance.now();
    if (await this.#landedBefore(input.blobId)) return;
    const response = await remoteStatus.track(
      client.get(input.blobId, { namespace: input.namespace, signal }),
    );
    await this.#storeVerified(input.blobId, response.stream, response.size);
    const ms = Math.round(performance.now() - started);
    logger.info({ blobId: input.blobId, bytes: response.size, ms }, 'download finished');
  }

  /** Sends a batch of small envelopes in one `/stream` upload, settling every member. */
  async uploadBatch(members: BatchMember[], signal: AbortSignal): Promise<void> {
    const { local, logger, remoteStatus } = this.#options;
    const started = performance.now();
    const opened: Array<{ member: BatchMember; file: Readable }> = [];
    // Files are opened first: a blob deleted meanwhile stays readable through its handle.
    for (const member of members) {
      try {
        await this.#options.stored(member.blobId);
        opened.push({ member, file: await local.createReadStream(member.blobId) });
      } catch (error) {
        member.reject(error);
      }
    }
    if (opened.length === 0) return;
    try {
      const client = this.#client();
      const entries = opened.map(({ member, file }) => {
        const meter = new ProgressMeter(
          member.blobId,
          'upload',
          member.size,
          this.#options.emitProgress,
        );
        return { id: member.blobId, size: member.size, body: () => metered(file, meter) };
      });
      const results = await remoteStatus.track(client.streamUpload(entries, { signal }));
      const ms = Math.round(performance.now() - started);
      await Promise.all(
        opened.map(async ({ member }) => {
          const result = results[member.blobId];
          try {
            if (result === 'blob_exists') {
              await verifyRemoteSize(client, member.blobId, member.size, signal);
            } else if (result !== 'created') {
              throw new RemoteError(result ?? 'invalid_response', 'the server refused the blob');
            }
            logger.info(
              { blobId: member.blobId, bytes: member.size, ms, batch: opened.length },
              'upload finished',
            );
            member.resolve();
          } catch (error) {
            member.reject(error);
          }
        }),
      );
    } catch (error) {
      for (const { member } of opened) member.reject(error);
    } finally {
      for (const { file } of opened) file.destroy();
    }
  }

  /**
   * Fetches a batch of small envelopes in one `/stream` download, each verified into a
   * local-store writer as in `download`, settling every member: a blob the server lacks
   * or that fails verification fails alone; a broken response fails the rest.
   */
  async downloadBatch(members: BatchMember[], signal: AbortSignal): Promise<void> {
    const { logger, remoteStatus } = this.#options;
    const started = performance.now();
    const pending = new Map<string, BatchMember>();
    for (const member of members) {
      try {
        if (await this.#landedBefore(member.blobId)) {
          member.resolve();
          continue;
        }
        pending.set(member.blobId, member);
      } catch (error) {
        member.reject(error);
      }
    }
    if (pending.size === 0) return;
    try {
      const client = this.#client();
      const entries = client.streamDownload([...pending.keys()], { signal });
      const iterator = entries[Symbol.asyncIterator]();
      // The response's arrival tells the server's reachability; a later break is a failure.
      let next = await remoteStatus.track(iterator.next());
      const count = pending.size;
      while (next.done !== true) {
        const entry = next.value;
        const member = pending.get(entry.id)!;
        pending.delete(entry.id);
        if ('error' in entry) {
          member.reject(
            new RemoteError(entry.error, `the server has no blob ${entry.id}`, {
              status: ERROR_STATUS[entry.error],
            }),
          );
        } else {
          try {
            // A failure skips the rest of this body; the next entry still arrives.
            await this.#storeVerified(entry.id, entry.stream, entry.size);
            const ms = Math.round(performance.now() - started);
            logger.info(
              { blobId: entry.id, bytes: entry.size, ms, batch: count },
              'download finished',
            );
            member.resolve();
          } catch (error) {
            member.reject(error);
          }
        }
        next = await iterator.next();
      }
    } catch (error) {
      if (error instanceof RemoteError) remoteStatus.failed(error);
      for (const member of pending.values()) member.reject(error);
    }
  }

  /**
   * Drops the local copy once the server confirms it holds a blob of the same size.
   * `not_found` (the server lost it) sends the machine back to uploading.
   */
  async evict(input: TransferInput, signal: AbortSignal): Promise<void> {
    const { local, remoteStatus } = this.#options;
    const client = this.#client();
    const stored = await remoteStatus.track(
      client.size(input.blobId, { namespace: input.namespace, signal }),
    );
    const ours = await local.size(input.blobId).catch((error: unknown) => {
      if (error instanceof LocalBlobError && error.code === 'not_found') return undefined;
      throw error;
    });
    if (ours === undefined) {
      // Re-run at start after a crash that came between dropping the local copy and
      // recording `remote.idle`: the server was checked before the drop, so this is done.
      // (A local `not_found` must not reach the machine, which reads `not_found` as "the
      // server lost it"; nor may the attachment go back to synced without a local copy.)
      if (stored !== input.size) {
        // A download verifies every chunk, so a wrong server copy ends in `failed`.
        this.#options.logger.warn(
          { blobId: input.blobId, bytes: stored, expected: input.size },
          'evicted blob has another size on the server than recorded',
        );
      }
      return;
    }
    if (stored !== ours) {
      throw new DaemonError(
        'invalid_state',
        `the server holds ${stored} bytes under ${input.blobId}, this device ${ours}`,
      );
    }
    await local.delete(input.blobId);
  }

  /**
   * Deletes the blob on the server (a `local` deletion; absent there is fine) and the
   * local copy. Idempotent.
   */
  async remove(input: RemoveInput, signal: AbortSignal): Promise<void> {
    const { client, local, remoteStatus } = this.#options;
    if (input.deletion === 'local' && client !== undefined) {
      // An upload of this blob may still be on its way (a `/stream` batch goes on when one
      // of its blobs is deleted): deleting before it settled would let it land afterwards.
      await this.#uploads.get(input.blobId);
      try {
        await remoteStatus.track(
          client.delete(input.blobId, { namespace: input.namespace, signal }),
        );
      } catch (error) {
        if (!(error instanceof RemoteError && error.code === 'not_found')) throw error;
      }
    }
    // TODO: without a configured server, a local deletion cannot reach a copy uploaded
    // earlier; only the local copy is removed.
    await local.delete(input.blobId);
  }

  #client(): BlobsClient {
    const { client } = this.#options;
    if (client === undefined) {
      throw new DaemonError('remote_unavailable', 'no blobs server is configured');
    }
    return client;
  }

  /**
   * Verifies `stream` (an envelope of `size` bytes) into a new local-store writer and
   * commits it; on any failure the stream is destroyed and nothing is left behind.
   */
  async #storeVerified(blobId: string, stream: Readable, size: number): Promise<void> {
    let writer: LocalBlobWriter | undefined;
    try {
      writer = await this.#options.local.writer(blobId);
      const meter = new ProgressMeter(blobId, 'download', size, this.#options.emitProgress);
      await this.#verifyInto(blobId, metered(stream, meter), writer);
      await writer.commit();
    } catch (error) {
      stream.destroy();
      await writer?.abort();
      throw error;
    }
  }

  /** Writes `source` into `writer` and through a decrypt stream that must accept it all. */
  async #verifyInto(
    blobId: string,
    source: AsyncIterable<Uint8Array>,
    writer: LocalBlobWriter,
  ): Promise<void> {
    const decrypt = createDecryptStream({ secret: this.#options.secret, blobId });
    let external = false;
    let failure: unknown;
    decrypt.on('error', (error) => {
      if (error instanceof NotDecryptableError) external = true;
      else failure ??= error;
    });
    // The plaintext is only verified here, not kept.
    decrypt.resume();
    for await (const chunk of source) {
      if (failure !== undefined) break;
      await writer.write(chunk);
      if (!external) await writeWithBackpressure(decrypt, chunk);
    }
    if (failure === undefined && !external) {
      decrypt.end();
      await finished(decrypt).catch((error: unknown) => {
        if (!(error instanceof NotDecryptableError)) failure ??= error;
      });
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * True when a download of `blobId` landed before a crash kept its state from being
   * recorded: the local copy verifies. A local copy that does not is removed.
   */
  async #landedBefore(blobId: string): Promise<boolean> {
    const { local } = this.#options;
    if (!(await local.has(blobId))) return false;
    if (await this.#verifyLocal(blobId)) return true;
    await local.delete(blobId);
    return false;
  }

  /** True when the local copy of `blobId` decrypts and verifies to its end. */
  async #verifyLocal(blobId: string): Promise<boolean> {
    const file = await this.#options.local.createReadStream(blobId);
    const decrypt = createDecryptStream({ secret: this.#options.secret, blobId });
    try {
      decrypt.resume();
      file.pipe(decrypt);
      await finished(decrypt);
      return true;
    } catch (error) {
      if (error instanceof NotDecryptableError) return true;
      if (error instanceof LocalBlobError) throw error;
      return false;
    } finally {
      file.destroy();
    }
  }
}

/** Writes one chunk, waiting for `drain` when the stream asks for it (or its failure). */
async function writeWithBackpressure(stream: Writable, chunk: Uint8Array): Promise<void> {
  if (stream.destroyed) return;
  if (stream.write(chunk)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}
