/**
 * The one list of detectors (DESIGN.md, "Trained detectors"): adding a detector is one file plus one entry here.
 * `createDetector`, `imiad run --method` (its checks and `--help`), the grid, the demo and the reports read the
 * list from this table; nothing else names the methods.
 */
import { Bgad } from './bgad';
import { Cfa } from './cfa';
import { CFlow } from './cflow';
import { CsFlow } from './csflow';
import { CutPasteDetector } from './cutpaste';
import { DevNet } from './devnet';
import { Dne } from './dne';
import { Dra } from './dra';
import { Draem } from './draem';
import { FastFlow } from './fastflow';
import { Favae } from './favae';
import { Gcad } from './gcad';
import { Prn } from './prn';
import { SemiRest } from './semirest';
import { Igd } from './igd';
import { Padim } from './padim';
import { PatchCore } from './patchcore';
import { Regad } from './regad';
import { Spade } from './spade';
import { Rd4ad, Stpm } from './teacher-student';
import type { Detector } from './types';

/** How the image pipeline normalises a detector's input: ImageNet statistics, or plain [0, 1] pixels. */
export type { InputNormalisation } from '../image/pipeline';
import type { InputNormalisation } from '../image/pipeline';

/**
 * How a detector learns in the continual setting (paper III-A): `accumulate` (its memory bank or Gaussians grow
 * with each task), `statistics` (running sums of its per-position Gaussian, equal to a refit on the union),
 * `sequential` (one model trained task after task, each fit continuing from the last). The executor calls
 * fit(task, { continueTraining: true }) once per task in every mode (FitOptions in ./types.ts); joint training on
 * the union (`--joint`) is a separate, explicit setting option.
 */
export type ContinualMode = 'accumulate' | 'statistics' | 'sequential';

/** A command-line option that sets one detector parameter (`imiad run`), e.g. `--coreset` for PatchCore. */
export interface MethodOption {
  /** The flag, as commander names it (`coreset` for `--coreset <x>`). */
  flag: string;
  /** The detector parameter it sets. */
  param: string;
}

export interface MethodEntry {
  /** The name on the command line, in configs and in the results store. */
  name: string;
  /** The name the paper's tables print. */
  label: string;
  /** A new, unfitted detector; the constructor checks the parameters and throws a TypeError/RangeError. */
  create(params: Record<string, unknown>): Detector;
  /** Learns weights by gradient descent: needs the libtorch training addon; takes --epochs and --lr. */
  trained: boolean;
  /** Uses the labelled anomalies of the supervised setting (others train on the normal images only). */
  usesLabelledAnomalies: boolean;
  /** Whether it produces anomaly maps (pixel metrics, heatmaps); DNE scores images only. */
  hasMaps: boolean;
  /** The default resize side and centre crop (Table V). */
  imageSize: number;
  cropSize: number;
  normalisation: InputNormalisation;
  continual: ContinualMode;
  /** Parameters the continual setting adds when it creates the detector (PaDiM: runningSums: true). */
  continualParams?: Readonly<Record<string, boolean | number | string>>;
  /**
   * Meta-trains on the dataset's other categories before adapting to the target one (RegAD): the few-shot setting
   * and the runner hand it those categories (FitOptions.metaTrain); it runs in the few-shot setting only and refuses
   * a dataset of one category.
   */
  metaTraining?: boolean;
  /** The method-specific `imiad run` options it takes, beyond the common backbone and image options. */
  options: readonly MethodOption[];
  /** A one-line description for `--help` and the docs. */
  summary: string;
}

const TRAINED_OPTIONS: readonly MethodOption[] = [
  { flag: 'epochs', param: 'epochs' },
  { flag: 'lr', param: 'lr' },
];

