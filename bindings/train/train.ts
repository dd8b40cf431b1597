/**
 * The optional training addon (imiad_train.node, libtorch; native/train/, bindings/train/addon.cc). It is built
 * apart from the CPU addon by `npm run build:train` and never shipped as a prebuild. IMIAD_TRAIN_ADDON=<file>
 * points the loader at another build (and, pointed at a missing file, simulates a machine without libtorch).
 */
import * as fs from 'fs';
import * as path from 'path';

import { callKernel } from '../call';
import { imiadError, type ImiadError } from '../errors';
import { packageRoot } from '../load';

/** Teacher features or images, NCHW. */
export interface Nchw {
  data: Float32Array;
  shape: [number, number, number, number];
}

/** One imported weight tensor (TrainModelConfig.weights), row-major. */
export interface WeightArray {
  data: Float32Array;
  shape: number[];
}

export interface TrainState {
  names: string[];
  shapes: number[][];
  arrays: Float32Array[];
}

interface NativeModel {
  step(images: Float32Array | null, imageShape: number[] | null, teacher: Float32Array[], shapes: number[][], cancel: Int32Array): Promise<number>;
  maps(images: Float32Array | null, imageShape: number[] | null, teacher: Float32Array[], shapes: number[][], cancel: Int32Array, outSize: number): Promise<Float32Array>;
  state(): TrainState;
  loadState(names: string[], shapes: number[][], arrays: Float32Array[]): void;
  optimizerState(): TrainState;
  loadOptimizerState(names: string[], shapes: number[][], arrays: Float32Array[]): void;
  parameterCount(): number;
  calibrate(features: Float32Array[], shapes: number[][], reset: boolean, cancel: Int32Array): Promise<void>;
  scores(features: Float32Array[], shapes: number[][], cancel: Int32Array, images?: Float32Array | null, imageShape?: number[] | null): Promise<Float32Array | null>;
  configure(key: string, values: number[]): void;
  forward(images: Float32Array, imageShape: number[], cancel: Int32Array): Promise<TrainState>;
  setLearningRate(lr: number): void;
  calibrateStage(stage: string, images: Float32Array | null, imageShape: number[] | null, teacher: Float32Array[], shapes: number[][], reset: boolean, cancel: Int32Array): Promise<void>;
}

/** Counters of the training thread and of the tensor cache (native/train/runtime.h, docs/training-speed.md). */
export interface TrainRuntimeStats {
  /** Calls run on the training thread so far. */
  tasks: number;
  /** The training thread's kernel thread id (0 before the first call). */
  threadId: number;
  /** libtorch's intra-op thread count inside the last call. */
  lastThreads: number;
  /** OpenMP threads of the JS thread's own tensor work (building models, state in and out): always 1. */
  callerThreads: number;
  /** Tensor blocks mapped (cache misses), served from the cache, and unmapped. */
  mappedBlocks: number;
  reusedBlocks: number;
  unmappedBlocks: number;
  /** Bytes of cached-size blocks in use by tensors, kept for reuse, and the largest sum of the two so far. */
  liveBytes: number;
  cachedBytes: number;
  peakBytes: number;
  /** How long the training thread waits idle before it unmaps the cache. */
  idleReleaseMs: number;
  /** Whether the caching allocator is libtorch's CPU allocator. */
  allocatorInstalled: boolean;
}

interface TrainAddon {
  TrainModel: new (
    kind: string,
    channels: number[],
    seed: number,
    threads: number,
    lr: number,
    momentum: number,
    weightDecay: number,
    beta1: number,
    beta2: number,
    options?: { device: 'cpu' | 'cuda'; extra: Record<string, number[]>; weights?: Record<string, WeightArray> },
  ) => NativeModel;
  torchVersion: string;
  /** Whether the linked libtorch has CUDA and sees a GPU. */
  cudaAvailable: boolean;
  /** Whether the linked libtorch was built with CUDA at all. */
  cudaBuilt: boolean;
  selfCheck(): number;
  runtimeStats(): TrainRuntimeStats;
  releaseCachedMemory(): number;
  setIdleReleaseMs(ms: number): void;
}

/** Where the training addon is looked for. */
export function trainAddonPath(): string {
  const override = process.env.IMIAD_TRAIN_ADDON;
  if (override !== undefined && override !== '') return path.resolve(override);
  return path.join(packageRoot(), 'build-train', 'Release', 'imiad_train.node');
}

let cached: TrainAddon | null = null;
let cachedPath = '';

function unavailable(file: string, reason: string): ImiadError {
  return imiadError(
    'Error',
    'ERR_IMIAD_TRAINING_UNAVAILABLE',
    `Trained detectors need imiad's libtorch training addon, which is not available (${file}: ${reason}). ` +
      'Enable it with: apt-get install libtorch-dev && npm run build:train (or LIBTORCH=/path/to/libtorch npm run build:train)',
  );
}

/** The loaded training addon, or an ERR_IMIAD_TRAINING_UNAVAILABLE error saying how to build it. */
export function trainAddon(): TrainAddon {
  const file = trainAddonPath();
  if (cached && cachedPath === file) return cached;
  if (!fs.existsSync(file)) throw unavailable(file, 'not built');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file) as TrainAddon;
    cachedPath = file;
  } catch (err) {
    throw unavailable(file, (err as Error).message.split('\n')[0]);
  }
  return cached;
}

/** Whether the training addon loads (no error). */
export function trainingAvailable(): boolean {
  try {
    trainAddon();
    return true;
  } catch {
    return false;
  }
}

