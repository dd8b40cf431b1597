/**
 * `npm run bench -- bootstrap [--resamples 1000] [--repeats 5] [--experiments 3]`: what the bootstrap interval of the
 * image AUROC (lib/stats/bootstrap.ts, run by every grid experiment) costs, against what an experiment costs.
 *
 * 1. bootstrapAuroc alone for n test images (20 = the demo's categories, 115 = MVTec AD's mean, up to 5,000).
 * 2. The same PatchCore experiment (the demo's first synthetic category: 20 training and 20 test images at 128 px,
 *    the demo's parameters) run with and without the bootstrap, alternately, median of each.
 * The overhead is reported two ways: the measured bootstrap time over the experiment's time (part 2), and, for each
 * n of part 1, the bootstrap time over n times the experiment's time per test image (a lower bound of an
 * experiment's cost at that size, since fitting is left out).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { loadDataset } from '../lib/datasets';
import { synthesize } from '../lib/datasets/synth';
import { runExperiment } from '../lib/runner/experiment';
import { Random } from '../lib/prng';
import { bootstrapAuroc } from '../lib/stats/bootstrap';
import { intFlag, machineInfo, median, printTable, type Row, timeMs, writeJson } from './common';

export async function main(args: string[]): Promise<void> {
  const resamples = intFlag(args, 'resamples', 1000, 2);
  const repeats = intFlag(args, 'repeats', 5);
  const experiments = intFlag(args, 'experiments', 3);
  process.stdout.write(`bootstrap: ${resamples} resamples, median of ${repeats}; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);

  const rng = new Random(1);
  const alone: Row[] = [];
  for (const n of [20, 115, 500, 1000, 5000]) {
    const labels = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 1 : 0));
    const scores = labels.map((l) => rng.normal() + l);
    const ms = await timeMs(() => bootstrapAuroc(scores, labels, { resamples, seed: 0 }), repeats);
    alone.push({ testImages: n, bootstrapMs: ms, usPerResample: (ms * 1000) / resamples });
  }
  printTable('bootstrapAuroc alone', alone);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-bootstrap-'));
  try {
    await synthesize('mvtec', path.join(dir, 'data'), { categories: 1, size: 128, train: 20, test: 20, seed: 0 });
    const [category] = await loadDataset('mvtec', path.join(dir, 'data'));
    const testImages = category.samples.filter((s) => s.split === 'test').length;
    const run = async (bootstrap: boolean): Promise<number> => {
      const t0 = process.hrtime.bigint();
      await runExperiment({ dataset: 'mvtec', root: path.join(dir, 'data'), category, method: 'patchcore', params: { imageSize: 128, cropSize: 128 }, seed: 0, bootstrap: bootstrap ? { resamples } : false });
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    await run(false); // warm-up: backbone file, sessions
    const withB: number[] = [];
    const without: number[] = [];
    for (let i = 0; i < experiments; i++) {
      without.push(await run(false));
      withB.push(await run(true));
    }
    const experimentMs = median(without);
    const perImage = experimentMs / testImages;
    const bootstrapSmall = alone[0].bootstrapMs as number;
    const measured: Row[] = [
      { run: 'experiment without bootstrap', ms: experimentMs },
      { run: 'experiment with bootstrap', ms: median(withB) },
      { run: `bootstrap alone (${testImages} images)`, ms: bootstrapSmall },
    ];
    printTable(`PatchCore on one synthetic category (${testImages} test images, 128 px), median of ${experiments}`, measured);
    const overhead: Row[] = alone.map((r) => ({
      testImages: r.testImages,
      bootstrapMs: r.bootstrapMs,
      experimentMsAtLeast: perImage * (r.testImages as number),
      overheadPercentAtMost: (100 * (r.bootstrapMs as number)) / (perImage * (r.testImages as number)),
    }));
    printTable(`overhead: bootstrap / (n x ${perImage.toFixed(2)} ms per test image, fitting left out)`, overhead);
    writeJson('bootstrap', { machine: machineInfo(os.cpus().length), loadAverage: os.loadavg(), resamples, alone, experiment: { testImages, withoutMs: without, withMs: withB, perImageMs: perImage }, overhead });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
