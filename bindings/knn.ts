/**
 * Exact k-nearest-neighbour search over a memory bank (brute force, Euclidean distance): typed wrappers over the
 * addon's KnnIndex (native/knn.{h,cc}). Every argument is validated here first, in the project's message format;
 * the glue repeats only cheap guards.
 */
import { callKernel } from './call';
import { imiadError, invalidRange, invalidType } from './errors';
import * as is from './is';
import { cpuAddon } from './load';
import { type Device, optionalSignal, requireDevice, requireDims, requireInteger, requireMatrix, requireOptions } from './validate';

/** Per query the k nearest bank rows: `[queries, k]` row-major, ascending distance, ties to the smaller index. */
export interface KnnResult {
  indices: Int32Array;
  /** Euclidean distances (not squared). */
  distances: Float32Array;
}

/** The addon's raw index (the CUDA addon exports the same shape). */
export interface NativeKnnIndex {
  readonly rows: number;
  readonly dims: number;
  /** Bytes the index holds once prepared (the packed bank and its norms; the bank array itself is the caller's). */
  readonly stateBytes: number;
  search(queries: Float32Array, k: number, cancelFlag: Int32Array | undefined): Promise<KnnResult>;
}

export interface KnnAddon {
  KnnIndex: new (bank: Float32Array, dims: number) => NativeKnnIndex;
  /** The plain reference loop (exact direct-difference distance for every pair); for tests and benchmarks. */
  knnSearchPlain(bank: Float32Array, queries: Float32Array, dims: number, k: number, cancelFlag: Int32Array | undefined): Promise<KnnResult>;
  /** The micro-kernel this CPU runs: 'avx512', 'avx2' or 'portable'. */
  knnKernel: string;
}

export interface KnnIndexOptions {
  dims: number;
  device?: Device;
}

export interface KnnSearchOptions {
  signal?: AbortSignal;
}

/** Row indices are Int32: a larger bank cannot be addressed. */
const MAX_ROWS = 2 ** 31 - 1;

/** The device a call runs on. Only the CPU exists in this build; 'auto' picks it. */
function resolveDevice(device: Device): 'cpu' {
  if (device === 'cuda') {
    throw imiadError(
      'Error',
      'ERR_IMIAD_CUDA_UNAVAILABLE',
      "Expected an available CUDA device for device but received cuda of type string: this build of imiad has no CUDA addon (use 'auto' or 'cpu')",
    );
  }
  return 'cpu';
}

/** Checks a bank (type, non-empty, multiple of dims, finite, addressable) and returns its row count. */
function requireBank(bank: Float32Array, dims: number): number {
  const rows = requireMatrix(bank, dims, 'bank');
  if (rows > MAX_ROWS) throw invalidRange(`at most ${MAX_ROWS} rows`, 'bank', rows);
  return rows;
}

/**
 * A bank of `[rows, dims]` float32 rows prepared for repeated exact k-NN searches. The bank is read in place (not
 * copied) and packed once on the first search, off the event loop; do not modify it while the index is in use.
 */
export class KnnIndex {
  readonly rows: number;
  readonly dims: number;
  readonly device: 'cpu';
  readonly #native: NativeKnnIndex;

  constructor(bank: Float32Array, opts: KnnIndexOptions) {
    if (!is.float32Array(bank)) throw invalidType('Float32Array', 'bank', bank);
    const o = requireOptions(opts);
    const dims = requireDims(o.dims);
    const device = resolveDevice(requireDevice(o.device));
    this.rows = requireBank(bank, dims);
    this.dims = dims;
    this.device = device;
    this.#native = new (cpuAddon<KnnAddon>().KnnIndex)(bank, dims);
  }

  /** Bytes the index holds once prepared: the packed copy of the bank and its norms. */
  get stateBytes(): number {
    return this.#native.stateBytes;
  }

  /** The k nearest bank rows of each query row (`queries` is `[n, dims]` row-major). */
  async search(queries: Float32Array, k: number, opts: KnnSearchOptions = {}): Promise<KnnResult> {
    requireMatrix(queries, this.dims, 'queries');
    requireInteger(k, 'k', 1, this.rows);
    const signal = optionalSignal(requireOptions(opts).signal);
    return callKernel((cancelFlag) => this.#native.search(queries, k, cancelFlag), { signal }, this.search);
  }
}

export interface KnnSearchOneShotOptions {
  dims: number;
  k: number;
  device?: Device;
  signal?: AbortSignal;
}

/** One-shot exact k-NN: the k nearest `bank` rows of each `queries` row (both `[n, dims]` row-major). */
export async function knnSearch(bank: Float32Array, queries: Float32Array, opts: KnnSearchOneShotOptions): Promise<KnnResult> {
  if (!is.float32Array(bank)) throw invalidType('Float32Array', 'bank', bank);
  if (!is.float32Array(queries)) throw invalidType('Float32Array', 'queries', queries);
  const o = requireOptions(opts);
  const dims = requireDims(o.dims);
  const rows = requireBank(bank, dims);
  requireMatrix(queries, dims, 'queries');
  const k = requireInteger(o.k, 'k', 1, rows);
  resolveDevice(requireDevice(o.device));
  const signal = optionalSignal(o.signal);
  const native = new (cpuAddon<KnnAddon>().KnnIndex)(bank, dims);
  return callKernel((cancelFlag) => native.search(queries, k, cancelFlag), { signal }, knnSearch);
}
