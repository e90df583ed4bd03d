import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/** Name of the secrets file inside the data folder. */
export const SECRETS_FILE_NAME = 'secrets.json';

/**
 * The daemon's data folder: `$XDG_DATA_HOME/soledad`, else `~/.local/share/soledad`. A
 * relative `XDG_DATA_HOME` is ignored, as the XDG base directory spec requires.
 */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(xdgBase(env.XDG_DATA_HOME, env, ['.local', 'share']), 'soledad');
}

/** The daemon's config folder: `$XDG_CONFIG_HOME/soledad`, else `~/.config/soledad`. */
export function defaultConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(xdgBase(env.XDG_CONFIG_HOME, env, ['.config']), 'soledad');
}

export function secretsFilePath(dataDir: string): string {
  return join(dataDir, SECRETS_FILE_NAME);
}

function xdgBase(value: string | undefined, env: NodeJS.ProcessEnv, fallback: string[]): string {
  if (value && isAbsolute(value)) return value;
  return join(env.HOME || homedir(), ...fallback);
}
