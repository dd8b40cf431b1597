/**
 * Seeded 2-D Perlin noise as DRAEM's perlin.py (rand_perlin_2d_np) computes it, and the bilinear rotation about the
 * image centre (imgaug's Affine(rotate), order 1, constant 0 outside) that turns it, and the textures, around.
 */
import type { Random } from '../prng';

// Module-level bindings: hot loops then avoid global lookups, which are slow inside vm contexts (jest).
const Math = globalThis.Math;

const fade = (t: number): number => t * t * t * (t * (t * 6 - 15) + 10);

/**
 * Perlin noise of `height` x `width` with `resY` x `resX` lattice cells (row-major). As the official: the pixel at
 * row i has the lattice coordinate i * resY / height (its fractional part and cell), gradients are unit vectors at
 * uniform angles on the (resY + 1) x (resX + 1) lattice, drawn row by row; value = sqrt(2) * the faded bilinear
 * blend of the four corner dot products. Sizes that resY / resX do not divide are allowed (the cell is the integer
 * part of the coordinate).
 */
export function perlinNoise(rng: Random, height: number, width: number, resY: number, resX: number): Float32Array {
  const gx = new Float64Array((resY + 1) * (resX + 1));
  const gy = new Float64Array((resY + 1) * (resX + 1));
  for (let i = 0; i < gx.length; i++) {
    const a = 2 * Math.PI * rng.next();
    gx[i] = Math.cos(a);
    gy[i] = Math.sin(a);
  }
  const out = new Float32Array(height * width);
  const stride = resX + 1;
  for (let i = 0; i < height; i++) {
    const u = (i * resY) / height;
    const ci = Math.min(Math.floor(u), resY - 1);
    const fu = u - ci;
    const tu = fade(fu);
    for (let j = 0; j < width; j++) {
      const v = (j * resX) / width;
      const cj = Math.min(Math.floor(v), resX - 1);
      const fv = v - cj;
      const k00 = ci * stride + cj;
      const k10 = k00 + stride;
      const n00 = fu * gx[k00] + fv * gy[k00];
      const n10 = (fu - 1) * gx[k10] + fv * gy[k10];
      const n01 = fu * gx[k00 + 1] + (fv - 1) * gy[k00 + 1];
      const n11 = (fu - 1) * gx[k10 + 1] + (fv - 1) * gy[k10 + 1];
      const tv = fade(fv);
      const a = n00 + tu * (n10 - n00);
      const b = n01 + tu * (n11 - n01);
      out[i * width + j] = Math.SQRT2 * (a + tv * (b - a));
    }
  }
  return out;
}

/**
 * Rotates `channels` interleaved planes (HWC) of height x width by `degrees` about the centre ((w - 1) / 2,
 * (h - 1) / 2), sampling bilinearly; outside the source the value is `fill`. Both signs are drawn by the callers, so
 * the direction convention does not matter.
 */
export function rotate(src: Float32Array, height: number, width: number, channels: number, degrees: number, fill = 0): Float32Array {
  const out = new Float32Array(src.length);
  const r = (degrees * Math.PI) / 180;
  const c = Math.cos(r);
  const s = Math.sin(r);
  const cy = (height - 1) / 2;
  const cx = (width - 1) / 2;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      // Inverse map: the source position of output (x, y).
      const dx = x - cx;
      const dy = y - cy;
      const sx = c * dx + s * dy + cx;
      const sy = -s * dx + c * dy + cy;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const in00 = y0 >= 0 && y0 < height && x0 >= 0 && x0 < width;
      const in01 = y0 >= 0 && y0 < height && x0 + 1 >= 0 && x0 + 1 < width;
      const in10 = y0 + 1 >= 0 && y0 + 1 < height && x0 >= 0 && x0 < width;
      const in11 = y0 + 1 >= 0 && y0 + 1 < height && x0 + 1 >= 0 && x0 + 1 < width;
      const p00 = (y0 * width + x0) * channels;
      const p10 = p00 + width * channels;
      const o = (y * width + x) * channels;
      for (let ch = 0; ch < channels; ch++) {
        const v00 = in00 ? src[p00 + ch] : fill;
        const v01 = in01 ? src[p00 + channels + ch] : fill;
        const v10 = in10 ? src[p10 + ch] : fill;
        const v11 = in11 ? src[p10 + channels + ch] : fill;
        const top = v00 + fx * (v01 - v00);
        const bottom = v10 + fx * (v11 - v10);
        out[o + ch] = top + fy * (bottom - top);
      }
    }
  }
  return out;
}