/** The detectors, in the paper's table order. */
export const METHODS: readonly MethodEntry[] = [
  {
    name: 'patchcore',
    label: 'PatchCore',
    create: (p) => new PatchCore(p),
    trained: false,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 224,
    normalisation: 'imagenet',
    continual: 'accumulate',
    options: [
      { flag: 'coreset', param: 'coreset' },
      { flag: 'reweight', param: 'reweight' },
    ],
    summary: 'memory bank of locally aware patch features, greedy coreset, nearest-neighbour score',
  },
  {
    name: 'padim',
    label: 'PaDiM',
    create: (p) => new Padim(p),
    trained: false,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 224,
    normalisation: 'imagenet',
    continual: 'statistics',
    continualParams: { runningSums: true },
    options: [],
    summary: 'a Gaussian per patch position, Mahalanobis distance',
  },
  {
    name: 'spade',
    label: 'SPADE',
    create: (p) => new Spade(p),
    trained: false,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 224,
    normalisation: 'imagenet',
    continual: 'accumulate',
    options: [],
    summary: 'k nearest training images, then pixel-level nearest neighbours among them',
  },
  {
    name: 'dne',
    label: 'DNE',
    create: (p) => new Dne(p),
    trained: false,
    usesLabelledAnomalies: false,
    hasMaps: false,
    imageSize: 256,
    cropSize: 224,
    normalisation: 'imagenet',
    continual: 'accumulate',
    options: [],
    summary: 'a Gaussian of pooled image features per task, image scores only',
  },
  {
    name: 'stpm',
    label: 'STPM',
    create: (p) => new Stpm(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'student network regressing a frozen teacher’s features (libtorch)',
  },
  {
    name: 'rd4ad',
    label: 'RD4AD',
    create: (p) => new Rd4ad(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'reverse distillation: one-class bottleneck and decoder (libtorch)',
  },
  {
    name: 'cfa',
    label: 'CFA',
    create: (p) => new Cfa(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'coupled-hypersphere feature adaptation: CoordConv descriptor pulled to a memory bank of patch means (libtorch)',
  },
  {
    name: 'cflow',
    label: 'CFlow',
    create: (p) => new CFlow(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'conditional normalizing flow per level over position-encoded feature vectors (libtorch)',
  },
  {
    name: 'csflow',
    label: 'CS-Flow',
    create: (p) => new CsFlow(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 768,
    cropSize: 768,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'fully convolutional cross-scale normalizing flow over one level at three input scales (libtorch)',
  },
  {
    name: 'fastflow',
    label: 'FastFlow',
    create: (p) => new FastFlow(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: '2-D normalizing flow with conv subnets on each feature level (libtorch)',
  },
  {
    name: 'cutpaste',
    label: 'CutPaste',
    create: (p) => new CutPasteDetector(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: false,
    imageSize: 224,
    cropSize: 224,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'ResNet-18 fine-tuned to tell cut-paste and scar views from normal images; Gaussian of its embeddings, image scores only (libtorch)',
  },
  {
    name: 'devnet',
    label: 'DevNet',
    create: (p) => new DevNet(p),
    trained: true,
    usesLabelledAnomalies: true,
    hasMaps: false,
    imageSize: 448,
    cropSize: 448,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'deviation network: fine-tuned ResNet-18, top-k MIL score, deviation loss on labelled anomalies (supervised setting; libtorch)',
  },
  {
    name: 'dra',
    label: 'DRA',
    create: (p) => new Dra(p),
    trained: true,
    usesLabelledAnomalies: true,
    hasMaps: false,
    imageSize: 448,
    cropSize: 448,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'dual residual heads (holistic, seen, CutMix pseudo, composite) on a fine-tuned ResNet-18 (supervised setting; libtorch)',
  },
  {
    name: 'bgad',
    label: 'BGAD',
    create: (p) => new Bgad(p),
    trained: true,
    usesLabelledAnomalies: true,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: [...TRAINED_OPTIONS, { flag: 'foreground', param: 'foregroundRoot' }],
    summary: "CFlow's conditional flows trained on normals, labelled anomalies and their copy-pastes with masks: focal ML + explicit boundary loss (supervised setting; libtorch)",
  },
  {
    name: 'prn',
    label: 'PRN',
    create: (p) => new Prn(p),
    trained: true,
    usesLabelledAnomalies: true,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: [...TRAINED_OPTIONS, { flag: 'texture-root', param: 'textureRoot' }, { flag: 'foreground', param: 'foregroundRoot' }],
    summary: 'prototypical residual network: k-means prototype residuals of frozen ResNet-18 features, multi-size attention, decoder trained on labelled + Perlin anomalies with masks (supervised setting; libtorch)',
  },
  {
    name: 'semirest',
    label: 'SemiREST',
    create: (p) => new SemiRest(p),
    trained: true,
    usesLabelledAnomalies: true,
    hasMaps: true,
    // The paper gives no image size: 256 px without crop, a 32 x 32 grid of 8 x 8-pixel blocks (docs/detectors-semirest.md).
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: [...TRAINED_OPTIONS, { flag: 'texture-root', param: 'textureRoot' }, { flag: 'foreground', param: 'foregroundRoot' }],
    summary: 'position-constrained patch-matching residuals, sliding-window transformer classifying 8x8 blocks, trained on labelled + synthetic anomalies (supervised setting; libtorch)',
  },
  {
    name: 'regad',
    label: 'RegAD',
    create: (p) => new Regad(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 224,
    cropSize: 224,
    normalisation: 'unit',
    continual: 'sequential',
    metaTraining: true,
    options: TRAINED_OPTIONS,
    summary: 'few-shot: STN-registered ResNet-18 meta-trained on the other categories, Gaussian of the K augmented shots (libtorch)',
  },
  {
    name: 'draem',
    label: 'DRAEM',
    create: (p) => new Draem(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'unit',
    continual: 'sequential',
    options: [...TRAINED_OPTIONS, { flag: 'texture-root', param: 'textureRoot' }],
    summary: 'reconstructive auto-encoder + discriminative U-Net trained on synthetic Perlin/texture anomalies (libtorch)',
  },
  {
    name: 'favae',
    label: 'FAVAE',
    create: (p) => new Favae(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    // Fixed by the architecture (Table V's 256 px does not apply): docs/detectors-favae.md.
    imageSize: 128,
    cropSize: 128,
    normalisation: 'unit',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'VAE on [0, 1] images whose decoder also regresses a frozen teacher’s features; pixel + feature errors (libtorch)',
  },
  {
    name: 'igd',
    label: 'IGD',
    create: (p) => new Igd(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'interpolated Gaussian descriptor: image generator from pooled features, adversarial interpolation, MS-SSIM score (libtorch)',
  },
  {
    name: 'gcad',
    label: 'GCAD',
    create: (p) => new Gcad(p),
    trained: true,
    usesLabelledAnomalies: false,
    hasMaps: true,
    imageSize: 256,
    cropSize: 256,
    normalisation: 'imagenet',
    continual: 'sequential',
    options: TRAINED_OPTIONS,
    summary: 'global context AD: local student and bottleneck auto-encoder regress teacher features, maps normalised on validation normals (libtorch)',
  },
];

/**
 * Why a method cannot run in a setting, or null when it can: the detectors that learn from labelled anomalies
 * (usesLabelledAnomalies: DevNet, DRA) need the supervised setting, the only one that hands them any.
 */
export function settingRefusal(entry: MethodEntry, setting: string): string | null {
  if (entry.usesLabelledAnomalies && setting !== 'supervised') {
    return `${entry.label} learns from labelled anomalies, which only the supervised setting provides: use --setting supervised (not ${setting})`;
  }
  return null;
}

/** The entry of a method name, or undefined. */
export function findMethod(name: unknown): MethodEntry | undefined {
  return METHODS.find((m) => m.name === name);
}

/** The registered names, e.g. for `--help` and error messages. */
export function methodNames(): string[] {
  return METHODS.map((m) => m.name);
}
