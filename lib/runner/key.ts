/** The experiment key: SHA-256 of the canonical JSON (keys sorted) of the configuration and the code version. */
import { createHash } from 'crypto';

import type { ExperimentConfig, JsonValue } from './types';

/** JSON with object keys in code-point order at every level, so equal configurations hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): JsonValue {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: { [k: string]: JsonValue } = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) throw new RangeError(`Cannot key a non-finite number (${value})`);
  return value as JsonValue;
}

export function experimentKey(config: ExperimentConfig, codeVersion: string): string {
  return createHash('sha256').update(canonicalJson({ config, codeVersion })).digest('hex');
}
