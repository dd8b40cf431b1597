/**
 * The training addon's fused optimisers (native/train/blocks.{h,cc}: FusedAdam, FusedSGD, docs/training-speed.md):
 * one pass per parameter instead of ATen's eight (Adam) or four (SGD), with ATen's operations and roundings, so that
 * training gives bit for bit the weights, optimiser state and losses of torch::optim::Adam / SGD (which
 * IMIAD_TRAIN_OPTIMIZER=aten selects, read at every step). Covers SGD with momentum and weight decay (STPM), Adam with
 * betas (0.5, 0.999) (RD4AD) and Adam with L2 weight decay (GCAD). Also the max pooling kernel (MaxPool2d, against
 * ATen's with IMIAD_TRAIN_MAXPOOL=aten), and Adam over the channels-last ResNet-18 (CutPaste). Skips, with the reason printed, without the addon.
 */
import { resnetLayout, resnetLayoutExtra } from '../bindings/train/layout';
import { type Nchw, trainAddonPath, trainingAvailable, TrainModel, type TrainModelConfig, type TrainState } from '../bindings/train/train';

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/fused-optimizers.test.ts: skipping: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;

function fill(len: number, seed: number): Float32Array {
  let s = seed;
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = s / 4294967296 - 0.25;
  }
  return a;
}

/** Images [n, 3, size, size] and teacher levels of the given channels at 1/4, 1/8, ... of size. */
function batch(n: number, size: number, channels: number[], seed: number): { images: Nchw; teacher: Nchw[] } {
  const teacher = channels.map((c, i): Nchw => {
    const h = size / 4 / 2 ** i;
    return { data: fill(n * c * h * h, seed + 17 * (i + 1)), shape: [n, c, h, h] };
  });
  return { images: { data: fill(n * 3 * size * size, seed), shape: [n, 3, size, size] }, teacher };
}

interface Run {
  losses: number[];
  weights: TrainState;
  optimizer: TrainState;
}

async function train(config: TrainModelConfig, batches: { images: Nchw; teacher: Nchw[] }[], prepare?: (m: TrainModel) => Promise<void>): Promise<Run> {
  const m = new TrainModel(config);
  if (prepare) await prepare(m);
  const losses: number[] = [];
  for (const b of batches) losses.push(await m.step(b.images, b.teacher));
  return { losses, weights: m.state(), optimizer: m.optimizerState() };
}

/** The same training with ATen's kernels (`variable`=aten: the optimiser, or the max pooling) and with imiad's (the default). */
async function both(
  config: TrainModelConfig,
  batches: { images: Nchw; teacher: Nchw[] }[],
  prepare?: (m: TrainModel) => Promise<void>,
  variable = 'IMIAD_TRAIN_OPTIMIZER',
): Promise<[Run, Run]> {
  const saved = process.env[variable];
  try {
    process.env[variable] = 'aten';
    const aten = await train(config, batches, prepare);
    delete process.env[variable];
    const fused = await train(config, batches, prepare);
    return [aten, fused];
  } finally {
    if (saved === undefined) delete process.env[variable];
    else process.env[variable] = saved;
  }
}

