/** A plaintext range that starts at or past the end of the plaintext (HTTP 416). */
export class RangeNotSatisfiableError extends RangeError {
  readonly code = 'range_not_satisfiable';
  readonly plaintextSize: number;

  constructor(start: number, plaintextSize: number, options?: { cause?: unknown }) {
    super(`range starting at ${start} is not satisfiable: ${plaintextSize} bytes`, options);
    this.name = 'RangeNotSatisfiableError';
    this.plaintextSize = plaintextSize;
  }
}
