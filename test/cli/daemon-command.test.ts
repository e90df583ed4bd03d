import assert from 'node:assert/strict';
import { mkdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DaemonProcess } from '../helpers/daemon-harness.js';
import { runSoledadCli } from '../helpers/server-process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

describe('soledad daemon', () => {
  const processes: DaemonProcess[] = [];
  const folders: { remove(): Promise<void> }[] = [];

  after(async () => {
    await Promise.allSettled(processes.map((p) => p.cleanup()));
    for (const folder of folders) await folder.remove();
  });

  it('imports the files of a configured watch folder', async () => {
    const watch = await tempDir('soledad-watch-');
    folders.push(watch);
    await writeFile(join(watch.path, 'early.txt'), 'there before the daemon');
    const daemon = await DaemonProcess.start({ config: { watch: [{ path: watch.path }] } });
    processes.push(daemon);
    const env = { PATH: process.env.PATH, XDG_CONFIG_HOME: join(daemon.dir, 'config') };

    const names = await waitFor(
      async () => {
        const ls = await runSoledadCli(['ls', '--json'], { env });
        if (ls.code !== 0) return undefined;
        const rows = (JSON.parse(ls.stdout) as { name: string }[]).map((r) => r.name);
        return rows.includes('early.txt') ? rows : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'the watched file to be imported' },
    );
    assert.deepEqual(names, ['early.txt']);
    const status = await runSoledadCli(['status', '--json'], { env });
    assert.equal(status.code, 0, status.stderr);
    const { watch: watched } = JSON.parse(status.stdout) as {
      watch: { path: string; watching: boolean }[];
    };
    assert.deepEqual(watched, [{ path: await realpath(watch.path), watching: true }]);
    assert.deepEqual(await daemon.stop(), { code: 0, signal: null });
  });

  it('applies a new log level on SIGHUP and keeps running', async () => {
    const daemon = await DaemonProcess.start({ config: { log_level: 'info' } });
    processes.push(daemon);
    const config = JSON.parse(await readFile(daemon.configPath, 'utf8')) as Record<string, unknown>;
    await writeFile(daemon.configPath, JSON.stringify({ ...config, log_level: 'debug' }));

    process.kill(daemon.pid, 'SIGHUP');
    const reloaded = await waitFor(
      () => daemon.logs().find((line) => String(line.msg).startsWith('configuration reloaded')),
      { what: 'the reload log line' },
    );
    assert.equal(reloaded.logLevel, 'debug');
    assert.equal(daemon.running, true);

    await writeFile(daemon.configPath, '{ not json');
    process.kill(daemon.pid, 'SIGHUP');
    await waitFor(
      () =>
        daemon.logs().find((line) => line.msg === 'configuration reload failed; nothing changed'),
      { what: 'the failed reload log line' },
    );
    assert.equal(daemon.running, true);
    assert.deepEqual(await daemon.stop(), { code: 0, signal: null });
  });

  it('exits 1 naming the field of an invalid config file', async () => {
    const dir = await tempDir('soledad-daemon-config-');
    folders.push(dir);
    const path = join(dir.path, 'daemon.toml');
    await writeFile(path, '[transfers]\nuploads = 0\n');
    const result = await runSoledadCli(['daemon', '--config', path], {
      env: { PATH: process.env.PATH, HOME: dir.path },
    });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /transfers\.uploads/);
  });

  it('exits 1 telling to run soledad init when there is no secrets file', async () => {
    const dir = await tempDir('soledad-daemon-init-');
    folders.push(dir);
    const data = join(dir.path, 'data');
    await mkdir(data);
    const path = join(dir.path, 'daemon.toml');
    await writeFile(path, `data_dir = ${JSON.stringify(data)}\n`);
    const result = await runSoledadCli(['daemon', '--config', path], {
      env: { PATH: process.env.PATH, HOME: dir.path, SOLEDAD_PASSPHRASE: 'x' },
    });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /soledad init/);
  });
});
