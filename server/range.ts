import type { ByteRange } from './backends/blobs-backend.js';

export type RangeDecision =
  | { kind: 'whole' }
  | { kind: 'partial'; range: ByteRange }
  | { kind: 'unsatisfiable' };

/**
 * Applies a `Range` header to a blob of `size` bytes, as RFC 9110 section 14 has it:
 * `bytes=a-b` is inclusive and its end is clamped to the blob, `bytes=a-` runs to the
 * end, `bytes=-n` is the last n bytes. A header that is absent, syntactically invalid,
 * of another unit, or asks for several ranges is ignored (`whole`). A range starting at
 * or past the end, a zero-length suffix, and any range of an empty blob are
 * `unsatisfiable`.
 */
export function decideRange(header: string | undefined, size: number): RangeDecision {
  if (header === undefined) return { kind: 'whole' };
  const match = /^bytes=(.*)$/i.exec(header.trim());
  if (!match) return { kind: 'whole' };
  const specs = match[1]!
    .split(',')
    .map((spec) => spec.trim())
    .filter((spec) => spec !== '');
  if (specs.length !== 1) return { kind: 'whole' };
  const spec = specs[0]!;

  const suffix = /^-(\d+)$/.exec(spec);
  if (suffix) {
    const length = Number(suffix[1]);
    if (length === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', range: { start: Math.max(0, size - length), end: size - 1 } };
  }

  const bounded = /^(\d+)-(\d*)$/.exec(spec);
  if (!bounded) return { kind: 'whole' };
  const first = Number(bounded[1]);
  const last = bounded[2] === '' ? undefined : Number(bounded[2]);
  if (last !== undefined && last < first) return { kind: 'whole' };
  if (first >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', range: { start: first, end: Math.min(last ?? size - 1, size - 1) } };
}
