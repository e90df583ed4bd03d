import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { PassphraseError } from './passphrase-error.js';

/** A readable that may be a terminal, like `process.stdin`. */
export type PromptInput = Readable & {
  isTTY?: boolean;
  isRaw?: boolean;
  setRawMode?(mode: boolean): unknown;
};

export interface ReadPassphraseOptions {
  /** A file holding the passphrase (e.g. `--passphrase-file`); tried first. */
  file?: string;
  /** Variable naming a passphrase file; default `SOLEDAD_PASSPHRASE_FILE`; false: none. */
  fileEnvVar?: string | false;
  /** Variable holding the passphrase itself; default `SOLEDAD_PASSPHRASE`; false: none. */
  envVar?: string | false;
  /**
   * Name of a systemd credential (`LoadCredential=`), read from
   * `$CREDENTIALS_DIRECTORY/<name>` when that variable is set; default `passphrase`.
   */
  credential?: string | false;
  /** Text of the no-echo terminal prompt, used last; default `Passphrase: `; false: none. */
  prompt?: string | false;
  /** When prompting, ask again with this text and require the same answer. */
  confirm?: string;
  env?: NodeJS.ProcessEnv;
  /** Terminal to prompt on; default `process.stdin` and `process.stderr`. */
  input?: PromptInput;
  output?: Writable;
}

/**
 * The passphrase from the first available source: `file`, the file named by `fileEnvVar`,
 * `envVar`, the systemd credential, then a prompt when `input` is a terminal. A file's
 * trailing newline (LF or CRLF) is dropped; nothing else is trimmed. Throws
 * `PassphraseError` (`no_passphrase` when no source is available).
 */
export async function readPassphrase(options: ReadPassphraseOptions = {}): Promise<string> {
  const env = options.env ?? process.env;
  const fileEnvVar = options.fileEnvVar ?? 'SOLEDAD_PASSPHRASE_FILE';
  const envVar = options.envVar ?? 'SOLEDAD_PASSPHRASE';
  const credential = options.credential ?? 'passphrase';
  const prompt = options.prompt ?? 'Passphrase: ';
  const input = options.input ?? process.stdin;

  if (options.file !== undefined) return readPassphraseFile(options.file);
  const named = fileEnvVar ? env[fileEnvVar] : undefined;
  if (named) return readPassphraseFile(named);
  const value = envVar ? env[envVar] : undefined;
  if (value !== undefined) {
    if (value === '') throw new PassphraseError('empty_passphrase', `$${envVar} is empty`);
    return value;
  }
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (credential && credentials) {
    const path = join(credentials, credential);
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text !== undefined) return checkFileText(text, path);
  }
  if (prompt !== false && input.isTTY && input.setRawMode) {
    const io = { input, output: options.output ?? process.stderr };
    const first = await promptHidden(prompt, io);
    if (first === '') throw new PassphraseError('empty_passphrase', 'empty passphrase');
    if (options.confirm !== undefined && (await promptHidden(options.confirm, io)) !== first) {
      throw new PassphraseError('passphrase_mismatch', 'the passphrases differ');
    }
    return first;
  }
  const tried = [
    'a passphrase file',
    fileEnvVar && `$${fileEnvVar}`,
    envVar && `$${envVar}`,
    credential && `the systemd credential "${credential}"`,
    prompt !== false && 'a terminal prompt',
  ].filter(Boolean);
  throw new PassphraseError('no_passphrase', `no passphrase: tried ${tried.join(', ')}`);
}

export async function readPassphraseFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code ?? 'error';
    throw new PassphraseError(
      'passphrase_file_unreadable',
      `cannot read passphrase file ${path}: ${code}`,
      { cause },
    );
  }
  return checkFileText(text, path);
}

function checkFileText(text: string, path: string): string {
  const passphrase = text.endsWith('\r\n')
    ? text.slice(0, -2)
    : text.endsWith('\n')
      ? text.slice(0, -1)
      : text;
  if (passphrase === '') throw new PassphraseError('empty_passphrase', `${path} is empty`);
  return passphrase;
}

/**
 * Reads one line from a terminal in raw mode without echoing it. Enter ends the line,
 * Backspace deletes, Ctrl-C (and Ctrl-D on an empty line) rejects with `prompt_aborted`.
 */
export function promptHidden(
  question: string,
  { input, output }: { input: PromptInput; output: Writable },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const decoder = new StringDecoder('utf8');
    const wasRaw = input.isRaw ?? false;
    let line = '';
    const finish = (error?: PassphraseError): void => {
      input.off('data', onData);
      input.setRawMode?.(wasRaw);
      input.pause();
      output.write('\n');
      if (error) reject(error);
      else resolve(line);
    };
    const onData = (data: Buffer | string): void => {
      const text = typeof data === 'string' ? data : decoder.write(data);
      for (const char of text) {
        if (char === '\r' || char === '\n') {
          finish();
          return;
        }
        if (char === '\u0003' || (char === '\u0004' && line === '')) {
          finish(new PassphraseError('prompt_aborted', 'passphrase prompt aborted'));
          return;
        }
        if (char === '\u007f' || char === '\b') line = Array.from(line).slice(0, -1).join('');
        else if (char >= ' ') line += char;
      }
    };
    output.write(question);
    input.setRawMode?.(true);
    input.on('data', onData);
    input.resume();
  });
}
