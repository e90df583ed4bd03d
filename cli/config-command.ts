import { join } from 'node:path';
import { type Command, Option } from 'commander';
import { stringify as stringifyToml } from 'smol-toml';
import {
  DAEMON_CONFIG_NAME,
  type DaemonConfig,
  type DaemonConfigFile,
  environmentOverrides,
  loadDaemonConfig,
  resolveDaemonConfig,
} from '../daemon/config.js';
import { secretsFilePath } from '../daemon/paths.js';
import { RPC_INFO_FILE, RPC_TOKEN_FILE } from '../rpc/rpc-paths.js';
import {
  DEFAULT_CONFIG_PATH,
  loadServerConfig,
  resolveServerConfig,
  type ServerConfig,
  type ServerConfigFile,
} from '../server/config.js';
import { USERS_FILE } from '../server/file-user-store.js';
import { LISTENING_FILE } from '../server/listening-file.js';

type Program = 'server' | 'daemon';

interface CheckOptions {
  server?: boolean;
  daemon?: boolean;
  config?: string;
  root?: string;
  json?: boolean;
}

type TomlScalar = string | number | boolean;
type TomlShown = TomlScalar | TomlScalar[];

function programOf(options: { server?: boolean }): Program {
  return options.server ? 'server' : 'daemon';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A URL with any `user:password@` replaced, so that printing it shows no credential. */
function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  if (parsed.username === '' && parsed.password === '') return url;
  parsed.username = 'REDACTED';
  parsed.password = '';
  return parsed.href;
}

/** The resolved server configuration in the file's own field names. */
function serverFields(config: ServerConfig): Record<string, unknown> {
  return {
    root: config.root,
    log_level: config.logLevel,
    default_quota: config.defaultQuota,
    max_blob_size: config.maxBlobSize,
    shutdown_timeout_ms: config.shutdownTimeoutMs,
    public: { host: config.public.host, port: config.public.port },
    services: {
      host: config.services.host,
      port: config.services.port,
      tokens_file: config.services.tokensFile,
    },
  };
}

/** The resolved daemon configuration in the file's own field names; unset fields are left out. */
function daemonFields(config: DaemonConfig): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    data_dir: config.dataDir,
    log_level: config.logLevel,
    stop_timeout_ms: config.stopTimeoutMs,
    orphan_grace_ms: config.orphanGraceMs,
  };
  if (config.passphraseFile !== undefined) fields.passphrase_file = config.passphraseFile;
  if (config.server !== undefined) {
    fields.server = {
      url: redactUrl(config.server.url),
      uuid: config.server.uuid,
      token_file: config.server.tokenFile,
    };
  }
  const rpc: Record<string, unknown> = {
    host: config.rpc.host,
    port: config.rpc.port,
    allowed_origins: config.rpc.allowedOrigins,
  };
  if (config.rpc.socket !== undefined) rpc.socket = config.rpc.socket;
  const t = config.transfers;
  return {
    ...fields,
    rpc,
    transfers: {
      uploads: t.uploads,
      downloads: t.downloads,
      retry_delays_ms: t.retryDelaysMs,
      max_verification_failures: t.maxVerificationFailures,
      small_blob_bytes: t.smallBlobBytes,
      batch_max_blobs: t.batchMaxBlobs,
      batch_max_bytes: t.batchMaxBytes,
    },
    sync: { interval_ms: config.syncIntervalMs },
    events: { log_size: config.eventLogSize },
    watch: config.watch.map((folder) => ({ path: folder.path, ignore: folder.ignore })),
  };
}

/** Names of the `SOLEDAD_*` variables that override daemon fields in `env`. */
export function appliedOverrides(env: NodeJS.ProcessEnv): string[] {
  const names: string[] = [];
  for (const [key, value] of Object.entries(environmentOverrides(env))) {
    if (!isPlainObject(value)) {
      names.push(`SOLEDAD_${key.toUpperCase()}`);
      continue;
    }
    for (const field of Object.keys(value)) {
      names.push(`SOLEDAD_${key.toUpperCase()}_${field.toUpperCase()}`);
    }
  }
  return names;
}

