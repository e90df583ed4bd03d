import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, extname, join, resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { parseByteSize } from './byte-size.js';

/** Read when neither `--config` nor `--root` is given and the file exists. */
export const DEFAULT_CONFIG_PATH = '/etc/soledad/server.toml';

export const DEFAULT_ROOT = '/var/lib/soledad';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ListenAddress {
  host: string;
  /** 0 picks a free port. */
  port: number;
}

/** The server configuration with every default applied and every path absolute. */
export interface ServerConfig {
  /** Storage root: blobs, `users.json`, `listening.json`. */
  root: string;
  logLevel: LogLevel;
  /** Bytes a user may store when their own record sets no quota. */
  defaultQuota: number;
  /** Largest blob accepted, in bytes. */
  maxBlobSize: number;
  /** How long SIGTERM waits for in-flight requests before cutting them (they roll back). */
  shutdownTimeoutMs: number;
  public: ListenAddress;
  services: ListenAddress & {
    /** `service:token` lines; a missing file admits no service. */
    tokensFile: string;
  };
  /** The file this configuration came from, if any. */
  source?: string;
}

/** A configuration file that cannot be read or does not validate; the message names the field. */
export class ServerConfigError extends Error {
  readonly code = 'invalid_config';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ServerConfigError';
  }
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  const lower = host.toLowerCase();
  return lower === '::1' || lower.startsWith('::ffff:127.');
}

const byteSize = z.union([z.number(), z.string()]).transform((value, context) => {
  const bytes =
    typeof value === 'number'
      ? Number.isSafeInteger(value) && value >= 0
        ? value
        : undefined
      : parseByteSize(value);
  if (bytes === undefined) {
    context.addIssue({
      code: 'custom',
      message: `expected a byte count such as 1048576 or "512 MiB", not ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
  return bytes;
});

const port = z.number().int().min(0).max(65535);

const host = z.string().min(1);

const fileSchema = z.strictObject({
  root: z.string().min(1).default(DEFAULT_ROOT),
  log_level: z.enum(LOG_LEVELS).default('info'),
  default_quota: byteSize.default(10 * 2 ** 30),
  max_blob_size: byteSize.default(4 * 2 ** 30),
  shutdown_timeout_ms: z.number().int().nonnegative().default(10_000),
  public: z
    .strictObject({ host: host.default('127.0.0.1'), port: port.default(2424) })
    .prefault({}),
  services: z
    .strictObject({
      host: host
        .refine(isLoopbackHost, 'the services listener must bind a loopback address')
        .default('127.0.0.1'),
      port: port.default(2525),
      tokens_file: z.string().min(1).optional(),
    })
    .prefault({}),
});

/** The configuration file's fields, as written (snake_case); every one is optional. */
export type ServerConfigFile = z.input<typeof fileSchema>;

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.join('.');
      return path === '' ? issue.message : `${path}: ${issue.message}`;
    })
    .join('; ');
}

function parseText(text: string, path: string): unknown {
  const extension = extname(path).toLowerCase();
  const json = extension === '.json' || (extension !== '.toml' && text.trimStart().startsWith('{'));
  try {
    return json ? JSON.parse(text) : parseToml(text);
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    throw new ServerConfigError(`${path}: not valid ${json ? 'JSON' : 'TOML'}: ${message}`, {
      cause,
    });
  }
}

/**
 * Validates configuration fields and applies defaults. Relative paths are resolved
 * against `baseDir` (the config file's folder); `root`, when given, replaces the file's.
 */
export function resolveServerConfig(
  fields: unknown,
  options: { baseDir?: string; root?: string; source?: string } = {},
): ServerConfig {
  const parsed = fileSchema.safeParse(fields ?? {});
  if (!parsed.success) {
    const where = options.source === undefined ? 'config' : options.source;
    throw new ServerConfigError(`${where}: ${describeIssues(parsed.error)}`);
  }
  const value = parsed.data;
  const baseDir = options.baseDir ?? process.cwd();
  const root = options.root === undefined ? resolve(baseDir, value.root) : resolve(options.root);
  const tokensFile =
    value.services.tokens_file === undefined
      ? join(root, 'services.tokens')
      : resolve(baseDir, value.services.tokens_file);
  const config: ServerConfig = {
    root,
    logLevel: value.log_level,
    defaultQuota: value.default_quota,
    maxBlobSize: value.max_blob_size,
    shutdownTimeoutMs: value.shutdown_timeout_ms,
    public: { host: value.public.host, port: value.public.port },
    services: { host: value.services.host, port: value.services.port, tokensFile },
  };
  if (options.source !== undefined) config.source = options.source;
  return config;
}

/**
 * Loads the server configuration: `configPath` if given (it must exist), else
 * `/etc/soledad/server.toml` if it exists, else the defaults. `.json` files are JSON,
 * `.toml` files TOML, others are sniffed. `root` overrides the file's storage root.
 */
export async function loadServerConfig(
  options: { configPath?: string; root?: string } = {},
): Promise<ServerConfig> {
  let path = options.configPath;
  if (path === undefined && options.root === undefined && existsSync(DEFAULT_CONFIG_PATH)) {
    path = DEFAULT_CONFIG_PATH;
  }
  if (path === undefined) {
    return resolveServerConfig({}, options.root === undefined ? {} : { root: options.root });
  }
  const source = resolve(path);
  let text: string;
  try {
    text = await readFile(source, 'utf8');
  } catch (cause) {
    throw new ServerConfigError(`cannot read config file ${source}: ${String(cause)}`, { cause });
  }
  const resolveOptions: { baseDir: string; source: string; root?: string } = {
    baseDir: dirname(source),
    source,
  };
  if (options.root !== undefined) resolveOptions.root = options.root;
  return resolveServerConfig(parseText(text, source), resolveOptions);
}
