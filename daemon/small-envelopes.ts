import type { SmallEnvelopeStore } from './local-blob-store.js';
import type { Store } from './store/store.js';

/**
 * Envelopes of at most this many bytes (one chunk's worth) live in the daemon's LevelDB
 * rather than in files: a small put then costs a share of a group commit instead of a
 * file create, two fsyncs and a link. Such an envelope is held in memory whole while it is
 * written or read, like any one chunk of a larger one.
 */
export const SMALL_ENVELOPE_MAX_BYTES = 64 * 1024;

/** The local blob store's small store over the `envelope` sublevel of `store`. */
export function smallEnvelopesIn(store: Store, maxBytes: number): SmallEnvelopeStore {
  return {
    maxBytes,
    get: (id) => store.getEnvelope(id),
    put: async (id, bytes) => {
      await store.commit((tx) => tx.putEnvelope(id, bytes));
    },
    delete: async (id) => {
      await store.commit((tx) => tx.deleteEnvelope(id));
    },
    ids: () => store.envelopeIds(),
  };
}
