/**
 * PaDiM's per-position Gaussian statistics: mean and covariance (+ regularization * I, 0.01 by default) of N
 * training embeddings [N, C, P], kept as Cholesky factors, and the Mahalanobis distance map of test embeddings.
 * Definitions: native/gaussian.h.
 */
import * as os from 'os';

import { callKernel } from './call';
import { imiadError, invalidRange, invalidType } from './errors';
import * as is from './is';
import { cpuAddon } from './load';
import { optionalProgress, optionalSignal, requireInteger, requireOptions } from './validate';

interface GaussianAddon {
  gaussianFit(
    embeddings: Float32Array, n: number, channels: number, positions: number, regularization: number,
    cancel: Int32Array, onProgress?: (done: number, total: number) => void,
  ): Promise<{ mean: Float32Array; cholesky: Float32Array }>;
  gaussianAccumulate(
    embeddings: Float32Array, n: number, channels: number, positions: number, count: number, mean: Float64Array, scatter: Float64Array,
    cancel: Int32Array, onProgress?: (done: number, total: number) => void,
  ): Promise<void>;
  gaussianFactor(
    count: number, mean: Float64Array, scatter: Float64Array, channels: number, positions: number, regularization: number,
    cancel: Int32Array, onProgress?: (done: number, total: number) => void,
  ): Promise<{ mean: Float32Array; cholesky: Float32Array }>;
  mahalanobisDistances(
    embeddings: Float32Array, m: number, channels: number, positions: number, mean: Float32Array, cholesky: Float32Array,
    cancel: Int32Array, onProgress?: (done: number, total: number) => void,
  ): Promise<Float32Array>;
}

const addon = (): GaussianAddon => cpuAddon<GaussianAddon>();

/** Fitted statistics: one Gaussian per position, each array one contiguous block. */
export interface GaussianState {
  channels: number;
  positions: number;
  /** [positions, channels]. */
  mean: Float32Array;
  /**
   * [positions, channels * (channels + 1) / 2]: per position the lower-triangular Cholesky factor L of the
   * covariance (Sigma = L L^T, computed in double precision, stored float32), packed row by row.
   */
  cholesky: Float32Array;
}

/** Bytes a state of these dimensions takes. */
export function gaussianStateBytes(channels: number, positions: number): number {
  return 4 * positions * (channels + (channels * (channels + 1)) / 2);
}

/** Default memory budget of a state: half of this machine's memory. */
export function defaultMemoryBudget(): number {
  return Math.floor(os.totalmem() / 2);
}

export interface GaussianFitOptions {
  /** Training images. */
  n: number;
  channels: number;
  /** H * W. */
  positions: number;
  /** Added to the covariance's diagonal (PaDiM: 0.01). */
  regularization?: number;
  /** A state larger than this is an ERR_IMIAD_MEMORY error (default: half the machine's memory). */
  memoryBudgetBytes?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

function requireEmbeddings(values: unknown, name: string, count: number, channels: number, positions: number, countName: string): Float32Array {
  if (!is.float32Array(values)) throw invalidType('Float32Array', name, values);
  const expected = count * channels * positions;
  if (values.length !== expected) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_DIMS',
      `Expected length of ${name} to be ${countName} * channels * positions (${expected}) but received ${values.length} of type number`,
    );
  }
  const bad = is.firstNonFinite(values);
  if (bad >= 0) {
    throw imiadError('RangeError', 'ERR_IMIAD_NOT_FINITE', `Expected finite numbers in ${name} but received ${values[bad]} of type number at index ${bad}`);
  }
  return values;
}

function requireStateBudget(channels: number, positions: number, budget: number): void {
  const needed = gaussianStateBytes(channels, positions);
  if (needed > budget) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_MEMORY',
      `The Gaussian statistics for ${channels} channels x ${positions} positions need ${needed} bytes ` +
        `(mean ${4 * positions * channels} + Cholesky factors ${needed - 4 * positions * channels}) but the memory budget is ${budget} bytes`,
    );
  }
}

