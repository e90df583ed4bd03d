import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { categoryOf, emptyCounts } from '../../../daemon/store/index.js';
import {
  type AttachmentInfo,
  AttachmentState,
  type Soledad,
  type TransferProgress,
} from '../../../rpc/client.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import {
  CrashRig,
  clientPlaintextDigest,
  type Digest,
  digestOfBytes,
  KiB,
  MiB,
  prng,
  seededBuffer,
  serverPlaintextDigest,
} from './crash-fixtures.js';

/**
 * SIGKILL at random moments during a mixed workload, ten times over. Every choice (the
 * operations, their targets, sizes, when and how the daemon is killed) comes from a seeded
 * PRNG; set SOLEDAD_CHAOS_SEED to replay one run's choices (timing still varies), and
 * SOLEDAD_CHAOS_LOGS to a file to keep the daemons' logs.
 */
const SEED = Number(process.env.SOLEDAD_CHAOS_SEED ?? randomInt(2 ** 31));
const ITERATIONS = 10;
const WORKERS = 3;

type OpKind = 'put' | 'upload' | 'evict' | 'download' | 'read' | 'delete' | 'check' | 'sync';
const OP_WEIGHTS: [OpKind, number][] = [
  ['put', 5],
  ['upload', 2],
  ['evict', 2],
  ['download', 1],
  ['read', 2.5],
  ['delete', 1.5],
  ['check', 1],
  ['sync', 0.5],
];

/** One attachment the test put, and what the daemon acknowledged about it. */
interface Entry {
  n: number;
  label: string;
  size: number;
  source: Digest;
  docId: string;
  /** Known once `putAttachment` was acknowledged: from then on it must exist. */
  blobId: string | undefined;
  /** `putDoc` with the pointer: not sent, in flight when killed, or acknowledged. */
  pointer: 'none' | 'pending' | 'acked';
  /** The daemon reported it SYNCED once: from then on the server holds it. */
  synced: boolean;
  /** `deleteAttachment`: in flight when killed (outcome unknown), or acknowledged. */
  deletion: 'none' | 'pending' | 'acked' | 'observed';
  busy: boolean;
}

type KillPlan =
  | { how: 'timed'; afterMs: number }
  | { how: 'after-ack'; kind: string }
  | { how: 'mid-transfer' };

function pickWeighted<T>(random: () => number, weights: [T, number][]): T {
  const total = weights.reduce((sum, [, w]) => sum + w, 0);
  let x = random() * total;
  for (const [value, w] of weights) {
    x -= w;
    if (x < 0) return value;
  }
  return weights.at(-1)![0];
}

/** Mostly small attachments (batched), some large (streamed PUT), a few big. */
function pickSize(random: () => number): number {
  const x = random();
  if (x < 0.7) return 1 + Math.floor(random() * 64 * KiB);
  if (x < 0.95) return 300 * KiB + Math.floor(random() * 1700 * KiB);
  return 8 * MiB + Math.floor(random() * 12 * MiB);
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : String(error);
}

async function inParallel<T>(items: T[], limit: number, task: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await task(items[next++]!);
    }),
  );
}

