import { createCipheriv, createDecipheriv, randomBytes, scrypt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from './atomic-file.js';
import { PassphraseError } from './passphrase-error.js';
import { SecretsFileError } from './secrets-file-error.js';

// The secrets file: the 32-byte storage secret sealed with AES-256-GCM under a key that
// scrypt derives from the passphrase, plus this device's id in the clear. Layout in
// docs/envelope-format.md, section "Secrets file".

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number;
  r: number;
  p: number;
}

export const DEFAULT_SCRYPT_PARAMS: Readonly<ScryptParams> = { N: 2 ** 17, r: 8, p: 1 };
/** Fast and weak: for tests only (`SOLEDAD_TEST_WEAK_SCRYPT=1`). */
export const WEAK_TEST_SCRYPT_PARAMS: Readonly<ScryptParams> = { N: 2 ** 10, r: 8, p: 1 };

export interface StorageSecrets {
  /** The 32-byte storage secret. */
  secret: Buffer;
  /** 16 lowercase hex digits, made once at init; names this device in revisions. */
  deviceId: string;
}

export interface SecretsFileOptions {
  /** scrypt parameters for the passphrase key; default N = 2^17, r = 8, p = 1. */
  scrypt?: ScryptParams;
}

const FORMAT = 'soledad-secrets';
const VERSION = 1;
const SECRET_BYTES = 32;
const SALT_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const AAD = Buffer.from('soledad storage secret v1', 'latin1');
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;

const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const fileSchema = z.object({
  format: z.literal(FORMAT),
  version: z.literal(VERSION),
  deviceId: z.string().regex(/^[0-9a-f]{16}$/, 'must be 16 lowercase hex digits'),
  kdf: z.object({
    name: z.literal('scrypt'),
    N: z
      .number()
      .int()
      .min(2)
      .max(2 ** 22)
      .refine((n) => (n & (n - 1)) === 0, 'must be a power of two'),
    r: z.number().int().min(1).max(32),
    p: z.number().int().min(1).max(16),
    salt: base64,
  }),
  sealed: z.object({
    cipher: z.literal('aes-256-gcm'),
    nonce: base64,
    ciphertext: base64,
    tag: base64,
  }),
});
type SecretsFileJson = z.infer<typeof fileSchema>;

/**
 * Creates the secrets file at `path` (mode 0600, written atomically) with a new random
 * storage secret and device id. Fails with `secrets_file_exists` if anything is at `path`.
 */
export async function createSecretsFile(
  path: string,
  passphrase: string,
  options: SecretsFileOptions = {},
): Promise<StorageSecrets> {
  const secrets = { secret: randomBytes(SECRET_BYTES), deviceId: randomBytes(8).toString('hex') };
  const json = await sealSecrets(secrets, passphrase, options.scrypt ?? DEFAULT_SCRYPT_PARAMS);
  try {
    await writeFileAtomic(path, json, { replace: false });
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new SecretsFileError('secrets_file_exists', path, `${path} already exists`, { cause });
    }
    throw cause;
  }
  return secrets;
}

/** Reads and unseals the secrets file. */
export async function openSecretsFile(path: string, passphrase: string): Promise<StorageSecrets> {
  const file = await readSecretsFile(path);
  return { secret: await unseal(file, path, passphrase), deviceId: file.deviceId };
}

/**
 * Re-seals the same storage secret under `newPassphrase` (fresh salt and nonce), atomically.
 * A wrong `oldPassphrase` changes nothing. The scrypt parameters stay unless given.
 */
export async function changePassphrase(
  path: string,
  oldPassphrase: string,
  newPassphrase: string,
  options: SecretsFileOptions = {},
): Promise<void> {
  const file = await readSecretsFile(path);
  const secret = await unseal(file, path, oldPassphrase);
  const { name: _name, salt: _salt, ...params } = file.kdf;
  const json = await sealSecrets(
    { secret, deviceId: file.deviceId },
    newPassphrase,
    options.scrypt ?? params,
  );
  await writeFileAtomic(path, json, { replace: true });
}

