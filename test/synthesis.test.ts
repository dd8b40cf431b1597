/**
 * Anomaly synthesis (lib/synthesis): seeded and bit-identical, DRAEM's probabilities and blend, Perlin noise as
 * perlin.py computes it, the texture folder (recursive, undecodable files skipped) and its errors before anything
 * trains, and the ten augmenters.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { Random } from '../lib/prng';
import { AnomalySynthesiser, AUGMENTERS, augmentTexture, listTextures, perlinNoise, rotate, type Rgb8 } from '../lib/synthesis';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-synthesis-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A [0, 1] CHW image: a horizontal ramp in red, constant green and blue. */
function image(size: number): Float32Array {
  const out = new Float32Array(3 * size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      out[y * size + x] = x / (size - 1);
      out[size * size + y * size + x] = 0.5;
      out[2 * size * size + y * size + x] = 0.2;
    }
  }
  return out;
}

describe('Perlin noise', () => {
  test('matches perlin.py at the lattice: zero on the grid points, bounded by sqrt(2) / 2 * sqrt(2), seeded', () => {
    const a = perlinNoise(new Random(1), 32, 32, 4, 2);
    const b = perlinNoise(new Random(1), 32, 32, 4, 2);
    const c = perlinNoise(new Random(2), 32, 32, 4, 2);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
    // Lattice points (rows every 32 / 4 = 8, columns every 16): every corner dot product is 0.
    for (const y of [0, 8, 16, 24]) for (const x of [0, 16]) expect(a[y * 32 + x]).toBe(0);
    // |n| <= sqrt(2) * max |dot| with unit gradients and offsets below sqrt(2)/... : within [-1, 1] in practice.
    expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(1.0001);
    expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(0.2);
  });

  test('one lattice cell per image is a smooth blend of the 4 corner ramps (hand-checked value)', () => {
    // res 1 x 1: gradients g00, g01, g10, g11 drawn in that row-major order from the generator.
    const rng = new Random(5);
    const angles = Array.from({ length: 4 }, () => 2 * Math.PI * rng.next());
    const g = angles.map((t) => [Math.cos(t), Math.sin(t)]);
    const n = perlinNoise(new Random(5), 4, 4, 1, 1);
    // Pixel (1, 2): u = 0.25 (rows), v = 0.5 (columns).
    const u = 0.25;
    const v = 0.5;
    const f = (t: number): number => 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3;
    const n00 = u * g[0][0] + v * g[0][1];
    const n10 = (u - 1) * g[2][0] + v * g[2][1];
    const n01 = u * g[1][0] + (v - 1) * g[1][1];
    const n11 = (u - 1) * g[3][0] + (v - 1) * g[3][1];
    const a = n00 + f(u) * (n10 - n00);
    const b = n01 + f(u) * (n11 - n01);
    expect(n[1 * 4 + 2]).toBeCloseTo(Math.SQRT2 * (a + f(v) * (b - a)), 6);
  });

  test('rotation by 90 degrees about the centre moves a pixel a quarter turn; outside is the fill', () => {
    const src = new Float32Array(25);
    src[0 * 5 + 4] = 1; // top right
    const r = rotate(src, 5, 5, 1, 90, 0);
    expect(Math.max(...r)).toBeCloseTo(1, 6);
    const at = r.findIndex((v) => v > 0.99);
    expect([0 * 5 + 0, 4 * 5 + 4]).toContain(at); // a quarter turn either way lands on a neighbouring corner
    const half = rotate(new Float32Array(25).fill(1), 5, 5, 1, 45, 0);
    expect(half[0]).toBeLessThan(0.5); // the corner comes mostly from outside the source
    expect(half[12]).toBeCloseTo(1, 6);
  });
});

