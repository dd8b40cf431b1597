/**
 * `npm run bench -- metrics [--images 40] [--size 1024] [--limit 0.3]`: pixel AUROC + AP + AU-PRO of 40 anomaly maps of
 * 1024 x 1024 with masks in one evaluation (imiad's PixelAccumulator), against scikit-learn's roc_auc_score +
 * average_precision_score and a numpy implementation of the official AU-PRO on the same data, when Debian's python3
 * has numpy, scipy and scikit-learn. Checks that the numbers agree and prints the speed-up.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { PixelAccumulator, type MaskedAnomalyMap } from '../lib/metrics';
import { flag, intFlag, machineInfo, peerAvailable, printTable, type Row, runPeer, timeMs, writeJson, xorshift32 } from './common';
import { cpuAddon } from '../bindings/load';

interface PeerResult {
  pixel_auroc: number;
  pixel_ap: number;
  aupro: number;
  seconds: { roc_auc_score: number; average_precision_score: number; official_aupro: number };
}

/** Deterministic test set: a third of the images normal, the rest with 1-4 elliptic defects whose scores are raised. */
function makeData(count: number, size: number): MaskedAnomalyMap[] {
  const next = xorshift32(0x9e3779b9);
  const images: MaskedAnomalyMap[] = [];
  for (let i = 0; i < count; i++) {
    const mask = new Uint8Array(size * size);
    if (i % 3 !== 0) {
      const defects = 1 + Math.floor(next() * 4);
      for (let d = 0; d < defects; d++) {
        const cx = next() * size;
        const cy = next() * size;
        const rx = 4 + next() * size * 0.08;
        const ry = 4 + next() * size * 0.08;
        for (let y = Math.max(0, Math.floor(cy - ry)); y < Math.min(size, Math.ceil(cy + ry)); y++) {
          for (let x = Math.max(0, Math.floor(cx - rx)); x < Math.min(size, Math.ceil(cx + rx)); x++) {
            if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) mask[y * size + x] = 255;
          }
        }
      }
    }
    const map = new Float32Array(size * size);
    for (let p = 0; p < map.length; p++) map[p] = next() + next() + (mask[p] ? 0.9 * next() + 0.3 : 0);
    images.push({ anomalyMap: map, mask, width: size, height: size });
  }
  return images;
}

export async function main(args: string[]): Promise<void> {
  const count = intFlag(args, 'images', 40);
  const size = intFlag(args, 'size', 1024);
  const limit = Number(flag(args, 'limit', '0.3'));
  const threads = cpuAddon<{ threadCount: () => number }>().threadCount();
  process.stdout.write(`metrics: ${count} maps of ${size} x ${size} (${((count * size * size) / 1e6).toFixed(1)} M pixels), AU-PRO limit ${limit}, ${threads} threads\n`);
  const images = makeData(count, size);

  const evaluate = async (): Promise<{ auroc: number; ap: number; aupro: number }> => {
    const acc = new PixelAccumulator();
    await acc.addImages(images);
    const r = await acc.compute({ limits: [limit] });
    return { auroc: r.auroc, ap: r.ap, aupro: r.areaUnderPro[0] };
  };
  const ours = await evaluate();
  const oursMs = await timeMs(evaluate, 3, 0);
  const saved = process.env.IMIAD_THREADS;
  process.env.IMIAD_THREADS = '1';
  const oneThreadMs = await timeMs(evaluate, 1, 0);
  if (saved === undefined) delete process.env.IMIAD_THREADS;
  else process.env.IMIAD_THREADS = saved;

  const rows: Row[] = [{ implementation: `imiad PixelAccumulator (${threads} threads)`, ms: oursMs, pixel_auroc: ours.auroc, pixel_ap: ours.ap, aupro: ours.aupro }];
  rows.push({ implementation: 'imiad PixelAccumulator (1 thread)', ms: oneThreadMs, pixel_auroc: ours.auroc, pixel_ap: ours.ap, aupro: ours.aupro });
  let peer: PeerResult | null = null;
  let peerMs: number | null = null;
  const maxDiff = { auroc: 0, ap: 0, aupro: 0 };
  if (peerAvailable(['numpy', 'scipy', 'sklearn'])) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-metrics-'));
    try {
      const mapsFile = path.join(dir, 'maps.f32');
      const masksFile = path.join(dir, 'masks.u8');
      const mapsFd = fs.openSync(mapsFile, 'w');
      const masksFd = fs.openSync(masksFile, 'w');
      for (const img of images) {
        fs.writeSync(mapsFd, Buffer.from(img.anomalyMap.buffer, img.anomalyMap.byteOffset, img.anomalyMap.byteLength));
        fs.writeSync(masksFd, img.mask as Uint8Array);
      }
      fs.closeSync(mapsFd);
      fs.closeSync(masksFd);
      peer = runPeer<PeerResult>('metrics_official.py', [mapsFile, masksFile, String(count), String(size), String(size), String(limit)]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const sec = peer.seconds;
    peerMs = (sec.roc_auc_score + sec.average_precision_score + sec.official_aupro) * 1000;
    rows.push({ implementation: 'scikit-learn roc_auc_score', ms: sec.roc_auc_score * 1000, pixel_auroc: peer.pixel_auroc, pixel_ap: null, aupro: null });
    rows.push({ implementation: 'scikit-learn average_precision_score', ms: sec.average_precision_score * 1000, pixel_auroc: null, pixel_ap: peer.pixel_ap, aupro: null });
    rows.push({ implementation: 'official compute_pro + trapezoid (numpy)', ms: sec.official_aupro * 1000, pixel_auroc: null, pixel_ap: null, aupro: peer.aupro });
    rows.push({ implementation: 'peers together', ms: peerMs, pixel_auroc: null, pixel_ap: null, aupro: null });
    maxDiff.auroc = Math.abs(ours.auroc - peer.pixel_auroc);
    maxDiff.ap = Math.abs(ours.ap - peer.pixel_ap);
    maxDiff.aupro = Math.abs(ours.aupro - peer.aupro);
  } else {
    process.stdout.write('peer skipped: /usr/bin/python3 lacks numpy, scipy or scikit-learn\n');
  }
  printTable('Pixel AUROC + AP + AU-PRO, one evaluation (median wall time)', rows);
  const speedup = peerMs === null ? null : peerMs / oursMs;
  const equal = peer === null ? null : maxDiff.auroc <= 1e-6 && maxDiff.ap <= 1e-6 && maxDiff.aupro <= 1e-6;
  if (peer !== null) {
    process.stdout.write(
      `\nspeed-up over the peers together: ${(speedup as number).toFixed(1)}x; |difference| auroc ${maxDiff.auroc.toExponential(2)}, ap ${maxDiff.ap.toExponential(2)}, aupro ${maxDiff.aupro.toExponential(2)} -> ${equal ? 'equal to 1e-6' : 'NOT EQUAL'}\n`,
    );
  }
  writeJson('metrics', {
    machine: machineInfo(threads),
    images: count,
    size,
    pixels: count * size * size,
    limit,
    imiad: { ms: oursMs, oneThreadMs, ...ours },
    peer: peer === null ? null : { ms: peerMs, ...peer },
    speedup,
    maxDifference: maxDiff,
    equal,
  });
  if (equal === false) process.exitCode = 1;
}