async function checkServer(options: CheckOptions): Promise<string> {
  const selection: { configPath?: string; root?: string } = {};
  if (options.config !== undefined) selection.configPath = options.config;
  if (options.root !== undefined) selection.root = options.root;
  const config = await loadServerConfig(selection);
  const fields = serverFields(config);
  if (options.json) return JSON.stringify({ source: config.source ?? null, config: fields });
  const header = [
    '# soledad server configuration: valid',
    `# file: ${config.source ?? `none (${DEFAULT_CONFIG_PATH} absent or not read); defaults`}`,
  ];
  if (options.root !== undefined) header.push('# root: from --root');
  header.push(
    `# users: ${join(config.root, USERS_FILE)}`,
    `# address file: ${join(config.root, LISTENING_FILE)} (while running)`,
  );
  return `${header.join('\n')}\n\n${stringifyToml(fields)}`;
}

async function checkDaemon(options: CheckOptions): Promise<string> {
  const selection: { configPath?: string; env: NodeJS.ProcessEnv } = { env: process.env };
  if (options.config !== undefined) selection.configPath = options.config;
  const config = await loadDaemonConfig(selection);
  const fields = daemonFields(config);
  const overrides = appliedOverrides(process.env);
  if (options.json) {
    return JSON.stringify({
      source: config.source ?? null,
      environment: overrides,
      config: fields,
    });
  }
  const header = [
    '# soledad daemon configuration: valid',
    `# file: ${config.source ?? `none (${join(config.configDir, DAEMON_CONFIG_NAME)} absent); defaults`}`,
    `# environment: ${overrides.length === 0 ? 'no overrides' : overrides.join(', ')}`,
    `# config folder: ${config.configDir}`,
    `# rpc token: ${join(config.configDir, RPC_TOKEN_FILE)}`,
    `# address file: ${join(config.configDir, RPC_INFO_FILE)} (while running)`,
    `# secrets file: ${secretsFilePath(config.dataDir)}`,
  ];
  if (config.server === undefined) header.push('# server: none (attachments stay local)');
  if (config.passphraseFile === undefined) {
    header.push('# passphrase_file: none ($SOLEDAD_PASSPHRASE, a systemd credential, a prompt)');
  }
  return `${header.join('\n')}\n\n${stringifyToml(fields)}`;
}

async function check(options: CheckOptions): Promise<void> {
  const program = programOf(options);
  if (program === 'daemon' && options.root !== undefined) {
    process.stderr.write('soledad config check: --root applies to --server only\n');
    process.exitCode = 1;
    return;
  }
  try {
    const text = program === 'server' ? await checkServer(options) : await checkDaemon(options);
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    process.stderr.write(`soledad config check: ${message}${code ? ` (${code})` : ''}\n`);
    const overrides = program === 'daemon' ? appliedOverrides(process.env) : [];
    if (overrides.length > 0) {
      process.stderr.write(
        `soledad config check: environment overrides in effect: ${overrides.join(', ')}\n`,
      );
    }
    process.exitCode = 1;
  }
}

/**
 * One field of a commented defaults file. `value` reads its default from the resolved
 * defaults; `optional` fields have none and are written commented out, with `value` as an
 * example.
 */
interface FieldDoc<C> {
  doc: string;
  value: (defaults: C) => TomlShown;
  optional?: true;
}

type Fields<K extends PropertyKey, C> = { [F in K]-?: FieldDoc<C> };

type Section<T> = keyof NonNullable<T>;

const BYTE_UNITS: [string, number][] = [
  ['TiB', 2 ** 40],
  ['GiB', 2 ** 30],
  ['MiB', 2 ** 20],
  ['KiB', 2 ** 10],
];

