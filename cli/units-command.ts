import { constants } from 'node:fs';
import { access, mkdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Command, Option } from 'commander';
import { defaultConfigDir } from '../daemon/paths.js';
import { NODE_FLAGS } from './node-flags.js';

export type UnitScope = 'user' | 'system';

interface UnitsOptions {
  user?: boolean;
  system?: boolean;
  output?: string;
  bin?: string;
  force?: boolean;
}

/** File name of the unit each scope installs. */
export const UNIT_FILE_NAMES: Record<UnitScope, string> = {
  user: 'soledad-daemon.service',
  system: 'soledad-server.service',
};

/**
 * The text of a unit. `exec` is the command that runs `soledad`: one absolute executable
 * (`/usr/bin/soledad`) or an absolute node binary followed by the absolute `main.js`.
 * `systemd/*.service` in the repository are these units rendered with `/usr/bin/soledad`.
 */
export function renderUnit(scope: UnitScope, exec: readonly string[]): string {
  const command = exec.map((word, index) => quoteExecWord(word, index === 0)).join(' ');
  return scope === 'user' ? daemonUnit(command) : serverUnit(command);
}

function daemonUnit(command: string): string {
  return `# User unit for the Soledad device daemon. \`soledad install-units --user\` writes it to
# $XDG_CONFIG_HOME/systemd/user with ExecStart pointing at the installed binary.
# Data lives in the XDG folders ($XDG_DATA_HOME/soledad, $XDG_CONFIG_HOME/soledad).
# The passphrase that unlocks the storage secret is passed as a credential: put it in
# $XDG_CONFIG_HOME/soledad/passphrase (mode 0600). The unit does not start without it.
# \`systemctl reload\` (SIGHUP) applies a new log_level; other changes need a restart.
[Unit]
Description=Soledad attachments daemon

[Service]
Type=exec
ExecStart=${command} daemon
SyslogIdentifier=soledad-daemon
ExecReload=/bin/kill -HUP $MAINPID
LoadCredential=passphrase:%E/soledad/passphrase
Environment=SOLEDAD_PASSPHRASE_FILE=%d/passphrase
Restart=on-failure
RestartSec=2s
# The daemon persists and stops within its own 30 s stop timeout.
TimeoutStopSec=40s
KillMode=mixed
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths=%h
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
`;
}

function serverUnit(command: string): string {
  return `# System unit for the Soledad blobs server. \`soledad install-units --system\` writes it to
# /etc/systemd/system with ExecStart pointing at the installed binary.
# It needs /etc/soledad/server.toml (\`soledad config show-defaults --server\` prints one).
# The storage root is always the state directory, /var/lib/soledad: --root overrides the
# file's \`root\`. \`systemctl reload\` (SIGHUP) applies a new log_level; other changes need a
# restart.
[Unit]
Description=Soledad blobs server
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart=${command} server --config %E/soledad/server.toml --root %S/soledad
SyslogIdentifier=soledad-server
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
# The server drains in-flight uploads on SIGTERM; give it longer than its own drain timeout.
TimeoutStopSec=45s
KillMode=mixed
DynamicUser=yes
StateDirectory=soledad
StateDirectoryMode=0700
ConfigurationDirectory=soledad
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
`;
}

/**
 * One word of an `ExecStart=` line: `%` is doubled so that systemd expands no specifier
 * in it, and so is `$` in an argument (systemd substitutes variables in arguments, not in
 * the executable's path); a word with blanks, quotes or backslashes is double-quoted with
 * C-style escapes.
 */