describe(`SIGKILL at random moments during a mixed workload (seed ${SEED})`, () => {
  let rig: CrashRig;
  const entries: Entry[] = [];
  const random = prng(SEED);
  /** Problems found, with the seed and iteration: reported together. */
  const problems: string[] = [];

  before(async () => {
    rig = await CrashRig.start({ log_level: 'info', sync: { interval_ms: 1000 } });
  });

  after(async () => {
    // SOLEDAD_CHAOS_LOGS=<file> keeps the logs of every daemon run, for a failed seed.
    const logFile = process.env.SOLEDAD_CHAOS_LOGS;
    if (logFile !== undefined && rig !== undefined) {
      const lines = rig.processes.flatMap((daemon, run) =>
        daemon.stdout
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => `${run} ${line}\n`),
      );
      await writeFile(logFile, lines.join(''));
    }
    await rig?.cleanup();
  });

  function problem(iteration: number, message: string): void {
    problems.push(`seed ${SEED}, iteration ${iteration}: ${message}`);
  }

  /** Error lines (level >= 50) the daemon logged before it was killed. */
  function loggedErrors(iteration: number): void {
    for (const line of rig.daemon!.logs()) {
      if ((line.level ?? 0) >= 50) problem(iteration, `daemon logged ${JSON.stringify(line)}`);
    }
  }

  /**
   * Checks the model against a freshly restarted daemon and settles what the kill left
   * unknown (a pointer or a deletion in flight).
   */
  async function verify(soledad: Soledad, iteration: number): Promise<void> {
    const where = `seed ${SEED}, after restart ${iteration}`;
    const infos = new Map<string, AttachmentInfo>(
      (await soledad.listAttachments()).map((info) => [info.blobId, info]),
    );
    const docs = new Map((await soledad.listDocs()).map((doc) => [doc.id, doc]));
    // The status counts (kept in LevelDB with every change) match the records once
    // transfers after the restart let them hold still.
    await waitFor(
      async () => {
        const before = (await soledad.status()).attachments;
        const counted = emptyCounts();
        for (const info of await soledad.listAttachments()) {
          const category = categoryOf(info.machineState);
          if (category !== null) counted[category] += 1;
        }
        const now = (await soledad.status()).attachments;
        return JSON.stringify(before) === JSON.stringify(now) &&
          JSON.stringify(now) === JSON.stringify(counted)
          ? true
          : undefined;
      },
      { timeoutMs: 30_000, what: `${where}: status counts to match the records` },
    );
    // A stored pointer always has its attachment.
    for (const doc of docs.values()) {
      const blobId = doc.content.blob_id;
      if (typeof blobId !== 'string') continue;
      const info = infos.get(blobId);
      assert.ok(info !== undefined, `${where}: ${doc.id} points at a missing ${blobId}`);
      assert.ok(!info.machineState.startsWith('deleting'), `${where}: ${blobId} is being deleted`);
    }
    for (const entry of entries) {
      if (entry.blobId === undefined) continue;
      const info = infos.get(entry.blobId);
      const pointer = docs.get(entry.docId)?.content.blob_id;
      const what = `${where}: attachment #${entry.n} ${entry.blobId}`;
      if (entry.deletion === 'pending') {
        // In flight when killed: the pointer tells whether it happened.
        entry.deletion = pointer === entry.blobId ? 'none' : 'observed';
      }
      if (entry.deletion === 'acked') {
        assert.notEqual(pointer, entry.blobId, `${what}: a deleted pointer came back`);
        assert.ok(
          info === undefined || info.machineState.startsWith('deleting'),
          `${what}: acknowledged deleted, but ${info?.machineState}`,
        );
        continue;
      }
      if (entry.deletion === 'observed') continue;
      assert.ok(info !== undefined, `${what}: an acknowledged put is lost`);
      assert.notEqual(info.state, AttachmentState.NONE, `${what}: ${info.machineState}`);
      if (entry.pointer === 'acked') assert.equal(pointer, entry.blobId, `${what}: pointer lost`);
      else if (entry.pointer === 'pending')
        entry.pointer = pointer === entry.blobId ? 'acked' : 'none';
      if (entry.synced) {
        assert.notEqual(
          info.state & AttachmentState.REMOTE,
          0,
          `${what}: acknowledged SYNCED, now ${info.machineState}`,
        );
      }
      if (info.machineState === 'synced' || info.machineState === 'remote.idle')
        entry.synced = true;
    }
    // Every copy: local ones read through the client, synced ones from the server too.
    const secret = await rig.secret();
    const live = entries.filter((e) => e.blobId !== undefined && e.deletion === 'none');
    await inParallel(live, 4, async (entry) => {
      const blobId = entry.blobId!;
      const info = infos.get(blobId)!;
      const what = `${where}: attachment #${entry.n} ${blobId} (${info.machineState})`;
      if ((info.state & AttachmentState.LOCAL) !== 0) {
        assert.deepEqual(await clientPlaintextDigest(soledad, blobId), entry.source, what);
      }
      if (entry.synced) {
        const digest = await serverPlaintextDigest(rig.client, secret, blobId);
        assert.deepEqual(digest, entry.source, `${what}: the server copy`);
      }
    });
  }

  /**
   * Runs WORKERS workers of random operations until the daemon is killed as `plan` says.
   * Acknowledgements received before the process died count; errors after the kill was
   * sent are expected, errors before it are problems.
   */
  async function workload(soledad: Soledad, iteration: number, plan: KillPlan): Promise<void> {
    let killing: Promise<unknown> | undefined;
    const kill = () => {
      killing ??= rig.kill();
    };
    const ack = (kind: string) => {
      if (plan.how === 'after-ack' && plan.kind === kind) kill();
    };
    if (plan.how === 'mid-transfer') {
      soledad.on('progress', (p: TransferProgress) => {
        if (p.bytes > 0 && p.bytes < p.total) kill();
      });
      await soledad.subscribe({ progress: true });
    }
    const timer = setTimeout(kill, plan.how === 'timed' ? plan.afterMs : 2000);

    const pick = (accept: (entry: Entry) => boolean): Entry | undefined => {
      const candidates = entries.filter((entry) => !entry.busy && accept(entry));
      return candidates.length === 0
        ? undefined
        : candidates[Math.floor(random() * candidates.length)];
    };
    const usable = (entry: Entry) => entry.blobId !== undefined && entry.deletion === 'none';

    const run = async (op: OpKind): Promise<void> => {
      if (op === 'put') {
        const n = entries.length;
        const size = pickSize(random);
        const label = `chaos-${SEED}-${n}`;
        const bytes = seededBuffer(label, size);
        const entry: Entry = {
          n,
          label,
          size,
          source: digestOfBytes(bytes),
          docId: '',
          blobId: undefined,
          pointer: 'none',
          synced: false,
          deletion: 'none',
          busy: true,
        };
        const doc = await soledad.createDoc({ n });
        entry.docId = doc.id;
        entries.push(entry);
        try {
          const info = await doc.putAttachment(bytes);
          entry.blobId = info.blobId;
          ack('put');
          entry.pointer = 'pending';
          await soledad.putDoc(doc);
          entry.pointer = 'acked';
          ack('putDoc');
        } finally {
          entry.busy = false;
        }
        return;
      }
      if (op === 'check') {
        for (const info of await soledad.listAttachments()) {
          const entry = entries.find((e) => e.blobId === info.blobId);
          if (entry && entry.deletion === 'none' && info.machineState === 'synced') {
            entry.synced = true;
          }
        }
        return;
      }
      if (op === 'sync') {
        await soledad.sync();
        return;
      }
      const accept: Record<string, (e: Entry) => boolean> = {
        upload: (e) => usable(e) && !e.synced,
        evict: (e) => usable(e) && e.synced,
        download: (e) => usable(e) && e.synced,
        delete: (e) => usable(e) && e.pointer === 'acked',
        read: usable,
      };
      const entry = pick(accept[op]!);
      if (entry === undefined) return;
      const blobId = entry.blobId!;
      entry.busy = true;
      try {
        if (op === 'upload') {
          const info = await soledad.uploadAttachment(blobId);
          assert.equal(info.state, AttachmentState.SYNCED, `upload of ${blobId}`);
          entry.synced = true;
          ack('upload');
        } else if (op === 'evict') {
          const info = await soledad.evictAttachment(blobId);
          assert.equal(info.state, AttachmentState.REMOTE, `eviction of ${blobId}`);
          ack('evict');
        } else if (op === 'download') {
          const info = await soledad.downloadAttachment(blobId);
          assert.equal(info.state, AttachmentState.SYNCED, `download of ${blobId}`);
          ack('download');
        } else if (op === 'read') {
          // A read that ends must be the whole plaintext, kill or not.
          const digest = await clientPlaintextDigest(soledad, blobId);
          assert.deepEqual(digest, entry.source, `read of #${entry.n} ${blobId}`);
          ack('read');
        } else if (op === 'delete') {
          const doc = await soledad.getDoc(entry.docId);
          assert.ok(doc !== undefined && doc.blobId === blobId, `the pointer of #${entry.n}`);
          entry.deletion = 'pending';
          await doc.deleteAttachment();
          entry.deletion = 'acked';
          ack('delete');
        }
      } finally {
        entry.busy = false;
      }
    };

    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        while (killing === undefined) {
          const op = pickWeighted(random, OP_WEIGHTS);
          try {
            await run(op);
          } catch (error) {
            if (error instanceof assert.AssertionError) {
              problem(iteration, `${op}: ${error.message}`);
            } else if (killing === undefined) {
              problem(iteration, `${op} failed before the kill: ${codeOf(error)}: ${error}`);
            }
            if (killing === undefined) kill();
          }
        }
      }),
    );
    clearTimeout(timer);
    await killing;
  }

  it('keeps every acknowledged put, SYNCED copy and deletion across ten SIGKILLs', async (t) => {
    t.diagnostic(`seed ${SEED} (set SOLEDAD_CHAOS_SEED=${SEED} to replay)`);
    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      // Restarting proves LevelDB opens: the daemon writes rpc.json only once it is ready.
      const started = performance.now();
      const soledad = await rig.startDaemon();
      const restartMs = performance.now() - started;
      await withTimeout(verify(soledad, iteration), 30_000, `verification ${iteration}`);
      const verifyMs = performance.now() - started - restartMs;
      const x = random();
      const plan: KillPlan =
        x < 0.4
          ? { how: 'timed', afterMs: 150 + Math.floor(random() * 1200) }
          : x < 0.75
            ? {
                how: 'after-ack',
                kind: pickWeighted<string>(random, [
                  ['put', 1],
                  ['putDoc', 1],
                  ['upload', 1],
                  ['evict', 1],
                  ['download', 1],
                  ['delete', 2],
                ]),
              }
            : { how: 'mid-transfer' };
      t.diagnostic(
        `iteration ${iteration}: restart ${Math.round(restartMs)} ms, verify ${Math.round(verifyMs)} ms, ` +
          `${entries.length} puts so far, kill ${JSON.stringify(plan)}`,
      );
      await workload(soledad, iteration, plan);
      loggedErrors(iteration);
      assert.deepEqual(problems, []);
    }

    // The last restart: everything settles.
    const soledad = await rig.startDaemon();
    await verify(soledad, ITERATIONS);
    const live = entries.filter((e) => e.blobId !== undefined && e.deletion === 'none');
    const deleted = entries.filter((e) => e.blobId !== undefined && e.deletion === 'acked');
    const livePuts = new Set(live.map((e) => e.blobId!));
    await waitFor(
      async () => {
        const infos = new Map((await soledad.listAttachments()).map((i) => [i.blobId, i]));
        const settled = live.every((e) => {
          const state = infos.get(e.blobId!)?.machineState;
          return state === 'synced' || state === 'remote.idle';
        });
        return settled && deleted.every((e) => !infos.has(e.blobId!));
      },
      { timeoutMs: 30_000, intervalMs: 100, what: `seed ${SEED}: every attachment to settle` },
    );
    const onServer = new Set(await rig.client.list());
    for (const blobId of livePuts) assert.ok(onServer.has(blobId), `seed ${SEED}: ${blobId} lost`);
    const tombstones = new Set(await rig.client.list({ deleted: true }));
    for (const e of deleted) {
      assert.equal(onServer.has(e.blobId!), false, `seed ${SEED}: deleted ${e.blobId} on server`);
      if (e.synced) {
        assert.ok(tombstones.has(e.blobId!), `seed ${SEED}: no tombstone for ${e.blobId}`);
      }
    }
    const secret = await rig.secret();
    await inParallel(live, 4, async (entry) => {
      const what = `seed ${SEED}: attachment #${entry.n} ${entry.blobId}`;
      assert.deepEqual(await clientPlaintextDigest(soledad, entry.blobId!), entry.source, what);
      assert.deepEqual(
        await serverPlaintextDigest(rig.client, secret, entry.blobId!),
        entry.source,
        `${what}: the server copy`,
      );
    });
    const exit = await rig.terminate();
    assert.deepEqual(exit, { code: 0, signal: null });
    loggedErrors(ITERATIONS);
    assert.deepEqual(problems, []);
    t.diagnostic(
      `${entries.length} puts, ${live.length} live, ${deleted.length} deleted at the end`,
    );
  });
});
