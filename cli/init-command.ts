import { access, mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { readPassphrase } from '../daemon/crypto/passphrase.js';
import {
  changePassphrase,
  createSecretsFile,
  openSecretsFile,
  type ScryptParams,
  WEAK_TEST_SCRYPT_PARAMS,
} from '../daemon/crypto/secrets-file.js';
import { defaultDataDir, secretsFilePath } from '../daemon/paths.js';

interface InitOptions {
  dataDir?: string;
  passphraseFile?: string;
  changePassphrase?: boolean;
  newPassphraseFile?: string;
  weakScrypt?: boolean;
}

export function registerInitCommand(program: Command): void {
  program
    .command('init')
    .description("create this device's storage secret, sealed under a passphrase")
    .option('--data-dir <dir>', 'data folder (default: $XDG_DATA_HOME/soledad)')
    .option(
      '--passphrase-file <file>',
      'read the passphrase from a file ' +
        '(else $SOLEDAD_PASSPHRASE_FILE, $SOLEDAD_PASSPHRASE, a prompt)',
    )
    .option('--change-passphrase', 'seal the existing storage secret under a new passphrase')
    .option(
      '--new-passphrase-file <file>',
      'with --change-passphrase: read the new passphrase from a file ' +
        '(else $SOLEDAD_NEW_PASSPHRASE, a prompt)',
    )
    .addOption(
      new Option('--weak-scrypt', 'fast, weak scrypt parameters, for tests only').hideHelp(),
    )
    .action(async (options: InitOptions) => {
      try {
        if (options.changePassphrase) await changeCommand(options);
        else await initCommand(options);
      } catch (error) {
        const { code, message } = error as { code?: string; message: string };
        process.stderr.write(`soledad init: ${message}${code ? ` (${code})` : ''}\n`);
        process.exitCode = 1;
      }
    });
}

async function initCommand(options: InitOptions): Promise<void> {
  const dataDir = resolve(options.dataDir ?? defaultDataDir());
  const path = secretsFilePath(dataDir);
  if (await exists(path)) {
    throw new Error(
      `already initialised: ${path} exists (use --change-passphrase to change the passphrase)`,
    );
  }
  const passphrase = await readPassphrase({
    file: options.passphraseFile,
    prompt: 'New passphrase: ',
    confirm: 'Repeat the passphrase: ',
  });
  const created = await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const { deviceId } = await createSecretsFile(path, passphrase, { scrypt: scryptParams(options) });
  const lines = [
    'Soledad is initialised.',
    `  data folder:  ${dataDir}${created ? ' (created, mode 0700)' : ''}`,
    `  secrets file: ${path} (mode 0600)`,
    `  device id:    ${deviceId}`,
    'Keep the passphrase safe: without it, the data of this device cannot be decrypted.',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function changeCommand(options: InitOptions): Promise<void> {
  const dataDir = resolve(options.dataDir ?? defaultDataDir());
  const path = secretsFilePath(dataDir);
  if (!(await exists(path))) {
    throw new Error(`not initialised: ${path} does not exist (run soledad init first)`);
  }
  const oldPassphrase = await readPassphrase({
    file: options.passphraseFile,
    prompt: 'Current passphrase: ',
  });
  // Checked before asking for the new one, so a typo is reported at once.
  await openSecretsFile(path, oldPassphrase);
  const newPassphrase = await readPassphrase({
    file: options.newPassphraseFile,
    fileEnvVar: 'SOLEDAD_NEW_PASSPHRASE_FILE',
    envVar: 'SOLEDAD_NEW_PASSPHRASE',
    credential: false,
    prompt: 'New passphrase: ',
    confirm: 'Repeat the new passphrase: ',
  });
  const weak = scryptParams(options);
  await changePassphrase(path, oldPassphrase, newPassphrase, weak ? { scrypt: weak } : {});
  process.stdout.write(`Passphrase changed for ${path}; the storage secret is unchanged.\n`);
}

/** Weak parameters when asked for (tests); undefined means the library's default. */
function scryptParams(options: InitOptions): ScryptParams | undefined {
  if (!options.weakScrypt && process.env.SOLEDAD_TEST_WEAK_SCRYPT !== '1') return undefined;
  process.stderr.write('soledad init: warning: weak scrypt parameters, for tests only\n');
  return { ...WEAK_TEST_SCRYPT_PARAMS };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
