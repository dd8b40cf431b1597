/**
 * The supervised setting's labelled anomalies, with their masks, as the detectors that learn from masks use them
 * (BGAD, PRN, SemiREST: METHODS.md sections 13-15):
 *
 * - `augmented(i)`: the real anomaly i under 3 distinct augmentations drawn from BGAD's / PRNet's albumentations list
 *   (datasets/mvtec.py `randAugmenter`); the geometric ones move the mask with the image.
 * - `copyPaste(i)`: BGAD's `copy_paste`: anomaly i augmented, then its defect pixels pasted onto a random normal
 *   training image. When at least 2/3 of the defect already lies inside that normal image's foreground it is pasted
 *   where it is; otherwise each defect region is moved so that its centroid lands on a random foreground point far
 *   enough from the border for the largest region to fit.
 * - Foreground masks: the official ones are a separate download made "by binary thresholding" (PRNet issue #5). Here
 *   they are made from every normal image (`thresholdForeground`): Otsu's threshold on the grey levels; the class that
 *   touches the image border less is the object; holes are filled. When both classes touch the border (a texture, or
 *   an object filling the frame) or the object covers under 1 % of the image, the whole image is foreground. A user's
 *   folder (`foregroundRoot`, CLI `--foreground <dir>`) overrides it: one mask per normal training image, named like
 *   the image (or its stem + .png), at the image's size; nonzero = foreground.
 *
 * Everything happens at the method's geometry (resize to imageSize, centre crop to cropSize), with 8-bit pixel values
 * as albumentations' uint8 images; images come back CHW in [0, 1]. Every random choice is drawn from the Random that
 * the caller hands in. docs/anomaly-synthesis.md lists the augmentations and where they are approximated.
 */
import * as fs from 'fs';
import * as path from 'path';

import { defaultMemoryBudget } from '../../bindings/gaussian';
import { imiadError, invalidRange, invalidType } from '../../bindings/errors';
import * as is from '../../bindings/is';
import type { Sample } from '../datasets/types';
import { readImageSize } from '../image/decode';
import { readMask } from '../image/mask';
import { sampleBilinear } from '../image/augment';
import { geometryFor, loadMaskBatch, maskToCrop, prepareImage, type Geometry } from '../image/pipeline';
import { requireBudget } from '../methods/features';
import { DEFAULT_SUPERVISED_ANOMALIES } from '../settings/supervised';
import type { Random } from '../prng';
import { hsvToRgb, rgbToHsv } from './augment';

const Math = globalThis.Math;

export interface LabelledImage {
  /** CHW RGB in [0, 1], size x size. */
  image: Float32Array;
  /** HW, 0 or 1 (all 0 for a normal image). */
  mask: Float32Array;
  /** The image path; a copy-paste: `${anomalyPath} pasted on ${normalPath}`. */
  source: string;
}

export interface LabelledAnomalyOptions {
  /** The detector's label, for error messages ("BGAD"). */
  method: string;
  /** The method's resize side. */
  imageSize: number;
  /** The method's centre-crop side: the side of every image and mask handed out. */
  cropSize: number;
  /** A folder of foreground masks overriding the thresholded ones (CLI --foreground <dir>). */
  foregroundRoot?: string;
  /** Limit on the decoded images (bytes); default: the process's memory budget. */
  memoryBudgetBytes?: number;
  signal?: AbortSignal;
}

/**
 * Splits a training set into normal images and labelled anomalies. Refuses a set without labelled anomalies (the
 * message says how to get them) and, when `needMasks`, an anomaly without a ground-truth mask (naming it).
 */