/** A byte count as the server's byte-size syntax writes it, exactly (`"10 GiB"`), or a number. */
function byteSize(bytes: number): string | number {
  for (const [unit, factor] of BYTE_UNITS) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor} ${unit}`;
  }
  return bytes;
}

const SERVER_TOP: Fields<Exclude<keyof ServerConfigFile, 'public' | 'services'>, ServerConfig> = {
  root: {
    doc:
      'Storage root: blobs, users.json, listening.json and, by default, services.tokens.\n' +
      '`soledad server --root` overrides it (the systemd unit passes /var/lib/soledad).',
    value: (d) => d.root,
  },
  log_level: {
    doc: 'One of fatal, error, warn, info, debug, trace, silent.',
    value: (d) => d.logLevel,
  },
  default_quota: {
    doc:
      'Bytes a user may store unless `server add-user --quota` gave them their own:\n' +
      'a number of bytes or a size such as "500 MB" or "10 GiB".',
    value: (d) => byteSize(d.defaultQuota),
  },
  max_blob_size: {
    doc: 'Largest blob accepted (bytes or a size); a larger upload gets 413.',
    value: (d) => byteSize(d.maxBlobSize),
  },
  shutdown_timeout_ms: {
    doc:
      'How long SIGTERM waits for requests in flight before cutting them (cut uploads\n' +
      'roll back).',
    value: (d) => d.shutdownTimeoutMs,
  },
};

const SERVER_PUBLIC: Fields<Section<ServerConfigFile['public']>, ServerConfig> = {
  host: { doc: 'Address to listen on.', value: (d) => d.public.host },
  port: {
    doc: 'Port; 0 picks a free one, written to listening.json.',
    value: (d) => d.public.port,
  },
};

const SERVER_SERVICES: Fields<Section<ServerConfigFile['services']>, ServerConfig> = {
  host: { doc: 'Must be a loopback address.', value: (d) => d.services.host },
  port: { doc: 'Port; 0 picks a free one.', value: (d) => d.services.port },
  tokens_file: {
    doc:
      '`service:token` lines; a missing file admits no service. Default: services.tokens\n' +
      'in the storage root.',
    value: (d) => d.services.tokensFile,
    optional: true,
  },
};

const DAEMON_TOP: Fields<
  Exclude<keyof DaemonConfigFile, 'server' | 'rpc' | 'transfers' | 'sync' | 'events' | 'watch'>,
  DaemonConfig
> = {
  data_dir: {
    doc:
      'Data folder: secrets.json, the store (db/) and local envelopes (blobs/). Default:\n' +
      '$XDG_DATA_HOME/soledad, else ~/.local/share/soledad.',
    value: (d) => d.dataDir,
    optional: true,
  },
  log_level: {
    doc: 'One of fatal, error, warn, info, debug, trace, silent.',
    value: (d) => d.logLevel,
  },
  passphrase_file: {
    doc:
      'File holding the passphrase that unlocks secrets.json (a trailing newline is\n' +
      'dropped). Default: none; see docs/operations.md for the other sources.',
    value: (d) => join(d.configDir, 'passphrase'),
    optional: true,
  },
  stop_timeout_ms: {
    doc: 'How long SIGTERM waits for work in flight before the daemon persists and exits.',
    value: (d) => d.stopTimeoutMs,
  },
  orphan_grace_ms: {
    doc:
      'An attachment no stored document points at is swept at start-up once it is\n' +
      'older than this.',
    value: (d) => d.orphanGraceMs,
  },
};

const EXAMPLE_UUID = '3f2b8c1e-9a4d-4e7f-8b6a-2c1d0e9f8a7b';

const DAEMON_SERVER: Fields<Section<DaemonConfigFile['server']>, DaemonConfig> = {
  url: {
    doc: 'Base URL of the blobs server.',
    value: () => 'https://blobs.example.org',
    optional: true,
  },
  uuid: {
    doc: 'Your user id on it (from `soledad server add-user`).',
    value: () => EXAMPLE_UUID,
    optional: true,
  },
  token_file: {
    doc: 'File holding your token; relative paths resolve against this file.',
    value: (d) => join(d.configDir, 'server-token'),
    optional: true,
  },
};

const DAEMON_RPC: Fields<Section<DaemonConfigFile['rpc']>, DaemonConfig> = {
  host: { doc: 'Address of the JSON-RPC WebSocket listener.', value: (d) => d.rpc.host },
  port: {
    doc: 'Port; 0 picks a free one, written to rpc.json in the config folder.',
    value: (d) => d.rpc.port,
  },
  socket: {
    doc: 'A Unix socket to listen on as well (mode 0600).',
    value: (d) => join(d.configDir, 'rpc.sock'),
    optional: true,
  },
  allowed_origins: {
    doc: 'Origin values allowed on the WebSocket upgrade; none, so no web page can connect.',
    value: (d) => d.rpc.allowedOrigins,
  },
};

const DAEMON_TRANSFERS: Fields<Section<DaemonConfigFile['transfers']>, DaemonConfig> = {
  uploads: { doc: 'Uploads at once.', value: (d) => d.transfers.uploads },
  downloads: { doc: 'Downloads at once.', value: (d) => d.transfers.downloads },
  retry_delays_ms: {
    doc: 'Waits before retry 1, 2, ... of a failed transfer; the last one repeats.',
    value: (d) => d.transfers.retryDelaysMs,
  },
  max_verification_failures: {
    doc: 'Failed verifications of a downloaded blob before the attachment is `failed`.',
    value: (d) => d.transfers.maxVerificationFailures,
  },
  small_blob_bytes: {
    doc: 'Uploads of blobs under this size go in batches through /stream; 0: never.',
    value: (d) => d.transfers.smallBlobBytes,
  },
  batch_max_blobs: { doc: 'Blobs per batch, at most.', value: (d) => d.transfers.batchMaxBlobs },
  batch_max_bytes: { doc: 'Bytes per batch, at most.', value: (d) => d.transfers.batchMaxBytes },
};

const DAEMON_SYNC: Fields<Section<DaemonConfigFile['sync']>, DaemonConfig> = {
  interval_ms: { doc: 'Remote sync runs this often.', value: (d) => d.syncIntervalMs },
};

const DAEMON_EVENTS: Fields<Section<DaemonConfigFile['events']>, DaemonConfig> = {
  log_size: {
    doc: 'Numbered events kept for clients that reconnect.',
    value: (d) => d.eventLogSize,
  },
};

type WatchKey = keyof NonNullable<DaemonConfigFile['watch']>[number];

const DAEMON_WATCH: Fields<WatchKey, DaemonConfig> = {
  path: { doc: 'Folder to watch.', value: () => '/home/me/Documents', optional: true },
  ignore: {
    doc: 'Patterns (`*`, `**`) matched against paths relative to the folder.',
    value: () => ['*.tmp', '**/.git/**'],
    optional: true,
  },
};

function tomlValue(value: TomlShown): string {
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(', ')}]`;
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function renderFields<C>(
  fields: Record<string, FieldDoc<C>>,
  defaults: C,
  envPrefix: string | undefined,
): string[] {
  const lines: string[] = [];
  for (const [key, field] of Object.entries(fields)) {
    const docLines = field.doc.split('\n');
    if (envPrefix !== undefined) {
      docLines.push(`Environment: ${envPrefix}${key.toUpperCase()}.`);
    }
    lines.push(...docLines.map((line) => `# ${line}`));
    const assignment = `${key} = ${tomlValue(field.value(defaults))}`;
    lines.push(field.optional ? `# ${assignment}` : assignment, '');
  }
  return lines;
}