/**
 * Fits PaDiM's Gaussians: per position the mean and the covariance np.cov(rowvar=False) (divisor N - 1; N = 1 gives
 * regularization * I) + regularization * I, factorised by Cholesky in double precision.
 */
export async function gaussianFit(embeddings: Float32Array, opts: GaussianFitOptions): Promise<GaussianState> {
  const o = requireOptions(opts);
  const n = requireInteger(o.n, 'n', 1, 0xffffffff);
  const channels = requireInteger(o.channels, 'channels', 1, 1 << 16);
  const positions = requireInteger(o.positions, 'positions', 1, 0xffffffff);
  const regularization = o.regularization === undefined ? 0.01 : o.regularization;
  if (!is.number(regularization) || regularization < 0) throw invalidType('number >= 0', 'regularization', regularization);
  const budget = o.memoryBudgetBytes === undefined ? defaultMemoryBudget() : o.memoryBudgetBytes;
  if (!is.number(budget) || budget <= 0) throw invalidType('positive number', 'memoryBudgetBytes', budget);
  const signal = optionalSignal(o.signal);
  const onProgress = optionalProgress(o.onProgress);
  requireEmbeddings(embeddings, 'embeddings', n, channels, positions, 'n');
  requireStateBudget(channels, positions, budget);
  const { mean, cholesky } = await callKernel(
    (cancel, progress) => addon().gaussianFit(embeddings, n, channels, positions, regularization, cancel, progress),
    { signal, onProgress },
    gaussianFit,
  );
  return { channels, positions, mean, cholesky };
}

/**
 * Running statistics of per-position Gaussians (PaDiM's continual `statistics` mode): the image count, the mean
 * [positions, channels] and the centred scatter sum (x - mu)(x - mu)^T [positions, channels * (channels + 1) / 2,
 * packed lower triangle], in float64. New images are added by gaussianAccumulate (Chan et al.'s pairwise update),
 * and gaussianFactor turns them into the same Gaussians as gaussianFit on every image at once, without keeping the
 * earlier images.
 */
export interface RunningGaussian {
  count: number;
  channels: number;
  positions: number;
  mean: Float64Array;
  scatter: Float64Array;
}

/** Bytes of running statistics of these dimensions (float64 mean and packed scatter). */
export function runningGaussianBytes(channels: number, positions: number): number {
  return 8 * positions * (channels + (channels * (channels + 1)) / 2);
}

/** Empty running statistics (count 0). */
export function runningGaussian(channels: number, positions: number): RunningGaussian {
  requireInteger(channels, 'channels', 1, 1 << 16);
  requireInteger(positions, 'positions', 1, 0xffffffff);
  return { count: 0, channels, positions, mean: new Float64Array(channels * positions), scatter: new Float64Array(((channels * (channels + 1)) / 2) * positions) };
}

function requireRunning(stats: unknown): RunningGaussian {
  if (!is.object(stats)) throw invalidType('RunningGaussian', 'stats', stats);
  const s = stats as unknown as RunningGaussian;
  const channels = requireInteger(s.channels, 'stats.channels', 1, 1 << 16);
  const positions = requireInteger(s.positions, 'stats.positions', 1, 0xffffffff);
  requireInteger(s.count, 'stats.count', 0, 0xffffffff);
  if (!(s.mean instanceof Float64Array) || s.mean.length !== channels * positions) {
    throw invalidType(`Float64Array(${channels * positions})`, 'stats.mean', s.mean, 'ERR_IMIAD_DIMS');
  }
  const tri = (channels * (channels + 1)) / 2;
  if (!(s.scatter instanceof Float64Array) || s.scatter.length !== tri * positions) {
    throw invalidType(`Float64Array(${tri * positions})`, 'stats.scatter', s.scatter, 'ERR_IMIAD_DIMS');
  }
  return s;
}