export function requireLabelledAnomalies(method: string, train: Sample[], needMasks: boolean): { normals: Sample[]; anomalies: Sample[] } {
  const normals = train.filter((s) => s.label === 'normal');
  const anomalies = train.filter((s) => s.label === 'anomaly');
  if (anomalies.length === 0) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_EMPTY',
      `${method} learns from labelled anomalies but the training set has none: run it in the supervised setting (--setting supervised), ` +
        `which moves ${DEFAULT_SUPERVISED_ANOMALIES} labelled anomalous test images into training`,
    );
  }
  if (normals.length === 0) throw imiadError('RangeError', 'ERR_IMIAD_EMPTY', `Expected normal training images for ${method} but received none`);
  if (needMasks) {
    const bare = anomalies.find((s) => !Array.isArray(s.maskPaths) || s.maskPaths.length === 0);
    if (bare) {
      throw imiadError(
        'RangeError',
        'ERR_IMIAD_FILE',
        `${method} learns from the masks of its labelled anomalies but ${bare.path} has no ground-truth mask: ` +
          'give every labelled anomaly a mask (the supervised setting only moves anomalies that have one)',
      );
    }
  }
  return { normals, anomalies };
}

// ---------------------------------------------------------------------------------------------------------------
// Binary masks: 8-connected components, hole filling, Otsu.

/** 8-connected components of a binary mask: labels (0 = background, 1..count) in raster order of first pixels. */
export function components8(mask: Uint8Array, width: number, height: number): { labels: Int32Array; count: number } {
  const labels = new Int32Array(width * height);
  const stack: number[] = [];
  let count = 0;
  for (let start = 0; start < labels.length; start++) {
    if (mask[start] === 0 || labels[start] !== 0) continue;
    count += 1;
    labels[start] = count;
    stack.push(start);
    while (stack.length > 0) {
      const p = stack.pop() as number;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (mask[q] !== 0 && labels[q] === 0) {
            labels[q] = count;
            stack.push(q);
          }
        }
      }
    }
  }
  return { labels, count };
}

/** Fills the holes of a foreground mask: background pixels not 4-connected to the border become foreground. */
function fillHoles(fg: Uint8Array, width: number, height: number): void {
  const outside = new Uint8Array(width * height);
  const stack: number[] = [];
  const seed = (p: number): void => {
    if (fg[p] === 0 && outside[p] === 0) {
      outside[p] = 1;
      stack.push(p);
    }
  };
  for (let x = 0; x < width; x++) {
    seed(x);
    seed((height - 1) * width + x);
  }
  for (let y = 0; y < height; y++) {
    seed(y * width);
    seed(y * width + width - 1);
  }
  while (stack.length > 0) {
    const p = stack.pop() as number;
    const x = p % width;
    const y = (p - x) / width;
    if (x > 0) seed(p - 1);
    if (x < width - 1) seed(p + 1);
    if (y > 0) seed(p - width);
    if (y < height - 1) seed(p + width);
  }
  for (let p = 0; p < fg.length; p++) if (outside[p] === 0) fg[p] = 1;
}

/** Otsu's threshold of 8-bit grey levels: the t maximising the between-class variance of (<= t, > t). */
export function otsuThreshold(grey: Uint8Array): number {
  const hist = new Float64Array(256);
  for (let i = 0; i < grey.length; i++) hist[grey[i]] += 1;
  const n = grey.length;
  let sumAll = 0;
  for (let t = 0; t < 256; t++) sumAll += t * hist[t];
  let w0 = 0;
  let sum0 = 0;
  let best = 0;
  let bestVar = -1;
  for (let t = 0; t < 255; t++) {
    w0 += hist[t];
    sum0 += t * hist[t];
    const w1 = n - w0;
    if (w0 === 0 || w1 === 0) continue;
    const m0 = sum0 / w0;
    const m1 = (sumAll - sum0) / w1;
    const between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > bestVar) {
      bestVar = between;
      best = t;
    }
  }
  return best;
}

/** Share of border pixels above which a class counts as touching the border (then the image is all foreground). */
export const FOREGROUND_BORDER_SHARE = 0.2;
/** Smallest object, as a share of the image, that counts as a foreground (smaller: the whole image). */
export const FOREGROUND_MIN_AREA = 0.01;

