/** Hand-built Category objects for the settings, runner and report tests (files need not exist). */
import type { Category, Sample } from '../../lib/datasets/types';

export function makeCategory(name: string, opts: { train: number; testGood: number; defects: Record<string, number>; unmasked?: number }): Category {
  const root = `/data/${name}`;
  const samples: Sample[] = [];
  for (let i = 0; i < opts.train; i++) samples.push({ path: `${root}/train/good/${String(i).padStart(3, '0')}.png`, maskPaths: [], label: 'normal', defectType: 'good', split: 'train' });
  for (let i = 0; i < opts.testGood; i++) samples.push({ path: `${root}/test/good/${String(i).padStart(3, '0')}.png`, maskPaths: [], label: 'normal', defectType: 'good', split: 'test' });
  for (const [type, count] of Object.entries(opts.defects)) {
    for (let i = 0; i < count; i++) {
      const unmasked = i < (opts.unmasked ?? 0);
      samples.push({
        path: `${root}/test/${type}/${String(i).padStart(3, '0')}.png`,
        maskPaths: unmasked ? [] : [`${root}/ground_truth/${type}/${String(i).padStart(3, '0')}_mask.png`],
        label: 'anomaly',
        defectType: type,
        split: 'test',
      });
    }
  }
  return { name, root, samples };
}
