import {
  type ActorRefFrom,
  type AnyActorRef,
  assign,
  enqueueActions,
  fromPromise,
  type SnapshotFrom,
  setup,
} from 'xstate';
import {
  type AttachmentOperation,
  classifyFailure,
  DEFAULT_MAX_CORRUPTIONS,
  DEFAULT_RETRY_DELAYS_MS,
  type FailureInfo,
  type FailureKind,
  failureInfo,
  retryDelay,
} from './attachment-failure.js';
import { type Priority, statePath } from './attachment-state.js';

/**
 * Everything the machine knows about one attachment. Plain JSON (no `undefined`), so a
 * persisted snapshot survives `JSON.stringify` / `JSON.parse` unchanged.
 */
export interface AttachmentContext {
  blobId: string;
  docId: string;
  namespace: string;
  /** Size of the encrypted envelope in bytes. */
  size: number;
  priority: Priority;
  /** Keep a local copy: a pinned REMOTE attachment is downloaded, EVICT is refused. */
  pinned: boolean;
  /** Consecutive failed attempts of the current operation; reset on success. */
  attempts: number;
  /** Failed verifications of downloads since the last successful one. */
  corruptions: number;
  /** Epoch ms (from the actor's clock) at which a `*.retrying` state goes back to work. */
  retryAt: number | null;
  lastError: FailureInfo | null;
  /**
   * Set when the server refused our credentials (`unauthorized`/`forbidden`); cleared by
   * the next `START`. The daemon's scheduler pauses every transfer while any is set.
   */
  paused: boolean;
  /** Why the attachment is being deleted: here (`local`) or by another device (`remote`). */
  deletion: 'local' | 'remote' | null;
  retryDelaysMs: number[];
  maxCorruptions: number;
}

export interface AttachmentInput {
  blobId: string;
  docId: string;
  namespace: string;
  size: number;
  /** Default `MEDIUM`. */
  priority?: Priority;
  pinned?: boolean;
  /** Waits before retry 1, 2, ...; the last one repeats. Default 10, 20, 30, 40, 50, 60 s. */
  retryDelaysMs?: readonly number[];
  /** Failed download verifications that end in `failed`. Default 3. */
  maxCorruptions?: number;
}

export type AttachmentEvent =
  /** The local envelope is written: `none` → `local.queued`. */
  | { type: 'STORED'; size?: number }
  /** Remote sync found the blob on the server: `none` → `remote.idle`. */
  | { type: 'REMOTE_FOUND'; size?: number }
  /** The scheduler grants a transfer slot: `*.queued` → uploading / downloading. */
  | { type: 'START' }
  /** Fetch the blob: `remote.idle` or `failed` → `remote.queued`. */
  | { type: 'DOWNLOAD' }
  | { type: 'PIN' }
  | { type: 'UNPIN' }
  | { type: 'PRIORITIZE'; priority: Priority }
  /** Drop the local copy: `synced` → `evicting`; refused when pinned or not synced. */
  | { type: 'EVICT' }
  /** Skip the rest of a back-off wait, or try a `local.rejected` upload again. */
  | { type: 'RETRY' }
  /** Delete the blob here and on the server. */
  | { type: 'DELETE' }
  /** Another device deleted the blob: drop the local copy and the record. */
  | { type: 'REMOTE_DELETED' }
  /** Sent once right after an actor is restored from a persisted snapshot. */
  | { type: 'RESUME' };

/**
 * Events the machine emits (`actor.on(type, listener)`). A `refused` event is emitted
 * synchronously inside the `send` of the refused command.
 */
export type AttachmentEmitted =
  | { type: 'refused'; command: 'EVICT'; reason: 'pinned' | 'not_synced' }
  | {
      type: 'failure';
      operation: AttachmentOperation;
      error: FailureInfo;
      kind: FailureKind;
      /** Consecutive failed attempts, including this one. */
      attempts: number;
    };

/** Input of the upload, download and evict actors. */
export interface TransferInput {
  blobId: string;
  docId: string;
  namespace: string;
  size: number;
  priority: Priority;
  /** 1 for the first attempt. */
  attempt: number;
}

/** Input of the remove actor. */
export interface RemoveInput {
  blobId: string;
  docId: string;
  namespace: string;
  /**
   * `local`: delete on the server (if it is there) and the local copy; `remote`: the
   * server already deleted it, drop only the local copy.
   */
  deletion: 'local' | 'remote';
}

function notProvided(name: string): never {
  throw new Error(`attachment machine: the ${name} actor is not provided`);
}

/**
 * Reads "now" from the actor system's clock when it has a `now()` (XState's
 * `SimulatedClock` does, and so should the daemon's), else from `Date.now()`.
 */