async function sealSecrets(
  { secret, deviceId }: StorageSecrets,
  passphrase: string,
  params: ScryptParams,
): Promise<string> {
  checkParams(params);
  const salt = randomBytes(SALT_BYTES);
  const nonce = randomBytes(NONCE_BYTES);
  const key = await deriveKey(passphrase, salt, params);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(AAD);
  const ciphertext = Buffer.concat([cipher.update(secret), cipher.final()]);
  const file: SecretsFileJson = {
    format: FORMAT,
    version: VERSION,
    deviceId,
    kdf: { name: 'scrypt', N: params.N, r: params.r, p: params.p, salt: salt.toString('base64') },
    sealed: {
      cipher: 'aes-256-gcm',
      nonce: nonce.toString('base64'),
      ciphertext: ciphertext.toString('base64'),
      tag: cipher.getAuthTag().toString('base64'),
    },
  };
  return `${JSON.stringify(file, null, 2)}\n`;
}

async function readSecretsFile(path: string): Promise<SecretsFileJson> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new SecretsFileError('secrets_file_missing', path, `${path} does not exist`, {
        cause,
      });
    }
    throw cause;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw malformed(path, 'it is not JSON', cause);
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length > 0 ? issue.path.join('.') : 'the top level';
    throw malformed(path, `${where}: ${issue.message}`, parsed.error);
  }
  const file = parsed.data;
  checkLength(path, 'kdf.salt', file.kdf.salt, SALT_BYTES);
  checkLength(path, 'sealed.nonce', file.sealed.nonce, NONCE_BYTES);
  checkLength(path, 'sealed.ciphertext', file.sealed.ciphertext, SECRET_BYTES);
  checkLength(path, 'sealed.tag', file.sealed.tag, TAG_BYTES);
  if (scryptMemory(file.kdf) > MAX_SCRYPT_MEMORY) {
    throw malformed(path, 'kdf: scrypt parameters need more than 1 GiB of memory');
  }
  return file;
}

async function unseal(file: SecretsFileJson, path: string, passphrase: string): Promise<Buffer> {
  const { name: _name, salt, ...params } = file.kdf;
  const key = await deriveKey(passphrase, Buffer.from(salt, 'base64'), params);
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(file.sealed.nonce, 'base64'));
  decipher.setAAD(AAD);
  decipher.setAuthTag(Buffer.from(file.sealed.tag, 'base64'));
  try {
    const ciphertext = Buffer.from(file.sealed.ciphertext, 'base64');
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch (cause) {
    throw new SecretsFileError(
      'wrong_passphrase',
      path,
      `wrong passphrase for ${path} (or the file was altered)`,
      { cause },
    );
  }
}

function deriveKey(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  if (passphrase.length === 0) throw new PassphraseError('empty_passphrase', 'empty passphrase');
  const password = Buffer.from(passphrase.normalize('NFC'), 'utf8');
  const maxmem = scryptMemory(params) + 32 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(password, salt, 32, { ...params, maxmem }, (error, key) => {
      if (error) reject(error);
      else resolve(key);
    });
  });
}

/** What scrypt allocates: 128 · N · r bytes, plus 128 · r · p. */
function scryptMemory({ N, r, p }: ScryptParams): number {
  return 128 * N * r + 128 * r * p;
}

function checkParams(params: ScryptParams): void {
  const result = fileSchema.shape.kdf.pick({ N: true, r: true, p: true }).safeParse(params);
  if (!result.success || scryptMemory(params) > MAX_SCRYPT_MEMORY) {
    throw new RangeError(
      'scrypt parameters must be N a power of two up to 2^22, r 1-32, p 1-16, within 1 GiB',
    );
  }
}

function checkLength(path: string, field: string, value: string, bytes: number): void {
  if (Buffer.from(value, 'base64').length !== bytes) {
    throw malformed(path, `${field}: must be ${bytes} bytes`);
  }
}

function malformed(path: string, problem: string, cause?: unknown): SecretsFileError {
  return new SecretsFileError('malformed_secrets_file', path, `${path} is malformed: ${problem}`, {
    cause,
  });
}
