import { readFile } from 'node:fs/promises';
import { dirname, extname, join, resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { isValidId } from '../wire/ids.js';
import { defaultConfigDir, defaultDataDir } from './paths.js';

/** File name of the daemon's configuration inside the config folder. */
export const DAEMON_CONFIG_NAME = 'daemon.toml';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** A configuration that cannot be read or does not validate; the message names the field. */
export class DaemonConfigError extends Error {
  readonly code = 'invalid_config';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DaemonConfigError';
  }
}

const positiveInt = z.number().int().positive();
const ms = z.number().int().nonnegative();

const watchSchema = z.strictObject({
  path: z.string().min(1),
  /** Glob-like patterns (`*` and `**`) matched against paths relative to the folder. */
  ignore: z.array(z.string().min(1)).default([]),
});

const fileSchema = z.strictObject({
  data_dir: z.string().min(1).optional(),
  log_level: z.enum(LOG_LEVELS).default('info'),
  passphrase_file: z.string().min(1).optional(),
  stop_timeout_ms: ms.default(30_000),
  server: z
    .strictObject({
      url: z.url({ protocol: /^https?$/ }).optional(),
      uuid: z.string().refine(isValidId, 'not a valid user id').optional(),
      token_file: z.string().min(1).optional(),
    })
    .prefault({}),
  rpc: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(2426),
      socket: z.string().min(1).optional(),
      allowed_origins: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  transfers: z
    .strictObject({
      uploads: positiveInt.default(4),
      downloads: positiveInt.default(4),
      retry_delays_ms: z.array(ms).min(1).default([10_000, 20_000, 30_000, 40_000, 50_000, 60_000]),
      max_verification_failures: positiveInt.default(3),
      small_blob_bytes: z
        .number()
        .int()
        .nonnegative()
        .default(256 * 1024),
      batch_max_blobs: positiveInt.default(100),
      batch_max_bytes: positiveInt.default(8 * 1024 * 1024),
    })
    .prefault({}),
  sync: z.strictObject({ interval_ms: ms.default(60_000) }).prefault({}),
  events: z.strictObject({ log_size: positiveInt.default(10_000) }).prefault({}),
  orphan_grace_ms: ms.default(24 * 3600 * 1000),
  watch: z.array(watchSchema).default([]),
});

/** The configuration file's fields as written (snake_case); every one is optional. */
export type DaemonConfigFile = z.input<typeof fileSchema>;

/** The daemon configuration with every default applied and every path absolute. */
export interface DaemonConfig {
  dataDir: string;
  configDir: string;
  logLevel: (typeof LOG_LEVELS)[number];
  passphraseFile: string | undefined;
  stopTimeoutMs: number;
  server: { url: string; uuid: string; tokenFile: string } | undefined;
  rpc: { host: string; port: number; socket: string | undefined; allowedOrigins: string[] };
  transfers: {
    uploads: number;
    downloads: number;
    retryDelaysMs: number[];
    maxVerificationFailures: number;
    smallBlobBytes: number;
    batchMaxBlobs: number;
    batchMaxBytes: number;
  };
  syncIntervalMs: number;
  eventLogSize: number;
  orphanGraceMs: number;
  watch: { path: string; ignore: string[] }[];
  source: string | undefined;
}

/**
 * Environment overrides: `SOLEDAD_<FIELD>` for top-level fields and
 * `SOLEDAD_<SECTION>_<FIELD>` inside a section, e.g. `SOLEDAD_RPC_PORT=0`. A value that
 * parses as JSON (numbers, booleans, arrays) is taken as JSON, anything else as a string.
 */
export function environmentOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const overrides: Record<string, Record<string, unknown> | unknown> = {};
  const shape = fileSchema.shape;
  for (const key of Object.keys(shape) as (keyof typeof shape)[]) {
    if (key === 'watch') continue;
    const inner = sectionKeys(key);
    if (inner === undefined) {
      const value = env[`SOLEDAD_${key.toUpperCase()}`];
      if (value !== undefined) overrides[key] = envValue(value);
      continue;
    }
    for (const field of inner) {
      const value = env[`SOLEDAD_${key.toUpperCase()}_${field.toUpperCase()}`];
      if (value === undefined) continue;
      const section = (overrides[key] ?? {}) as Record<string, unknown>;
      section[field] = envValue(value);
      overrides[key] = section;
    }
  }
  return overrides;
}