describe('AnomalySynthesiser', () => {
  test('the same generator state gives bit-identical samples; the blend and the mask follow Appendix B', async () => {
    const s = await AnomalySynthesiser.create({ size: 64, rotateProbability: 0 });
    const img = image(64);
    let anomalous = 0;
    let checked = 0;
    for (let i = 0; i < 40; i++) {
      const a = await s.sample(img, new Random(9).fork(i));
      const b = await s.sample(img, new Random(9).fork(i));
      expect(Buffer.from(a.augmented.buffer).equals(Buffer.from(b.augmented.buffer))).toBe(true);
      expect(Buffer.from(a.mask.buffer).equals(Buffer.from(b.mask.buffer))).toBe(true);
      expect(a.clean).toEqual(img);
      if (a.info === null) {
        expect(a.augmented).toEqual(img);
        expect(a.mask.every((v) => v === 0)).toBe(true);
        continue;
      }
      if (a.hasAnomaly) anomalous++;
      expect(a.info.beta).toBeGreaterThanOrEqual(0);
      expect(a.info.beta).toBeLessThan(0.8);
      expect(a.info.texture).toBe('');
      expect(a.info.augmenters).toHaveLength(3);
      expect(new Set(a.info.augmenters).size).toBe(3);
      expect(a.info.scales.every((v) => [1, 2, 4, 8, 16, 32].includes(v))).toBe(true);
      expect(a.hasAnomaly).toBe(a.mask.some((v) => v === 1));
      let outsideChanged = 0;
      let textureOutOfRange = 0;
      for (let p = 0; p < 64 * 64; p++) {
        for (let c = 0; c < 3; c++) {
          const x = img[c * 4096 + p];
          const y = a.augmented[c * 4096 + p];
          if (a.mask[p] === 0) {
            // Outside the mask the image is untouched.
            if (y !== x) outsideChanged++;
          } else {
            // Inside: (1 - beta) tex + beta x with tex in [0, 1].
            const tex = (y - a.info.beta * x) / (1 - a.info.beta);
            if (tex < -1e-5 || tex > 1 + 1e-5) textureOutOfRange++;
            checked++;
          }
        }
      }
      expect([outsideChanged, textureOutOfRange]).toEqual([0, 0]);
    }
    // p = 0.5 of no anomaly: 40 draws give 8..32 anomalous samples with overwhelming probability.
    expect(anomalous).toBeGreaterThan(8);
    expect(anomalous).toBeLessThan(32);
    expect(checked).toBeGreaterThan(1000);
  });

  test('without anomalies or with certain rotation, the probabilities are honoured', async () => {
    const never = await AnomalySynthesiser.create({ size: 32, cleanProbability: 1, rotateProbability: 1 });
    const img = image(32);
    const s = await never.sample(img, new Random(1));
    expect(s.info).toBeNull();
    expect(s.mask.every((v) => v === 0)).toBe(true);
    expect(s.clean).not.toEqual(img); // rotated
    expect(s.augmented).toEqual(s.clean);
    const always = await AnomalySynthesiser.create({ size: 32, cleanProbability: 0, rotateProbability: 0 });
    let withMask = 0;
    for (let i = 0; i < 10; i++) if ((await always.sample(img, new Random(3).fork(i))).info !== null) withMask++;
    expect(withMask).toBe(10);
    await expect(AnomalySynthesiser.create({ size: 32, cleanProbability: 2 })).rejects.toThrow('Expected number in [0, 1] for cleanProbability but received 2');
  });

  test('textures come from the folder, read recursively; files that do not decode are skipped', async () => {
    const root = path.join(tmp, 'dtd');
    fs.mkdirSync(path.join(root, 'images', 'banded'), { recursive: true });
    fs.mkdirSync(path.join(root, 'images', 'zigzag'), { recursive: true });
    const solid = (r: number, g: number, b: number): Promise<Buffer> => sharp({ create: { width: 40, height: 30, channels: 3, background: { r, g, b } } }).png().toBuffer();
    fs.writeFileSync(path.join(root, 'images', 'banded', 'a.png'), await solid(250, 10, 10));
    fs.writeFileSync(path.join(root, 'images', 'zigzag', 'b.jpg'), Buffer.from('not a jpeg'));
    fs.writeFileSync(path.join(root, 'readme.txt'), 'not an image');
    expect(await listTextures(root)).toEqual([path.join(root, 'images', 'banded', 'a.png'), path.join(root, 'images', 'zigzag', 'b.jpg')]);
    const s = await AnomalySynthesiser.create({ size: 32, textureRoot: root, cleanProbability: 0 });
    const used = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await s.sample(image(32), new Random(4).fork(i));
      used.add(r.info!.texture);
    }
    expect([...used]).toEqual([path.join(root, 'images', 'banded', 'a.png')]);
  });

  test('a texture folder that is missing, empty or holds no decodable image is refused, naming it', async () => {
    const missing = path.join(tmp, 'nope');
    await expect(AnomalySynthesiser.create({ size: 32, textureRoot: missing, textureArg: '--texture-root' })).rejects.toThrow(
      `Expected --texture-root to be a folder of texture images but ${missing} does not exist`,
    );
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(path.join(empty, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(empty, 'sub', 'notes.txt'), 'x');
    await expect(listTextures(empty, '--texture-root')).rejects.toMatchObject({ code: 'ERR_IMIAD_EMPTY', message: expect.stringContaining(`Expected --texture-root ${empty} to hold texture images`) });
    const broken = path.join(tmp, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'x.png'), Buffer.from('garbage'));
    await expect(listTextures(broken, '--texture-root')).rejects.toMatchObject({
      code: 'ERR_IMIAD_IMAGE',
      message: `Expected --texture-root ${broken} to hold texture images that decode but none of its 1 image files decodes`,
    });
  });
});

describe('augmenters', () => {
  const texture = (): Rgb8 => {
    const data = new Float32Array(16 * 16 * 3);
    for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
    return { data, width: 16, height: 16 };
  };

  test('ten of them, each keeping 8-bit values; invert and posterize do what they say', () => {
    expect(AUGMENTERS.map((a) => a.name)).toEqual(['gamma', 'brightness', 'sharpness', 'hue-saturation', 'solarize', 'posterize', 'invert', 'autocontrast', 'equalize', 'rotate']);
    for (const a of AUGMENTERS) {
      const t = texture();
      a.apply(t, new Random(3));
      expect(t.data.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)).toBe(true);
    }
    const t = texture();
    AUGMENTERS[6].apply(t, new Random(1));
    expect(t.data[5]).toBe(255 - ((5 * 37) % 256));
    const eq = texture();
    AUGMENTERS[8].apply(eq, new Random(1));
    expect(Math.max(...eq.data)).toBeGreaterThan(200);
  });

  test('three distinct ones are drawn per texture, seeded', () => {
    const a = augmentTexture(texture(), new Random(11));
    const b = augmentTexture(texture(), new Random(11));
    expect(a).toEqual(b);
    expect(new Set(a).size).toBe(3);
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) for (const n of augmentTexture(texture(), new Random(i))) seen.add(n);
    expect(seen.size).toBe(10);
  });
});
