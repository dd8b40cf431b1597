/**
 * The labelled-anomaly sampler of the mask-supervised detectors (lib/synthesis/labelled.ts): refusals, the Otsu
 * foreground with filled holes, a user's foreground folder and its errors, seeded augmentation that moves the mask
 * with the image, and BGAD's copy-paste inside the foreground.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import type { Sample } from '../lib/datasets/types';
import { Random } from '../lib/prng';
import { supervisedSplit } from '../lib/settings/supervised';
import { components8, LabelledAnomalySampler, otsuThreshold, requireLabelledAnomalies, thresholdForeground } from '../lib/synthesis/labelled';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-labelled-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let train: Sample[] = [];
const geometry = { method: 'BGAD', imageSize: 64, cropSize: 64 };

beforeAll(async () => {
  const root = path.join(tmp, 'mvtec');
  await synthesize('mvtec', root, { seed: 5, categories: 1, size: 64, train: 6, test: 16 });
  const [category] = await loadDataset('mvtec', root);
  train = supervisedSplit(category, { seed: 0, anomalies: 3 }).train.map((s) => s.sample);
});

describe('refusals', () => {
  test('no labelled anomalies: says how to get them', () => {
    const normals = train.filter((s) => s.label === 'normal');
    expect(() => requireLabelledAnomalies('PRN', normals, true)).toThrow(/PRN learns from labelled anomalies .*--setting supervised/);
  });

  test('an anomaly without a mask is named when masks are needed, accepted when not', async () => {
    const bare = { ...train.find((s) => s.label === 'anomaly')!, maskPaths: [] };
    const set = [...train.filter((s) => s.label === 'normal'), bare];
    expect(() => requireLabelledAnomalies('SemiREST', set, true)).toThrow(new RegExp(`${bare.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has no ground-truth mask`));
    expect(requireLabelledAnomalies('DevNet', set, false).anomalies).toHaveLength(1);
    await expect(LabelledAnomalySampler.create(set, geometry)).rejects.toThrow(/has no ground-truth mask/);
  });
});

describe('foreground', () => {
  test("Otsu's threshold splits two grey levels between them", () => {
    const grey = new Uint8Array(100);
    grey.fill(40, 0, 70);
    grey.fill(200, 70);
    const t = otsuThreshold(grey);
    expect(t).toBeGreaterThanOrEqual(40);
    expect(t).toBeLessThan(200);
  });

  test('an object on a plain background is found, its hole filled; a texture is all foreground', () => {
    const s = 32;
    const img = new Float32Array(3 * s * s).fill(0.1);
    let inDisc = 0;
    for (let y = 0; y < s; y++) {
      for (let x = 0; x < s; x++) {
        const r = Math.hypot(x - 16, y - 16);
        // A bright ring (radius 4..10) with a dark hole in the middle, on a dark background.
        if (r <= 10) inDisc += 1;
        if (r <= 10 && r > 4) for (let c = 0; c < 3; c++) img[c * s * s + y * s + x] = 0.9;
      }
    }
    const fg = thresholdForeground(img, s);
    let count = 0;
    for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) if (fg[y * s + x]) count += 1;
    expect(count).toBe(inDisc); // ring + filled hole = the disc
    expect(fg[16 * s + 16]).toBe(1);
    expect(fg[0]).toBe(0);
    const rng = new Random(1);
    const texture = Float32Array.from({ length: 3 * s * s }, () => rng.next());
    expect(thresholdForeground(texture, s).every((v) => v === 1)).toBe(true);
  });

  test('8-connected components', () => {
    // Two diagonal pixels touch (8-connectivity); a third pixel apart is its own component.
    const m = new Uint8Array(16);
    m[0] = 1; // (0, 0)
    m[5] = 1; // (1, 1): diagonal neighbour
    m[11] = 1; // (3, 2): apart
    const { labels, count } = components8(m, 4, 4);
    expect(count).toBe(2);
    expect(labels[0]).toBe(1);
    expect(labels[5]).toBe(1);
    expect(labels[11]).toBe(2);
  });

  test("a user's folder: a missing or mis-sized mask is named before decoding", async () => {
    const normals = train.filter((s) => s.label === 'normal');
    const dir = path.join(tmp, 'fg-missing');
    fs.mkdirSync(dir);
    for (const s of normals.slice(1)) await sharp(Buffer.alloc(64 * 64, 255), { raw: { width: 64, height: 64, channels: 1 } }).png().toFile(path.join(dir, path.basename(s.path)));
    await expect(LabelledAnomalySampler.create(train, { ...geometry, foregroundRoot: dir })).rejects.toThrow(
      new RegExp(`foreground mask for ${normals[0].path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    );
    await sharp(Buffer.alloc(32 * 32, 255), { raw: { width: 32, height: 32, channels: 1 } }).png().toFile(path.join(dir, path.basename(normals[0].path)));
    await expect(LabelledAnomalySampler.create(train, { ...geometry, foregroundRoot: dir })).rejects.toThrow(/to be 64x64 like its image .* but it is 32x32/);
    await expect(LabelledAnomalySampler.create(train, { ...geometry, foregroundRoot: path.join(tmp, 'nope') })).rejects.toThrow(/--foreground .*nope is not a folder/);
  });
});

describe('sampling', () => {
  test('decodes normals and anomalies with their masks; augmentation is seeded and keeps image and mask aligned', async () => {
    const sampler = await LabelledAnomalySampler.create(train, geometry);
    expect(sampler.normals).toHaveLength(6);
    expect(sampler.anomalies).toHaveLength(3);
    expect(sampler.foregroundSource).toBe('threshold');
    for (const a of sampler.anomalies) expect(a.mask.reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
    const a = sampler.augmented(0, new Random(7));
    const b = sampler.augmented(0, new Random(7));
    expect(Buffer.from(a.image.buffer).equals(Buffer.from(b.image.buffer))).toBe(true);
    const draws = Array.from({ length: 8 }, (_, k) => sampler.augmented(0, new Random(100 + k)));
    expect(draws.some((d) => !Buffer.from(d.image.buffer).equals(Buffer.from(sampler.anomalies[0].image.buffer)))).toBe(true);
    // Aligned: the synthetic defects differ from the background, so the mean absolute difference to the original
    // image's mean colour is larger inside the augmented mask than outside, in every draw that kept a defect.
    const s = 64;
    const plane = s * s;
    for (const d of draws) {
      expect(d.image.every((v) => v >= 0 && v <= 1)).toBe(true);
      expect(d.mask.every((v) => v === 0 || v === 1)).toBe(true);
      const area = d.mask.reduce((x, y) => x + y, 0);
      if (area === 0) continue;
      const mean = [0, 1, 2].map((c) => d.image.subarray(c * plane, (c + 1) * plane).reduce((x, y) => x + y, 0) / plane);
      let inside = 0;
      let outside = 0;
      for (let p = 0; p < plane; p++) {
        let dev = 0;
        for (let c = 0; c < 3; c++) dev += Math.abs(d.image[c * plane + p] - mean[c]);
        if (d.mask[p]) inside += dev / area;
        else outside += dev / (plane - area);
      }
      expect(inside).toBeGreaterThan(outside);
    }
  });

  test('copy-paste: outside the mask the normal image is untouched; the defects land inside the foreground', async () => {
    // A user foreground: the left quarter of every normal image only.
    const dir = path.join(tmp, 'fg-left');
    fs.mkdirSync(dir);
    const fgPixels = Buffer.alloc(64 * 64);
    for (let y = 0; y < 64; y++) for (let x = 0; x < 16; x++) fgPixels[y * 64 + x] = 255;
    for (const s of train.filter((t) => t.label === 'normal')) await sharp(fgPixels, { raw: { width: 64, height: 64, channels: 1 } }).png().toFile(path.join(dir, path.basename(s.path)));
    const sampler = await LabelledAnomalySampler.create(train, { ...geometry, foregroundRoot: dir });
    expect(sampler.foregroundSource).toBe('folder');
    const plane = 64 * 64;
    let pasted = 0;
    let inFg = 0;
    let changed = 0;
    for (let k = 0; k < 24; k++) {
      const out = sampler.copyPaste(k % 3, new Random(k));
      const normal = sampler.normals.find((n) => out.source.endsWith(`pasted on ${n.source}`))!;
      expect(normal).toBeDefined();
      for (let p = 0; p < plane; p++) {
        if (out.mask[p]) {
          pasted += 1;
          if (p % 64 < 16) inFg += 1;
        } else {
          for (let c = 0; c < 3; c++) if (out.image[c * plane + p] !== normal.image[c * plane + p]) changed += 1;
        }
      }
    }
    expect(changed).toBe(0);
    expect(pasted).toBeGreaterThan(0);
    // A quarter of the image: placed at random, about 25 % of the pasted pixels would land there.
    expect(inFg / pasted).toBeGreaterThan(0.6);
  });
});