const bytes = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Bit for bit the same losses, weights and optimiser state (compared as bytes: ResNet-18's state is 33M floats). */
function expectIdentical(aten: Run, fused: Run): void {
  expect(fused.losses).toEqual(aten.losses);
  expect(fused.weights.names).toEqual(aten.weights.names);
  fused.weights.arrays.forEach((a, i) => expect(bytes(a).equals(bytes(aten.weights.arrays[i]))).toBe(true));
  expect(fused.optimizer.names).toEqual(aten.optimizer.names);
  expect(fused.optimizer.names.length).toBeGreaterThan(0);
  const differing = fused.optimizer.names.filter((_, i) => !bytes(fused.optimizer.arrays[i]).equals(bytes(aten.optimizer.arrays[i])));
  expect(differing).toEqual([]);
}

describe('fused optimisers', () => {
  withAddon('SGD with momentum and weight decay (STPM): bit for bit ATen\'s, and training moves the weights', async () => {
    const channels = [4, 8, 16];
    const batches = [1, 2, 3, 4].map((s) => batch(2, 64, channels, s));
    const [aten, fused] = await both({ kind: 'stpm', channels, seed: 0, threads: 1, lr: 0.1, momentum: 0.9, weightDecay: 1e-4 }, batches);
    expectIdentical(aten, fused);
    // Not a vacuous comparison: the losses change from step to step, and a momentum buffer per parameter is kept.
    expect(new Set(fused.losses).size).toBe(4);
    expect(fused.optimizer.names.some((n) => n.startsWith('momentum:'))).toBe(true);
  });

  withAddon('Adam with betas (0.5, 0.999) (RD4AD): bit for bit ATen\'s', async () => {
    const channels = [4, 8, 16];
    const batches = [5, 6, 7].map((s) => batch(2, 64, channels, s));
    const [aten, fused] = await both({ kind: 'rd4ad', channels, seed: 0, threads: 1, lr: 5e-3, beta1: 0.5, beta2: 0.999 }, batches);
    expectIdentical(aten, fused);
    expect(new Set(fused.losses).size).toBe(3);
    expect(fused.optimizer.names.some((n) => n.startsWith('exp_avg_sq:'))).toBe(true);
  });

  withAddon('the max pooling of ResNet\'s stem (MaxPool2d, 2 threads): bit for bit ATen\'s max_pool2d', async () => {
    // A wrong maximum or a gradient sent to another element than ATen's argmax changes the weights after 3 steps.
    // (Windows of tied zeros after ReLU are common; their gradient is zeroed by ReLU's backward whichever element
    // takes it.) 2 threads split the planes between them.
    const channels = [4, 8, 16];
    const batches = [21, 22, 23].map((s) => batch(3, 64, channels, s));
    const [aten, ours] = await both({ kind: 'stpm', channels, seed: 0, threads: 2, lr: 0.1, momentum: 0.9, weightDecay: 1e-4 }, batches, undefined, 'IMIAD_TRAIN_MAXPOOL');
    expectIdentical(aten, ours);
    expect(new Set(ours.losses).size).toBe(3);
  });

  withAddon('Adam over the channels-last ResNet-18 (CutPaste, 2 threads): bit for bit ATen\'s; NCHW computes the same function', async () => {
    // A channels-last ResNet-18 (native/train/resnet18.h, extra channelsLast) keeps its convolution weights with
    // non-contiguous strides: the fused step must pair the same elements of weight, gradient and state.
    const config = (channelsLast: number): TrainModelConfig => ({
      kind: 'cutpaste',
      channels: [],
      seed: 0,
      threads: 2,
      lr: 1e-3,
      weightDecay: 1e-5,
      extra: { headDims: [16], classes: [3], channelsLast: [channelsLast] },
    });
    const batches = [31, 32, 33].map((s) => ({ images: { data: fill(6 * 3 * 32 * 32, s), shape: [6, 3, 32, 32] } as Nchw, teacher: [] as Nchw[] }));
    const [aten, fused] = await both(config(1), batches);
    expectIdentical(aten, fused);
    expect(new Set(fused.losses).size).toBe(3);
    expect(fused.optimizer.names.some((n) => n.startsWith('exp_avg_sq:backbone.layer4'))).toBe(true);
    const nchw = await train(config(0), batches);
    // The same function: the first loss (before any update) agrees to float rounding. Adam's first steps, which
    // normalise every gradient element, then carry the two roundings apart (3.5e-4 relative at the second step and
    // 2e-2 at the third on this random data), so later losses are not compared.
    expect(Math.abs(nchw.losses[0] - fused.losses[0])).toBeLessThanOrEqual(1e-5 * Math.abs(nchw.losses[0]));
    expect(nchw.losses[0]).not.toBe(nchw.losses[1]);
    expect(nchw.weights.names).toEqual(fused.weights.names);
    expect(() => new TrainModel(config(2))).toThrow(/channelsLast/);
  });

  withAddon('Adam with L2 weight decay (GCAD): bit for bit ATen\'s', async () => {
    const teacher: Nchw[] = [{ data: fill(2 * 8 * 4 * 4, 9), shape: [2, 8, 4, 4] }];
    const batches = [11, 12, 13].map((s) => ({ images: { data: fill(2 * 3 * 32 * 32, s), shape: [2, 3, 32, 32] } as Nchw, teacher }));
    const config: TrainModelConfig = { kind: 'gcad', channels: [8], seed: 0, threads: 1, lr: 1e-3, weightDecay: 1e-2, extra: { image: [32, 32], grid: [4, 4], bottleneck: [8] } };
    const [aten, fused] = await both(config, batches, (m) => m.calibrateStage('teacher', null, teacher, true));
    expectIdentical(aten, fused);
    expect(new Set(fused.losses).size).toBe(3);
  });
});

describe('the ResNet-18 layout table (bindings/train/layout.ts)', () => {
  const saved = process.env.IMIAD_TRAIN_LAYOUT;
  afterEach(() => {
    if (saved === undefined) delete process.env.IMIAD_TRAIN_LAYOUT;
    else process.env.IMIAD_TRAIN_LAYOUT = saved;
  });

  test('CutPaste and RegAD channels-last, DevNet and DRA NCHW; IMIAD_TRAIN_LAYOUT overrides every one, and a bad value is named', () => {
    delete process.env.IMIAD_TRAIN_LAYOUT;
    expect([resnetLayout('cutpaste'), resnetLayout('regad'), resnetLayout('devnet'), resnetLayout('dra')]).toEqual(['channels-last', 'channels-last', 'nchw', 'nchw']);
    expect(resnetLayoutExtra('cutpaste')).toEqual({ channelsLast: [1] });
    expect(resnetLayoutExtra('dra')).toEqual({ channelsLast: [0] });
    process.env.IMIAD_TRAIN_LAYOUT = 'nchw';
    expect(resnetLayout('cutpaste')).toBe('nchw');
    process.env.IMIAD_TRAIN_LAYOUT = 'channels-last';
    expect(resnetLayoutExtra('devnet')).toEqual({ channelsLast: [1] });
    process.env.IMIAD_TRAIN_LAYOUT = 'nhwc';
    expect(() => resnetLayout('regad')).toThrow(/IMIAD_TRAIN_LAYOUT: expected nchw or channels-last but received nhwc/);
  });
});
