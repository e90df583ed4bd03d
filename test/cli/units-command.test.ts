import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { chmod, mkdir, readFile, realpath, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../../cli/node-flags.js';
import { CLI_PATH, type CliResult, runSoledadCli } from '../helpers/server-process.js';
import { tempDir } from '../helpers/tmp.js';

let dir: { path: string; remove(): Promise<void> };
let counter = 0;

before(async () => {
  dir = await tempDir('soledad-units-');
});

after(async () => {
  await dir.remove();
});

function fresh(name: string): string {
  counter++;
  return join(dir.path, `${counter}-${name}`);
}

/** The environment of a user whose home and XDG folders are inside the temp folder. */
function isolatedEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('SOLEDAD_') && !name.startsWith('XDG_')) env[name] = value;
  }
  return { ...env, HOME: home };
}

function soledad(args: string[], env?: NodeJS.ProcessEnv): Promise<CliResult> {
  return runSoledadCli(args, { env: env ?? isolatedEnv(fresh('home')) });
}

/** An executable file standing in for an installed `soledad`. */
async function fakeBin(path: string): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, '#!/bin/sh\nexit 0\n');
  await chmod(path, 0o755);
  return path;
}

function execStart(unit: string): string {
  const line = unit.split('\n').find((text) => text.startsWith('ExecStart='));
  assert.ok(line, 'the unit has an ExecStart= line');
  return line.slice('ExecStart='.length);
}

const analyzer = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;

/** Runs `systemd-analyze verify` on a unit; returns what it said about the unit. */
function verify(t: TestContext, unitPath: string, scope: 'user' | 'system'): string | undefined {
  if (!analyzer) {
    // CI installs systemd (.ci/run): there a missing analyzer is a failure, not a skip.
    assert.ok(process.env.CI === undefined, 'systemd-analyze is not installed');
    t.skip('systemd-analyze is not installed');
    return undefined;
  }
  const runtime = join(dirname(unitPath), 'xdg-runtime');
  mkdirSync(runtime, { recursive: true, mode: 0o700 });
  const args = scope === 'user' ? ['--user', 'verify', unitPath] : ['verify', unitPath];
  const result = spawnSync('systemd-analyze', args, {
    encoding: 'utf8',
    env: { ...process.env, XDG_RUNTIME_DIR: runtime },
  });
  const name = unitPath.slice(unitPath.lastIndexOf('/') + 1);
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.status, 0, output);
  return output
    .split('\n')
    .filter((line) => line.includes(name))
    .join('\n');
}

/** The repository's `systemd/` folder above the compiled tests, if this build is in one. */
function shippedUnitsDir(): string | undefined {
  let folder = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(folder, 'systemd');
    if (existsSync(join(candidate, 'soledad-server.service'))) return candidate;
    const parent = dirname(folder);
    if (parent === folder) return undefined;
    folder = parent;
  }
}

