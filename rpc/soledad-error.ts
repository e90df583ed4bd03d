/**
 * JSON-RPC error codes per failure family. The integer tells a client which family; the
 * stable string code in `error.data.code` says exactly what happened. Codes not listed
 * here (new ones the daemon may add) travel with `OTHER_DOMAIN_ERROR`.
 */
export const RPC_ERROR_CODES = {
  invalid_params: -32602,
  invalid_request: -32602,
  internal: -32603,
  not_found: 1001,
  conflict: 1002,
  invalid_state: 1003,
  already_deleted: 1003,
  integrity_error: 1004,
  not_decryptable: 1004,
  remote_unavailable: 1005,
  unauthorized: 1005,
  forbidden: 1005,
  quota_exceeded: 1005,
  too_large: 1005,
  blob_deleted: 1005,
  cancelled: 1006,
  source_failed: 1006,
  shutting_down: 1007,
} as const satisfies Record<string, number>;

/** Family of domain errors whose string code is not in `RPC_ERROR_CODES`. */
export const OTHER_DOMAIN_ERROR = 1000;

/**
 * Codes the client library raises itself, never sent by the daemon: the daemon is not
 * listening, the connection dropped, or the upgrade was refused (401 token, 403 origin
 * or host).
 */
export const CLIENT_ERROR_CODES = [
  'daemon_not_running',
  'disconnected',
  'rpc_unauthorized',
  'rpc_forbidden',
] as const;

/** A stable string code is lower-case snake case; anything else (ENOENT...) is internal. */
const DOMAIN_CODE = /^[a-z][a-z0-9_]{0,63}$/;

export function isDomainCode(value: unknown): value is string {
  return typeof value === 'string' && DOMAIN_CODE.test(value);
}

export function rpcCodeFor(code: string): number {
  return Object.hasOwn(RPC_ERROR_CODES, code)
    ? RPC_ERROR_CODES[code as keyof typeof RPC_ERROR_CODES]
    : OTHER_DOMAIN_ERROR;
}

/** Every error the client library rejects with; match on `code`, never on the message. */
export class SoledadError extends Error {
  readonly code: string;
  /** The JSON-RPC error code when the error came from the daemon. */
  readonly rpcCode: number | undefined;
  /** For `conflict`: the stored revision the change was not based on. */
  readonly currentRev: string | undefined;

  constructor(
    code: string,
    message: string,
    options?: { cause?: unknown; rpcCode?: number; currentRev?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SoledadError';
    this.code = code;
    this.rpcCode = options?.rpcCode;
    this.currentRev = options?.currentRev;
  }
}
