import type { Logger } from 'pino';
import type { AttachmentRegistry } from './attachment-registry.js';
import type { LocalBlobStore } from './local-blob-store.js';
import type { Store } from './store/index.js';

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
 * older than the grace period, locally and on the server; and local envelopes without
 * any record (left by a crash between writing one and recording it).
 *
 * TODO: the pass reads every attachment record and lists every local file; at a million
 * attachments it takes tens of seconds of background work at each start.
 */
export async function sweepOrphans(
  options: OrphanSweepOptions,
): Promise<{ records: number; files: number }> {
  const swept = { records: 0, files: 0 };
  await sweepRecords(options, swept);
  await sweepFiles(options, swept);
  if (swept.records + swept.files > 0) {
    options.logger.info(swept, 'orphaned attachments swept');
  }
  return swept;
}

async function sweepRecords(
  options: OrphanSweepOptions,
  swept: { records: number },
): Promise<void> {
  const { store, registry } = options;
  const cutoff = options.now() - options.graceMs;
  let after: string | undefined;
  for (;;) {
    if (options.stopped()) return;
    const page = await store.listAttachments(
      after === undefined ? { limit: PAGE } : { after, limit: PAGE },
    );
    const old = page.filter(
      (record) => record.updatedAt <= cutoff && !record.state.startsWith('deleting'),
    );
    if (old.length > 0) {
      const docIds = [...new Set(old.map((record) => record.docId))];
      const docs = await store.getDocs(docIds);
      const pointer = new Map(
        docIds.map((id, i) => {
          const doc = docs[i];
          const blobId = doc && !doc.deleted ? doc.content?.blob_id : undefined;
          return [id, typeof blobId === 'string' ? blobId : undefined];
        }),
      );
      for (const record of old) {
        if (pointer.get(record.docId) === record.blobId) continue;
        // Read again just before deleting: a `putDoc` may have committed the pointer since.
        const doc = await store.getDoc(record.docId);
        if (doc !== undefined && !doc.deleted && doc.content?.blob_id === record.blobId) continue;
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
    }
    if (page.length < PAGE) return;
    after = page.at(-1)!.blobId;
  }
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
