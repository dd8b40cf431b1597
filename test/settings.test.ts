import {
  buildManifest,
  continualTasks,
  fewshotSplit,
  finalAverage,
  forgettingMeasure,
  noiseCount,
  noisySplit,
  settingSpec,
  supervisedSplit,
  vanillaSplit,
  type CategorySplit,
} from '../lib/settings';
import { makeCategory } from './helpers/categories';

const bottle = makeCategory('bottle', { train: 40, testGood: 20, defects: { broken_large: 20, broken_small: 22, contamination: 21 } });
const small = makeCategory('screw', { train: 30, testGood: 10, defects: { a: 3, b: 2 } });

const paths = (s: CategorySplit, part: 'train' | 'test'): string[] => s[part].map((x) => x.entry.path);

describe('vanilla', () => {
  test('normal training images only; the whole test split', () => {
    const s = vanillaSplit(bottle);
    expect(s.train).toHaveLength(40);
    expect(s.train.every((x) => x.entry.label === 'normal' && x.sample.split === 'train')).toBe(true);
    expect(s.test).toHaveLength(20 + 63);
  });
  test('a category without normal training images is an error naming it', () => {
    const empty = makeCategory('empty', { train: 0, testGood: 2, defects: { a: 2 } });
    expect(() => vanillaSplit(empty)).toThrow('Category empty (/data/empty) has no normal training images');
  });
});

describe('supervised', () => {
  test('moves n = 10 masked anomalies into training, round-robin over defect types, labelled anomaly', () => {
    const s = supervisedSplit(bottle, { seed: 3 });
    const moved = s.train.filter((x) => x.entry.label === 'anomaly');
    expect(moved).toHaveLength(10);
    expect(s.train).toHaveLength(50);
    const perType = new Map<string, number>();
    for (const m of moved) perType.set(m.sample.defectType, (perType.get(m.sample.defectType) ?? 0) + 1);
    expect([...perType.entries()].sort()).toEqual([['broken_large', 4], ['broken_small', 3], ['contamination', 3]]);
    expect(moved.every((m) => m.sample.maskPaths.length === 1)).toBe(true);
    const test = new Set(paths(s, 'test'));
    expect(moved.some((m) => test.has(m.entry.path))).toBe(false);
    expect(s.test).toHaveLength(83 - 10);
    expect(s.info).toEqual({ setting: 'supervised', seed: 3, anomalies: 10 });
  });
  test('only anomalies with masks are moved', () => {
    const c = makeCategory('partial', { train: 5, testGood: 5, defects: { a: 6, b: 6 }, unmasked: 3 });
    const s = supervisedSplit(c, { anomalies: 6, seed: 1 });
    expect(s.train.filter((x) => x.entry.label === 'anomaly').every((x) => x.sample.maskPaths.length > 0)).toBe(true);
    expect(() => supervisedSplit(c, { anomalies: 7 })).toThrow(
      'Category partial (/data/partial) has 12 anomalous test images, 6 with masks: cannot move 7 into training and keep at least one for testing',
    );
  });
  test('same seed, same manifest; another seed, another one', () => {
    expect(paths(supervisedSplit(bottle, { seed: 5 }), 'train')).toEqual(paths(supervisedSplit(bottle, { seed: 5 }), 'train'));
    expect(paths(supervisedSplit(bottle, { seed: 5 }), 'train')).not.toEqual(paths(supervisedSplit(bottle, { seed: 6 }), 'train'));
  });
});

describe('fewshot', () => {
  test.each([1, 2, 4, 8])('k = %d normal training images chosen by seed', (k) => {
    const s = fewshotSplit(bottle, { shots: k, seed: 0 });
    expect(s.train).toHaveLength(k);
    expect(new Set(paths(s, 'train')).size).toBe(k);
    expect(s.train.every((x) => x.sample.split === 'train' && x.entry.label === 'normal')).toBe(true);
    expect(s.test).toHaveLength(83);
  });
  test('augmented copies follow each shot with kind and distinct seeds', () => {
    const s = fewshotSplit(bottle, { shots: 2, seed: 1, augment: 'rotation', augmentCount: 3 });
    expect(s.train).toHaveLength(8);
    expect(s.train[0].entry.augment).toBeUndefined();
    expect(s.train.slice(1, 4).map((x) => x.entry.path)).toEqual([s.train[0].entry.path, s.train[0].entry.path, s.train[0].entry.path]);
    expect(s.train.slice(1, 4).every((x) => x.entry.augment?.kind === 'rotation')).toBe(true);
    const seeds = s.train.filter((x) => x.entry.augment).map((x) => x.entry.augment!.seed);
    expect(new Set(seeds).size).toBe(6);
    expect(s.info).toEqual({ setting: 'fewshot', seed: 1, shots: 2, augment: 'rotation', augmentCount: 3 });
    const manifest = buildManifest(settingSpec('fewshot', { shots: 2, augment: 'rotation', augmentCount: 3 }), [bottle], 1);
    expect(JSON.parse(JSON.stringify(manifest))).toEqual(manifest);
    expect((manifest as Record<string, { info: unknown }>).bottle.info).toEqual(s.info);
  });
  test('seeds', () => {
    expect(paths(fewshotSplit(bottle, { shots: 4, seed: 9 }), 'train')).toEqual(paths(fewshotSplit(bottle, { shots: 4, seed: 9 }), 'train'));
    expect(paths(fewshotSplit(bottle, { shots: 4, seed: 9 }), 'train')).not.toEqual(paths(fewshotSplit(bottle, { shots: 4, seed: 10 }), 'train'));
  });
  test('bad options', () => {
    expect(() => fewshotSplit(bottle, { shots: 0 })).toThrow('Expected a positive integer for shots but received 0 of type number');
    expect(() => fewshotSplit(bottle, { shots: 1, augment: 'blur' as never })).toThrow(
      'Expected one of rotation, flip, scale, translate, colorjitter, perspective for augment but received blur of type string',
    );
    expect(() => fewshotSplit(small, { shots: 31 })).toThrow('Category screw (/data/screw) has 30 normal training images: cannot take 31 shots');
  });
});