describe('soledad install-units', () => {
  it('writes the daemon user unit with ExecStart at the --bin path and prints the next commands', async () => {
    const bin = await fakeBin(join(fresh('bin'), 'soledad'));
    const output = fresh('units');
    const result = await soledad(['install-units', '--user', '--output', output, '--bin', bin]);
    assert.equal(result.code, 0, result.stderr);
    const path = join(output, 'soledad-daemon.service');
    assert.equal(execStart(await readFile(path, 'utf8')), `${bin} daemon`);
    assert.equal((await stat(path)).mode & 0o777, 0o644);
    assert.match(result.stdout, new RegExp(`wrote ${path}`));
    assert.match(
      result.stdout,
      /systemctl --user daemon-reload && systemctl --user enable --now soledad-daemon/,
    );
  });

  it('writes the server system unit with ExecStart at the --bin path', async () => {
    const bin = await fakeBin(join(fresh('bin'), 'soledad'));
    const output = fresh('units');
    const result = await soledad(['install-units', '--system', '--output', output, '--bin', bin]);
    assert.equal(result.code, 0, result.stderr);
    const unit = await readFile(join(output, 'soledad-server.service'), 'utf8');
    assert.equal(
      execStart(unit),
      `${bin} server --config %E/soledad/server.toml --root %S/soledad`,
    );
    assert.match(unit, /^DynamicUser=yes$/m);
    assert.match(unit, /^StateDirectory=soledad$/m);
    assert.match(result.stdout, /systemctl daemon-reload && systemctl enable --now soledad-server/);
  });

  it('runs the real main.js with this node binary when no --bin is given', async () => {
    const output = fresh('units');
    const result = await soledad(['install-units', '--output', output]);
    assert.equal(result.code, 0, result.stderr);
    const unit = await readFile(join(output, 'soledad-daemon.service'), 'utf8');
    assert.equal(
      execStart(unit),
      `${process.execPath} ${NODE_FLAGS.join(' ')} ${await realpath(CLI_PATH)} daemon`,
    );
  });

  it('runs with the same node flags from its #! line, npm start and the units', async () => {
    const main = await readFile(join(dirname(CLI_PATH), '..', '..', 'cli', 'main.ts'), 'utf8');
    assert.equal(main.split('\n')[0], `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
    const pkg = JSON.parse(
      await readFile(join(dirname(CLI_PATH), '..', '..', 'package.json'), 'utf8'),
    ) as { scripts: { start: string } };
    assert.match(
      pkg.scripts.start,
      new RegExp(`node ${NODE_FLAGS.join(' ')} dist/cli/main\\.js demo`),
    );
  });

  it('writes the user unit to $XDG_CONFIG_HOME/systemd/user by default', async () => {
    const home = fresh('home');
    const config = join(home, 'xdg-config');
    const bin = await fakeBin(join(fresh('bin'), 'soledad'));
    const env = { ...isolatedEnv(home), XDG_CONFIG_HOME: config };
    const result = await soledad(['install-units', '--bin', bin], env);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(existsSync(join(config, 'systemd', 'user', 'soledad-daemon.service')));
  });

  it('refuses to replace a different unit without --force, replaces it with --force and leaves an identical one alone', async () => {
    const bin = await fakeBin(join(fresh('bin'), 'soledad'));
    const output = fresh('units');
    const path = join(output, 'soledad-daemon.service');
    await mkdir(output, { recursive: true });
    await writeFile(path, '[Service]\nExecStart=/usr/bin/true\n');

    const refused = await soledad(['install-units', '--output', output, '--bin', bin]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /exists with other contents; pass --force/);
    assert.equal(await readFile(path, 'utf8'), '[Service]\nExecStart=/usr/bin/true\n');

    const forced = await soledad(['install-units', '--output', output, '--bin', bin, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(execStart(await readFile(path, 'utf8')), `${bin} daemon`);

    const again = await soledad(['install-units', '--output', output, '--bin', bin]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`unchanged ${path}`));
  });

  it('writes units that pass systemd-analyze verify', async (t) => {
    const bin = await fakeBin(join(fresh('bin'), 'soledad'));
    const output = fresh('units');
    for (const scope of ['--user', '--system']) {
      const result = await soledad(['install-units', scope, '--output', output, '--bin', bin]);
      assert.equal(result.code, 0, result.stderr);
    }
    const user = verify(t, join(output, 'soledad-daemon.service'), 'user');
    if (user === undefined) return;
    assert.equal(user, '');
    assert.equal(verify(t, join(output, 'soledad-server.service'), 'system'), '');
  });

  it('quotes an executable path with blanks and escapes its % so that systemd finds it', async (t) => {
    const bin = await fakeBin(join(fresh('my bin'), 'sole%dad$HOME'));
    const output = fresh('units');
    const result = await soledad(['install-units', '--system', '--output', output, '--bin', bin]);
    assert.equal(result.code, 0, result.stderr);
    const path = join(output, 'soledad-server.service');
    const quoted = `"${bin.replace(/%/g, '%%')}"`;
    assert.ok(execStart(await readFile(path, 'utf8')).startsWith(`${quoted} server `));
    const said = verify(t, path, 'system');
    if (said !== undefined) assert.equal(said, '');
  });

  it('warns when the executable is missing or where the unit sandbox hides it', async () => {
    const bin = '/var/tmp/soledad-absent/soledad';
    const output = fresh('units');
    const result = await soledad(['install-units', '--system', '--output', output, '--bin', bin]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /\/var\/tmp\/soledad-absent\/soledad is not an executable file/);
    assert.match(result.stderr, /hidden from the service by PrivateTmp= and ProtectHome=/);
    assert.ok(existsSync(join(output, 'soledad-server.service')));
  });

  it('renders the units shipped in systemd/ when given --bin /usr/bin/soledad', async (t) => {
    const shipped = shippedUnitsDir();
    if (shipped === undefined) {
      t.skip('no systemd/ folder above this build');
      return;
    }
    const output = fresh('units');
    for (const scope of ['--user', '--system']) {
      const result = await soledad([
        'install-units',
        scope,
        '--output',
        output,
        '--bin',
        '/usr/bin/soledad',
      ]);
      assert.equal(result.code, 0, result.stderr);
    }
    for (const name of ['soledad-daemon.service', 'soledad-server.service']) {
      assert.equal(
        await readFile(join(output, name), 'utf8'),
        await readFile(join(shipped, name), 'utf8'),
        `${name} in ${shipped} differs from install-units; regenerate it`,
      );
    }
  });
});
