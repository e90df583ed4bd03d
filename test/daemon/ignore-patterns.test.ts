import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IgnorePatterns } from '../../daemon/ignore-patterns.js';

function ignored(patterns: string[], path: string, isDir = false): boolean {
  return new IgnorePatterns(patterns, { builtins: false }).ignores(path, isDir);
}

describe('IgnorePatterns', () => {
  describe('ignores', () => {
    it('matches a pattern without a slash against names at any depth', () => {
      assert.equal(ignored(['*.log'], 'a.log'), true);
      assert.equal(ignored(['*.log'], 'a/b/c.log'), true);
      assert.equal(ignored(['*.log'], 'a/b/c.logs'), false);
      assert.equal(ignored(['*.log'], 'a.log/c.txt'), true);
    });

    it('anchors a pattern with a slash at the folder', () => {
      assert.equal(ignored(['build/*.o'], 'build/x.o'), true);
      assert.equal(ignored(['build/*.o'], 'src/build/x.o'), false);
      assert.equal(ignored(['/notes.txt'], 'notes.txt'), true);
      assert.equal(ignored(['/notes.txt'], 'a/notes.txt'), false);
    });

    it('keeps a single star and a question mark inside one segment', () => {
      assert.equal(ignored(['a/*'], 'a/b'), true);
      assert.equal(ignored(['a/*.txt'], 'a/b/c.txt'), false);
      assert.equal(ignored(['file?.txt'], 'file1.txt'), true);
      assert.equal(ignored(['file?.txt'], 'file12.txt'), false);
      assert.equal(ignored(['a?b'], 'a/b'), false);
    });

    it('lets a double star span any number of segments', () => {
      assert.equal(ignored(['**/cache'], 'cache'), true);
      assert.equal(ignored(['**/cache'], 'x/y/cache'), true);
      assert.equal(ignored(['a/**/z.txt'], 'a/z.txt'), true);
      assert.equal(ignored(['a/**/z.txt'], 'a/b/c/z.txt'), true);
      assert.equal(ignored(['a/**/z.txt'], 'b/a/z.txt'), false);
      assert.equal(ignored(['a/**'], 'a/b/c'), true);
      assert.equal(ignored(['a/**'], 'a', true), false);
    });

    it('applies a trailing slash to folders only', () => {
      assert.equal(ignored(['tmp/'], 'tmp', true), true);
      assert.equal(ignored(['tmp/'], 'tmp', false), false);
      assert.equal(ignored(['tmp/'], 'a/tmp/file.txt'), true);
    });

    it('takes regular expression characters literally', () => {
      assert.equal(ignored(['a+b (1).txt'], 'a+b (1).txt'), true);
      assert.equal(ignored(['a.b'], 'axb'), false);
      assert.equal(ignored(['[x]'], '[x]'), true);
    });

    it('ignores temporary and lock files by default', () => {
      const patterns = new IgnorePatterns([]);
      for (const path of [
        'movie.mkv.part',
        'x/setup.exe.crdownload',
        'report.tmp',
        'notes.txt~',
        'x/.notes.txt.swp',
        '.~lock.report.odt#',
        '~$report.docx',
        '.DS_Store',
      ]) {
        assert.equal(patterns.ignores(path, false), true, path);
      }
      for (const path of ['report.odt', '.hidden', 'a/.config/settings.json', 'part']) {
        assert.equal(patterns.ignores(path, false), false, path);
      }
    });
  });
});