export function quoteExecWord(word: string, executable = false): string {
  if (/[\p{Cc}]/u.test(word)) {
    throw new Error(`cannot put a path with control characters in a unit: ${JSON.stringify(word)}`);
  }
  const escaped = word.replace(executable ? /%/g : /[%$]/g, (char) => char + char);
  if (!/[\s"'\\;]/.test(escaped)) return escaped;
  return `"${escaped.replace(/["\\]/g, (char) => `\\${char}`)}"`;
}

/**
 * The command that runs this very CLI: the node binary running it, `NODE_FLAGS` and the
 * real path of `main.js`. Naming node explicitly does not depend on systemd's PATH (which
 * rarely holds an nvm or a /usr/local node) nor on the `#!` line of the bin link.
 */
export async function defaultExec(): Promise<string[]> {
  const main = join(dirname(fileURLToPath(import.meta.url)), 'main.js');
  return [process.execPath, ...NODE_FLAGS, await realpath(main)];
}

/** Where systemd looks for units of each scope; a user's follows `$XDG_CONFIG_HOME`. */
export function defaultUnitDir(scope: UnitScope, env: NodeJS.ProcessEnv = process.env): string {
  if (scope === 'system') return '/etc/systemd/system';
  return join(dirname(defaultConfigDir(env)), 'systemd', 'user');
}

/** Folders the unit's sandbox hides or empties, so a binary there cannot start. */
const HIDDEN_PREFIXES: Record<UnitScope, string[]> = {
  user: ['/tmp/', '/var/tmp/'],
  system: ['/tmp/', '/var/tmp/', '/home/', '/root/', '/run/user/'],
};

function sandboxWarnings(scope: UnitScope, exec: readonly string[]): string[] {
  const setting = scope === 'system' ? 'PrivateTmp= and ProtectHome=' : 'PrivateTmp=';
  return exec
    .filter((path) => HIDDEN_PREFIXES[scope].some((prefix) => path.startsWith(prefix)))
    .map(
      (path) =>
        `${path} is hidden from the service by ${setting}: the unit passes ` +
        '`systemd-analyze verify` but cannot start; install node and soledad elsewhere',
    );
}

async function isExecutable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Replaces `path` atomically (mode 0644); the temporary file is removed on failure. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = join(dirname(path), `.${process.pid}.${Date.now()}.tmp`);
  try {
    await writeFile(temporary, text, { mode: 0o644, flag: 'wx' });
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

function nextSteps(
  scope: UnitScope,
  path: string,
  defaultDir: string,
  pinnedNode: boolean,
): string[] {
  const lines: string[] = [];
  if (dirname(path) !== defaultDir) {
    lines.push(
      `${dirname(path)} is not where systemd looks (${defaultDir}): copy the unit there,`,
      `or link it: systemctl ${scope === 'user' ? '--user ' : ''}link ${path}`,
    );
  }
  if (scope === 'user') {
    const passphrase = join(defaultConfigDir(), 'passphrase');
    lines.push(
      'Next:',
      '  soledad init          # once, if this device has no storage secret yet',
      `  # put the passphrase in ${passphrase} (mode 0600), then:`,
      '  systemctl --user daemon-reload && systemctl --user enable --now soledad-daemon',
      '  loginctl enable-linger "$USER"   # optional: keep it running while logged out',
    );
  } else {
    lines.push(
      'Next:',
      '  mkdir -p /etc/soledad',
      '  soledad config show-defaults --server > /etc/soledad/server.toml   # then edit it',
      '  soledad config check --server --config /etc/soledad/server.toml --root /var/lib/soledad',
      '  systemctl daemon-reload && systemctl enable --now soledad-server',
    );
  }
  if (pinnedNode) {
    lines.push('ExecStart names this node binary: run install-units --force again if it moves.');
  }
  return lines;
}

async function installUnits(options: UnitsOptions): Promise<void> {
  const scope: UnitScope = options.system ? 'system' : 'user';
  let exec: string[];
  if (options.bin === undefined) {
    exec = await defaultExec();
  } else {
    exec = [resolve(options.bin)];
    if (!(await isExecutable(exec[0]!))) {
      process.stderr.write(
        `soledad install-units: warning: ${exec[0]} is not an executable file here; ` +
          'the unit will not start until it is\n',
      );
    }
  }
  for (const warning of sandboxWarnings(scope, exec)) {
    process.stderr.write(`soledad install-units: warning: ${warning}\n`);
  }

  const defaultDir = defaultUnitDir(scope);
  const outputDir = options.output === undefined ? defaultDir : resolve(options.output);
  const path = join(outputDir, UNIT_FILE_NAMES[scope]);
  const text = renderUnit(scope, exec);

  await mkdir(outputDir, { recursive: true, mode: 0o755 });
  const existing = await readIfExists(path);
  if (existing !== undefined && existing !== text && !options.force) {
    throw new Error(`${path} exists with other contents; pass --force to replace it`);
  }
  if (existing === text) {
    process.stdout.write(`unchanged ${path}\n`);
  } else {
    await writeAtomically(path, text);
    process.stdout.write(`wrote ${path}\n`);
  }
  const execLine = text.split('\n').find((line) => line.startsWith('ExecStart='));
  process.stdout.write(
    `  ${execLine}\n${nextSteps(scope, path, defaultDir, options.bin === undefined).join('\n')}\n`,
  );
}

/**
 * `soledad install-units [--user | --system] [--output DIR] [--bin PATH] [--force]` writes
 * the daemon's user unit (the default) or the server's system unit.
 */
export function registerUnitsCommand(program: Command): void {
  program
    .command('install-units')
    .description('write the systemd unit of the daemon (--user) or of the server (--system)')
    .addOption(
      new Option('--user', 'the daemon as a user service (the default)').conflicts('system'),
    )
    .addOption(new Option('--system', 'the blobs server as a system service').conflicts('user'))
    .option(
      '-o, --output <dir>',
      'folder to write to (default: $XDG_CONFIG_HOME/systemd/user, or /etc/systemd/system)',
    )
    .option(
      '--bin <path>',
      'executable for ExecStart, such as /usr/bin/soledad ' +
        '(default: this node binary and the real path of this CLI)',
    )
    .option('-f, --force', 'replace a unit file that exists with other contents')
    .action(async (options: UnitsOptions) => {
      try {
        if (options.bin !== undefined && !isAbsolute(options.bin)) {
          process.stderr.write(
            `soledad install-units: note: --bin ${options.bin} is relative; ` +
              `using ${resolve(options.bin)}\n`,
          );
        }
        await installUnits(options);
      } catch (error) {
        const { code, message } = error as { code?: string; message: string };
        const hint =
          code === 'EACCES' || code === 'EPERM' ? ' (run as root, or choose --output)' : '';
        process.stderr.write(`soledad install-units: ${message}${hint}\n`);
        process.exitCode = 1;
      }
    });
}
