/**
 * Few-shot augmentations (the paper's Sec. IV-D: rotation, flips, scale, translation, colour jitter, perspective).
 * Each variant gets its own parameters drawn from a fresh PRNG stream (seed, variant index), so variant k is the
 * same whatever the count. Geometry is one projective transform (affine part about the image centre, then a
 * torchvision-style perspective of the corners) applied by inverse mapping: bilinear for the image, nearest for
 * the mask, with the same coordinates and the same border rule, so the mask keeps covering the moved defect.
 * Colour jitter (brightness, contrast) touches the image only.
 */
import { invalidRange, invalidType, imiadError } from '../../bindings/errors';
import * as is from '../../bindings/is';
import { Random } from '../prng';
import { toRgb } from './decode';
import type { BinaryMask, RawImage } from './mask';

// Module-level bindings: hot loops then avoid global lookups, which are slow inside vm contexts (jest).
const Math = globalThis.Math;

export interface AugmentSpec {
  /** Rotation drawn uniformly from [-rotation, rotation] degrees. */
  rotation?: number;
  /** Probability of a horizontal flip. */
  hflip?: number;
  /** Probability of a vertical flip. */
  vflip?: number;
  /** Scale drawn uniformly from [min, max]. */
  scale?: [number, number];
  /** Translation drawn uniformly from [-t, t] times the width (x) and height (y). */
  translate?: number;
  /** Brightness factor drawn from [1 - b, 1 + b]. */
  brightness?: number;
  /** Contrast factor drawn from [1 - c, 1 + c], about the image's mean grey level. */
  contrast?: number;
  /** Perspective distortion in [0, 1]: each corner moves inwards by up to this fraction of half the size. */
  perspective?: number;
  /** Pixels that come from outside the image: mirrored ('reflect', default) or a constant grey. */
  border?: 'reflect' | 'constant';
  /** Grey level of 'constant' borders (default 0). */
  borderValue?: number;
}

export interface AugmentParams {
  angle: number;
  hflip: boolean;
  vflip: boolean;
  scale: number;
  translateX: number;
  translateY: number;
  brightness: number;
  contrast: number;
  /** Where the image corners go (top-left, top-right, bottom-right, bottom-left), or null for no perspective. */
  corners: Array<[number, number]> | null;
}

export const IDENTITY: AugmentParams = {
  angle: 0,
  hflip: false,
  vflip: false,
  scale: 1,
  translateX: 0,
  translateY: 0,
  brightness: 1,
  contrast: 1,
  corners: null,
};

function checkSpec(spec: AugmentSpec): void {
  if (!is.object(spec as unknown)) throw invalidType('object', 'spec', spec);
  const nonNeg = (v: unknown, name: string, max = Infinity): void => {
    if (v === undefined) return;
    if (!is.number(v)) throw invalidType(`number between 0 and ${max}`, name, v);
    if (v < 0 || v > max) throw invalidRange(`number between 0 and ${max}`, name, v);
  };
  nonNeg(spec.rotation, 'rotation', 180);
  nonNeg(spec.hflip, 'hflip', 1);
  nonNeg(spec.vflip, 'vflip', 1);
  nonNeg(spec.translate, 'translate', 1);
  nonNeg(spec.brightness, 'brightness', 1);
  nonNeg(spec.contrast, 'contrast', 1);
  nonNeg(spec.perspective, 'perspective', 1);
  if (spec.scale !== undefined) {
    const s = spec.scale;
    if (!Array.isArray(s) || s.length !== 2 || !s.every((v) => is.number(v) && v > 0) || s[0] > s[1]) throw invalidType('[min, max] with 0 < min <= max', 'scale', s);
  }
  if (spec.border !== undefined && spec.border !== 'reflect' && spec.border !== 'constant') throw invalidType("one of 'reflect', 'constant'", 'border', spec.border);
}