export interface TrainModelConfig {
  kind: 'stpm' | 'rd4ad' | 'fastflow' | 'cflow' | 'bgad' | 'cfa' | 'csflow' | 'resnet18' | 'cutpaste' | 'devnet' | 'dra' | 'regad' | 'draem' | 'favae' | 'igd' | 'gcad' | 'semirest' | 'prn';
  /** Channels of the teacher's layers 1..3 (the flow heads: of the tapped levels). */
  channels: number[];
  seed: number;
  threads: number;
  lr: number;
  momentum?: number;
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  /** Where the network trains (bindings/train/device.ts resolves 'auto'); default 'cpu'. */
  device?: 'cpu' | 'cuda';
  /** Method-specific numbers (native/train/flows.cc). */
  extra?: Record<string, number[]>;
  /**
   * Imported weights of the trainable ResNet-18 (native/train/resnet18.h), by torchvision name, as
   * lib/backbone/resnet-weights.ts reads them from an ONNX file; the addon copies them at construction.
   */
  weights?: ReadonlyMap<string, WeightArray> | Readonly<Record<string, WeightArray>>;
}

/** One trainable network in libtorch. Calls run on worker threads, one at a time per model. */
export class TrainModel {
  private readonly native: NativeModel;

  constructor(readonly config: TrainModelConfig) {
    const addon = trainAddon();
    const c = config;
    this.native = new addon.TrainModel(c.kind, c.channels, c.seed, c.threads, c.lr, c.momentum ?? 0.9, c.weightDecay ?? 1e-4, c.beta1 ?? 0.5, c.beta2 ?? 0.999, {
      device: c.device ?? 'cpu',
      extra: c.extra ?? {},
      weights: c.weights instanceof Map ? Object.fromEntries(c.weights) : ((c.weights as Record<string, WeightArray> | undefined) ?? {}),
    });
  }

  get parameterCount(): number {
    return this.native.parameterCount();
  }

  /** One optimiser step; resolves to the batch's loss. */
  step(images: Nchw | null, teacher: Nchw[], opts: { signal?: AbortSignal } = {}): Promise<number> {
    return callKernel(
      (cancel) => this.native.step(images?.data ?? null, images?.shape ?? null, teacher.map((t) => t.data), teacher.map((t) => t.shape), cancel),
      opts,
      this.step,
    );
  }

  /** Unsmoothed anomaly maps [n, outSize, outSize]. */
  maps(images: Nchw | null, teacher: Nchw[], outSize: number, opts: { signal?: AbortSignal } = {}): Promise<Float32Array> {
    return callKernel(
      (cancel) => this.native.maps(images?.data ?? null, images?.shape ?? null, teacher.map((t) => t.data), teacher.map((t) => t.shape), cancel, outSize),
      opts,
      this.maps,
    );
  }

  /** Feeds training features so that the model fixes its normalising constants (CFlow); `reset` starts over. */
  calibrate(features: Nchw[], reset: boolean, opts: { signal?: AbortSignal } = {}): Promise<void> {
    return callKernel(
      (cancel) => this.native.calibrate(features.map((t) => t.data), features.map((t) => t.shape), reset, cancel),
      opts,
      this.calibrate,
    );
  }

  /**
   * Image scores of models that do not score by their map's maximum (CS-Flow: mean z^2; IGD, which needs `images`:
   * reconstruction error and latent distance); null for the others.
   */
  scores(features: Nchw[], opts: { signal?: AbortSignal } = {}, images: Nchw | null = null): Promise<Float32Array | null> {
    return callKernel(
      (cancel) => this.native.scores(features.map((t) => t.data), features.map((t) => t.shape), cancel, images?.data ?? null, images?.shape ?? null),
      opts,
      this.scores,
    );
  }

  /** A method-specific setting between calls (IGD: `fit` = [steps, fit index] starts a fit); RangeError when unknown. */
  configure(key: string, values: number[]): void {
    this.native.configure(key, values);
  }

  /**
   * The network's named eval-mode outputs for an image batch (the ResNet-18 models: layer1..layerN as [n, c, h, w];
   * CutPaste also its embedding), in `names`/`shapes`/`arrays` form.
   */
  forward(images: Nchw, opts: { signal?: AbortSignal } = {}): Promise<TrainState> {
    return callKernel((cancel) => this.native.forward(images.data, images.shape, cancel), opts, this.forward);
  }

  /** The learning rate of the following steps, for schedules the caller computes (CutPaste's cosine restarts, RegAD's cosine). */
  setLearningRate(lr: number): void {
    this.native.setLearningRate(lr);
  }

  /**
   * Feeds images and their teacher features to a model that fixes constants in named stages (GCAD: 'teacher' = the
   * teacher's per-channel statistics over the training images, images may be null; 'maps' = each branch's map
   * statistics on normal validation images); `reset` starts the stage over.
   */
  calibrateStage(stage: string, images: Nchw | null, teacher: Nchw[], reset: boolean, opts: { signal?: AbortSignal } = {}): Promise<void> {
    return callKernel(
      (cancel) => this.native.calibrateStage(stage, images?.data ?? null, images?.shape ?? null, teacher.map((t) => t.data), teacher.map((t) => t.shape), reset, cancel),
      opts,
      this.calibrateStage,
    );
  }

  state(): TrainState {
    return this.native.state();
  }

  loadState(state: TrainState): void {
    this.native.loadState(state.names, state.shapes, state.arrays);
  }

  /**
   * The optimiser's state (SGD momentum buffers; Adam's moments and step counts), named after the parameters
   * (native/train/train.h); empty before the first step. With the weights it lets training continue exactly.
   */
  optimizerState(): TrainState {
    return this.native.optimizerState();
  }

  /** Replaces the optimiser's state with one optimizerState() returned (ERR_IMIAD_CHECKPOINT when it does not fit). */
  loadOptimizerState(state: TrainState): void {
    this.native.loadOptimizerState(state.names, state.shapes, state.arrays);
  }
}
