import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { encodeTokenAuth } from '../../wire/auth.js';
import { CLI_PATH, runSoledadCli } from '../helpers/server-process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

interface Demo {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function startDemo(cwd: string, children: ChildProcess[], env?: NodeJS.ProcessEnv): Demo {
  const child = spawn(process.execPath, [CLI_PATH, 'demo'], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
  });
  children.push(child);
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    output += text;
  });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    output += text;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  return { child, output: () => output, exited };
}

describe('soledad demo', () => {
  const children: ChildProcess[] = [];
  const folders: { remove(): Promise<void> }[] = [];

  after(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    for (const folder of folders) await folder.remove();
  });

  it('serves a demo user from .demo, prints where things are, keeps the user across runs and stops on Ctrl-C', async () => {
    const dir = await tempDir();
    folders.push(dir);
    const first = startDemo(dir.path, children);
    await waitFor(() => first.output().includes('Ctrl-C'), {
      timeoutMs: 15_000,
      what: 'the demo banner',
    });
    const url = /blobs server\s+(http:\/\/\S+)/.exec(first.output())![1]!;
    const credentialsPath = join(dir.path, '.demo', 'demo-user.json');
    assert.equal((await stat(credentialsPath)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir.path, '.demo', 'curl-auth.conf'))).mode & 0o777, 0o600);
    const demoUser = JSON.parse(await readFile(credentialsPath, 'utf8')) as {
      uuid: string;
      token: string;
    };
    assert.ok(first.output().includes(demoUser.uuid));
    assert.equal(first.output().includes(demoUser.token), false);
    assert.match(first.output(), /curl -K \.demo\/curl-auth\.conf/);

    const auth = encodeTokenAuth(demoUser.uuid, demoUser.token);
    const put = await fetch(`${url}/blobs/${demoUser.uuid}/hello`, {
      method: 'PUT',
      body: 'hello',
      headers: { authorization: auth },
    });
    assert.equal(put.status, 200);

    first.child.kill('SIGINT');
    assert.equal(await first.exited, 0);

    const second = startDemo(dir.path, children);
    await waitFor(() => second.output().includes('Ctrl-C'), {
      timeoutMs: 15_000,
      what: 'the second banner',
    });
    assert.ok(second.output().includes(demoUser.uuid));
    const url2 = /blobs server\s+(http:\/\/\S+)/.exec(second.output())![1]!;
    const get = await fetch(`${url2}/blobs/${demoUser.uuid}/hello`, {
      headers: { authorization: auth },
    });
    assert.equal(await get.text(), 'hello');
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });

  it('runs a daemon whose watch folder and CLI put both reach SYNCED on the demo server', async () => {
    const dir = await tempDir();
    folders.push(dir);
    const demo = startDemo(dir.path, children, { SOLEDAD_TEST_WEAK_SCRYPT: '1' });
    await waitFor(() => demo.output().includes('Ctrl-C'), {
      timeoutMs: 15_000,
      what: 'the demo banner',
    });
    assert.match(demo.output(), /daemon RPC\s+ws:\/\/127\.0\.0\.1:\d+/);
    assert.match(demo.output(), /watch folder\s+\.demo\/watch/);
    assert.equal((await stat(join(dir.path, '.demo', 'passphrase'))).mode & 0o777, 0o600);
    const env = { PATH: process.env.PATH, XDG_CONFIG_HOME: join(dir.path, '.demo', 'config') };
    const cli = (...args: string[]) => runSoledadCli(args, { env, cwd: dir.path });
    const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

    const watched = randomBytes(300 * 1024);
    await writeFile(join(dir.path, '.demo', 'watch', 'photo.bin'), watched);
    const row = await waitFor(
      async () => {
        const ls = await cli('ls', '--json');
        if (ls.code !== 0) return undefined;
        const rows = JSON.parse(ls.stdout) as { name: string; blobId: string; state: number }[];
        return rows.find((r) => r.name === 'photo.bin' && r.state === 3);
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'the watched file to be SYNCED' },
    );

    const putFile = join(dir.path, 'notes.txt');
    await writeFile(putFile, 'typed in a shell');
    const put = await cli('put', putFile, '--upload');
    assert.equal(put.code, 0, put.stderr);
    assert.equal(put.stdout.trim().split('\t')[2], 'SYNCED');

    const out = join(dir.path, 'photo.out');
    const get = await cli('get', row.blobId, '-o', out);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(sha256(await readFile(out)), sha256(watched));

    const user = JSON.parse(await readFile(join(dir.path, '.demo', 'demo-user.json'), 'utf8')) as {
      uuid: string;
      token: string;
    };
    const url = /blobs server\s+(http:\/\/\S+)/.exec(demo.output())![1]!;
    const listed = await fetch(`${url}/blobs/${user.uuid}`, {
      headers: { authorization: encodeTokenAuth(user.uuid, user.token) },
    });
    assert.equal(((await listed.json()) as string[]).length, 2);

    demo.child.kill('SIGINT');
    assert.equal(await demo.exited, 0);
  });

  it('stops cleanly on Ctrl-C while it is still starting', async () => {
    const dir = await tempDir();
    folders.push(dir);
    const demo = startDemo(dir.path, children, { SOLEDAD_TEST_WEAK_SCRYPT: '1' });
    // The server is up and the daemon is not yet: the middle of the start-up.
    await waitFor(
      async () =>
        (await readFile(join(dir.path, '.demo', 'server.log'), 'utf8').catch(() => '')).includes(
          'server listening',
        ),
      { timeoutMs: 15_000, what: 'the demo server to listen' },
    );
    demo.child.kill('SIGINT');
    assert.equal(await demo.exited, 0);
    assert.match(demo.output(), /Stopping the demo/);
  });
});
