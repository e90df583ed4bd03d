import type { Logger } from 'pino';
import { DEFAULT_MAX_CORRUPTIONS, DEFAULT_RETRY_DELAYS_MS } from '../machines/index.js';
import type { DaemonClock } from './attachment-registry.js';
import type { WatchFolderConfig } from './watch-folders.js';

/** Transfer settings; every field has the DESIGN §5 default. */
export interface TransferSettings {
  /** Uploads at once (a `/stream` batch counts as one); default 4. */
  uploads: number;
  /** Downloads at once; default 4. */
  downloads: number;
  /** Back-off waits before retry 1, 2, ...; the last repeats. Default 10, 20, 30, 40, 50, 60 s. */
  retryDelaysMs: number[];
  /** Failed verifications of a download that end in `failed`; default 3. */
  maxVerificationFailures: number;
  /** Envelopes under this many bytes travel through `/stream` batches; default 256 KiB, 0 never. */
  smallBlobBytes: number;
  /** Most blobs per batch; default 100. */
  batchMaxBlobs: number;
  /** Most envelope bytes per batch; default 8 MiB. */
  batchMaxBytes: number;
  /**
   * How long a batch that got a slot waits for more small blobs, unless it is full or
   * holds an URGENT one; default 100 ms.
   */
  batchLingerMs: number;
}

export interface DaemonOptions {
  /** Data folder: LevelDB in `db/`, envelopes in `blobs/`. Created if missing (mode 0700). */
  dataDir: string;
  /** The 32-byte storage secret (from the secrets file). */
  secret: Buffer;
  /** This device's id in revisions (from the secrets file). */
  deviceId: string;
  /** The blobs server; without it attachments stay local and wait. */
  remote?: { url: string; uuid: string; token: string };
  transfers?: Partial<TransferSettings>;
  /** Remote sync period; default 60 s, 0 turns periodic sync off. */
  syncIntervalMs?: number;
  /** Delay of the first remote sync after start; default 1 s, negative: none. */
  initialSyncDelayMs?: number;
  /** Events kept in the log; default 10,000. */
  eventLogSize?: number;
  /**
   * Attachments no stored document points at are swept at start-up once their record is
   * this old; default 24 h.
   */
  orphanGraceMs?: number;
  /**
   * Live actors kept for attachments in motion that only wait (queued for a slot, or for
   * a retry); past it such actors are passivated to their records and restored when their
   * slot or retry time comes. Default 1000; 0 passivates every waiting one.
   */
  maxLiveIdle?: number;
  /** How long `close()` lets transfers in flight finish before aborting them; default 30 s. */
  stopTimeoutMs?: number;
  /**
   * Watch folders: their files become documents with the file as their attachment
   * (see `WatchFolders`). Watching starts in the background once the daemon is ready.
   */
  watch?: { folders: readonly WatchFolderConfig[]; stabilityMs?: number };
  /** Default: silent. */
  logger?: Logger;
  /** Time source for back-off timers and deadlines; default the system clock. */
  clock?: DaemonClock;
}

export const DEFAULT_TRANSFERS: TransferSettings = {
  uploads: 4,
  downloads: 4,
  retryDelaysMs: [...DEFAULT_RETRY_DELAYS_MS],
  maxVerificationFailures: DEFAULT_MAX_CORRUPTIONS,
  smallBlobBytes: 256 * 1024,
  batchMaxBlobs: 100,
  batchMaxBytes: 8 * 1024 * 1024,
  batchLingerMs: 100,
};