/**
 * The foreground of a normal image (CHW in [0, 1], size x size): Otsu on the grey levels; the class with the smaller
 * share of the border pixels is the object, unless it still holds FOREGROUND_BORDER_SHARE of them or covers under
 * FOREGROUND_MIN_AREA of the image (then everything is foreground); its holes are filled.
 */
export function thresholdForeground(image: Float32Array, size: number): Uint8Array {
  const plane = size * size;
  const grey = new Uint8Array(plane);
  for (let p = 0; p < plane; p++) {
    const v = 255 * (0.299 * image[p] + 0.587 * image[plane + p] + 0.114 * image[2 * plane + p]);
    grey[p] = Math.max(0, Math.min(255, Math.round(v)));
  }
  const t = otsuThreshold(grey);
  let border = 0;
  let borderHigh = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      if (y !== 0 && y !== size - 1 && x !== 0 && x !== size - 1) continue;
      border += 1;
      if (grey[y * size + x] > t) borderHigh += 1;
    }
  }
  const highIsObject = borderHigh / border < 0.5;
  const objectBorderShare = highIsObject ? borderHigh / border : 1 - borderHigh / border;
  const fg = new Uint8Array(plane);
  let area = 0;
  for (let p = 0; p < plane; p++) {
    if (grey[p] > t === highIsObject) {
      fg[p] = 1;
      area += 1;
    }
  }
  if (objectBorderShare >= FOREGROUND_BORDER_SHARE || area < FOREGROUND_MIN_AREA * plane) return fg.fill(1);
  fillHoles(fg, size, size);
  return fg;
}

// ---------------------------------------------------------------------------------------------------------------
// The augmentations of BGAD's / PRNet's randAugmenter, on HWC 8-bit images (Float32Array 0..255) with a mask.

interface Rgb8Masked {
  data: Float32Array;
  mask: Uint8Array;
  size: number;
}

function clip8(data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const v = Math.round(data[i]);
    data[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
}

/** cv2.BORDER_REFLECT_101 (albumentations' default border): -1 -> 1, n -> n - 2. */
function reflect101(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  let k = i % period;
  if (k < 0) k += period;
  return k < n ? k : period - k;
}

/**
 * Resamples image and mask: `from(x, y)` gives the source position (pixel centres at integers) of destination pixel
 * (x, y). Image bilinear, mask nearest, both with reflect-101 borders (cv2.remap / warpAffine as albumentations calls
 * them).
 */
function remap(img: Rgb8Masked, from: (x: number, y: number) => [number, number]): void {
  const s = img.size;
  const out = new Float32Array(img.data.length);
  const outMask = new Uint8Array(img.mask.length);
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      const [u, v] = from(x, y);
      sampleBilinear(img.data, s, s, u, v, reflect101, out, (y * s + x) * 3);
      outMask[y * s + x] = img.mask[reflect101(Math.round(v), s) * s + reflect101(Math.round(u), s)];
    }
  }
  clip8(out);
  img.data = out;
  img.mask = outMask;
}

/** A 3x3 (or k x k) convolution of the image with reflect-101 borders; the mask is unchanged. */
function convolve(img: Rgb8Masked, kernel: Float32Array, k: number): void {
  const s = img.size;
  const r = (k - 1) / 2;
  const out = new Float32Array(img.data.length);
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (let j = -r; j <= r; j++) {
          const yy = reflect101(y + j, s);
          for (let i = -r; i <= r; i++) acc += kernel[(j + r) * k + (i + r)] * img.data[(yy * s + reflect101(x + i, s)) * 3 + c];
        }
        out[(y * s + x) * 3 + c] = acc;
      }
    }
  }
  clip8(out);
  img.data = out;
}

