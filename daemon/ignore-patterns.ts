/**
 * Names that are never imported from a watch folder: files that are still being written
 * under a temporary name (browser downloads, editors' swap and lock files, office owner
 * files) and desktop metadata. Matched like user patterns, at any depth.
 */
export const BUILTIN_IGNORE_PATTERNS: readonly string[] = [
  '*.part',
  '*.partial',
  '*.crdownload',
  '*.download',
  '*.tmp',
  '*.temp',
  '*~',
  '.*.sw?',
  '*.swp',
  '*.swx',
  '*.kate-swp',
  '.~lock.*',
  '~$*',
  '.fuse_hidden*',
  '.nfs*',
  '.Trash-*/',
  '.DS_Store',
  'Thumbs.db',
  'desktop.ini',
];

interface CompiledPattern {
  regex: RegExp;
  /** A trailing `/`: the pattern matches folders only. */
  dirOnly: boolean;
}

/**
 * Ignore patterns of one watch folder, matched against paths relative to the folder with
 * `/` separators:
 *
 * - `*` matches any run of characters but `/`, `?` one character but `/`; a whole
 *   segment `**` matches any number of segments (`**` elsewhere counts as `*`).
 * - A pattern without a `/` (other than a trailing one) matches a name at any depth:
 *   `*.log` ignores `a/b/c.log`. A pattern with a `/` is anchored at the folder:
 *   `build/*.o` ignores `build/x.o` but not `src/build/x.o`; a leading `/` anchors too.
 * - A trailing `/` matches folders only. An ignored folder ignores everything inside it.
 * - Everything else is literal; there are no character classes, escapes or negations.
 */
export class IgnorePatterns {
  readonly #patterns: CompiledPattern[];

  constructor(patterns: readonly string[], { builtins = true } = {}) {
    const all = builtins ? [...BUILTIN_IGNORE_PATTERNS, ...patterns] : [...patterns];
    this.#patterns = all.map(compilePattern).filter((p): p is CompiledPattern => p !== null);
  }

  /**
   * Whether `relativePath` (no leading `/`, `/`-separated) is ignored, by itself or
   * because a folder it is in is ignored. `isDir` says whether the path itself is a folder.
   */
  ignores(relativePath: string, isDir: boolean): boolean {
    if (relativePath === '' || relativePath === '.') return false;
    const segments = relativePath.split('/');
    let prefix = '';
    for (let i = 0; i < segments.length; i++) {
      prefix = i === 0 ? (segments[0] as string) : `${prefix}/${segments[i]}`;
      const last = i === segments.length - 1;
      if (this.#matches(prefix, last ? isDir : true)) return true;
    }
    return false;
  }

  /**
   * Whether the path itself matches, without looking at its parent folders: enough for a
   * caller that walks down from the root and never enters an ignored folder.
   */
  matchesOwn(relativePath: string, isDir: boolean): boolean {
    return this.#matches(relativePath, isDir);
  }

  #matches(path: string, isDir: boolean): boolean {
    for (const pattern of this.#patterns) {
      if (pattern.dirOnly && !isDir) continue;
      if (pattern.regex.test(path)) return true;
    }
    return false;
  }
}

function compilePattern(raw: string): CompiledPattern | null {
  let pattern = raw.trim();
  const dirOnly = pattern.endsWith('/');
  while (pattern.endsWith('/')) pattern = pattern.slice(0, -1);
  const anchored = pattern.includes('/');
  while (pattern.startsWith('/')) pattern = pattern.slice(1);
  if (pattern === '') return null;
  const segments = pattern.split('/').filter((segment) => segment !== '');
  if (!anchored) segments.unshift('**');
  let source = '';
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string;
    const last = i === segments.length - 1;
    if (segment === '**') {
      // Inside a pattern: any number of whole segments, each with its `/`. At the end:
      // anything below (so `a/**` matches what is inside `a`, not `a` itself).
      source += last ? '.+' : '(?:[^/]*/)*';
    } else {
      source += segmentSource(segment) + (last ? '' : '/');
    }
  }
  return { regex: new RegExp(`^${source}$`, 's'), dirOnly };
}

function segmentSource(segment: string): string {
  let out = '';
  for (let i = 0; i < segment.length; i++) {
    const char = segment[i] as string;
    if (char === '*') {
      while (segment[i + 1] === '*') i++;
      out += '[^/]*';
    } else if (char === '?') {
      out += '[^/]';
    } else {
      out += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return out;
}
