/**
 * `npm run bench -- knn_cuda [--rows 1000000] [--dims 1024] [--queries 784,100352] [--k 1,9] [--cpu-queries 784]
 *  [--repeats 1] [--peak-tflops 67]` (also reached as `npm run bench -- knn --device cuda`)
 *
 * Exact k-NN on the GPU (KnnIndex with device: 'cuda') for the shapes: 784 and 100,352 queries against a
 * 1,000,000 x 1024 bank, k = 1 and 9. Reports the time (the bank upload, done by the first search, is timed apart),
 * GFLOP/s counted as 2 * queries * rows * dims, its share of the GPU's fp32 peak (non-tensor; 67 TFLOP/s for an
 * H100/H200 SXM, override with --peak-tflops), and the time of the CPU path (KnnIndex with device: 'cpu') on the
 * first --cpu-queries queries, scaled linearly to all of them, with the GPU's indices checked against the CPU's
 * on those queries. Without a usable GPU it says why and exits 0 having measured nothing.
 */
import { probeCuda } from '../bindings/device';
import { KnnIndex, type KnnResult } from '../lib/index';
import { flag, intFlag, machineInfo, printTable, randomFloats, writeJson, type Row } from './common';

const list = (s: string): number[] => s.split(',').map((v) => Number(v));

/** fp32 (non-tensor) peak in TFLOP/s of the GPUs whose figure is known here, by device name. */
function knownPeakTflops(name: string): number | undefined {
  if (/H200|H100.*(SXM|HBM3)/i.test(name)) return 67;
  if (/H100/i.test(name)) return 51; // PCIe
  if (/A100/i.test(name)) return 19.5;
  return undefined;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

function sameIndices(a: KnnResult, b: KnnResult, count: number): boolean {
  for (let i = 0; i < count; i++) if (a.indices[i] !== b.indices[i]) return false;
  return true;
}

export async function main(args: string[]): Promise<void> {
  const probe = probeCuda();
  if (!probe.usable) {
    process.stdout.write(`knn_cuda: no usable CUDA GPU (${probe.reason}); nothing measured.\n`);
    return;
  }
  const device = probe.device!;
  const rows = intFlag(args, 'rows', 1000000);
  const dims = intFlag(args, 'dims', 1024);
  const queryCounts = list(flag(args, 'queries', '784,100352')!);
  const ks = list(flag(args, 'k', '1,9')!);
  const cpuQueries = intFlag(args, 'cpu-queries', 784, 0);
  const repeats = intFlag(args, 'repeats', 1);
  const peak = Number(flag(args, 'peak-tflops', String(knownPeakTflops(device.name) ?? NaN)));

  process.stdout.write(`knn_cuda: ${device.name} (compute ${device.computeCapability}, ${device.multiprocessors} SMs); `);
  process.stdout.write(`generating a ${rows} x ${dims} bank and ${Math.max(...queryCounts)} queries...\n`);
  const bank = randomFloats(rows * dims, 1);
  const allQueries = randomFloats(Math.max(...queryCounts) * dims, 2);

  const gpuIndex = new KnnIndex(bank, { dims, device: 'cuda' });
  const cpuIndex = new KnnIndex(bank, { dims, device: 'cpu' });
  // The first search uploads the bank (and the CPU index packs its copy): timed apart from the searches.
  const probeQuery = allQueries.subarray(0, dims);
  const upload = await timed(() => gpuIndex.search(probeQuery, 1));
  const pack = await timed(() => cpuIndex.search(probeQuery, 1));

  const table: Row[] = [];
  for (const nq of queryCounts) {
    const queries = allQueries.subarray(0, nq * dims);
    const cpuN = Math.min(nq, cpuQueries);
    for (const k of ks) {
      let gpuMs = Infinity;
      let gpu: KnnResult | undefined;
      for (let r = 0; r < repeats; r++) {
        const run = await timed(() => gpuIndex.search(queries, k));
        if (run.ms < gpuMs) gpuMs = run.ms;
        gpu = run.value;
      }
      const cpu = await timed(() => cpuIndex.search(queries.subarray(0, cpuN * dims), k));
      const cpuMsScaled = (cpu.ms * nq) / cpuN;
      const gflops = (2 * nq * rows * dims) / (gpuMs * 1e6);
      table.push({
        queries: nq,
        rows,
        dims,
        k,
        gpuMs,
        gflops,
        peakPercent: Number.isFinite(peak) ? (100 * gflops) / (peak * 1000) : null,
        cpuMs: cpuMsScaled,
        cpuScaledFrom: cpuN,
        speedup: cpuMsScaled / gpuMs,
        sameIndicesAsCpu: sameIndices(gpu!, cpu.value, cpuN * k),
      });
    }
  }
  printTable(`exact k-NN on ${device.name} vs the CPU path (bank upload ${upload.ms.toFixed(0)} ms, CPU packing ${pack.ms.toFixed(0)} ms)`, table);
  const file = writeJson('knn_cuda', {
    machine: machineInfo(0),
    device,
    peakTflops: Number.isFinite(peak) ? peak : null,
    uploadMs: upload.ms,
    cpuPackMs: pack.ms,
    results: table,
  });
  process.stdout.write(`\nwrote ${file}\n`);
}
