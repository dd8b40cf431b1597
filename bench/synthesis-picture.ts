/**
 * `npm run bench -- synthesis-picture [--out docs/img/synthesis.png] [--size 128] [--seed 0]`: draws DRAEM-style
 * synthetic anomalies (lib/synthesis) on `imiad synth` images and writes them as one PNG: the clean images (top row),
 * the images with the synthetic anomaly (middle) and the masks (bottom). The left four columns use the Perlin field
 * as texture (no texture folder); the right four use a texture folder (here: the images of another synthetic
 * category, standing in for DTD). Every sample has an anomaly (cleanProbability 0) and no rotation of the clean
 * image, so that the picture shows the synthesis; training uses p = 0.5 and 0.3.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { prepareImage } from '../lib/image/pipeline';
import { Random } from '../lib/prng';
import { AnomalySynthesiser } from '../lib/synthesis';
import { flag, intFlag } from './common';

export async function main(args: string[]): Promise<void> {
  const out = flag(args, 'out', path.join('docs', 'img', 'synthesis.png')) as string;
  const size = intFlag(args, 'size', 128, 16);
  const seed = intFlag(args, 'seed', 0, 0);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-synthesis-picture-'));
  try {
    const root = path.join(tmp, 'mvtec');
    await synthesize('mvtec', root, { seed: 5, categories: 2, size, train: 4, test: 2 });
    const [objects, textures] = await loadDataset('mvtec', root);
    const clean = objects.samples.filter((s) => s.split === 'train').map((s) => s.path);
    const perlin = await AnomalySynthesiser.create({ size, cleanProbability: 0, rotateProbability: 0 });
    const folder = await AnomalySynthesiser.create({ size, textureRoot: path.join(textures.root, 'train'), cleanProbability: 0, rotateProbability: 0 });
    const cols = 8;
    const gap = 4;
    const width = cols * size + (cols - 1) * gap;
    const height = 3 * size + 2 * gap;
    const canvas = new Uint8Array(width * height * 3).fill(255);
    const plane = size * size;
    const put = (col: number, row: number, chw: Float32Array, channels: 1 | 3): void => {
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const o = ((row * (size + gap) + y) * width + col * (size + gap) + x) * 3;
          for (let c = 0; c < 3; c++) canvas[o + c] = Math.round(255 * chw[(channels === 1 ? 0 : c) * plane + y * size + x]);
        }
      }
    };
    for (let col = 0; col < cols; col++) {
      const { tensor } = await prepareImage(clean[col % clean.length], { imageSize: size, cropSize: size, resize: 'exact', normalisation: 'unit' });
      const synth = col < cols / 2 ? perlin : folder;
      // Draws until the mask is not empty (a Perlin field can stay below the threshold everywhere).
      let s = await synth.sample(tensor, new Random(seed).fork('picture', col, 0));
      for (let k = 1; !s.hasAnomaly && k < 20; k++) s = await synth.sample(tensor, new Random(seed).fork('picture', col, k));
      put(col, 0, s.clean, 3);
      put(col, 1, s.augmented, 3);
      put(col, 2, s.mask, 1);
    }
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await sharp(canvas, { raw: { width, height, channels: 3 } }).png({ compressionLevel: 9 }).toFile(out);
    process.stdout.write(`wrote ${out} (${width} x ${height})\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