/** OpticalDistortion: cv2's undistortion map with k1 = k2 = k, fx = fy = size, principal point shifted by dx, dy. */
function opticalDistortion(img: Rgb8Masked, rng: Random, distortLimit: number, shiftLimit: number): void {
  const s = img.size;
  const k = rng.uniform(-distortLimit, distortLimit);
  const cx = s * 0.5 + Math.round(rng.uniform(-shiftLimit, shiftLimit) * s);
  const cy = s * 0.5 + Math.round(rng.uniform(-shiftLimit, shiftLimit) * s);
  remap(img, (x, y) => {
    const nx = (x - cx) / s;
    const ny = (y - cy) / s;
    const r2 = nx * nx + ny * ny;
    const f = 1 + k * r2 + k * r2 * r2;
    return [nx * f * s + cx, ny * f * s + cy];
  });
}

function gaussNoise(img: Rgb8Masked, rng: Random): void {
  // GaussNoise(var_limit=(10, 50)); IAAAdditiveGaussianNoise(scale=(0.01*255, 0.05*255)) draws its sigma likewise.
  const sigma = Math.sqrt(rng.uniform(10, 50));
  for (let i = 0; i < img.data.length; i++) img.data[i] += sigma * rng.normal();
  clip8(img.data);
}

function medianBlur3(img: Rgb8Masked): void {
  const s = img.size;
  const out = new Float32Array(img.data.length);
  const win = new Float32Array(9);
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      for (let c = 0; c < 3; c++) {
        let n = 0;
        for (let j = -1; j <= 1; j++) for (let i = -1; i <= 1; i++) win[n++] = img.data[(reflect101(y + j, s) * s + reflect101(x + i, s)) * 3 + c];
        win.sort();
        out[(y * s + x) * 3 + c] = win[4];
      }
    }
  }
  img.data = out;
}

function motionBlur(img: Rgb8Masked, rng: Random): void {
  // MotionBlur(blur_limit=7): an odd kernel size 3..7 holding one random line through the centre, normalised.
  const k = 3 + 2 * rng.int(3);
  const kernel = new Float32Array(k * k);
  const angle = rng.uniform(0, Math.PI);
  const r = (k - 1) / 2;
  for (let t = -r; t <= r; t++) {
    const x = Math.round(r + t * Math.cos(angle));
    const y = Math.round(r + t * Math.sin(angle));
    kernel[y * k + x] = 1;
  }
  let sum = 0;
  for (const v of kernel) sum += v;
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  convolve(img, kernel, k);
}

function shiftScaleRotate(img: Rgb8Masked, rng: Random): void {
  // ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.2, rotate_limit=45): rotation and scale about the centre, then
  // the shift (fractions of the side).
  const s = img.size;
  const angle = (rng.uniform(-45, 45) * Math.PI) / 180;
  const scale = rng.uniform(0.8, 1.2);
  const dx = rng.uniform(-0.0625, 0.0625) * s;
  const dy = rng.uniform(-0.0625, 0.0625) * s;
  const c = (s - 1) / 2;
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  remap(img, (x, y) => {
    const u = (x - c - dx) / scale;
    const v = (y - c - dy) / scale;
    return [cos * u + sin * v + c, -sin * u + cos * v + c];
  });
}

function sharpen(img: Rgb8Masked, rng: Random): void {
  // IAASharpen(alpha=(0.2, 0.5), lightness=(0.5, 1.0)): identity blended with a lightness-scaled Laplacian sharpener.
  const alpha = rng.uniform(0.2, 0.5);
  const lightness = rng.uniform(0.5, 1.0);
  const kernel = new Float32Array([-1, -1, -1, -1, 8 + lightness, -1, -1, -1, -1]);
  for (let i = 0; i < 9; i++) kernel[i] = alpha * kernel[i] + (i === 4 ? 1 - alpha : 0);
  convolve(img, kernel, 3);
}

