import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { hashToken, tokenMatches } from './user-store.js';

function isMissing(error: unknown): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === 'ENOENT';
}

/**
 * Tokens of the services listener: a file of `service:token` lines (blank lines and `#`
 * comments ignored; a service may have several lines, to rotate tokens). Tokens are
 * hashed on load and compared in constant time. The file is re-read when it changes;
 * a missing file admits no service.
 */
export class ServiceTokens {
  readonly path: string;
  readonly #logger: Logger | undefined;
  #tokens = new Map<string, Buffer[]>();
  #stamp = '';

  constructor(path: string, options: { logger?: Logger } = {}) {
    this.path = path;
    this.#logger = options.logger;
  }

  async #stampNow(): Promise<string> {
    try {
      const info = await stat(this.path, { bigint: true });
      return `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
    } catch (error) {
      if (isMissing(error)) return 'missing';
      throw error;
    }
  }

  async #refresh(): Promise<void> {
    const stamp = await this.#stampNow();
    if (stamp === this.#stamp) return;
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
    const tokens = new Map<string, Buffer[]>();
    let invalid = 0;
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const colon = line.indexOf(':');
      if (colon <= 0 || colon === line.length - 1) {
        invalid += 1;
        continue;
      }
      const service = line.slice(0, colon);
      const hashes = tokens.get(service) ?? [];
      hashes.push(hashToken(line.slice(colon + 1)));
      tokens.set(service, hashes);
    }
    this.#tokens = tokens;
    this.#stamp = stamp;
    if (invalid > 0) {
      this.#logger?.warn(
        { path: this.path, lines: invalid },
        'ignoring malformed service token lines',
      );
    }
  }

  /** The service name if `token` is one of its tokens, else undefined. */
  async authenticate(service: string, token: string): Promise<string | undefined> {
    await this.#refresh();
    const hashes = this.#tokens.get(service);
    let matched = false;
    for (const hash of hashes ?? [undefined]) {
      if (tokenMatches(token, hash)) matched = true;
    }
    return matched ? service : undefined;
  }
}
