import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { type PromptInput, readPassphrase } from '../../../daemon/crypto/passphrase.js';
import { PassphraseError } from '../../../daemon/crypto/passphrase-error.js';
import { tempDir } from '../../helpers/tmp.js';

let dir: { path: string; remove(): Promise<void> };

before(async () => {
  dir = await tempDir('soledad-passphrase-');
});

after(async () => {
  await dir.remove();
});

async function file(name: string, content: string): Promise<string> {
  const path = join(dir.path, name);
  await writeFile(path, content, { mode: 0o600 });
  return path;
}

function rejectsWith(code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof PassphraseError, String(error));
    assert.equal(error.code, code);
    return true;
  };
}

/** A pretend terminal: answers each prompt, in order, when the prompt text is written. */
function terminal(answers: string[]) {
  const input = new PassThrough() as PassThrough & PromptInput;
  const modes: boolean[] = [];
  input.isTTY = true;
  input.isRaw = false;
  input.setRawMode = (mode: boolean) => {
    modes.push(mode);
    input.isRaw = mode;
    return input;
  };
  const output = new PassThrough();
  let shown = '';
  output.on('data', (data: Buffer) => {
    shown += data.toString();
    if (data.toString().endsWith(': ')) input.write(answers.shift() ?? '');
  });
  return { input, output, modes, shown: () => shown };
}

const noEnv = {};

describe('readPassphrase', () => {
  it('reads a file and drops one trailing newline only', async () => {
    assert.equal(
      await readPassphrase({ file: await file('lf', 'pass word\n'), env: noEnv }),
      'pass word',
    );
    assert.equal(await readPassphrase({ file: await file('crlf', 'pw\r\n'), env: noEnv }), 'pw');
    assert.equal(await readPassphrase({ file: await file('two', 'pw \n\n'), env: noEnv }), 'pw \n');
    assert.equal(await readPassphrase({ file: await file('none', ' pw '), env: noEnv }), ' pw ');
  });

  it('prefers the given file to the environment', async () => {
    const path = await file('given', 'from file\n');
    const env = { SOLEDAD_PASSPHRASE: 'from env' };
    assert.equal(await readPassphrase({ file: path, env }), 'from file');
  });

  it('reads the file named by SOLEDAD_PASSPHRASE_FILE before SOLEDAD_PASSPHRASE', async () => {
    const env = {
      SOLEDAD_PASSPHRASE_FILE: await file('named', 'named\n'),
      SOLEDAD_PASSPHRASE: 'x',
    };
    assert.equal(await readPassphrase({ env }), 'named');
  });

  it('reads SOLEDAD_PASSPHRASE or another named variable', async () => {
    assert.equal(await readPassphrase({ env: { SOLEDAD_PASSPHRASE: 'env pass' } }), 'env pass');
    assert.equal(await readPassphrase({ envVar: 'MY_PASS', env: { MY_PASS: 'mine' } }), 'mine');
  });

  it('reads the systemd credential from $CREDENTIALS_DIRECTORY/passphrase', async () => {
    await file('passphrase', 'from systemd\n');
    const env = { CREDENTIALS_DIRECTORY: dir.path };
    assert.equal(await readPassphrase({ env, prompt: false }), 'from systemd');
  });

  it('fails with empty_passphrase for an empty file or variable', async () => {
    const path = await file('empty', '\n');
    await assert.rejects(
      readPassphrase({ file: path, env: noEnv }),
      rejectsWith('empty_passphrase'),
    );
    const env = { SOLEDAD_PASSPHRASE: '' };
    await assert.rejects(readPassphrase({ env }), rejectsWith('empty_passphrase'));
  });

  it('fails with passphrase_file_unreadable naming a missing file', async () => {
    const path = join(dir.path, 'missing');
    await assert.rejects(readPassphrase({ file: path, env: noEnv }), (error: unknown) => {
      rejectsWith('passphrase_file_unreadable')(error);
      assert.match((error as Error).message, /missing/);
      return true;
    });
  });

  it('fails with no_passphrase when no source is available and input is no terminal', async () => {
    const input = new PassThrough() as PassThrough & PromptInput;
    await assert.rejects(readPassphrase({ env: noEnv, input }), rejectsWith('no_passphrase'));
  });

  it('prompts on a terminal in raw mode without echoing, and restores the mode', async () => {
    const tty = terminal(['sec\u007fcret\r']);
    const passphrase = await readPassphrase({ env: noEnv, input: tty.input, output: tty.output });
    assert.equal(passphrase, 'secret');
    assert.equal(tty.shown(), 'Passphrase: \n');
    assert.deepEqual(tty.modes, [true, false]);
  });

  it('asks twice when confirming and fails with passphrase_mismatch on a difference', async () => {
    const same = terminal(['one two\r', 'one two\r']);
    const options = { env: noEnv, prompt: 'New: ', confirm: 'Again: ' };
    assert.equal(await readPassphrase({ ...options, ...same }), 'one two');
    assert.equal(same.shown(), 'New: \nAgain: \n');
    const differ = terminal(['one two\r', 'one tow\r']);
    await assert.rejects(
      readPassphrase({ ...options, ...differ }),
      rejectsWith('passphrase_mismatch'),
    );
  });

  it('fails with prompt_aborted on Ctrl-C', async () => {
    const tty = terminal(['abc\u0003']);
    const reading = readPassphrase({ env: noEnv, input: tty.input, output: tty.output });
    await assert.rejects(reading, rejectsWith('prompt_aborted'));
    assert.deepEqual(tty.modes, [true, false]);
  });

  it('does not prompt when prompting is disabled', async () => {
    const tty = terminal(['never\r']);
    await assert.rejects(
      readPassphrase({ env: noEnv, prompt: false, input: tty.input, output: tty.output }),
      rejectsWith('no_passphrase'),
    );
    tty.input.end();
    await once(tty.output.end(), 'finish');
    assert.equal(tty.shown(), '');
  });
});