/** Draws one variant's parameters. */
export function sampleAugmentation(spec: AugmentSpec, rng: Random, width: number, height: number): AugmentParams {
  checkSpec(spec);
  const p: AugmentParams = { ...IDENTITY };
  // Every draw happens whatever the spec, so switching one augmentation on does not change the others' values.
  const rot = rng.uniform(-1, 1);
  const hf = rng.next();
  const vf = rng.next();
  const sc = rng.next();
  const tx = rng.uniform(-1, 1);
  const ty = rng.uniform(-1, 1);
  const br = rng.uniform(-1, 1);
  const co = rng.uniform(-1, 1);
  const corner = Array.from({ length: 8 }, () => rng.next());
  if (spec.rotation) p.angle = rot * spec.rotation;
  if (spec.hflip) p.hflip = hf < spec.hflip;
  if (spec.vflip) p.vflip = vf < spec.vflip;
  if (spec.scale) p.scale = spec.scale[0] + (spec.scale[1] - spec.scale[0]) * sc;
  if (spec.translate) {
    p.translateX = tx * spec.translate * width;
    p.translateY = ty * spec.translate * height;
  }
  if (spec.brightness) p.brightness = 1 + br * spec.brightness;
  if (spec.contrast) p.contrast = 1 + co * spec.contrast;
  if (spec.perspective) {
    const dx = (spec.perspective * width) / 2;
    const dy = (spec.perspective * height) / 2;
    p.corners = [
      [corner[0] * dx, corner[1] * dy],
      [width - corner[2] * dx, corner[3] * dy],
      [width - corner[4] * dx, height - corner[5] * dy],
      [corner[6] * dx, height - corner[7] * dy],
    ];
  }
  return p;
}

type Mat3 = Float64Array;

function mul(a: Mat3, b: Mat3): Mat3 {
  const out = new Float64Array(9);
  for (let r = 0; r < 3; r++) for (let c = 0; c < 3; c++) out[r * 3 + c] = a[r * 3] * b[c] + a[r * 3 + 1] * b[3 + c] + a[r * 3 + 2] * b[6 + c];
  return out;
}

function invert(m: Mat3): Mat3 {
  const [a, b, c, d, e, f, g, h, i] = m;
  const A = e * i - f * h;
  const B = -(d * i - f * g);
  const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  if (Math.abs(det) < 1e-12) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', 'Expected an invertible augmentation transform but the parameters collapse the image');
  return Float64Array.from([A, -(b * i - c * h), b * f - c * e, B, a * i - c * g, -(a * f - c * d), C, -(a * h - b * g), a * e - b * d]).map((v) => v / det);
}

/** The homography taking the four points `from` onto `to` (direct linear transform, h33 = 1). */
function homography(from: Array<[number, number]>, to: Array<[number, number]>): Mat3 {
  const A: number[][] = [];
  for (let k = 0; k < 4; k++) {
    const [x, y] = from[k];
    const [u, v] = to[k];
    A.push([x, y, 1, 0, 0, 0, -u * x, -u * y, u]);
    A.push([0, 0, 0, x, y, 1, -v * x, -v * y, v]);
  }
  // Gauss-Jordan elimination with partial pivoting on the 8 x 9 augmented system.
  for (let col = 0; col < 8; col++) {
    let pivot = col;
    for (let r = col + 1; r < 8; r++) if (Math.abs(A[r][col]) > Math.abs(A[pivot][col])) pivot = r;
    [A[col], A[pivot]] = [A[pivot], A[col]];
    const div = A[col][col];
    if (Math.abs(div) < 1e-12) throw imiadError('RangeError', 'ERR_IMIAD_RANGE', 'Expected four corners in general position for the perspective transform');
    for (let c = col; c < 9; c++) A[col][c] /= div;
    for (let r = 0; r < 8; r++) {
      if (r === col) continue;
      const f = A[r][col];
      if (f !== 0) for (let c = col; c < 9; c++) A[r][c] -= f * A[col][c];
    }
  }
  return Float64Array.from([A[0][8], A[1][8], A[2][8], A[3][8], A[4][8], A[5][8], A[6][8], A[7][8], 1]);
}

/**
 * The forward transform (input pixel coordinates -> output pixel coordinates, continuous, pixel centres at +0.5):
 * flip, scale and rotate about the image centre, translate, then the perspective of the corners.
 */
export function transformMatrix(p: AugmentParams, width: number, height: number): Mat3 {
  const cx = width / 2;
  const cy = height / 2;
  const rad = (p.angle * Math.PI) / 180;
  const cos = Math.cos(rad) * p.scale;
  const sin = Math.sin(rad) * p.scale;
  const toCentre = Float64Array.from([1, 0, -cx, 0, 1, -cy, 0, 0, 1]);
  const flip = Float64Array.from([p.hflip ? -1 : 1, 0, 0, 0, p.vflip ? -1 : 1, 0, 0, 0, 1]);
  const rotScale = Float64Array.from([cos, -sin, 0, sin, cos, 0, 0, 0, 1]);
  const back = Float64Array.from([1, 0, cx + p.translateX, 0, 1, cy + p.translateY, 0, 0, 1]);
  let m = mul(back, mul(rotScale, mul(flip, toCentre)));
  if (p.corners) {
    const frame: Array<[number, number]> = [
      [0, 0],
      [width, 0],
      [width, height],
      [0, height],
    ];
    m = mul(homography(frame, p.corners), m);
  }
  return m;
}

