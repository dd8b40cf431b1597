/**
 * Errors with a stable `code`, and the one message format used for every argument check (STYLE.md):
 * `Expected ${expected} for ${name} but received ${actual} of type ${typeof actual}`.
 */

export type ErrorKind = 'TypeError' | 'RangeError' | 'Error';

export interface ImiadError extends Error {
  code: string;
}

function describe(actual: unknown): string {
  if (typeof actual === 'string') return actual;
  if (ArrayBuffer.isView(actual)) return `${actual.constructor.name}(${(actual as unknown as ArrayLike<unknown>).length ?? actual.byteLength})`;
  if (Array.isArray(actual)) return `Array(${actual.length})`;
  if (actual !== null && typeof actual === 'object') return actual.constructor?.name ?? 'Object';
  return String(actual);
}

/** The project's argument-error message. */
export function expectedMessage(expected: string, name: string, actual: unknown): string {
  return `Expected ${expected} for ${name} but received ${describe(actual)} of type ${typeof actual}`;
}

/** Builds an Error of the given kind carrying a stable code. */
export function imiadError(kind: ErrorKind, code: string, message: string): ImiadError {
  const Ctor = kind === 'TypeError' ? TypeError : kind === 'RangeError' ? RangeError : Error;
  const err = new Ctor(message) as ImiadError;
  err.code = code;
  return err;
}

/** A TypeError for a wrong argument type, in the project's format. */
export function invalidType(expected: string, name: string, actual: unknown, code = 'ERR_IMIAD_ARGUMENT'): ImiadError {
  return imiadError('TypeError', code, expectedMessage(expected, name, actual));
}

/** A RangeError for an argument out of range, in the project's format. */
export function invalidRange(expected: string, name: string, actual: unknown, code = 'ERR_IMIAD_RANGE'): ImiadError {
  return imiadError('RangeError', code, expectedMessage(expected, name, actual));
}

/** True when `err` is an Error carrying `code`. */
export function hasCode(err: unknown, code: string): err is ImiadError {
  return err instanceof Error && (err as Partial<ImiadError>).code === code;
}