function emboss(img: Rgb8Masked, rng: Random): void {
  // IAAEmboss(alpha=(0.2, 0.5), strength=(0.2, 0.7)).
  const alpha = rng.uniform(0.2, 0.5);
  const st = rng.uniform(0.2, 0.7);
  const kernel = new Float32Array([-1 - st, -st, 0, -st, 1, st, 0, st, 1 + st]);
  for (let i = 0; i < 9; i++) kernel[i] = alpha * kernel[i] + (i === 4 ? 1 - alpha : 0);
  convolve(img, kernel, 3);
}

function brightnessContrast(img: Rgb8Masked, rng: Random): void {
  // RandomBrightnessContrast(0.2, 0.2), brightness_by_max: x * (1 + c) + b * 255.
  const alpha = 1 + rng.uniform(-0.2, 0.2);
  const beta = rng.uniform(-0.2, 0.2) * 255;
  for (let i = 0; i < img.data.length; i++) img.data[i] = img.data[i] * alpha + beta;
  clip8(img.data);
}

function hueSaturationValue(img: Rgb8Masked, rng: Random): void {
  // HueSaturationValue(20, 30, 20): OpenCV's 8-bit hue (0..180) shifted by up to 20 (40 degrees), S and V by up to 30, 20.
  const dh = rng.uniform(-20, 20) * 2;
  const ds = rng.uniform(-30, 30);
  const dv = rng.uniform(-20, 20);
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    const [h, sat, v] = rgbToHsv(d[i], d[i + 1], d[i + 2]);
    const [r, g, b] = hsvToRgb(h + dh, Math.max(0, Math.min(255, sat + ds)), Math.max(0, Math.min(255, v + dv)));
    d[i] = r;
    d[i + 1] = g;
    d[i + 2] = b;
  }
  clip8(d);
}

/** One entry of the list: applied with probability p, as albumentations' transforms are. */
interface Transform {
  name: string;
  p: number;
  apply: (img: Rgb8Masked, rng: Random) => void;
}

/** OneOf: one member chosen with probability proportional to its own p, applied for certain. */
function oneOf(name: string, p: number, members: Array<[number, (img: Rgb8Masked, rng: Random) => void]>): Transform {
  const total = members.reduce((a, [w]) => a + w, 0);
  return {
    name,
    p,
    apply: (img, rng) => {
      let r = rng.uniform(0, total);
      for (const [w, f] of members) {
        if (r < w) return f(img, rng);
        r -= w;
      }
      members[members.length - 1][1](img, rng);
    },
  };
}

const box3 = new Float32Array(9).fill(1 / 9);

/**
 * BGAD's / PRNet's `augmentors` list, in order, with albumentations' default probabilities. Approximations
 * (docs/anomaly-synthesis.md): GridDistortion and IAAPiecewiseAffine are drawn as OpticalDistortion (all three are
 * smooth local warps), and CLAHE as RandomBrightnessContrast.
 */
export const LABELLED_AUGMENTERS: readonly Transform[] = [
  {
    name: 'RandomRotate90',
    p: 0.5,
    apply: (img, rng) => {
      const k = rng.int(4);
      const n = img.size - 1;
      remap(img, (x, y) => (k === 0 ? [x, y] : k === 1 ? [n - y, x] : k === 2 ? [n - x, n - y] : [y, n - x]));
    },
  },
  {
    name: 'Flip',
    p: 0.5,
    apply: (img, rng) => {
      const d = rng.int(3) - 1; // cv2.flip code: -1 both, 0 vertical, 1 horizontal
      const n = img.size - 1;
      remap(img, (x, y) => [d !== 0 ? n - x : x, d !== 1 ? n - y : y]);
    },
  },
  { name: 'Transpose', p: 0.5, apply: (img) => remap(img, (x, y) => [y, x]) },
  { name: 'OpticalDistortion', p: 1, apply: (img, rng) => opticalDistortion(img, rng, 1.0, 0.05) },
  oneOf('Noise', 0.2, [
    [1, gaussNoise],
    [1, gaussNoise],
  ]),
  oneOf('Blur', 0.2, [
    [0.2, motionBlur],
    [0.1, medianBlur3],
    [0.1, (img) => convolve(img, box3, 3)],
  ]),
  { name: 'ShiftScaleRotate', p: 0.2, apply: shiftScaleRotate },
  oneOf('Distortion', 0.2, [
    [0.3, (img, rng) => opticalDistortion(img, rng, 0.05, 0.05)],
    [0.1, (img, rng) => opticalDistortion(img, rng, 0.05, 0.05)],
    [0.3, (img, rng) => opticalDistortion(img, rng, 0.05, 0.05)],
  ]),
  oneOf('Contrast', 0.3, [
    [1, brightnessContrast],
    [1, sharpen],
    [1, emboss],
    [1, brightnessContrast],
  ]),
  { name: 'HueSaturationValue', p: 0.3, apply: hueSaturationValue },
];