describe('noisy', () => {
  test.each([0.05, 0.1, 0.15, 0.2])('noise %p: n/(m+n) as close as rounding allows, removed from test', (r) => {
    const c = makeCategory('big', { train: 200, testGood: 20, defects: { a: 40, b: 40 } });
    const s = noisySplit(c, { noise: r, seed: 2 });
    const n = noiseCount(200, r);
    expect(n).toBe(Math.round((r * 200) / (1 - r)));
    const noise = s.train.filter((x) => x.entry.trueLabel === 'anomaly');
    expect(noise).toHaveLength(n);
    expect(noise.every((x) => x.entry.label === 'normal' && x.sample.label === 'anomaly')).toBe(true);
    expect(Math.abs(n / (200 + n) - r)).toBeLessThan(1 / 200);
    const test = new Set(paths(s, 'test'));
    expect(noise.some((x) => test.has(x.entry.path))).toBe(false);
    expect(s.test).toHaveLength(100 - n);
    expect(s.info.capped).toBe(false);
  });
  test('capped at 75 % of the test anomalies, and the cap is reported', () => {
    // m = 30, r = 0.2: n = 8 wanted, but 5 anomalies allow floor(3.75) = 3.
    const s = noisySplit(small, { noise: 0.2, seed: 0 });
    expect(s.info.noiseCount).toBe(3);
    expect(s.info.capped).toBe(true);
    expect(s.info.achievedNoise).toBeCloseTo(3 / 33, 12);
    expect(s.info.notes).toEqual(['noise 0.2 needs 8 anomalous images but the cap is 3 (75 % of 5 test anomalies): achieved 0.0909']);
    expect(s.test.filter((x) => x.entry.label === 'anomaly')).toHaveLength(2);
  });
  test('seeds', () => {
    const key = (seed: number) => paths(noisySplit(bottle, { noise: 0.15, seed }), 'train');
    expect(key(4)).toEqual(key(4));
    expect(key(4)).not.toEqual(key(5));
  });
  test('bad ratio', () => {
    expect(() => noisySplit(bottle, { noise: 1 })).toThrow('Expected a number in (0, 1) for noise but received 1 of type number');
  });
});

describe('continual', () => {
  const cats = [bottle, small, makeCategory('cable', { train: 10, testGood: 5, defects: { x: 4 } })];
  test('tasks in the dataset order, or the given order; each a vanilla split', () => {
    expect(continualTasks(cats).map((t) => t.category)).toEqual(['bottle', 'screw', 'cable']);
    const tasks = continualTasks(cats, { order: ['cable', 'bottle', 'screw'] });
    expect(tasks.map((t) => [t.category, t.info.task])).toEqual([['cable', 0], ['bottle', 1], ['screw', 2]]);
    expect(paths(tasks[1], 'train')).toEqual(paths(vanillaSplit(bottle), 'train'));
    const manifest = buildManifest(settingSpec('continual', { order: ['cable', 'bottle', 'screw'] }), cats, 0);
    expect(Array.isArray(manifest)).toBe(true);
    expect((manifest as object[]).map((m) => Object.keys(m))).toEqual([['cable'], ['bottle'], ['screw']]);
    expect(() => continualTasks(cats, { order: ['bottle', 'zipper'] })).toThrow(
      "Continual task order names category 'zipper', which is not loaded (bottle, screw, cable)",
    );
  });
  test('forgetting measure on a hand-made matrix', () => {
    // T[l][j]: metric on task j after learning task l.
    const T = [
      [0.9, null, null, null],
      [0.8, 0.95, null, null],
      [0.85, 0.7, 0.99, null],
      [0.6, 0.75, 0.9, 0.8],
    ];
    // FM_0 = max(0.9, 0.8, 0.85) - 0.6 = 0.3; FM_1 = max(0.95, 0.7) - 0.75 = 0.2; FM_2 = 0.99 - 0.9 = 0.09.
    const fm = forgettingMeasure(T);
    expect(fm.perTask.map((v) => Number(v!.toFixed(12)))).toEqual([0.3, 0.2, 0.09]);
    expect(fm.mean).toBeCloseTo((0.3 + 0.2 + 0.09) / 3, 12);
    expect(finalAverage(T)).toBeCloseTo((0.6 + 0.75 + 0.9 + 0.8) / 4, 12);
    expect(forgettingMeasure([[0.5]])).toEqual({ perTask: [], mean: null });
    // Improving on an old task gives negative forgetting (backward transfer).
    expect(forgettingMeasure([[0.5, null], [0.7, 0.9]]).mean).toBeCloseTo(-0.2, 12);
  });
});