function nowOf(self: AnyActorRef): number {
  const clock = self.system._clock as { now?: () => number };
  return typeof clock.now === 'function' ? clock.now() : Date.now();
}

function transferInput(context: AttachmentContext): TransferInput {
  const { blobId, docId, namespace, size, priority, attempts } = context;
  return { blobId, docId, namespace, size, priority, attempt: attempts + 1 };
}

/** Parameters of the machine's failure guards and actions. */
export interface FailureParams {
  operation: AttachmentOperation;
  error: unknown;
}

export interface RecordFailureParams extends FailureParams {
  /** Arm the back-off timer and count the attempt. */
  retry?: boolean;
  pause?: boolean;
  corruption?: boolean;
}

function kindOf({ operation, error }: FailureParams): FailureKind {
  return classifyFailure(operation, failureInfo(error).code);
}

/**
 * The attachment machine. Every side effect is an invoked promise actor that the daemon
 * supplies with `attachmentMachine.provide({ actors: { upload, download, evict, remove } })`;
 * the defaults throw "not provided". An actor rejects with an error whose string `code`
 * decides what follows (see `classifyFailure`).
 *
 * - `upload` writes the envelope to the server. When the server answers `blob_exists`,
 *   an earlier attempt landed: the actor verifies the stored size and resolves (or
 *   rejects with `internal` if the size differs).
 * - `download` fetches and verifies the envelope into the local store; a failed
 *   verification rejects with `integrity_error`.
 * - `evict` asks the server whether it still holds the blob, then drops the local copy;
 *   it rejects with `not_found` when the server lacks it (the blob is queued for upload
 *   again) and must not drop anything in that case.
 * - `remove` must be idempotent: it is re-run after a restart.
 *
 * Time: back-off deadlines (`retryAt`) are read from the actor's clock when it has a
 * `now()` (pass the same clock to `createActor`), else from `Date.now()`. A persisted
 * snapshot carries no pending timer: restore actors with `restoreAttachmentActor`.
 *
 * Observing: `snapshot.context.paused` asks the scheduler to pause; emitted `failure`
 * events report each failed attempt (its `kind` is the classification; the next state
 * shows the outcome) and `refused` events report a refused `EVICT`.
 */