function section<C>(
  header: string,
  doc: string,
  fields: Record<string, FieldDoc<C>>,
  defaults: C,
  options: { commented?: boolean; envPrefix?: string } = {},
): string[] {
  return [
    ...doc.split('\n').map((line) => `# ${line}`),
    options.commented ? `# ${header}` : header,
    ...renderFields(fields, defaults, options.envPrefix),
  ];
}

function serverDefaults(): string {
  const defaults = resolveServerConfig({});
  return [
    '# Soledad blobs server configuration (server.toml). Every field is optional: the values',
    '# below are the defaults, and commented-out lines show an example of a field that has',
    "# none. Relative paths resolve against this file's folder. Unknown fields are errors.",
    '# The server reads this file at start only: restart it to apply a change.',
    '',
    ...renderFields(SERVER_TOP, defaults, undefined),
    ...section(
      '[public]',
      'The public listener: /, /health, /blobs/..., /stream/...',
      SERVER_PUBLIC,
      defaults,
    ),
    ...section(
      '[services]',
      "The services listener: /incoming/... (deliveries into a user's incoming box).",
      SERVER_SERVICES,
      defaults,
    ),
  ].join('\n');
}

function daemonDefaults(): string {
  const { HOME, XDG_CONFIG_HOME, XDG_DATA_HOME } = process.env;
  // Only the folders: an override such as SOLEDAD_RPC_PORT is not a default.
  const defaults = resolveDaemonConfig({}, { env: { HOME, XDG_CONFIG_HOME, XDG_DATA_HOME } });
  const env = (name: string) => ({ envPrefix: `SOLEDAD_${name.toUpperCase()}_` });
  return [
    '# Soledad daemon configuration (daemon.toml, in $XDG_CONFIG_HOME/soledad). Every field',
    '# is optional: the values below are the defaults, and commented-out lines show an',
    "# example of a field that has none. Relative paths resolve against this file's folder.",
    '# Unknown fields are errors. Each field but `watch` can also be set in the environment;',
    '# an environment value wins over this file. The daemon reads its configuration at start',
    '# only: restart it to apply a change.',
    '',
    ...renderFields(DAEMON_TOP, defaults, 'SOLEDAD_'),
    ...section(
      '[server]',
      'The blobs server. url, uuid and token_file go together; without them the daemon\n' +
        'keeps attachments on this device only.',
      DAEMON_SERVER,
      defaults,
      { commented: true, ...env('server') },
    ),
    ...section(
      '[rpc]',
      'Local JSON-RPC for the CLI and other programs.',
      DAEMON_RPC,
      defaults,
      env('rpc'),
    ),
    ...section(
      '[transfers]',
      'Uploads and downloads.',
      DAEMON_TRANSFERS,
      defaults,
      env('transfers'),
    ),
    ...section('[sync]', 'Remote sync.', DAEMON_SYNC, defaults, env('sync')),
    ...section('[events]', 'The event log.', DAEMON_EVENTS, defaults, env('events')),
    ...section(
      '[[watch]]',
      'Watch folders: one [[watch]] table per folder; none by default.',
      DAEMON_WATCH,
      defaults,
      { commented: true },
    ),
  ].join('\n');
}