/** Three distinct entries of LABELLED_AUGMENTERS (np.random.choice(10, 3, replace=False)), each applied with its p. */
export function augmentLabelled(img: Rgb8Masked, rng: Random): string[] {
  const order = [...LABELLED_AUGMENTERS.keys()];
  for (let i = 0; i < 3; i++) {
    const j = i + rng.int(order.length - i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const applied: string[] = [];
  for (const k of order.slice(0, 3)) {
    const t = LABELLED_AUGMENTERS[k];
    if (rng.bool(t.p)) {
      t.apply(img, rng);
      applied.push(t.name);
    }
  }
  return applied;
}

// ---------------------------------------------------------------------------------------------------------------

function toHwc8(image: Float32Array, size: number): Float32Array {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) for (let p = 0; p < plane; p++) out[p * 3 + c] = Math.round(image[c * plane + p] * 255);
  return out;
}

function toChwUnit(data: Float32Array, size: number): Float32Array {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) for (let p = 0; p < plane; p++) out[c * plane + p] = data[p * 3 + c] / 255;
  return out;
}

function maskToFloat(mask: Uint8Array): Float32Array {
  const out = new Float32Array(mask.length);
  for (let i = 0; i < mask.length; i++) out[i] = mask[i] !== 0 ? 1 : 0;
  return out;
}

function aborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw imiadError('Error', 'ABORT_ERR', 'The operation was aborted');
}

/** The user's foreground mask of one normal image: `<root>/<file name>` or `<root>/<stem>.png`, at the image's size. */
async function userForeground(root: string, sample: Sample, geometry: Geometry): Promise<Uint8Array> {
  const base = path.basename(sample.path);
  const candidates = [path.join(root, base), path.join(root, `${path.parse(base).name}.png`)];
  const file = candidates.find((f) => fs.existsSync(f));
  if (file === undefined) {
    throw imiadError('Error', 'ERR_IMIAD_FILE', `Expected a foreground mask for ${sample.path} in --foreground ${root} (${candidates.join(' or ')}) but there is none`);
  }
  const [mask, size] = await Promise.all([readMask(file), readImageSize(sample.path)]);
  if (mask.width !== size.width || mask.height !== size.height) {
    throw imiadError(
      'RangeError',
      'ERR_IMIAD_DIMS',
      `Expected the foreground mask ${file} to be ${size.width}x${size.height} like its image ${sample.path} but it is ${mask.width}x${mask.height}`,
    );
  }
  return maskToCrop(mask, geometry);
}

/** The labelled anomalies and normal images of one fit, decoded at the method's geometry. */
export class LabelledAnomalySampler {
  readonly size: number;
  readonly normals: readonly LabelledImage[];
  readonly anomalies: readonly LabelledImage[];
  readonly foreground: readonly Uint8Array[];
  readonly foregroundSource: 'threshold' | 'folder';

  private constructor(size: number, normals: LabelledImage[], anomalies: LabelledImage[], foreground: Uint8Array[], source: 'threshold' | 'folder') {
    this.size = size;
    this.normals = normals;
    this.anomalies = anomalies;
    this.foreground = foreground;
    this.foregroundSource = source;
  }