/**
 * Adds n embeddings [n, C, P] to running statistics, in place (stats.count grows by n). With count 0 the result is
 * bit for bit what gaussianFit computes before factorising. An aborted or failed call leaves the statistics
 * partly updated: discard them.
 */
export async function gaussianAccumulate(
  stats: RunningGaussian,
  embeddings: Float32Array,
  opts: { n: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
): Promise<void> {
  const s = requireRunning(stats);
  const o = requireOptions(opts);
  const n = requireInteger(o.n, 'n', 1, 0xffffffff);
  if (s.count + n > 0xffffffff) throw invalidRange(`at most ${0xffffffff - s.count} more images`, 'n', n);
  const signal = optionalSignal(o.signal);
  const onProgress = optionalProgress(o.onProgress);
  requireEmbeddings(embeddings, 'embeddings', n, s.channels, s.positions, 'n');
  await callKernel(
    (cancel, progress) => addon().gaussianAccumulate(embeddings, n, s.channels, s.positions, s.count, s.mean, s.scatter, cancel, progress),
    { signal, onProgress },
    gaussianAccumulate,
  );
  s.count += n;
}

/** The Gaussians of running statistics: covariance = scatter / (count - 1) + regularization * I, as gaussianFit. */
export async function gaussianFactor(
  stats: RunningGaussian,
  opts: { regularization?: number; memoryBudgetBytes?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<GaussianState> {
  const s = requireRunning(stats);
  if (s.count < 1) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', 'Expected running statistics of at least one image but received none');
  const o = requireOptions(opts);
  const regularization = o.regularization === undefined ? 0.01 : o.regularization;
  if (!is.number(regularization) || regularization < 0) throw invalidType('number >= 0', 'regularization', regularization);
  const budget = o.memoryBudgetBytes === undefined ? defaultMemoryBudget() : o.memoryBudgetBytes;
  if (!is.number(budget) || budget <= 0) throw invalidType('positive number', 'memoryBudgetBytes', budget);
  requireStateBudget(s.channels, s.positions, budget);
  const signal = optionalSignal(o.signal);
  const onProgress = optionalProgress(o.onProgress);
  const { mean, cholesky } = await callKernel(
    (cancel, progress) => addon().gaussianFactor(s.count, s.mean, s.scatter, s.channels, s.positions, regularization, cancel, progress),
    { signal, onProgress },
    gaussianFactor,
  );
  return { channels: s.channels, positions: s.positions, mean, cholesky };
}

/** Mahalanobis distances (not squared) of m test embeddings [m, C, P] to a fitted state: [m, P]. */
export async function mahalanobisDistances(
  state: GaussianState,
  embeddings: Float32Array,
  opts: { m: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
): Promise<Float32Array> {
  if (!is.object(state)) throw invalidType('GaussianState', 'state', state);
  const channels = requireInteger(state.channels, 'state.channels', 1, 1 << 16);
  const positions = requireInteger(state.positions, 'state.positions', 1, 0xffffffff);
  if (!is.float32Array(state.mean) || state.mean.length !== channels * positions) {
    throw invalidType(`Float32Array(${channels * positions})`, 'state.mean', state.mean, 'ERR_IMIAD_DIMS');
  }
  const tri = (channels * (channels + 1)) / 2;
  if (!is.float32Array(state.cholesky) || state.cholesky.length !== tri * positions) {
    throw invalidType(`Float32Array(${tri * positions})`, 'state.cholesky', state.cholesky, 'ERR_IMIAD_DIMS');
  }
  const o = requireOptions(opts);
  const m = requireInteger(o.m, 'm', 1, 0xffffffff);
  const signal = optionalSignal(o.signal);
  const onProgress = optionalProgress(o.onProgress);
  requireEmbeddings(embeddings, 'embeddings', m, channels, positions, 'm');
  return callKernel(
    (cancel, progress) => addon().mahalanobisDistances(embeddings, m, channels, positions, state.mean, state.cholesky, cancel, progress),
    { signal, onProgress },
    mahalanobisDistances,
  );
}
