import type { Logger } from 'pino';
import type { AttachmentInput } from '../machines/index.js';
import { DEFAULT_NAMESPACE } from '../wire/ids.js';
import type { AttachmentRegistry } from './attachment-registry.js';
import type { LocalBlobStore } from './local-blob-store.js';
import type { BlobsClient } from './remote/blobs-client.js';
import type { RemoteStatus } from './remote-status.js';
import type { AttachmentRecord, Store } from './store/index.js';

export interface SyncResult {
  /** Local-only attachments queued for upload (including ones already waiting). */
  uploaded: number;
  /** Attachments found on the server: new REMOTE records, or local ones it already holds. */
  markedRemote: number;
  /** Deletions made by another device, applied here. */
  deleted: number;
}

export interface RemoteSyncOptions {
  client: BlobsClient;
  store: Store;
  registry: AttachmentRegistry;
  local: LocalBlobStore;
  remoteStatus: RemoteStatus;
  /** Builds a machine input with the daemon's transfer settings. */
  input(
    fields: Pick<AttachmentInput, 'blobId' | 'docId' | 'size'> & Partial<AttachmentInput>,
  ): AttachmentInput;
  now(): number;
  stopped(): boolean;
  /** Aborts the pass's requests (the daemon is stopping). */
  signal: AbortSignal;
  logger: Logger;
}

const PAGE = 1000;

/**
 * One remote sync pass over the `default` namespace (others, such as the incoming box's
 * `MX`, are left alone):
 * - server tombstones: known attachments get `REMOTE_DELETED`;
 * - every record: one the server lacks that we believed synced is uploaded again (so
 *   nothing stays SYNCED that the server does not hold); one waiting to upload that the
 *   server already holds is retried at once (its upload ends on `blob_exists`);
 * - server blobs without a record that a stored document points at get a REMOTE record.
 *
 * TODO: each pass lists every server id and reads every record (and, when the server has
 * unknown blobs, every document); a million-blob account needs paged listings and a
 * changes feed from the server.
 */
export async function runRemoteSync(options: RemoteSyncOptions): Promise<SyncResult> {
  const { client, store, registry, remoteStatus, logger, signal } = options;
  const startedAt = options.now();
  const namespace = DEFAULT_NAMESPACE;
  const [live, tombstones] = await Promise.all([
    remoteStatus.track(client.list({ namespace, signal })),
    remoteStatus.track(client.list({ namespace, deleted: true, signal })),
  ]);
  const onServer = new Set(live);
  const result: SyncResult = { uploaded: 0, markedRemote: 0, deleted: 0 };

  // TODO: the document that pointed at a blob deleted elsewhere keeps its `blob_id` until
  // document sync brings the other device's change.
  for (let i = 0; i < tombstones.length && !options.stopped(); i += PAGE) {
    const ids = tombstones.slice(i, i + PAGE);
    const records = await store.getAttachments(ids);
    for (const record of records) {
      if (record === undefined || record.state.startsWith('deleting')) continue;
      const applied = await sendIf(registry, record.blobId, (state) =>
        state.startsWith('deleting') ? undefined : { type: 'REMOTE_DELETED' },
      );
      if (applied) result.deleted += 1;
    }
  }

  const tombstoned = new Set(tombstones);
  const withRecord = new Set<string>();
  let after: string | undefined;
  for (;;) {
    if (options.stopped()) return result;
    const page = await store.listAttachments(
      after === undefined ? { limit: PAGE } : { after, limit: PAGE },
    );
    for (const record of page) {
      if (record.namespace !== namespace) continue;
      withRecord.add(record.blobId);
      // Tombstoned ids were handled above.
      if (tombstoned.has(record.blobId)) continue;
      await reconcile(options, record, onServer.has(record.blobId), startedAt, result);
    }
    if (page.length < PAGE) break;
    after = page.at(-1)!.blobId;
  }

  const unknown = live.filter((id) => !withRecord.has(id) && !tombstoned.has(id));
  if (unknown.length > 0 && !options.stopped()) {
    const pointers = await documentPointers(store, options.stopped);
    for (const blobId of unknown) {
      const docId = pointers.get(blobId);
      if (docId === undefined || registry.live(blobId) !== undefined) continue;
      if ((await store.getAttachment(blobId)) !== undefined) continue;
      const size = await remoteStatus.track(client.size(blobId, { namespace, signal }));
      await registry.create(options.input({ blobId, docId, size }), {
        type: 'REMOTE_FOUND',
        size,
      });
      result.markedRemote += 1;
    }
  }
  logger.debug({ server: live.length, tombstones: tombstones.length }, 'remote listing compared');
  return result;
}

async function reconcile(
  options: RemoteSyncOptions,
  record: AttachmentRecord,
  held: boolean,
  startedAt: number,
  result: SyncResult,
): Promise<void> {
  const { registry, logger } = options;
  const { state } = record;
  if (state.startsWith('deleting')) return;
  if (held) {
    if (state === 'local.queued' || state === 'local.retrying') {
      // Its upload will find the blob there (`blob_exists`) and verify the size.
      await sendIf(registry, record.blobId, (now) =>
        now === 'local.retrying' ? { type: 'RETRY' } : undefined,
      );
      result.markedRemote += 1;
    }
    return;
  }
  if (state.startsWith('local.') && state !== 'local.rejected') {
    result.uploaded += 1;
    return;
  }
  // Changed after the listing was taken: the listing says nothing about it.
  if (record.updatedAt >= startedAt) return;
  if (state === 'synced') {
    if (!(await options.local.has(record.blobId))) {
      logger.error({ blobId: record.blobId }, 'a synced blob is missing here and on the server');
      return;
    }
    // Decided again on the record read under the registry's lock: it may have moved on.
    const replaced = await registry.replaceSettled(record.blobId, (current) => {
      if (current.state !== 'synced' || current.updatedAt >= startedAt) return undefined;
      const { context } = current.snapshot;
      return {
        input: options.input({
          blobId: current.blobId,
          docId: current.docId,
          size: current.size,
          namespace: current.namespace,
          pinned: context.pinned,
          priority: context.priority,
        }),
        event: { type: 'STORED', size: current.size },
      };
    });
    if (replaced) {
      logger.warn({ blobId: record.blobId }, 'the server lost a synced blob; uploading it again');
      result.uploaded += 1;
    }
  } else if (state === 'remote.idle' || state === 'failed') {
    logger.warn({ blobId: record.blobId, state }, 'the server lost a blob this device lacks');
  }
}

/** Sends the event `pick` chooses for the attachment's current state; true if it did. */
async function sendIf(
  registry: AttachmentRegistry,
  blobId: string,
  pick: (state: string) => Parameters<AttachmentRegistry['send']>[1] | undefined,
): Promise<boolean> {
  const live = await registry.hold(blobId);
  if (live === undefined) return false;
  try {
    const event = pick(live.state);
    if (event === undefined) return false;
    registry.send(live, event);
    return true;
  } finally {
    registry.release(live);
  }
}

/** `blob_id` → document id of every stored, live document that has an attachment. */
async function documentPointers(
  store: Store,
  stopped: () => boolean,
): Promise<Map<string, string>> {
  const pointers = new Map<string, string>();
  const ids = await store.listDocIds();
  for (let i = 0; i < ids.length && !stopped(); i += PAGE) {
    const docs = await store.getDocs(ids.slice(i, i + PAGE));
    for (const doc of docs) {
      const blobId = doc?.content?.blob_id;
      if (doc !== undefined && !doc.deleted && typeof blobId === 'string') {
        pointers.set(blobId, doc.id);
      }
    }
  }
  return pointers;
}
