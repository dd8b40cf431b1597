/**
 * `npm run bench -- metrics [--cases memory,files] [--files] [--images 20] [--size 1024] [--limit 0.3] [--repeats 3]`
 *
 * Two cases, each timed in --repeats interleaved rounds against its peer (bench/common.ts measureInterleaved):
 *  - memory: pixel AUROC + AP + AU-PRO of --images anomaly maps of --size x --size with masks, in memory, in one
 *    evaluation (imiad's PixelAccumulator, with its default thread count and with one), against scikit-learn's
 *    roc_auc_score + average_precision_score and a numpy implementation of the official AU-PRO on the same data
 *    (bench/peers/metrics_official.py, reading raw arrays: its reading is not timed); lib/bench/metrics.ts
 *    measureMetricsMemory, the case `imiad bench metrics` runs too.
 *  - files (--files: this case alone): `imiad evaluate` end to end (runEvaluate, lib/cli/evaluate.ts) on an MVTec
 *    layout written to a temporary folder, float32 TIFF maps and PNG masks, against the same Python reading the same
 *    files as the official scripts do (tifffile, PIL; bench/peers/metrics_files.py), reading timed on both sides.
 * The peers need Debian's python3 with numpy, scipy and scikit-learn (and tifffile and PIL for files). The numbers
 * must agree to 1e-6, or the benchmark fails. Target of the files case: imiad >= 20x the peer.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runEvaluate } from '../lib/cli/evaluate';
import {
  type FilesPeerResult, makeData, maxDifference, measureMetricsMemory, METRICS_FILES_PEER_MODULES, METRICS_PEER_MODULES, type Scores, writeLayout,
} from '../lib/bench/metrics';
import {
  type Contender, flag, formatSpread, intFlag, machineInfo, measureInterleaved, peerAvailable, printTable, ratioSpread,
  type Row, runPeer, timed, watchLoad, writeJson,
} from './common';
import { cpuAddon } from '../bindings/load';

export async function main(args: string[]): Promise<void> {
  const count = intFlag(args, 'images', 20);
  const size = intFlag(args, 'size', 1024);
  const limit = Number(flag(args, 'limit', '0.3'));
  const repeats = intFlag(args, 'repeats', 3);
  const cases = args.includes('--files') ? ['files'] : (flag(args, 'cases', 'memory,files') ?? '').split(',');
  const threads = cpuAddon<{ threadCount: () => number }>().threadCount();
  const load = watchLoad('metrics');
  process.stdout.write(`metrics: ${count} maps of ${size} x ${size} (${((count * size * size) / 1e6).toFixed(1)} M pixels), AU-PRO limit ${limit}, ${threads} threads\n`);
  const images = makeData(count, size);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-metrics-'));
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  let failed = false;
  const progressLine = (name: string, r: { ms: number }): void => void process.stdout.write(`  ${name} ${r.ms.toFixed(0)} ms\n`);
  try {
    if (cases.includes('memory')) {
      process.stdout.write('memory: maps and masks in memory\n');
      const withPeer = peerAvailable(METRICS_PEER_MODULES);
      if (!withPeer) process.stdout.write('peer skipped: /usr/bin/python3 lacks numpy, scipy or scikit-learn\n');
      const r = await measureMetricsMemory({ images, limit, repeats, oneThread: true, peerDir: withPeer ? dir : undefined, onRun: (name, ms) => progressLine(name, { ms }) });
      const ours = r.imiad;
      const ours1 = r.imiadOneThread!;
      const peer = r.peer;
      const difference = r.difference;
      const ratio = r.ratio;
      rows.push({
        case: `memory, ${count} maps`,
        'imiad ms': formatSpread(ours.ms),
        'imiad 1T ms': formatSpread(ours1.ms),
        'peer ms': peer ? formatSpread(peer.ms) : null,
        'x peer': ratio ? formatSpread(ratio) : null,
        'x peer 1T': peer ? formatSpread(ratioSpread(peer, ours1)) : null,
        '|difference|': difference,
      });
      results.memory = { imiad: ours.ms, imiadOneThread: ours1.ms, peer: peer?.ms ?? null, ratio, scores: ours.results[0], peerScores: peer?.results[0] ?? null, difference };
      failed ||= difference !== null && difference > 1e-6;
    }
    if (cases.includes('files')) {
      process.stdout.write('files: writing TIFF maps and PNG masks ...\n');
      const root = path.join(dir, 'dataset');
      const maps = path.join(dir, 'maps');
      await writeLayout(images, root, maps);
      const evaluate = async (): Promise<Scores> => {
        const r = (await runEvaluate({ dataset: 'mvtec', root, maps, proLimit: String(limit) })).bench as { pixel_auroc: number; pixel_ap: number; aupro: Record<string, number>; image_auroc: number };
        return { auroc: r.pixel_auroc, ap: r.pixel_ap, aupro: Object.values(r.aupro)[0], imageAuroc: r.image_auroc };
      };
      const contenders: Array<Contender<Scores>> = [{ name: 'imiad evaluate', run: () => timed(evaluate), warmup: 1 }];
      if (peerAvailable(METRICS_FILES_PEER_MODULES)) {
        contenders.push({
          name: 'tifffile + PIL + scikit-learn + official AU-PRO',
          run: () => {
            const p = runPeer<FilesPeerResult>('metrics_files.py', [root, maps, 'bench', String(limit)]);
            return { ms: p.seconds.total * 1000, result: { auroc: p.pixel_auroc, ap: p.pixel_ap, aupro: p.aupro, imageAuroc: p.image_auroc } };
          },
        });
      } else {
        process.stdout.write('peer skipped: /usr/bin/python3 lacks numpy, scipy, scikit-learn, tifffile or PIL\n');
      }
      const [ours, peer] = await measureInterleaved(contenders, repeats, progressLine);
      const difference = peer ? maxDifference(ours.results[0], peer.results[0]) : null;
      const ratio = peer ? ratioSpread(peer, ours) : null;
      rows.push({
        case: `files, ${count} maps`,
        'imiad ms': formatSpread(ours.ms),
        'imiad 1T ms': null,
        'peer ms': peer ? formatSpread(peer.ms) : null,
        'x peer': ratio ? formatSpread(ratio) : null,
        'x peer 1T': null,
        '|difference|': difference,
      });
      results.files = { imiad: ours.ms, peer: peer?.ms ?? null, ratio, targetMet: ratio ? ratio.median >= 20 : null, scores: ours.results[0], peerScores: peer?.results[0] ?? null, difference };
      failed ||= difference !== null && difference > 1e-6;
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(`Pixel AUROC + AP + AU-PRO (files: + image AUROC/AP, reading the files): median (min-max) of ${repeats} interleaved rounds, ms`, rows);
  if (failed) process.stdout.write('\nthe peers\' numbers differ from imiad\'s by more than 1e-6\n');
  writeJson('metrics', { machine: machineInfo(threads), images: count, size, pixels: count * size * size, limit, repeats, load: load.finish(), results });
  if (failed) process.exitCode = 1;
}
