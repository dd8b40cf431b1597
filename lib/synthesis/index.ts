/**
 * Anomaly synthesis (DRAEM's, METHODS.md Appendix B; reused by every method that trains on pseudo-anomalies):
 *
 * 1. With probability `rotateProbability` (DRAEM: 0.3) the clean image itself is rotated by U(-90, 90) degrees
 *    (bilinear, black outside); it stays the reconstruction target.
 * 2. With probability `cleanProbability` (0.5) the sample has no anomaly: the augmented image is the clean one and
 *    the mask is empty.
 * 3. Otherwise a Perlin field at scales 2^a x 2^b (a, b uniform in 0..5, per axis) is rotated by U(-90, 90) degrees and
 *    thresholded at 0.5 to the mask m.
 * 4. The texture: an image of `textureRoot` (read recursively; files that do not decode are skipped) resized to the
 *    image size, or without a folder a second Perlin field drawn the same way, as grey 0.25 + 0.25 (1 + clip(p, -1,
 *    1)) in every channel; then 3 of the 10 augmenters (./augment.ts) in random order.
 * 5. Blend: x' = x (1 - m) + (1 - beta) tex m + beta x m with beta ~ U(0, 0.8).
 *
 * Everything is drawn from the Random handed in, so the same generator state gives bit-identical samples (V8's
 * Math functions are deterministic); callers fork one generator per sample (seed, fit, epoch, index).
 */
import * as fs from 'fs';
import * as path from 'path';

import { imiadError, invalidRange, invalidType } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { prepareImage } from '../image/pipeline';
import type { Random } from '../prng';
import { augmentTexture, type Rgb8 } from './augment';
import { perlinNoise, rotate } from './perlin';

export { AUGMENTERS, augmentTexture, type Rgb8 } from './augment';
export { perlinNoise, rotate } from './perlin';

const Math = globalThis.Math;

/** Extensions the texture folder is scanned for (decoded by lib/image like every dataset image). */
const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp']);

export interface SynthesisOptions {
  /** Side of the square images (the clean images handed in must have it). */
  size: number;
  /** A folder of texture images (e.g. DTD), read recursively; without one the Perlin field itself is the texture. */
  textureRoot?: string;
  /** The name the texture folder is known by in error messages (default 'textureRoot'). */
  textureArg?: string;
  /** Probability of a sample without anomaly (default 0.5). */
  cleanProbability?: number;
  /** Probability of rotating the clean image by U(-90, 90) degrees first (default 0.3, as DRAEM). */
  rotateProbability?: number;
  /** beta ~ U(0, betaMax), the weight of the clean image inside the mask (default 0.8). */
  betaMax?: number;
}

export interface SynthesisedSample {
  /** The clean image (rotated when drawn), CHW in [0, 1]: the reconstruction target. */
  clean: Float32Array;
  /** The image with the synthetic anomaly, CHW in [0, 1]. */
  augmented: Float32Array;
  /** The anomaly mask, HW, 0 or 1. */
  mask: Float32Array;
  /** Whether the mask has any pixel set. */
  hasAnomaly: boolean;
  /** What was drawn: the Perlin scales, beta, the texture file ('' for Perlin) and the augmenters. */
  info: { scales: [number, number]; beta: number; texture: string; augmenters: string[] } | null;
}

async function walk(dir: string, out: string[]): Promise<void> {
  const entries = await fs.promises.readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await walk(p, out);
    else if (e.isFile() && IMAGE_EXTENSIONS.has(path.extname(e.name).toLowerCase())) out.push(p);
  }
}

/**
 * The image files under `root` (recursively, sorted), checked before any training: the folder must exist and hold
 * at least one image that decodes. Errors name the folder and the option (`arg`).
 */
