/** The five IM-IAD settings (paper section III-A; DESIGN.md "Settings") and the split manifests they produce. */
import type { Label, Sample } from '../datasets/types';

export type SettingName = 'vanilla' | 'supervised' | 'fewshot' | 'noisy' | 'continual';
export const SETTING_NAMES: readonly SettingName[] = ['vanilla', 'supervised', 'fewshot', 'noisy', 'continual'];

export type AugmentKind = 'rotation' | 'flip' | 'scale' | 'translate' | 'colorjitter' | 'perspective';
export const AUGMENT_KINDS: readonly AugmentKind[] = ['rotation', 'flip', 'scale', 'translate', 'colorjitter', 'perspective'];

/** The paper's values; other values are accepted (README, "Settings"). */
export const PAPER_SHOTS: readonly number[] = [1, 2, 4, 8];
export const PAPER_NOISE_RATIOS: readonly number[] = [0.05, 0.1, 0.15, 0.2];
/** Noisy setting: at most this fraction of a category's test anomalies moves into training (SoftPatch, IM-IAD). */
export const NOISE_CAP_FRACTION = 0.75;

/** A setting and its options, as they enter the experiment key: only the options of the setting are present. */
export type SettingSpec =
  | { name: 'vanilla' }
  | { name: 'supervised'; anomalies: number }
  | { name: 'fewshot'; shots: number; augment: AugmentKind | null; augmentCount: number }
  | { name: 'noisy'; noise: number }
  /** joint: retrained on the union of the tasks so far after each task (an upper bound), instead of learning them in turn. */
  | { name: 'continual'; order: string[] | null; joint: boolean };

/** One file of a split as written to the manifest. */
export interface ManifestEntry {
  path: string;
  /** The label the detector sees (noisy: anomalies in training are labelled 'normal'). */
  label: Label;
  /** Noisy setting only: the true label of an injected anomaly. */
  trueLabel?: Label;
  /** Few-shot augmentation: this entry is an augmented copy of `path`, made by lib/image/augment.ts. */
  augment?: { kind: AugmentKind; seed: number };
}

/** What a setting did to a category beyond the file lists (counts, caps), written next to them. */
export interface SplitInfo {
  setting: SettingName;
  seed: number;
  /** supervised: anomalies moved into training. */
  anomalies?: number;
  /** fewshot. */
  shots?: number;
  augment?: AugmentKind | null;
  augmentCount?: number;
  /** noisy: requested and achieved ratio n/(m+n), n, m, and whether the 75 % cap was hit. */
  noise?: number;
  achievedNoise?: number;
  noiseCount?: number;
  normalCount?: number;
  capped?: boolean;
  /**
   * fewshot, for a meta-training detector (RegAD): the dataset's other categories whose normal training images it
   * meta-trains on (all of them), and how many images that is.
   */
  metaCategories?: string[];
  metaImages?: number;
  /** continual: the task index (0-based) and the task order. */
  task?: number;
  order?: string[];
  notes?: string[];
}

export interface CategoryManifest {
  train: ManifestEntry[];
  test: ManifestEntry[];
  info: SplitInfo;
}

/** `{ "<category>": { train, test, info } }`; continual: one such object per task, in order. */
export type SettingManifest = Record<string, CategoryManifest>;

/** A manifest entry with the full Sample it came from (mask paths, defect type), for the runner. */
export interface SplitSample {
  entry: ManifestEntry;
  sample: Sample;
}

/** One category's split, resolved to Samples. */
export interface CategorySplit {
  category: string;
  train: SplitSample[];
  test: SplitSample[];
  info: SplitInfo;
  /** fewshot for a meta-training detector: the other categories' normal training images (info.metaCategories). */
  meta?: { category: string; samples: SplitSample[] }[];
}
