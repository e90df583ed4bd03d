import type { BlobsBackend } from './backends/blobs-backend.js';
import type { ServerConfig } from './config.js';
import type { ServerInfo } from './server-info.js';
import type { ServiceTokens } from './service-tokens.js';
import type { UserRecord, UserStore } from './user-store.js';

/** Everything the routes use; none of it is specific to a storage backend. */
export interface ServerContext {
  config: ServerConfig;
  backend: BlobsBackend;
  users: UserStore;
  services: ServiceTokens;
  info: ServerInfo;
}

/** The quota that applies to `user`: their own, else the server default. */
export function quotaOf(context: ServerContext, user: UserRecord): number {
  return user.quota ?? context.config.defaultQuota;
}