export const attachmentMachine = setup({
  types: {
    context: {} as AttachmentContext,
    events: {} as AttachmentEvent,
    input: {} as AttachmentInput,
    emitted: {} as AttachmentEmitted,
  },
  actors: {
    upload: fromPromise<void, TransferInput>(async () => notProvided('upload')),
    download: fromPromise<void, TransferInput>(async () => notProvided('download')),
    evict: fromPromise<void, TransferInput>(async () => notProvided('evict')),
    remove: fromPromise<void, RemoveInput>(async () => notProvided('remove')),
  },
  delays: {
    untilRetry: ({ context, self }) => Math.max(0, (context.retryAt ?? 0) - nowOf(self)),
  },
  guards: {
    isPinned: ({ context }) => context.pinned,
    failureIs: (_, params: FailureParams & { kind: FailureKind }) => kindOf(params) === params.kind,
    isLastCorruption: ({ context }, params: FailureParams) =>
      kindOf(params) === 'corrupt' && context.corruptions + 1 >= context.maxCorruptions,
  },
  actions: {
    recordFailure: enqueueActions(({ context, self, enqueue }, params: RecordFailureParams) => {
      const error = failureInfo(params.error);
      const attempts = params.retry ? context.attempts + 1 : context.attempts;
      enqueue.assign({
        lastError: error,
        attempts,
        retryAt: params.retry ? nowOf(self) + retryDelay(context.retryDelaysMs, attempts) : null,
        paused: context.paused || params.pause === true,
        corruptions: context.corruptions + (params.corruption ? 1 : 0),
      });
      enqueue.emit({
        type: 'failure',
        operation: params.operation,
        error,
        kind: kindOf(params),
        attempts: context.attempts + 1,
      });
    }),
    clearFailures: assign({ attempts: 0, corruptions: 0, retryAt: null, lastError: null }),
    clearRetry: assign({ retryAt: null }),
    unpause: assign({ paused: false }),
    markDeletion: assign((_, params: { deletion: 'local' | 'remote' }) => ({
      deletion: params.deletion,
      retryAt: null,
      attempts: 0,
    })),
    refuseEvict: enqueueActions(({ enqueue }, params: { reason: 'pinned' | 'not_synced' }) => {
      enqueue.emit({ type: 'refused', command: 'EVICT', reason: params.reason });
    }),
  },
}).createMachine({
  id: 'attachment',
  initial: 'none',
  context: ({ input }) => ({
    blobId: input.blobId,
    docId: input.docId,
    namespace: input.namespace,
    size: input.size,
    priority: input.priority ?? 'MEDIUM',
    pinned: input.pinned ?? false,
    attempts: 0,
    corruptions: 0,
    retryAt: null,
    lastError: null,
    paused: false,
    deletion: null,
    retryDelaysMs: [...(input.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS)],
    maxCorruptions: input.maxCorruptions ?? DEFAULT_MAX_CORRUPTIONS,
  }),
  on: {
    DELETE: {
      target: '.deleting',
      actions: { type: 'markDeletion', params: { deletion: 'local' } },
    },
    REMOTE_DELETED: {
      target: '.deleting',
      actions: { type: 'markDeletion', params: { deletion: 'remote' } },
    },
    PIN: { actions: assign({ pinned: true }) },
    UNPIN: { actions: assign({ pinned: false }) },
    PRIORITIZE: { actions: assign({ priority: ({ event }) => event.priority }) },
    EVICT: { actions: { type: 'refuseEvict', params: { reason: 'not_synced' } } },
  },
  states: {
    none: {
      on: {
        STORED: {
          target: 'local',
          actions: assign({ size: ({ context, event }) => event.size ?? context.size }),
        },
        REMOTE_FOUND: {
          target: 'remote',
          actions: assign({ size: ({ context, event }) => event.size ?? context.size }),
        },
      },
    },
    local: {
      initial: 'queued',
      states: {
        queued: {
          on: { START: { target: 'uploading', actions: 'unpause' } },
        },
        uploading: {
          invoke: {
            src: 'upload',
            input: ({ context }) => transferInput(context),
            onDone: { target: '#attachment.synced', actions: 'clearFailures' },
            onError: [
              {
                guard: {
                  type: 'failureIs',
                  params: ({ event }) => ({
                    operation: 'upload',
                    error: event.error,
                    kind: 'pause',
                  }),
                },
                target: 'queued',
                actions: {
                  type: 'recordFailure',
                  params: ({ event }) => ({ operation: 'upload', error: event.error, pause: true }),
                },
              },
              {
                guard: {
                  type: 'failureIs',
                  params: ({ event }) => ({
                    operation: 'upload',
                    error: event.error,
                    kind: 'reject',
                  }),
                },
                target: 'rejected',
                actions: {
                  type: 'recordFailure',
                  params: ({ event }) => ({ operation: 'upload', error: event.error }),
                },
              },
              {
                guard: {
                  type: 'failureIs',
                  params: ({ event }) => ({
                    operation: 'upload',
                    error: event.error,
                    kind: 'deleted',
                  }),
                },
                target: '#attachment.deleting',
                actions: [
                  {
                    type: 'recordFailure',
                    params: ({ event }) => ({ operation: 'upload', error: event.error }),
                  },
                  { type: 'markDeletion', params: { deletion: 'remote' } },
                ],
              },
              {
                target: 'retrying',
                actions: {
                  type: 'recordFailure',
                  params: ({ event }) => ({ operation: 'upload', error: event.error, retry: true }),
                },
              },
            ],
          },
          on: { RESUME: 'queued' },
        },
        retrying: {
          after: { untilRetry: { target: 'queued', actions: 'clearRetry' } },
          on: {
            RETRY: { target: 'queued', actions: 'clearRetry' },
            // Re-arms the timer with the time left (none if overdue).
            RESUME: { target: 'retrying', reenter: true },
          },
        },
        rejected: {
          on: { RETRY: 'queued' },
        },
      },
    },
    synced: {
      on: {
        EVICT: [
          { guard: 'isPinned', actions: { type: 'refuseEvict', params: { reason: 'pinned' } } },
          { target: 'evicting' },
        ],
      },
    },
    evicting: {
      invoke: {
        src: 'evict',
        input: ({ context }) => transferInput(context),
        onDone: { target: 'remote.idle', actions: 'clearFailures' },
        onError: [
          {
            guard: {
              type: 'failureIs',
              params: ({ event }) => ({ operation: 'evict', error: event.error, kind: 'lost' }),
            },
            target: 'local.queued',
            actions: {
              type: 'recordFailure',
              params: ({ event }) => ({ operation: 'evict', error: event.error }),
            },
          },
          {
            guard: {
              type: 'failureIs',
              params: ({ event }) => ({ operation: 'evict', error: event.error, kind: 'deleted' }),
            },
            target: 'deleting',
            actions: [
              {
                type: 'recordFailure',
                params: ({ event }) => ({ operation: 'evict', error: event.error }),
              },
              { type: 'markDeletion', params: { deletion: 'remote' } },
            ],
          },
          {
            // Eviction is a user request, not retried: the attachment stays synced.
            target: 'synced',
            actions: {
              type: 'recordFailure',
              params: ({ event }) => ({
                operation: 'evict',
                error: event.error,
                pause: kindOf({ operation: 'evict', error: event.error }) === 'pause',
              }),
            },
          },
        ],
      },
      on: {
        EVICT: {},
        RESUME: { target: 'evicting', reenter: true },
      },
    },
    remote: {
      initial: 'idle',
      states: {
        idle: {
          always: { guard: 'isPinned', target: 'queued' },
          on: { DOWNLOAD: 'queued' },
        },
        queued: {
          on: { START: { target: 'downloading', actions: 'unpause' } },
        },
        downloading: {
          invoke: {
            src: 'download',
            input: ({ context }) => transferInput(context),
            onDone: { target: '#attachment.synced', actions: 'clearFailures' },
            onError: [
              {
                guard: {
                  type: 'failureIs',
                  params: ({ event }) => ({
                    operation: 'download',
                    error: event.error,
                    kind: 'pause',
                  }),
                },
                target: 'queued',
                actions: {
                  type: 'recordFailure',
                  params: ({ event }) => ({
                    operation: 'download',
                    error: event.error,
                    pause: true,
                  }),
                },
              },
              {
                guard: {
                  type: 'failureIs',
                  params: ({ event }) => ({
                    operation: 'download',
                    error: event.error,
                    kind: 'deleted',
                  }),
                },
                target: '#attachment.deleting',
                actions: [
                  {
                    type: 'recordFailure',
                    params: ({ event }) => ({ operation: 'download', error: event.error }),
                  },
                  { type: 'markDeletion', params: { deletion: 'remote' } },
                ],
              },
              {
                guard: {
                  type: 'isLastCorruption',
                  params: ({ event }) => ({ operation: 'download', error: event.error }),
                },
                target: '#attachment.failed',
                actions: {
                  type: 'recordFailure',
                  params: ({ event }) => ({
                    operation: 'download',
                    error: event.error,
                    corruption: true,
                  }),
                },
              },
              {
                target: 'retrying',
                actions: {
                  type: 'recordFailure',
                  params: ({ event }) => ({
                    operation: 'download',
                    error: event.error,
                    retry: true,
                    corruption: kindOf({ operation: 'download', error: event.error }) === 'corrupt',
                  }),
                },
              },
            ],
          },
          on: { RESUME: 'queued' },
        },
        retrying: {
          after: { untilRetry: { target: 'queued', actions: 'clearRetry' } },
          on: {
            RETRY: { target: 'queued', actions: 'clearRetry' },
            // Re-arms the timer with the time left (none if overdue).
            RESUME: { target: 'retrying', reenter: true },
          },
        },
      },
    },
    failed: {
      on: {
        DOWNLOAD: { target: 'remote.queued', actions: 'clearFailures' },
      },
    },
    deleting: {
      initial: 'removing',
      on: { DELETE: {}, REMOTE_DELETED: {}, EVICT: {} },
      states: {
        removing: {
          invoke: {
            src: 'remove',
            input: ({ context }) => ({
              blobId: context.blobId,
              docId: context.docId,
              namespace: context.namespace,
              deletion: context.deletion ?? 'local',
            }),
            onDone: { target: '#attachment.deleted' },
            onError: {
              target: 'retrying',
              actions: {
                type: 'recordFailure',
                params: ({ event }) => ({
                  operation: 'remove',
                  error: event.error,
                  retry: true,
                  pause: kindOf({ operation: 'remove', error: event.error }) === 'pause',
                }),
              },
            },
          },
          on: { RESUME: { target: 'removing', reenter: true } },
        },
        retrying: {
          after: { untilRetry: { target: 'removing', actions: 'clearRetry' } },
          on: {
            RETRY: { target: 'removing', actions: 'clearRetry' },
            // Re-arms the timer with the time left (none if overdue).
            RESUME: { target: 'retrying', reenter: true },
          },
        },
      },
    },
    deleted: { type: 'final' },
  },
});

export type AttachmentMachine = typeof attachmentMachine;
export type AttachmentActor = ActorRefFrom<AttachmentMachine>;
export type AttachmentSnapshot = SnapshotFrom<AttachmentMachine>;

/** Dotted path of an actor snapshot's state, e.g. `'local.retrying'`. */
export function attachmentStatePath(snapshot: Pick<AttachmentSnapshot, 'value'>): string {
  return statePath(snapshot.value);
}