/**
 * `soledad config check [--server | --daemon] [--config F] [--root DIR] [--json]` and
 * `soledad config show-defaults [--server | --daemon]`. The daemon is the default program.
 */
export function registerConfigCommand(program: Command): void {
  const config = program
    .command('config')
    .description('check a configuration file, or print one with every default');

  config
    .command('check')
    .description(
      'load and validate a configuration (with the environment, for the daemon), print the ' +
        'result; exit 0 if valid, 1 if not',
    )
    .addOption(new Option('--server', "the blobs server's configuration").conflicts('daemon'))
    .addOption(
      new Option('--daemon', "the daemon's configuration (the default)").conflicts('server'),
    )
    .option(
      '-c, --config <file>',
      'the file to check (default: as the program itself chooses: ' +
        '/etc/soledad/server.toml or $XDG_CONFIG_HOME/soledad/daemon.toml)',
    )
    .option('--root <dir>', 'with --server: storage root, as `soledad server --root` takes it')
    .option('--json', 'print {"source", "config"} as JSON')
    .action(async (options: CheckOptions) => {
      await check(options);
    });

  config
    .command('show-defaults')
    .description('print a TOML configuration file with every field, its default and its meaning')
    .addOption(new Option('--server', 'server.toml').conflicts('daemon'))
    .addOption(new Option('--daemon', 'daemon.toml (the default)').conflicts('server'))
    .action((options: { server?: boolean }) => {
      const text = programOf(options) === 'server' ? serverDefaults() : daemonDefaults();
      process.stdout.write(`${text.trimEnd()}\n`);
    });
}
