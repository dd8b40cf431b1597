/** The pieces every setting shares: the vanilla train/test lists, round-robin picks, and manifest conversion. */
import { imiadError, invalidRange, invalidType } from '../../bindings/errors';
import type { Category, Sample } from '../datasets/types';
import { shuffled } from './random';
import type { CategorySplit, ManifestEntry, SettingManifest, SplitSample } from './types';

export function asIs(sample: Sample): SplitSample {
  return { entry: { path: sample.path, label: sample.label }, sample };
}

/** Normal training images: the split 'train' (a 'validation' split, as in MVTec LOCO AD, is not used for fitting). */
export function trainNormals(category: Category): Sample[] {
  return category.samples.filter((s) => s.split === 'train' && s.label === 'normal');
}

export function testSamples(category: Category): Sample[] {
  return category.samples.filter((s) => s.split === 'test');
}

export function requireCategory(category: unknown, index: number): Category {
  const c = category as Partial<Category> | null;
  if (!c || typeof c !== 'object' || typeof c.name !== 'string' || !Array.isArray(c.samples)) {
    throw invalidType('a Category (name, root, samples)', `categories[${index}]`, category);
  }
  return category as Category;
}

export function requireSeed(seed: unknown): number {
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw invalidRange('an integer between 0 and 4294967295', 'seed', seed);
  }
  return seed;
}

export function requireNonEmptyTrain(category: Category, train: Sample[]): void {
  if (train.length === 0) {
    throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Category ${category.name} (${category.root}) has no normal training images`);
  }
}

/**
 * Picks `count` samples spread over defect types: each type's samples are shuffled by `random`, the types are taken
 * in code-point order, and one sample is taken from each type in turn until `count` are taken. So with 10 picks
 * over 5 defect types each type gives 2, and a type with fewer samples gives what it has.
 */
export function pickRoundRobin(candidates: Sample[], count: number, random: () => number): Sample[] {
  const byType = new Map<string, Sample[]>();
  for (const s of candidates) {
    const list = byType.get(s.defectType) ?? [];
    list.push(s);
    byType.set(s.defectType, list);
  }
  const types = [...byType.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const queues = types.map((t) => shuffled(byType.get(t)!, random));
  const picked: Sample[] = [];
  for (let round = 0; picked.length < count; round++) {
    let took = false;
    for (const q of queues) {
      if (round < q.length && picked.length < count) {
        picked.push(q[round]);
        took = true;
      }
    }
    if (!took) break;
  }
  return picked;
}

export function manifestOf(splits: CategorySplit[]): SettingManifest {
  const out: SettingManifest = {};
  for (const s of splits) {
    out[s.category] = {
      train: s.train.map((x) => ({ ...x.entry })),
      test: s.test.map((x) => ({ ...x.entry })),
      info: structuredClone(s.info),
    };
  }
  return out;
}

export function entryKey(e: ManifestEntry): string {
  return e.augment ? `${e.path}#${e.augment.kind}:${e.augment.seed}` : e.path;
}
