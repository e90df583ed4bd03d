import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI_PATH, runSoledadCli } from '../helpers/server-process.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { type RpcFixture, startRpcFixture } from '../rpc/rpc-fixture.js';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('client commands', () => {
  let home: { path: string; remove(): Promise<void> };
  let fixture: RpcFixture;
  let env: NodeJS.ProcessEnv;
  const cli = (...args: string[]) => runSoledadCli(args, { env, cwd: home.path });

  before(async () => {
    home = await tempDir('soledad-home-');
    env = { PATH: process.env.PATH, HOME: home.path };
    fixture = await startRpcFixture({ configDir: join(home.path, '.config', 'soledad') });
  });
  after(async () => {
    await fixture.close();
    await home.remove();
  });

  it('puts a file, lists it, shows its state, gets it back and removes it', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const file = join(home.path, 'photo.jpg');
    await writeFile(file, data);

    const put = await cli('put', file);
    assert.equal(put.code, 0, put.stderr);
    const [docId, blobId, state] = put.stdout.trim().split('\t');
    assert.ok(docId && blobId);
    assert.ok(state === 'LOCAL' || state === 'SYNCED', state);

    const ls = await cli('ls', '--json');
    assert.equal(ls.code, 0, ls.stderr);
    const row = (
      JSON.parse(ls.stdout) as { id: string; blobId: string; name: string; size: number }[]
    ).find((r) => r.id === docId);
    assert.deepEqual(
      { blobId: row?.blobId, name: row?.name, size: row?.size },
      { blobId, name: 'photo.jpg', size: data.length },
    );
    const plain = await cli('ls');
    assert.match(
      plain.stdout,
      new RegExp(`^${docId}\\t${blobId}\\t(LOCAL|SYNCED)\\t${data.length}\\tphoto\\.jpg$`, 'm'),
    );

    for (const id of [docId, blobId]) {
      const shown = await cli('state', id, '--json');
      assert.equal(shown.code, 0, shown.stderr);
      assert.equal((JSON.parse(shown.stdout) as { blobId: string }).blobId, blobId);
    }

    const out = join(home.path, 'copy.jpg');
    const got = await cli('get', docId, '-o', out);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(sha256(await readFile(out)), sha256(data));

    const rm = await cli('rm', docId);
    assert.equal(rm.code, 0, rm.stderr);
    const after = JSON.parse((await cli('ls', '--json')).stdout) as { id: string }[];
    assert.equal(
      after.some((r) => r.id === docId),
      false,
    );
  });

  it('writes an attachment to stdout byte-exact', async () => {
    const text = 'line one\nline two\n';
    const file = join(home.path, 'note.txt');
    await writeFile(file, text);
    const [docId] = (await cli('put', file)).stdout.trim().split('\t');
    const got = await cli('get', docId!);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, text);
  });

  it('attaches to an existing document with --doc', async () => {
    const doc = await fixture.daemon.createDoc({ title: 'existing' });
    const file = join(home.path, 'extra.bin');
    await writeFile(file, randomBytes(1000));
    const put = await cli('put', file, '--doc', doc.id, '--json');
    assert.equal(put.code, 0, put.stderr);
    const result = JSON.parse(put.stdout) as { docId: string; blobId: string };
    assert.equal(result.docId, doc.id);
    const stored = await fixture.daemon.getDoc(doc.id);
    assert.equal(stored?.content.blob_id, result.blobId);
    assert.equal(stored?.content.title, 'existing');
  });

  it('pins and unpins, and refuses to evict the only copy with exit code 1', async () => {
    const file = join(home.path, 'pinned.bin');
    await writeFile(file, randomBytes(1000));
    const [docId] = (await cli('put', file)).stdout.trim().split('\t');
    const pin = await cli('pin', docId!, '--json');
    assert.equal(pin.code, 0, pin.stderr);
    assert.equal((JSON.parse(pin.stdout) as { pinned: boolean }).pinned, true);
    const unpin = await cli('unpin', docId!);
    assert.equal(unpin.code, 0, unpin.stderr);
    const evict = await cli('evict', docId!);
    assert.equal(evict.code, 1);
    assert.match(evict.stderr, /invalid_state/);
  });

  it('prints the kept events as JSON lines with --no-follow', async () => {
    const events = await cli('events', '--after', '0', '--no-follow');
    assert.equal(events.code, 0, events.stderr);
    const lines = events.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { seq: number });
    assert.ok(lines.length > 0);
    assert.deepEqual(
      lines.map((e) => e.seq),
      lines.map((_, i) => i + 1),
    );
  });

  it('summarises status, as text and as JSON', async () => {
    const text = await cli('status');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^uploads +\d+ running, \d+ queued$/m);
    const json = await cli('status', '--json');
    assert.equal(typeof (JSON.parse(json.stdout) as { deviceId: string }).deviceId, 'string');
  });

  it('exits 1 naming remote_unavailable when asked to sync without a server', async () => {
    const sync = await cli('sync');
    assert.equal(sync.code, 1);
    assert.match(sync.stderr, /remote_unavailable/);
  });

  it('watches status until interrupted, then exits 0', async () => {
    const child = spawn(process.execPath, [CLI_PATH, 'status', '--watch'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      output += text;
    });
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    try {
      await waitFor(() => output.includes('totals') || output.includes('running/'), {
        what: 'the watch view',
      });
      process.kill(child.pid!, 'SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL');
    }
  });

  it('exits 2 on bad usage', async () => {
    assert.equal((await cli('put')).code, 2);
    assert.equal((await cli('events', '--after', 'soon')).code, 2);
  });

  it('exits 1 with the error code for a missing document', async () => {
    const result = await cli('get', 'no-such-thing');
    assert.equal(result.code, 1);
    assert.match(result.stderr, /not_found/);
  });

  it('exits 1 naming the token file when the token is wrong', async () => {
    const tokenFile = join(home.path, 'wrong-token');
    await writeFile(tokenFile, `${'z'.repeat(43)}\n`);
    const result = await cli('--token-file', tokenFile, 'status');
    assert.equal(result.code, 1);
    assert.match(result.stderr, /wrong-token/);
  });
});

