import type { AttachmentContext } from '../machines/index.js';
import { publicStateOf } from '../machines/index.js';
import type { FailureEmitted, LiveAttachment, WaitVerdict } from './attachment-registry.js';
import { plaintextSize } from './crypto/envelope-size.js';
import type { AttachmentInfo, DaemonEvent, DocRecord, PublicState } from './daemon-api.js';
import { DaemonError, daemonCodeFor } from './daemon-error.js';
import type { AttachmentRecord, Doc, StoreEvent } from './store/index.js';

// How store records and live actors look through the DaemonApi, and the typed errors a
// caller waiting on an attachment gets.

export function pointerOf(content: Record<string, unknown> | null): string | undefined {
  const pointer = content?.blob_id;
  return typeof pointer === 'string' && pointer !== '' ? pointer : undefined;
}

export function docRecord(doc: Doc): DocRecord {
  return { id: doc.id, rev: doc.rev, content: doc.content ?? {}, deleted: doc.deleted };
}

/** States in which the local copy exists (LOCAL or SYNCED), deletions excluded. */
export function hasLocalCopy(state: string): boolean {
  return (publicStateOf(state) & 1) === 1;
}

export function infoOf(context: AttachmentContext, state: string): AttachmentInfo {
  let plain: number | null = null;
  try {
    plain = plaintextSize(context.size, { blobId: context.blobId });
  } catch {
    plain = null;
  }
  return {
    blobId: context.blobId,
    docId: context.docId,
    namespace: context.namespace,
    size: context.size,
    plaintextSize: plain,
    state: publicStateOf(state) as PublicState,
    machineState: state,
    pinned: context.pinned,
    priority: context.priority,
    attempts: context.attempts,
    lastError: context.lastError === null ? null : { ...context.lastError },
  };
}

export function recordInfo(record: AttachmentRecord): AttachmentInfo {
  return infoOf(record.snapshot.context, record.state);
}

/** What is durable about a live attachment. */
export function liveInfo(live: LiveAttachment): AttachmentInfo {
  const snapshot = live.durableSnapshot ?? live.snapshot;
  return infoOf(snapshot.context, live.durableState ?? live.state);
}

export function failureError(failure: FailureEmitted): DaemonError {
  return new DaemonError(daemonCodeFor(failure.error.code), failure.error.message);
}

export function failedError(live: LiveAttachment): DaemonError {
  const last = (live.durableSnapshot ?? live.snapshot).context.lastError;
  return new DaemonError(
    'integrity_error',
    `attachment ${live.blobId} failed verification${last ? `: ${last.message}` : ''}`,
  );
}

export function uploadVerdict(live: LiveAttachment): WaitVerdict {
  const state = live.durableState;
  if (state === 'synced') return 'done';
  // Failures (a refusal included) end the wait through the emitted failure event.
  if (state === 'deleted' || state?.startsWith('deleting')) {
    return new DaemonError('blob_deleted', `attachment ${live.blobId} was deleted`);
  }
  return 'wait';
}

export function downloadVerdict(live: LiveAttachment): WaitVerdict {
  const state = live.durableState;
  if (state === 'synced') return 'done';
  if (state === 'deleted' || state?.startsWith('deleting')) {
    return new DaemonError('blob_deleted', `attachment ${live.blobId} was deleted`);
  }
  return 'wait';
}

/** The client-facing shape of a stored event; undefined for kinds clients do not see. */
export function daemonEvent(event: StoreEvent): DaemonEvent | undefined {
  if (event.kind === 'doc') {
    return {
      seq: event.seq,
      type: 'doc.changed',
      at: event.at,
      docId: String(event.docId),
      rev: String(event.rev),
      deleted: event.deleted === true,
    };
  }
  if (event.kind === 'attachment') {
    return {
      seq: event.seq,
      type: 'attachment.state',
      at: event.at,
      blobId: String(event.blobId),
      docId: typeof event.docId === 'string' ? event.docId : null,
      state: Number(event.publicState) as PublicState,
      machineState: String(event.state),
    };
  }
  return undefined;
}