  /**
   * Checks everything before decoding: labelled anomalies present and all with masks, the foreground folder (a
   * missing or mis-sized mask is named), the memory budget; then decodes the images, masks and foregrounds.
   */
  static async create(train: Sample[], opts: LabelledAnomalyOptions): Promise<LabelledAnomalySampler> {
    if (!Array.isArray(train)) throw invalidType('array of samples', 'train', train);
    if (!is.object(opts)) throw invalidType('object', 'options', opts);
    const method = is.string(opts.method) && opts.method !== '' ? opts.method : 'This detector';
    if (!is.integer(opts.cropSize) || opts.cropSize < 2 || opts.cropSize > 4096) throw invalidRange('integer between 2 and 4096', 'cropSize', opts.cropSize);
    if (!is.integer(opts.imageSize) || opts.imageSize < opts.cropSize) throw invalidRange(`integer of at least cropSize (${opts.cropSize})`, 'imageSize', opts.imageSize);
    const { normals, anomalies } = requireLabelledAnomalies(method, train, true);
    const root = opts.foregroundRoot;
    if (root !== undefined) {
      if (!is.string(root) || root === '') throw invalidType('a folder of foreground masks', '--foreground', root);
      if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) {
        throw imiadError('Error', 'ERR_IMIAD_FILE', `Expected --foreground to be a folder of foreground masks but ${root} is not a folder`);
      }
    }
    const size = opts.cropSize;
    const plane = size * size;
    requireBudget(`${method}'s decoded training images`, (normals.length + anomalies.length) * plane * 16 + normals.length * plane, opts.memoryBudgetBytes, defaultMemoryBudget());
    const geometryOpts = { imageSize: opts.imageSize, cropSize: size, normalisation: 'unit' as const };

