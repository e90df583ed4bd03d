import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { AttachmentState, type Soledad, type TransferProgress } from '../../../rpc/client.js';
import { tempDir } from '../../helpers/tmp.js';
import { waitFor } from '../../helpers/wait.js';
import {
  CrashRig,
  type Digest,
  digestOfBytes,
  KiB,
  MiB,
  seededBuffer,
  serverPlaintextDigest,
  waitForAll,
  writeSourceFile,
} from './crash-fixtures.js';

/** `stop_timeout_ms` of the daemon under test. */
const STOP_TIMEOUT_MS = 5000;
const LARGE = 4;
const LARGE_BYTES = 32 * MiB;

interface Acked {
  docId: string;
  blobId: string;
  source: Digest;
  /** `putDoc` with the pointer was acknowledged too. */
  pointer: boolean;
}

/** What the client was told is stored, while puts keep going until `stop()`. */
class Workload {
  readonly acked: Acked[] = [];
  readonly errors: unknown[] = [];
  #stopped = false;
  #writers: Promise<void>[] = [];

  /** Puts the large files; resolves with their blob ids once acknowledged. */
  putFiles(soledad: Soledad, files: { path: string; source: Digest }[]): Promise<string[]> {
    return Promise.all(files.map((file) => this.#put(soledad, file.path, file.source)));
  }

  /** Starts `count` writers putting small attachments one after another. */
  startSmallPuts(soledad: Soledad, count: number): void {
    for (let w = 0; w < count; w++) {
      this.#writers.push(
        (async () => {
          for (let i = 0; !this.#stopped; i++) {
            const bytes = seededBuffer(`small-${w}-${i}-${this.acked.length}`, 2 * KiB + i * 97);
            try {
              await this.#put(soledad, bytes, digestOfBytes(bytes));
            } catch (error) {
              this.errors.push(error);
              return;
            }
          }
        })(),
      );
    }
  }

  /**
   * Waits until the small writers ended: the daemon going away ends them, and that is
   * the only failure they may meet.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#writers);
    for (const error of this.errors) {
      const code = (error as { code?: unknown }).code;
      assert.ok(code === 'disconnected' || code === 'shutting_down', `a put failed: ${error}`);
    }
  }

  async #put(soledad: Soledad, source: string | Buffer, digest: Digest): Promise<string> {
    const doc = await soledad.createDoc({ kind: 'shutdown-test' });
    const info = await doc.putAttachment(source);
    const entry: Acked = { docId: doc.id, blobId: info.blobId, source: digest, pointer: false };
    this.acked.push(entry);
    await soledad.putDoc(doc);
    entry.pointer = true;
    return info.blobId;
  }
}

describe('SIGTERM while uploads are in flight', () => {
  let rig: CrashRig;
  let work: { path: string; remove(): Promise<void> };
  let files: { path: string; source: Digest }[];
  let frozenServer: number | undefined;

  before(async () => {
    rig = await CrashRig.start({ log_level: 'info', stop_timeout_ms: STOP_TIMEOUT_MS });
    work = await tempDir('soledad-shutdown-src-');
    files = [];
    for (let i = 0; i < LARGE; i++) {
      const path = join(work.path, `large-${i}.bin`);
      files.push({ path, source: await writeSourceFile(path, LARGE_BYTES, `large-${i}`) });
    }
  });

  afterEach(async () => {
    if (frozenServer !== undefined) process.kill(frozenServer, 'SIGCONT');
    frozenServer = undefined;
    if (rig?.daemon?.running) await rig.kill();
  });

  after(async () => {
    await rig?.cleanup();
    await work?.remove();
  });

  /** Starts the daemon, the large puts and a stream of small ones; resolves mid-upload. */
  async function loadedDaemon(): Promise<Workload> {
    const soledad = await rig.startDaemon();
    const progress: TransferProgress[] = [];
    soledad.on('progress', (p) => progress.push(p));
    await soledad.subscribe({ progress: true });
    const workload = new Workload();
    workload.startSmallPuts(soledad, 4);
    const large = new Set(await workload.putFiles(soledad, files));
    await waitFor(
      () =>
        // The last report of an upload still running is short of its total.
        [...large].some((blobId) => {
          const last = progress.findLast((p) => p.blobId === blobId && p.direction === 'upload');
          return last !== undefined && last.bytes > 0 && last.bytes < last.total;
        }),
      { timeoutMs: 30_000, intervalMs: 5, what: 'a large upload to be in flight' },
    );
    return workload;
  }

  /** SIGTERM; the exit status and how long the daemon took to exit. */
  async function terminate(): Promise<{ code: number | null; signal: string | null; ms: number }> {
    const started = performance.now();
    const status = await rig.terminate(2 * STOP_TIMEOUT_MS);
    return { ...status, ms: performance.now() - started };
  }

  /** Restarts the daemon: every acknowledged put is there, then SYNCED on the server. */
  async function assertNothingLost(workload: Workload): Promise<void> {
    const soledad = await rig.startDaemon();
    for (const entry of workload.acked) {
      const info = await soledad.getAttachmentInfo(entry.blobId);
      assert.ok(info !== undefined, `the acknowledged attachment ${entry.blobId} is lost`);
      assert.notEqual(info.state & AttachmentState.LOCAL, 0, `${entry.blobId} lost its local copy`);
      if (entry.pointer) {
        const doc = await soledad.getDoc(entry.docId);
        assert.equal(doc?.content.blob_id, entry.blobId, `${entry.docId} lost its pointer`);
      }
    }
    await waitForAll(
      soledad,
      workload.acked.map((entry) => entry.blobId),
      (info) => info.machineState === 'synced',
      'every acknowledged attachment to be synced',
    );
    const secret = await rig.secret();
    for (const entry of workload.acked) {
      const digest = await serverPlaintextDigest(rig.client, secret, entry.blobId);
      assert.deepEqual(digest, entry.source, `the server copy of ${entry.blobId}`);
    }
    await rig.terminate();
  }

  it('exits 0 within the stop timeout and loses no acknowledged put', async () => {
    const workload = await loadedDaemon();
    const exit = await terminate();
    await workload.stop();
    assert.equal(exit.code, 0, rig.daemon!.stderr);
    assert.equal(exit.signal, null);
    assert.ok(exit.ms < STOP_TIMEOUT_MS, `exited after ${Math.round(exit.ms)} ms`);
    assert.ok(rig.daemon!.logs().some((line) => line.msg === 'daemon stopped'));
    assert.ok(workload.acked.length > LARGE, 'small puts were acknowledged too');

    await assertNothingLost(workload);
  });

  it('aborts uploads the server stopped answering and still exits 0 within the stop timeout', async () => {
    const workload = await loadedDaemon();
    // The server stops reading: the uploads in flight cannot finish.
    frozenServer = rig.harness.server!.pid;
    process.kill(frozenServer, 'SIGSTOP');
    const exit = await terminate();
    await workload.stop();
    process.kill(frozenServer, 'SIGCONT');
    frozenServer = undefined;
    assert.equal(exit.code, 0, rig.daemon!.stderr);
    assert.equal(exit.signal, null);
    assert.ok(exit.ms < STOP_TIMEOUT_MS, `exited after ${Math.round(exit.ms)} ms`);
    const logs = rig.daemon!.logs();
    assert.ok(logs.some((line) => line.msg === 'transfers aborted at stop'));
    assert.ok(logs.some((line) => line.msg === 'daemon stopped'));

    await assertNothingLost(workload);
  });
});
