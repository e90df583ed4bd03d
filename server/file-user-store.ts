import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { z } from 'zod';
import { isValidId } from '../wire/ids.js';
import {
  generateToken,
  hashToken,
  type NewUser,
  tokenMatches,
  UserExistsError,
  type UserRecord,
  type UserStore,
} from './user-store.js';

export const USERS_FILE = 'users.json';

const LOCK_WAIT_MS = 10_000;

const fileSchema = z.object({
  version: z.literal(1),
  users: z.record(
    z.string().regex(/^[A-Za-z0-9_-]{1,128}$/),
    z.object({
      token_sha256: z.string().regex(/^[0-9a-f]{64}$/),
      quota: z.number().int().nonnegative().nullable(),
      created_at: z.string(),
    }),
  ),
});

type UsersFile = z.infer<typeof fileSchema>;

interface StoredUser {
  record: UserRecord;
  hash: Buffer;
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return isErrno(error, 'EPERM');
  }
}

/**
 * Users in `ROOT/users.json` (mode 0600): uuid → SHA-256 of the token and quota. Writers
 * (`soledad server add-user`, in any process) take `users.json.lock` and replace the file
 * atomically; readers compare the file's identity (inode, size, mtime) on every lookup
 * and re-read it when it changed, so a user added elsewhere works at once.
 */
export class FileUserStore implements UserStore {
  readonly path: string;
  readonly #logger: Logger | undefined;
  #users = new Map<string, StoredUser>();
  #stamp = '';
  #reloading: Promise<void> | undefined;

  private constructor(path: string, logger: Logger | undefined) {
    this.path = path;
    this.#logger = logger;
  }

  /** Opens the store under `root`, creating `root` if needed; fails if the file is corrupt. */
  static async open(root: string, options: { logger?: Logger } = {}): Promise<FileUserStore> {
    await mkdir(root, { recursive: true, mode: 0o700 });
    const store = new FileUserStore(join(root, USERS_FILE), options.logger);
    await store.#load();
    return store;
  }

  async #currentStamp(): Promise<string> {
    try {
      const info = await stat(this.path, { bigint: true });
      return `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return 'missing';
      throw error;
    }
  }

  async #readFile(): Promise<UsersFile> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return { version: 1, users: {} };
      throw error;
    }
    const parsed = fileSchema.safeParse(JSON.parse(text));
    if (!parsed.success) {
      throw new Error(`${this.path} is not a valid users file: ${parsed.error.message}`);
    }
    return parsed.data;
  }

  #adopt(file: UsersFile, stamp: string): void {
    const users = new Map<string, StoredUser>();
    for (const [uuid, entry] of Object.entries(file.users)) {
      users.set(uuid, {
        record: { uuid, quota: entry.quota },
        hash: Buffer.from(entry.token_sha256, 'hex'),
      });
    }
    this.#users = users;
    this.#stamp = stamp;
  }

  async #load(): Promise<void> {
    const stamp = await this.#currentStamp();
    this.#adopt(await this.#readFile(), stamp);
  }

  /** Re-reads the file if it changed; a file that stopped parsing keeps the last good copy. */
  async #refresh(): Promise<void> {
    const stamp = await this.#currentStamp();
    if (stamp === this.#stamp) return;
    this.#reloading ??= (async () => {
      try {
        const fresh = await this.#currentStamp();
        this.#adopt(await this.#readFile(), fresh);
        this.#logger?.info({ users: this.#users.size }, 'users file reloaded');
      } catch (err) {
        this.#stamp = stamp;
        this.#logger?.error(
          { err, path: this.path },
          'users file unreadable; keeping the last good copy',
        );
      } finally {
        this.#reloading = undefined;
      }
    })();
    await this.#reloading;
  }

  async authenticate(uuid: string, token: string): Promise<UserRecord | undefined> {
    await this.#refresh();
    const user = this.#users.get(uuid);
    return tokenMatches(token, user?.hash) ? user?.record : undefined;
  }

  async get(uuid: string): Promise<UserRecord | undefined> {
    await this.#refresh();
    return this.#users.get(uuid)?.record;
  }

  async add(options: { uuid?: string; quota?: number | null } = {}): Promise<NewUser> {
    const uuid = options.uuid ?? randomUUID();
    if (!isValidId(uuid)) throw new Error(`invalid uuid ${JSON.stringify(uuid)}`);
    const quota = options.quota ?? null;
    const token = generateToken();
    await this.#withLock(async () => {
      const file = await this.#readFile();
      if (Object.hasOwn(file.users, uuid)) throw new UserExistsError(uuid);
      file.users[uuid] = {
        token_sha256: hashToken(token).toString('hex'),
        quota,
        created_at: new Date().toISOString(),
      };
      await this.#writeFile(file);
      this.#adopt(file, await this.#currentStamp());
    });
    return { user: { uuid, quota }, token };
  }

  async #writeFile(file: UsersFile): Promise<void> {
    const temporary = `${this.path}.${process.pid}.tmp`;
    const handle = await open(temporary, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(file, null, 2)}\n`, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, this.path);
    const directory = await open(join(this.path, '..'), 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  }

  async #withLock<T>(action: () => Promise<T>): Promise<T> {
    const lockPath = `${this.path}.lock`;
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const handle = await open(lockPath, 'wx', 0o600);
        await handle.writeFile(String(process.pid));
        await handle.close();
        break;
      } catch (error) {
        if (!isErrno(error, 'EEXIST')) throw error;
        const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
        const age = Date.now() - ((await stat(lockPath).catch(() => undefined))?.mtimeMs ?? 0);
        const stale = Number.isInteger(holder) ? !isAlive(holder) : age > LOCK_WAIT_MS;
        if (stale) {
          await unlink(lockPath).catch(() => {});
          continue;
        }
        if (Date.now() > deadline) throw new Error(`${lockPath} is held by process ${holder}`);
        await delay(25);
      }
    }
    try {
      return await action();
    } finally {
      await unlink(lockPath).catch(() => {});
    }
  }

  async close(): Promise<void> {
    await this.#reloading;
  }
}