    // The user's foreground masks are all checked before anything is decoded.
    const foreground: Uint8Array[] = [];
    if (root !== undefined) {
      for (const s of normals) {
        aborted(opts.signal);
        const { width, height } = await readImageSize(s.path);
        foreground.push(await userForeground(root, s, geometryFor(width, height, geometryOpts)));
      }
    }
    const decodedNormals: LabelledImage[] = [];
    for (const s of normals) {
      aborted(opts.signal);
      const { tensor } = await prepareImage(s.path, geometryOpts);
      decodedNormals.push({ image: tensor, mask: new Float32Array(plane), source: s.path });
      if (root === undefined) foreground.push(thresholdForeground(tensor, size));
    }
    const decodedAnomalies: LabelledImage[] = [];
    for (const s of anomalies) {
      aborted(opts.signal);
      const { tensor, geometry } = await prepareImage(s.path, geometryOpts);
      const mask = await loadMaskBatch([s.maskPaths], [geometry]);
      decodedAnomalies.push({ image: tensor, mask: maskToFloat(mask), source: s.path });
    }
    return new LabelledAnomalySampler(size, decodedNormals, decodedAnomalies, foreground, root === undefined ? 'threshold' : 'folder');
  }

  private anomalyIndex(i: number): LabelledImage {
    if (!is.integer(i) || i < 0 || i >= this.anomalies.length) throw invalidRange(`integer in [0, ${this.anomalies.length - 1}]`, 'anomaly index', i);
    return this.anomalies[i];
  }

  private augmentedPixels(i: number, rng: Random): Rgb8Masked {
    const a = this.anomalyIndex(i);
    const mask = new Uint8Array(a.mask.length);
    for (let p = 0; p < mask.length; p++) mask[p] = a.mask[p] !== 0 ? 1 : 0;
    const img: Rgb8Masked = { data: toHwc8(a.image, this.size), mask, size: this.size };
    augmentLabelled(img, rng);
    return img;
  }

  /** Real anomaly i under 3 random augmentations (geometric ones move the mask). */
  augmented(i: number, rng: Random): LabelledImage {
    const img = this.augmentedPixels(i, rng);
    return { image: toChwUnit(img.data, this.size), mask: maskToFloat(img.mask), source: this.anomalies[i].source };
  }

  /**
   * BGAD's copy_paste: anomaly i augmented, its defect pixels pasted onto a random normal image inside that image's
   * foreground (moved there region by region when less than 2/3 of the defect lies inside it).
   */
  copyPaste(i: number, rng: Random): LabelledImage {
    const s = this.size;
    const plane = s * s;
    const n = rng.int(this.normals.length);
    const aug = this.augmentedPixels(i, rng);
    const normal = this.normals[n];
    const out = new Float32Array(3 * plane);
    out.set(normal.image);
    const outMask = new Float32Array(plane);
    const source = `${this.anomalies[i].source} pasted on ${normal.source}`;
    const paste = (to: number, from: number): void => {
      for (let c = 0; c < 3; c++) out[c * plane + to] = aug.data[from * 3 + c] / 255;
      outMask[to] = 1;
    };
    const pasteInPlace = (): LabelledImage => {
      for (let p = 0; p < plane; p++) if (aug.mask[p] !== 0) paste(p, p);
      return { image: out, mask: outMask, source };
    };
    const fg = this.foreground[n];
    let area = 0;
    let inside = 0;
    for (let p = 0; p < plane; p++) {
      if (aug.mask[p] === 0) continue;
      area += 1;
      if (fg[p] !== 0) inside += 1;
    }
    if (inside > Math.floor((2 / 3) * area)) return pasteInPlace();
    const { labels, count } = components8(aug.mask, s, s);
    if (count === 0) return pasteInPlace();
    // Per region: centroid and bounding box.
    const sumX = new Float64Array(count + 1);
    const sumY = new Float64Array(count + 1);
    const cnt = new Float64Array(count + 1);
    const minX = new Int32Array(count + 1).fill(s);
    const maxX = new Int32Array(count + 1).fill(-1);
    const minY = new Int32Array(count + 1).fill(s);
    const maxY = new Int32Array(count + 1).fill(-1);
    for (let p = 0; p < plane; p++) {
      const l = labels[p];
      if (l === 0) continue;
      const x = p % s;
      const y = (p - x) / s;
      sumX[l] += x;
      sumY[l] += y;
      cnt[l] += 1;
      minX[l] = Math.min(minX[l], x);
      maxX[l] = Math.max(maxX[l], x);
      minY[l] = Math.min(minY[l], y);
      maxY[l] = Math.max(maxY[l], y);
    }
    let maxW = 0;
    let maxH = 0;
    for (let l = 1; l <= count; l++) {
      maxW = Math.max(maxW, maxX[l] - minX[l]);
      maxH = Math.max(maxH, maxY[l] - minY[l]);
    }
    // Foreground points far enough from the border for the largest region (BGAD's center_mask).
    const hy = Math.floor(maxH / 2);
    const hx = Math.floor(maxW / 2);
    const targets: number[] = [];
    for (let y = hy; y < s - hy; y++) for (let x = hx; x < s - hx; x++) if (fg[y * s + x] !== 0) targets.push(y * s + x);
    if (targets.length === 0) return pasteInPlace();
    for (let l = 1; l <= count; l++) {
      const t = targets[rng.int(targets.length)];
      const tx = t % s;
      const ty = (t - tx) / s;
      const dx = Math.trunc(sumX[l] / cnt[l]) - tx;
      const dy = Math.trunc(sumY[l] / cnt[l]) - ty;
      for (let y = minY[l]; y <= maxY[l]; y++) {
        for (let x = minX[l]; x <= maxX[l]; x++) {
          const p = y * s + x;
          if (labels[p] !== l) continue;
          const nx = x - dx;
          const ny = y - dy;
          if (nx < 0 || nx >= s || ny < 0 || ny >= s) continue;
          paste(ny * s + nx, p);
        }
      }
    }
    return { image: out, mask: outMask, source };
  }
}
