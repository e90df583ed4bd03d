import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The anonymous `GET /` answer: what this server is, nothing about its users or data. */
export interface ServerInfo {
  name: string;
  version: string;
}

/** Reads name and version from the package's `package.json`, found above this module. */
export async function loadServerInfo(): Promise<ServerInfo> {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as {
        name?: unknown;
        version?: unknown;
      };
      if (manifest.name === 'soledad' && typeof manifest.version === 'string') {
        return { name: 'soledad', version: manifest.version };
      }
    } catch {
      // no readable package.json at this level; look further up
    }
    const parent = dirname(dir);
    if (parent === dir) return { name: 'soledad', version: 'unknown' };
    dir = parent;
  }
}