describe('client commands with a blobs server', () => {
  let home: { path: string; remove(): Promise<void> };
  let fixture: RpcFixture;
  let env: NodeJS.ProcessEnv;
  const cli = (...args: string[]) => runSoledadCli(args, { env, cwd: home.path });

  before(async () => {
    home = await tempDir('soledad-home-');
    env = { PATH: process.env.PATH, HOME: home.path };
    fixture = await startRpcFixture({
      configDir: join(home.path, '.config', 'soledad'),
      withServer: true,
    });
  });
  after(async () => {
    await fixture.close();
    await home.remove();
  });

  it('uploads with put --upload, evicts, and gets the bytes back from the server', async () => {
    const data = randomBytes(500_000);
    const file = join(home.path, 'report.pdf');
    await writeFile(file, data);
    const put = await cli('put', file, '--upload');
    assert.equal(put.code, 0, put.stderr);
    const [docId, blobId, state] = put.stdout.trim().split('\t');
    assert.equal(state, 'SYNCED');

    const evict = await cli('evict', blobId!);
    assert.equal(evict.code, 0, evict.stderr);
    assert.match(evict.stdout, /\tREMOTE\t/);

    const got = await cli('get', docId!, '-o', join(home.path, 'back.pdf'));
    assert.equal(got.code, 0, got.stderr);
    assert.equal(sha256(await readFile(join(home.path, 'back.pdf'))), sha256(data));
  });

  it('runs sync', async () => {
    const sync = await cli('sync', '--json');
    assert.equal(sync.code, 0, sync.stderr);
    assert.equal(typeof (JSON.parse(sync.stdout) as { uploaded: number }).uploaded, 'number');
    const text = await cli('sync');
    assert.match(text.stdout, /^uploaded \d+, marked remote \d+, deleted \d+$/m);
  });
});

describe('client commands without a daemon', () => {
  it('exit 3 and say how to start the daemon', async () => {
    const home = await tempDir('soledad-home-');
    try {
      const env = { PATH: process.env.PATH, HOME: home.path };
      const tokenFile = join(home.path, 'token');
      await writeFile(tokenFile, `${'t'.repeat(43)}\n`);
      for (const args of [
        ['status'],
        ['--url', 'ws://127.0.0.1:9', '--token-file', tokenFile, 'ls'],
      ]) {
        const result = await runSoledadCli(args, { env });
        assert.equal(result.code, 3, result.stderr);
        assert.match(result.stderr, /soledad daemon/);
      }
    } finally {
      await home.remove();
    }
  });
});