export async function listTextures(root: string, arg = 'textureRoot'): Promise<string[]> {
  if (!is.string(root) || root === '') throw invalidType('a folder path', arg, root);
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(root);
  } catch {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Expected ${arg} to be a folder of texture images but ${root} does not exist`);
  }
  if (!stat.isDirectory()) throw imiadError('Error', 'ERR_IMIAD_FILE', `Expected ${arg} to be a folder of texture images but ${root} is not a folder`);
  const files: string[] = [];
  await walk(root, files);
  if (files.length === 0) {
    throw imiadError('Error', 'ERR_IMIAD_EMPTY', `Expected ${arg} ${root} to hold texture images (${[...IMAGE_EXTENSIONS].join(', ')}, searched recursively) but it holds none`);
  }
  for (const f of files) {
    try {
      await prepareImage(f, { imageSize: 8, cropSize: 8, resize: 'exact', normalisation: 'unit' });
      return files;
    } catch {
      // try the next one
    }
  }
  throw imiadError('Error', 'ERR_IMIAD_IMAGE', `Expected ${arg} ${root} to hold texture images that decode but none of its ${files.length} image files decodes`);
}

function probability(v: number | undefined, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  if (!is.number(v) || v < 0 || v > 1) throw invalidRange('number in [0, 1]', name, v);
  return v;
}

/** 2^a and 2^b with a, b uniform in 0..5 (perlin_scale 6, min 0). */
function drawScales(rng: Random): [number, number] {
  return [2 ** rng.int(6), 2 ** rng.int(6)];
}

/** DRAEM's anomaly synthesiser over square images of one size. Create it with `AnomalySynthesiser.create`. */
export class AnomalySynthesiser {
  readonly size: number;
  readonly cleanProbability: number;
  readonly rotateProbability: number;
  readonly betaMax: number;
  /** Texture files after the folder check (empty: Perlin textures). */
  readonly textures: readonly string[];
  /** Files that failed to decode during synthesis (skipped from then on). */
  private readonly broken = new Set<number>();

  private constructor(opts: SynthesisOptions, textures: string[]) {
    this.size = opts.size;
    this.cleanProbability = probability(opts.cleanProbability, 'cleanProbability', 0.5);
    this.rotateProbability = probability(opts.rotateProbability, 'rotateProbability', 0.3);
    this.betaMax = probability(opts.betaMax, 'betaMax', 0.8);
    this.textures = textures;
  }

  /** Checks the options and the texture folder (ERR_IMIAD_FILE / ERR_IMIAD_EMPTY / ERR_IMIAD_IMAGE naming it). */
  static async create(opts: SynthesisOptions): Promise<AnomalySynthesiser> {
    if (!is.object(opts)) throw invalidType('object', 'options', opts);
    if (!is.integer(opts.size) || opts.size < 2 || opts.size > 4096) throw invalidRange('integer between 2 and 4096', 'size', opts.size);
    const textures = opts.textureRoot === undefined ? [] : await listTextures(opts.textureRoot, opts.textureArg ?? 'textureRoot');
    return new AnomalySynthesiser(opts, textures);
  }

  /** A texture as 8-bit RGB (HWC) of the image size: a decoded file, or grey Perlin noise. */
  private async texture(rng: Random): Promise<{ img: Rgb8; file: string }> {
    const s = this.size;
    if (this.textures.length > 0) {
      const first = rng.int(this.textures.length);
      // A file that does not decode is skipped for the next one (deterministically: decoding does not draw).
      for (let k = 0; k < this.textures.length; k++) {
        const i = (first + k) % this.textures.length;
        if (this.broken.has(i)) continue;
        try {
          const { tensor } = await prepareImage(this.textures[i], { imageSize: s, cropSize: s, resize: 'exact', normalisation: 'unit' });
          const data = new Float32Array(s * s * 3);
          for (let c = 0; c < 3; c++) for (let p = 0; p < s * s; p++) data[p * 3 + c] = Math.round(tensor[c * s * s + p] * 255);
          return { img: { data, width: s, height: s }, file: this.textures[i] };
        } catch {
          this.broken.add(i);
        }
      }
      throw imiadError('Error', 'ERR_IMIAD_IMAGE', `None of the ${this.textures.length} texture images decodes any more`);
    }
    const [sy, sx] = drawScales(rng);
    const noise = perlinNoise(rng, s, s, sy, sx);
    const data = new Float32Array(s * s * 3);
    for (let p = 0; p < s * s; p++) {
      const v = Math.round(255 * (0.25 + 0.25 * (1 + Math.min(1, Math.max(-1, noise[p])))));
      data[p * 3] = v;
      data[p * 3 + 1] = v;
      data[p * 3 + 2] = v;
    }
    return { img: { data, width: s, height: s }, file: '' };
  }

  /** One training sample from a clean image (CHW, [0, 1], size x size); `rng` is consumed. */
  async sample(image: Float32Array, rng: Random): Promise<SynthesisedSample> {
    const s = this.size;
    const plane = s * s;
    if (!(image instanceof Float32Array) || image.length !== 3 * plane) throw invalidType(`Float32Array of 3 x ${s} x ${s} pixels`, 'image', image);
    let clean = image;
    const rotateClean = rng.bool(this.rotateProbability);
    const cleanAngle = rng.uniform(-90, 90);
    if (rotateClean) {
      // CHW -> HWC, rotate, back.
      const hwc = new Float32Array(3 * plane);
      for (let c = 0; c < 3; c++) for (let p = 0; p < plane; p++) hwc[p * 3 + c] = image[c * plane + p];
      const r = rotate(hwc, s, s, 3, cleanAngle, 0);
      clean = new Float32Array(3 * plane);
      for (let c = 0; c < 3; c++) for (let p = 0; p < plane; p++) clean[c * plane + p] = r[p * 3 + c];
    }
    const mask = new Float32Array(plane);
    if (rng.bool(this.cleanProbability)) return { clean, augmented: clean.slice(), mask, hasAnomaly: false, info: null };

    const scales = drawScales(rng);
    const noise = rotate(perlinNoise(rng, s, s, scales[0], scales[1]), s, s, 1, rng.uniform(-90, 90), 0);
    let any = false;
    for (let p = 0; p < plane; p++) {
      if (noise[p] > 0.5) {
        mask[p] = 1;
        any = true;
      }
    }
    const { img, file } = await this.texture(rng);
    const augmenters = augmentTexture(img, rng);
    const beta = rng.uniform(0, this.betaMax);
    const augmented = clean.slice();
    const tex = img.data;
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < plane; p++) {
        if (mask[p] === 0) continue;
        const x = clean[c * plane + p];
        augmented[c * plane + p] = (1 - beta) * (tex[p * 3 + c] / 255) + beta * x;
      }
    }
    return { clean, augmented, mask, hasAnomaly: any, info: { scales, beta, texture: file, augmenters } };
  }
}
