/** Tiny predicates for argument checks (after sharp's lib/is). */

export const defined = <T>(v: T | undefined | null): v is T => v !== undefined && v !== null;
export const object = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
/** A finite number. */
export const number = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const integer = (v: unknown): v is number => Number.isInteger(v);
export const inRange = (v: number, min: number, max: number): boolean => v >= min && v <= max;
export const string = (v: unknown): v is string => typeof v === 'string';
export const fn = (v: unknown): v is (...args: never[]) => unknown => typeof v === 'function';
// By tag, not instanceof: arrays created by native code (the addon, onnxruntime) can belong to another realm, e.g.
// under jest's vm context, where instanceof Float32Array is false.
export const float32Array = (v: unknown): v is Float32Array => Object.prototype.toString.call(v) === '[object Float32Array]';
export const typedArray = (v: unknown): v is ArrayBufferView => ArrayBuffer.isView(v) && !(v instanceof DataView);

/** Index of the first non-finite value, or -1. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0) return i; // NaN and ±Infinity both give NaN here
  }
  return -1;
}