function sectionKeys(key: keyof typeof fileSchema.shape): string[] | undefined {
  const sections = {
    server: ['url', 'uuid', 'token_file'],
    rpc: ['host', 'port', 'socket', 'allowed_origins'],
    transfers: Object.keys(fileSchema.shape.transfers.unwrap().shape),
    sync: ['interval_ms'],
    events: ['log_size'],
  } as Partial<Record<string, string[]>>;
  return sections[key];
}

function envValue(text: string): unknown {
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? text : parsed;
  } catch {
    return text;
  }
}

function merge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] = isPlainObject(current) && isPlainObject(value) ? merge(current, value) : value;
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.join('.');
      return path === '' ? issue.message : `${path}: ${issue.message}`;
    })
    .join('; ');
}

/**
 * Validates fields (file merged with environment overrides) and applies defaults.
 * Relative paths resolve against `baseDir`, the config file's folder.
 */
export function resolveDaemonConfig(
  fields: unknown,
  options: { baseDir?: string; source?: string; env?: NodeJS.ProcessEnv; configDir?: string } = {},
): DaemonConfig {
  const env = options.env ?? process.env;
  if (!isPlainObject(fields ?? {})) {
    throw new DaemonConfigError(`${options.source ?? 'config'}: must be a table of fields`);
  }
  const merged = merge((fields ?? {}) as Record<string, unknown>, environmentOverrides(env));
  const parsed = fileSchema.safeParse(merged);
  if (!parsed.success) {
    throw new DaemonConfigError(`${options.source ?? 'config'}: ${describeIssues(parsed.error)}`);
  }
  const value = parsed.data;
  const baseDir = options.baseDir ?? process.cwd();
  const configDir = options.configDir ?? defaultConfigDir(env);
  const dataDir =
    value.data_dir === undefined ? defaultDataDir(env) : resolve(baseDir, value.data_dir);
  const { url, uuid, token_file } = value.server;
  const given = [url, uuid, token_file].filter((field) => field !== undefined).length;
  if (given !== 0 && given !== 3) {
    throw new DaemonConfigError(
      `${options.source ?? 'config'}: server: url, uuid and token_file go together`,
    );
  }
  return {
    dataDir,
    configDir,
    logLevel: value.log_level,
    passphraseFile:
      value.passphrase_file === undefined ? undefined : resolve(baseDir, value.passphrase_file),
    stopTimeoutMs: value.stop_timeout_ms,
    server:
      url === undefined || uuid === undefined || token_file === undefined
        ? undefined
        : { url, uuid, tokenFile: resolve(baseDir, token_file) },
    rpc: {
      host: value.rpc.host,
      port: value.rpc.port,
      socket: value.rpc.socket === undefined ? undefined : resolve(baseDir, value.rpc.socket),
      allowedOrigins: value.rpc.allowed_origins,
    },
    transfers: {
      uploads: value.transfers.uploads,
      downloads: value.transfers.downloads,
      retryDelaysMs: value.transfers.retry_delays_ms,
      maxVerificationFailures: value.transfers.max_verification_failures,
      smallBlobBytes: value.transfers.small_blob_bytes,
      batchMaxBlobs: value.transfers.batch_max_blobs,
      batchMaxBytes: value.transfers.batch_max_bytes,
    },
    syncIntervalMs: value.sync.interval_ms,
    eventLogSize: value.events.log_size,
    orphanGraceMs: value.orphan_grace_ms,
    watch: value.watch.map((folder) => ({
      path: resolve(baseDir, folder.path),
      ignore: folder.ignore,
    })),
    source: options.source,
  };
}

/**
 * Loads the daemon configuration: `configPath` if given (it must exist), else
 * `<config dir>/daemon.toml` if it exists, else the defaults; then applies the environment.
 */
export async function loadDaemonConfig(
  options: { configPath?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<DaemonConfig> {
  const env = options.env ?? process.env;
  const configDir = defaultConfigDir(env);
  const explicit = options.configPath ?? env.SOLEDAD_CONFIG;
  const path = resolve(explicit ?? join(configDir, DAEMON_CONFIG_NAME));
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if (explicit === undefined && (cause as NodeJS.ErrnoException).code === 'ENOENT') {
      return resolveDaemonConfig({}, { env, configDir });
    }
    throw new DaemonConfigError(`cannot read config file ${path}: ${String(cause)}`, { cause });
  }
  const json = extname(path).toLowerCase() === '.json';
  let fields: unknown;
  try {
    fields = json ? JSON.parse(text) : parseToml(text);
  } catch (cause) {
    throw new DaemonConfigError(`${path}: not valid ${json ? 'JSON' : 'TOML'}: ${String(cause)}`, {
      cause,
    });
  }
  return resolveDaemonConfig(fields, { baseDir: dirname(path), source: path, env, configDir });
}