/**
 * Bilinear sample of an interleaved RGB image at (fx, fy) (pixel centres at integers) into out[o..o+2]; `wrap` maps
 * an index outside [0, n) back inside (the border rule).
 */
export function sampleBilinear(data: ArrayLike<number>, w: number, h: number, fx: number, fy: number, wrap: (i: number, n: number) => number, out: Float32Array, o: number): void {
  const x0 = Math.floor(fx);
  const y0 = Math.floor(fy);
  const ax = fx - x0;
  const ay = fy - y0;
  const xa = wrap(x0, w);
  const xb = wrap(x0 + 1, w);
  const ya = wrap(y0, h);
  const yb = wrap(y0 + 1, h);
  for (let c = 0; c < 3; c++) {
    const p00 = data[(ya * w + xa) * 3 + c];
    const p01 = data[(ya * w + xb) * 3 + c];
    const p10 = data[(yb * w + xa) * 3 + c];
    const p11 = data[(yb * w + xb) * 3 + c];
    out[o + c] = (p00 * (1 - ax) + p01 * ax) * (1 - ay) + (p10 * (1 - ax) + p11 * ax) * ay;
  }
}

function reflectIndex(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * n;
  let k = ((i % period) + period) % period;
  if (k >= n) k = period - 1 - k;
  return k;
}

export interface Augmented {
  image: RawImage;
  mask?: BinaryMask;
  params: AugmentParams;
}

/** Applies one variant's parameters to an image and, with the same geometry, to its mask. */
export function applyAugmentation(input: RawImage, params: AugmentParams, mask?: BinaryMask, spec: Pick<AugmentSpec, 'border' | 'borderValue'> = {}): Augmented {
  const image = toRgb(input);
  const { width: w, height: h } = image;
  if (mask && (mask.width !== w || mask.height !== h)) {
    throw imiadError('RangeError', 'ERR_IMIAD_DIMS', `Expected a ${w}x${h} mask for the ${w}x${h} image but received ${mask.width}x${mask.height}`);
  }
  const reflect = (spec.border ?? 'reflect') === 'reflect';
  const borderValue = spec.borderValue ?? 0;
  const inv = invert(transformMatrix(params, w, h));
  const out = new Float32Array(w * h * 3);
  const outMask = mask ? new Uint8Array(w * h) : undefined;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const X = x + 0.5;
      const Y = y + 0.5;
      const d = inv[6] * X + inv[7] * Y + inv[8];
      const u = (inv[0] * X + inv[1] * Y + inv[2]) / d;
      const v = (inv[3] * X + inv[4] * Y + inv[5]) / d;
      const o = (y * w + x) * 3;
      const inside = u >= 0 && u < w && v >= 0 && v < h;
      if (!inside && !reflect) {
        out[o] = out[o + 1] = out[o + 2] = borderValue;
        continue;
      }
      if (outMask && mask) outMask[y * w + x] = mask.data[reflectIndex(Math.floor(v), h) * w + reflectIndex(Math.floor(u), w)];
      sampleBilinear(image.data, w, h, u - 0.5, v - 0.5, reflectIndex, out, o);
    }
  }
  // Colour jitter: brightness scales, contrast blends with the mean grey level (torchvision's definitions).
  if (params.brightness !== 1) for (let i = 0; i < out.length; i++) out[i] *= params.brightness;
  if (params.contrast !== 1) {
    let sum = 0;
    for (let i = 0; i < w * h; i++) sum += 0.299 * out[i * 3] + 0.587 * out[i * 3 + 1] + 0.114 * out[i * 3 + 2];
    const mean = sum / (w * h);
    for (let i = 0; i < out.length; i++) out[i] = (out[i] - mean) * params.contrast + mean;
  }
  const data = new Uint8Array(out.length);
  for (let i = 0; i < out.length; i++) data[i] = Math.max(0, Math.min(255, Math.round(out[i])));
  return { image: { data, width: w, height: h, channels: 3 }, ...(outMask ? { mask: { data: outMask, width: w, height: h } } : {}), params };
}

/**
 * `count` augmented variants of one image (and its mask). Variant k draws its parameters from
 * new Random(seed).fork('augment', k), fresh for every variant.
 */
export function augmentVariants(image: RawImage, spec: AugmentSpec, opts: { count: number; seed?: number; mask?: BinaryMask }): Augmented[] {
  checkSpec(spec);
  if (!is.integer(opts.count) || opts.count < 0) throw invalidRange('non-negative integer', 'count', opts.count);
  const root = new Random(opts.seed ?? 0);
  return Array.from({ length: opts.count }, (_, k) => {
    const params = sampleAugmentation(spec, root.fork('augment', k), image.width, image.height);
    return applyAugmentation(image, params, opts.mask, spec);
  });
}
