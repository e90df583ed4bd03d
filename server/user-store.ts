import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export interface UserRecord {
  uuid: string;
  /** Bytes this user may store; null means the server's `default_quota`. */
  quota: number | null;
}

export interface NewUser {
  user: UserRecord;
  /** The only copy of the token: the store keeps its hash. */
  token: string;
}

/**
 * Users of the public listener and their tokens. The file-based store is the embedded
 * default; the interface is small so that a shared database can replace it when several
 * server processes serve one user base. A user added by any process is visible to every
 * other at once.
 */
export interface UserStore {
  /** The user whose token this is, or undefined for an unknown user or a wrong token. */
  authenticate(uuid: string, token: string): Promise<UserRecord | undefined>;
  get(uuid: string): Promise<UserRecord | undefined>;
  /** Creates a user with a fresh token; fails with `UserExistsError` if `uuid` is taken. */
  add(options?: { uuid?: string; quota?: number | null }): Promise<NewUser>;
  close(): Promise<void>;
}

export class UserExistsError extends Error {
  readonly code = 'user_exists';

  constructor(uuid: string) {
    super(`user ${uuid} already exists`);
    this.name = 'UserExistsError';
  }
}

/** A fresh token: 256 random bits, base64url. */
export function generateToken(): string {
  return randomBytes(32).toString('base64url');
}

/** SHA-256 of a token, the only form in which stores keep it. */
export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

const NO_HASH = hashToken('');

/**
 * Compares a presented token with a stored hash in constant time. With no stored hash
 * (unknown id) it still does the same work, and answers false.
 */
export function tokenMatches(token: string, storedHash: Buffer | undefined): boolean {
  const presented = hashToken(token);
  const expected = storedHash?.length === presented.length ? storedHash : NO_HASH;
  const equal = timingSafeEqual(presented, expected);
  return equal && expected === storedHash;
}
