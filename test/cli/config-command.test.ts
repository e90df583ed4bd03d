import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CliResult, runSoledadCli } from '../helpers/server-process.js';
import { tempDir } from '../helpers/tmp.js';

let dir: { path: string; remove(): Promise<void> };
let counter = 0;

before(async () => {
  dir = await tempDir('soledad-config-');
});

after(async () => {
  await dir.remove();
});

function fresh(name: string): string {
  counter++;
  return join(dir.path, `${counter}-${name}`);
}

async function file(name: string, text: string): Promise<string> {
  const path = fresh(name);
  await writeFile(path, text);
  return path;
}

/** A user whose home is in the temp folder, with no XDG or SOLEDAD_* variables, plus `extra`. */
function isolatedEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('SOLEDAD_') && !name.startsWith('XDG_')) env[name] = value;
  }
  delete env.CREDENTIALS_DIRECTORY;
  return { ...env, HOME: fresh('home'), ...extra };
}

function soledad(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runSoledadCli(args, { env: isolatedEnv(extraEnv) });
}

interface CheckJson {
  source: string | null;
  environment?: string[];
  config: Record<string, unknown>;
}

async function checkJson(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CheckJson> {
  const result = await soledad(['config', 'check', '--json', ...args], env);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as CheckJson;
}

describe('soledad config check', () => {
  it('accepts a valid server file and prints the resolved configuration', async () => {
    const path = await file(
      'server.toml',
      'default_quota = "1 GiB"\nroot = "blobs"\n[public]\nport = 0\n',
    );
    const result = await soledad(['config', 'check', '--server', '--config', path]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^# soledad server configuration: valid$/m);
    assert.match(result.stdout, /^default_quota = 1073741824$/m);
    assert.match(result.stdout, new RegExp(`^root = "${join(dir.path, 'blobs')}"$`, 'm'));
    assert.match(result.stdout, /\[public\]\nhost = "127\.0\.0\.1"\nport = 0\n/);
  });

  it('rejects an invalid server file with exit 1, naming the field', async () => {
    const path = await file('server.toml', '[public]\nport = "eighty"\n');
    const result = await soledad(['config', 'check', '--server', '--config', path]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /public\.port: /);
    assert.match(result.stderr, /\(invalid_config\)/);
  });

  it('rejects an unknown daemon field with exit 1, naming it', async () => {
    const path = await file('daemon.toml', '[rpc]\nprot = 2426\n');
    const result = await soledad(['config', 'check', '--daemon', '--config', path]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /rpc: .*"prot"/);
  });

  it('rejects a file that is not valid TOML with exit 1', async () => {
    const path = await file('daemon.toml', 'log_level = \n');
    const result = await soledad(['config', 'check', '--config', path]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /not valid TOML/);
  });

  it('applies environment overrides to the daemon configuration and names them', async () => {
    const path = await file('daemon.toml', '[rpc]\nport = 5000\n[transfers]\nuploads = 8\n');
    const env = { SOLEDAD_RPC_PORT: '0', SOLEDAD_TRANSFERS_RETRY_DELAYS_MS: '[5, 10]' };
    const result = await soledad(['config', 'check', '--config', path], env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^# environment: SOLEDAD_RPC_PORT, SOLEDAD_TRANSFERS_RETRY_DELAYS_MS$/m,
    );
    const json = await checkJson(['--config', path], env);
    const rpc = json.config.rpc as { port: number };
    const transfers = json.config.transfers as { uploads: number; retry_delays_ms: number[] };
    assert.equal(rpc.port, 0);
    assert.equal(transfers.uploads, 8);
    assert.deepEqual(transfers.retry_delays_ms, [5, 10]);
  });

  it('rejects an invalid environment override with exit 1, naming the field and the variable', async () => {
    const result = await soledad(['config', 'check', '--daemon'], {
      SOLEDAD_TRANSFERS_UPLOADS: 'many',
    });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /transfers\.uploads: /);
    assert.match(result.stderr, /environment overrides in effect: SOLEDAD_TRANSFERS_UPLOADS/);
  });

  it('reads $XDG_CONFIG_HOME/soledad/daemon.toml when no file is named', async () => {
    const config = fresh('xdg-config');
    await mkdir(join(config, 'soledad'), { recursive: true });
    await writeFile(join(config, 'soledad', 'daemon.toml'), 'log_level = "debug"\n');
    const json = await checkJson([], { XDG_CONFIG_HOME: config });
    assert.equal(json.source, join(config, 'soledad', 'daemon.toml'));
    assert.equal(json.config.log_level, 'debug');
  });

  it('prints the paths of token files, never their contents nor a password in the server URL', async () => {
    const secret = 'SECRET-token-0123456789abcdefghijklmnopqrstuvwxyz';
    const tokenFile = await file('server-token', `${secret}\n`);
    const daemon = await file(
      'daemon.toml',
      `[server]\nurl = "https://me:hunter2@blobs.example.org"\n` +
        `uuid = "3f2b8c1e-9a4d-4e7f-8b6a-2c1d0e9f8a7b"\ntoken_file = "${tokenFile}"\n`,
    );
    const fromDaemon = await soledad(['config', 'check', '--config', daemon]);
    assert.equal(fromDaemon.code, 0, fromDaemon.stderr);
    assert.ok(fromDaemon.stdout.includes(`token_file = "${tokenFile}"`));
    assert.ok(!fromDaemon.stdout.includes('hunter2'));
    assert.ok(!fromDaemon.stdout.includes(secret));

    const tokensFile = await file('services.tokens', `mail:${secret}\n`);
    const server = await file('server.toml', `[services]\ntokens_file = "${tokensFile}"\n`);
    const fromServer = await soledad(['config', 'check', '--server', '--config', server]);
    assert.equal(fromServer.code, 0, fromServer.stderr);
    assert.ok(fromServer.stdout.includes(`tokens_file = "${tokensFile}"`));
    assert.ok(!fromServer.stdout.includes(secret));
  });

  it('takes the server root from --root over the file', async () => {
    const path = await file('server.toml', 'root = "/srv/elsewhere"\n');
    const root = fresh('root');
    const json = await checkJson(['--server', '--config', path, '--root', root]);
    assert.equal(json.config.root, root);
  });
});

describe('soledad config show-defaults', () => {
  for (const program of ['--server', '--daemon']) {
    it(`prints a ${program.slice(2)} file that checks to the same configuration as no fields at all`, async () => {
      const env = { XDG_CONFIG_HOME: fresh('xdg-config'), XDG_DATA_HOME: fresh('xdg-data') };
      const shown = await soledad(['config', 'show-defaults', program], env);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, /^# /);
      const defaults = await file('defaults.toml', shown.stdout);
      const empty = await file('empty.toml', '');
      const fromDefaults = await checkJson([program, '--config', defaults], env);
      const fromEmpty = await checkJson([program, '--config', empty], env);
      assert.deepEqual(fromDefaults.config, fromEmpty.config);
    });
  }

  it('shows every daemon field with its environment variable', async () => {
    const shown = await soledad(['config', 'show-defaults', '--daemon']);
    assert.equal(shown.code, 0, shown.stderr);
    for (const name of [
      'SOLEDAD_DATA_DIR',
      'SOLEDAD_PASSPHRASE_FILE',
      'SOLEDAD_SERVER_TOKEN_FILE',
      'SOLEDAD_RPC_ALLOWED_ORIGINS',
      'SOLEDAD_TRANSFERS_BATCH_MAX_BYTES',
      'SOLEDAD_EVENTS_LOG_SIZE',
    ]) {
      assert.ok(shown.stdout.includes(`# Environment: ${name}.`), name);
    }
    assert.match(shown.stdout, /^# \[\[watch\]\]$/m);
  });
});
