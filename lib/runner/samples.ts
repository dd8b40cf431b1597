/**
 * From a split to what a Detector takes: training Samples labelled as the setting says (noisy: injected anomalies
 * labelled normal, their masks withheld), with few-shot augmented copies written once as PNG files (a Detector
 * reads images from paths), and the test Samples as loaded.
 */
import * as fs from 'fs';
import * as path from 'path';

import sharp from 'sharp';

import type { Sample } from '../datasets/types';
import { entryImage } from '../settings/augment';
import { hashString } from '../settings/random';
import type { CategorySplit } from '../settings/types';

/** Training samples for Detector.fit; augmented copies go to `augmentDir/<category>/` (reused when present). */
export async function trainingSamples(split: CategorySplit, augmentDir: string): Promise<Sample[]> {
  const out: Sample[] = [];
  for (const { entry, sample } of split.train) {
    const seen: Sample = entry.label === sample.label ? sample : { ...sample, label: entry.label, maskPaths: [], defectType: entry.label === 'normal' ? 'good' : sample.defectType };
    if (!entry.augment) {
      out.push(seen);
      continue;
    }
    const name = `${path.basename(entry.path, path.extname(entry.path))}-${entry.augment.kind}-${hashString(entry.path, entry.augment.kind, entry.augment.seed).toString(16)}.png`;
    const file = path.join(augmentDir, split.category, name);
    if (!fs.existsSync(file)) {
      const image = await entryImage(entry);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), { raw: { width: image.width, height: image.height, channels: image.channels as 1 | 2 | 3 | 4 } }).png().toFile(tmp);
      // Rename: a concurrent or killed run never sees a half-written copy.
      fs.renameSync(tmp, file);
    }
    out.push({ ...seen, path: file });
  }
  return out;
}

export function testSamples(split: CategorySplit): Sample[] {
  return split.test.map((t) => t.sample);
}
