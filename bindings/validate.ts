/** Argument checks shared by every kernel wrapper; each throws in the project's message format with a code. */
import { invalidRange, invalidType, imiadError } from './errors';
import * as is from './is';

export type Device = 'auto' | 'cpu' | 'cuda';

export function requireInteger(value: unknown, name: string, min: number, max: number): number {
  if (!is.integer(value)) throw invalidType(`integer between ${min} and ${max}`, name, value);
  if (!is.inRange(value, min, max)) throw invalidRange(`integer between ${min} and ${max}`, name, value);
  return value;
}

export function optionalInteger(value: unknown, name: string, min: number, max: number, fallback: number): number {
  return value === undefined ? fallback : requireInteger(value, name, min, max);
}

export function requireDims(value: unknown, name = 'dims'): number {
  if (!is.integer(value) || value < 1 || value > 1 << 20) {
    throw imiadError(
      is.integer(value) ? 'RangeError' : 'TypeError',
      'ERR_IMIAD_DIMS',
      `Expected positive integer for ${name} but received ${String(value)} of type ${typeof value}`,
    );
  }
  return value;
}

/**
 * A row-major [rows, dims] Float32Array matrix with at least one row and only finite values.
 * Returns the row count.
 */
export function requireMatrix(values: unknown, dims: number, name: string, opts: { finite?: boolean } = {}): number {
  if (!is.float32Array(values)) throw invalidType('Float32Array', name, values);
  if (values.length === 0) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected non-empty Float32Array for ${name} but received Float32Array(0) of type object`);
  }
  if (values.length % dims !== 0) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_DIMS',
      `Expected length of ${name} to be a multiple of dims (${dims}) but received ${values.length} of type number`,
    );
  }
  if (opts.finite !== false) {
    const bad = is.firstNonFinite(values);
    if (bad >= 0) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_NOT_FINITE',
        `Expected finite numbers in ${name} but received ${values[bad]} of type number at index ${bad}`,
      );
    }
  }
  return values.length / dims;
}

let defaultDevice: Device = 'auto';

/** The device a kernel call without a `device` option runs on (the command line's --device sets it). */
export function setDefaultDevice(device: Device): void {
  defaultDevice = requireDevice(device, '--device');
}

export function requireDevice(value: unknown, name = 'device'): Device {
  if (value === undefined) return defaultDevice;
  if (value !== 'auto' && value !== 'cpu' && value !== 'cuda') throw invalidType("one of 'auto', 'cpu', 'cuda'", name, value);
  return value;
}

export function requireOptions(value: unknown, name = 'options'): Record<string, unknown> {
  if (!is.object(value)) throw invalidType('object', name, value);
  return value;
}

export function optionalSignal(value: unknown, name = 'signal'): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw invalidType('AbortSignal', name, value);
  return value;
}

export function optionalProgress(value: unknown, name = 'onProgress'): ((done: number, total: number) => void) | undefined {
  if (value === undefined) return undefined;
  if (!is.fn(value)) throw invalidType('function', name, value);
  return value as (done: number, total: number) => void;
}
