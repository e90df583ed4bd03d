import type { Logger } from 'pino';
import type { AttachmentRegistry } from './attachment-registry.js';
import type { LocalBlobStore } from './local-blob-store.js';
import type { AttachmentRecord, Doc, Store } from './store/index.js';

export interface OrphanSweepOptions {
  store: Store;
  local: LocalBlobStore;
  registry: AttachmentRegistry;
  /** Records untouched for less than this long are left alone (their `putDoc` may come). */
  graceMs: number;
  now(): number;
  /** True for a blob whose envelope is being written and whose record is not made yet. */
  isWriting(blobId: string): boolean;
  stopped(): boolean;
  logger: Logger;
}

const PAGE = 1000;

/**
 * One pass that deletes what no stored document uses: attachment records whose document
 * does not point at them (never committed by `putDoc`, or since changed) once they are
 * older than the grace period, locally and on the server; and, when `files` is set, local
 * envelopes without any record (left by a crash between writing one and recording it).
 *
 * Records are found through the store's `unclaimed` index, which holds exactly the blobs
 * a record was made for or a document stopped pointing at, and that no document has
 * pointed at since: the pass is proportional to those, not to every attachment. The file
 * pass lists every local envelope, so the daemon runs it only after an unclean stop.
 */
export async function sweepOrphans(
  options: OrphanSweepOptions,
  { files = true }: { files?: boolean } = {},
): Promise<{ records: number; files: number }> {
  const swept = { records: 0, files: 0 };
  await sweepRecords(options, swept);
  if (files) await sweepFiles(options, swept);
  if (swept.records + swept.files > 0) {
    options.logger.info(swept, 'orphaned attachments swept');
  }
  return swept;
}

async function sweepRecords(
  options: OrphanSweepOptions,
  swept: { records: number },
): Promise<void> {
  const { store } = options;
  const cutoff = options.now() - options.graceMs;
  let after: string | undefined;
  for (;;) {
    if (options.stopped()) return;
    const page = await store.listUnclaimed(
      after === undefined ? { limit: PAGE } : { after, limit: PAGE },
    );
    const due = page.filter((candidate) => candidate.at <= cutoff);
    if (due.length > 0) await sweepCandidates(options, due, cutoff, swept);
    if (page.length < PAGE) return;
    after = page.at(-1)!.blobId;
  }
}

/** Deletes the candidates' records that no document points at; claims the others. */
async function sweepCandidates(
  options: OrphanSweepOptions,
  candidates: Array<{ blobId: string; at: number }>,
  cutoff: number,
  swept: { records: number },
): Promise<void> {
  const { store, registry } = options;
  const at = new Map(candidates.map((c) => [c.blobId, c.at]));
  const records = await store.getAttachments(candidates.map((c) => c.blobId));
  const claimed: string[] = [];
  const old: AttachmentRecord[] = [];
  for (const [i, record] of records.entries()) {
    if (record === undefined) claimed.push(candidates[i]!.blobId);
    else if (record.updatedAt <= cutoff && !record.state.startsWith('deleting')) old.push(record);
  }
  const docIds = [...new Set(old.map((record) => record.docId))];
  const docs = await store.getDocs(docIds);
  const pointer = new Map(docIds.map((id, i) => [id, pointerOf(docs[i])]));
  for (const record of old) {
    if (pointer.get(record.docId) === record.blobId) {
      claimed.push(record.blobId);
      continue;
    }
    // Read again just before deleting: a `putDoc` may have committed the pointer since.
    if (pointerOf(await store.getDoc(record.docId)) === record.blobId) continue;
    const live = await registry.hold(record.blobId);
    if (live === undefined) continue;
    try {
      // A change since the page was read (a new pointer, a transfer) wins.
      if (live.state.startsWith('deleting') || live.snapshot.context.docId !== record.docId) {
        continue;
      }
      registry.send(live, { type: 'DELETE' });
      swept.records += 1;
    } finally {
      registry.release(live);
    }
  }
  if (claimed.length > 0) {
    await store.commit((tx) => {
      for (const blobId of claimed) tx.claim(blobId, at.get(blobId)!);
    });
  }
}

function pointerOf(doc: Doc | undefined): string | undefined {
  const blobId = doc && !doc.deleted ? doc.content?.blob_id : undefined;
  return typeof blobId === 'string' ? blobId : undefined;
}

async function sweepFiles(options: OrphanSweepOptions, swept: { files: number }): Promise<void> {
  const { store, local } = options;
  let batch: string[] = [];
  const flush = async () => {
    const records = await store.getAttachments(batch);
    for (const [i, blobId] of batch.entries()) {
      if (records[i] !== undefined || options.isWriting(blobId)) continue;
      if (options.registry.live(blobId) !== undefined) continue;
      if (await local.delete(blobId)) swept.files += 1;
    }
    batch = [];
  };
  for await (const blobId of local.list()) {
    if (options.stopped()) return;
    batch.push(blobId);
    if (batch.length >= PAGE) await flush();
  }
  if (batch.length > 0) await flush();
}
