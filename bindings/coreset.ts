/**
 * Greedy coreset (PatchCore's k-center greedy, Algorithm 1): typed wrapper over the native kernel
 * (native/coreset.h). Every argument is validated here first, in the project's message format.
 */
import { callKernel } from './call';
import { imiadError } from './errors';
import { cpuAddon } from './load';
import {
  type Device,
  optionalInteger,
  optionalProgress,
  optionalSignal,
  requireDevice,
  requireDims,
  requireInteger,
  requireMatrix,
  requireOptions,
} from './validate';

export interface GreedyCoresetOptions {
  /** Columns of the row-major [rows, dims] feature matrix. */
  dims: number;
  /** Rows to select, 1..rows. */
  count: number;
  /** 0 (default): exact on the given features; > 0: a seeded random linear projection to this many dims first. */
  projectionDims?: number;
  /** Seeds the projection and the default start row (non-negative safe integer, default 0). */
  seed?: number;
  /** First selected row (default: defaultStartIndex(seed, rows)). */
  startIndex?: number;
  device?: Device;
  signal?: AbortSignal;
  /** Called with (rows selected so far, count). */
  onProgress?: (done: number, total: number) => void;
}

/** Largest projection width accepted. */
export const MAX_PROJECTION_DIMS = 65536;

/**
 * The raw export of an addon (the CPU one, and the CUDA one with the same signature).
 * Internal; use greedyCoreset().
 */
export type RawGreedyCoreset = (
  features: Float32Array,
  dims: number,
  count: number,
  projectionDims: number,
  seed: number,
  startIndex: number,
  cancelFlag: Int32Array | undefined,
  onProgress: ((done: number, total: number) => void) | undefined,
) => Promise<Uint32Array>;

interface CoresetAddon {
  greedyCoreset: RawGreedyCoreset;
  greedyCoresetPlain: RawGreedyCoreset;
}

const MASK64 = (1n << 64n) - 1n;

/** One splitmix64 output from state `seed` (the first output of the generator seeded with `seed`). */
export function splitmix64(seed: bigint): bigint {
  let z = (seed + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/**
 * The start row used when `startIndex` is not given: splitmix64(seed) modulo rows. Computed here, in TypeScript,
 * so that every backend (CPU, CUDA) starts from the same row.
 */
export function defaultStartIndex(seed: number, rows: number): number {
  return Number(splitmix64(BigInt(seed)) % BigInt(rows));
}

interface Validated {
  dims: number;
  count: number;
  projectionDims: number;
  seed: number;
  startIndex: number;
  device: Device;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** Validates greedyCoreset()'s arguments (exported for the CUDA path, which must accept exactly the same). */
export function validateGreedyCoreset(features: unknown, options: unknown): Validated {
  const opts = requireOptions(options, 'options');
  const dims = requireDims(opts.dims, 'dims');
  const rows = requireMatrix(features, dims, 'features');
  const count = requireInteger(opts.count, 'count', 1, rows);
  const projectionDims = optionalInteger(opts.projectionDims, 'projectionDims', 0, MAX_PROJECTION_DIMS, 0);
  const seed = optionalInteger(opts.seed, 'seed', 0, Number.MAX_SAFE_INTEGER, 0);
  const startIndex = optionalInteger(opts.startIndex, 'startIndex', 0, rows - 1, defaultStartIndex(seed, rows));
  const device = requireDevice(opts.device, 'device');
  const signal = optionalSignal(opts.signal, 'signal');
  const onProgress = optionalProgress(opts.onProgress, 'onProgress');
  return { dims, count, projectionDims, seed, startIndex, device, signal, onProgress };
}

function run(raw: RawGreedyCoreset, features: Float32Array, v: Validated, caller: Function): Promise<Uint32Array> {
  return callKernel(
    (cancelFlag, onProgress) =>
      raw(features, v.dims, v.count, v.projectionDims, v.seed, v.startIndex, cancelFlag, onProgress),
    { signal: v.signal, onProgress: v.onProgress },
    caller,
  );
}

/**
 * Selects `count` rows of the [rows, dims] matrix by greedy k-center (PatchCore, Algorithm 1): the first is
 * `startIndex`; each next one is, among the rows not yet selected, the row whose Euclidean distance to its nearest
 * selected row is largest, ties to the smaller index. Resolves to the row indices in selection order.
 */
export async function greedyCoreset(features: Float32Array, options: GreedyCoresetOptions): Promise<Uint32Array> {
  const v = validateGreedyCoreset(features, options);
  if (v.device === 'cuda') {
    throw imiadError('Error', 'ERR_IMIAD_CUDA_UNAVAILABLE', "Device 'cuda' was requested but the CUDA addon is not available");
  }
  return run(cpuAddon<CoresetAddon>().greedyCoreset, features, v, greedyCoreset);
}

/**
 * Internal: the plain loop (every row's minimum distance updated after each selection), with greedyCoreset()'s
 * arguments and result; the reference of the tests and the benchmark's baseline.
 */
export async function greedyCoresetPlain(features: Float32Array, options: GreedyCoresetOptions): Promise<Uint32Array> {
  const v = validateGreedyCoreset(features, options);
  return run(cpuAddon<CoresetAddon>().greedyCoresetPlain, features, v, greedyCoresetPlain);
}
