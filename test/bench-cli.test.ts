/**
 * `imiad bench`: the sweep's JSON (schema and numbers, not timings), the files it writes (JSON, SVG, PNG, the HTML
 * page), the peers found or skipped with a reason, the growth fit and the curve, and the argument errors. Tiny sizes
 * only: these tests check what is measured and written, not how fast.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { runCli } from './helpers/cli';
import { probeCuda } from '../bindings/device';
import { peerAvailable } from '../lib/bench/common';
import { makeData } from '../lib/bench/metrics';
import { growthExponent, scalingSvg } from '../lib/bench/scaling';
import { findPeer, installHint } from '../lib/bench/suite';
import { PixelAccumulator } from '../lib/metrics';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-bench-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number[];
}
interface Point {
  size: number;
  contenders: Record<string, Spread>;
  speedup: Record<string, Spread>;
  checks: Record<string, number | string | boolean | null>;
}
interface Kernel {
  kernel: string;
  size: string;
  device: string;
  repeats: number;
  parameters: Record<string, number | string>;
  peers: Array<{ name: string; found: boolean; missing: string[]; reason?: string; install?: string }>;
  points: Point[];
  growth: Record<string, { exponent: number | null; r2: number | null; points: number }>;
  load: { cores: number; loadStart: number[]; busy: boolean };
  files: { json: string; svg: string; png: string | null };
}
interface Run {
  tool: string;
  version: string;
  machine: { cpu: string; cores: number; threads: number };
  page: string;
  kernels: Kernel[];
  skipped: Array<{ kernel: string; reason: string }>;
}

function expectSpread(s: Spread, rounds: number): void {
  expect(s.runs).toHaveLength(rounds);
  expect(s.min).toBe(Math.min(...s.runs));
  expect(s.max).toBe(Math.max(...s.runs));
  expect(s.runs).toContain(s.median);
  for (const v of s.runs) expect(v).toBeGreaterThan(0);
}

describe('imiad bench knn', () => {
  const out = path.join(tmp, 'knn');
  const jsonFile = path.join(tmp, 'knn-run.json');
  let result: { code: number; stdout: string; stderr: string };
  let run: Run;

  beforeAll(async () => {
    result = await runCli(['bench', 'knn', '--sizes', '512,256,1024', '--dims', '8', '--queries', '16', '--repeats', '2', '--device', 'cpu', '--out', out, '--json', jsonFile]);
    run = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as Run;
  }, 120000);

  test('prints the table with the growth exponents and the load, and writes the JSON', () => {
    expect(result.stderr).not.toMatch(/Error/);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Exact k-NN \(L2\), 16 queries x 8 dims, k = 1, on the CPU/m);
    expect(result.stdout).toMatch(/^bank rows +imiad ms/m);
    expect(result.stdout).toMatch(/^growth \(time ~ N\^b, least squares over the sizes\): imiad ~ N\^-?\d+\.\d\d \(R\^2 \d\.\d{3}\)/m);
    expect(result.stdout).toMatch(/^load average \d+\.\d\d -> \d+\.\d\d on \d+ cores/m);
    expect(result.stdout).toContain(`JSON written to ${jsonFile}`);
    expect(result.stderr).toMatch(/bench knn: load average \(1 \/ 5 \/ 15 min\) at start/);
  });

  test('the JSON: the sizes in order, every contender with one time per round, the fit over the sizes', () => {
    expect(run.tool).toBe('imiad bench');
    expect(run.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(run.machine.cores).toBe(os.cpus().length);
    expect(run.kernels).toHaveLength(1);
    expect(run.skipped).toEqual([]);
    const k = run.kernels[0];
    expect(k).toMatchObject({ kernel: 'knn', size: 'bank rows', device: 'cpu', repeats: 2, parameters: { queries: 16, dims: 8, k: 1 } });
    expect(k.points.map((p) => p.size)).toEqual([256, 512, 1024]);
    for (const p of k.points) expectSpread(p.contenders.imiad, 2);
    expect(k.growth.imiad.points).toBe(3);
    expect(typeof k.growth.imiad.exponent).toBe('number');
    expect(k.load.cores).toBe(os.availableParallelism());
    // The fit is the least-squares slope of the medians printed.
    const expected = growthExponent(k.points.map((p) => ({ size: p.size, ms: p.contenders.imiad.median })));
    expect(k.growth.imiad.exponent).toBeCloseTo(expected.exponent as number, 10);
  });

  test('faiss runs when python3 has it, with the same neighbours; otherwise it is skipped saying how to install it', () => {
    const k = run.kernels[0];
    expect(k.peers).toHaveLength(1);
    const faiss = k.peers[0];
    expect(faiss.name).toBe('faiss');
    if (peerAvailable(['faiss', 'numpy'])) {
      expect(faiss).toEqual({ name: 'faiss', found: true, missing: [] });
      for (const p of k.points) {
        expectSpread(p.contenders.faiss, 2);
        expect(p.speedup.faiss.runs).toHaveLength(2);
        // Per round: the peer's time over imiad's.
        p.speedup.faiss.runs.forEach((v, i) => expect(v).toBeCloseTo(p.contenders.faiss.runs[i] / p.contenders.imiad.runs[i], 10));
        expect(p.checks['faiss: queries with other neighbours']).toBe(0);
      }
      expect(result.stdout).toMatch(/^peer faiss: ran$/m);
    } else {
      expect(faiss.found).toBe(false);
      expect(faiss.install).toContain('python3-faiss');
      expect(result.stdout).toMatch(/^peer faiss: skipped \(/m);
    }
  });

  test('writes <kernel>.json, the curve as SVG and PNG, and the HTML page', () => {
    const k = run.kernels[0];
    expect(k.files).toEqual({ json: path.join(out, 'knn.json'), svg: path.join(out, 'knn.svg'), png: path.join(out, 'knn.png') });
    const saved = JSON.parse(fs.readFileSync(k.files.json, 'utf8')) as Kernel;
    expect(saved.points).toEqual(k.points);
    const svg = fs.readFileSync(k.files.svg, 'utf8');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect((svg.match(/<polyline /g) ?? []).length).toBe(Object.keys(k.growth).length);
    expect(svg).toContain(`imiad ~ N^${(k.growth.imiad.exponent as number).toFixed(2)}`);
    const png = fs.readFileSync(k.files.png as string);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(run.page).toBe(path.join(out, 'index.html'));
    const html = fs.readFileSync(run.page, 'utf8');
    expect(html).toContain('<section id="knn">');
    expect(html).toContain('<svg xmlns');
    expect(html).toContain('<td>1024</td>');
  });
});

describe('imiad bench: other kernels, peers, JSON on stdout', () => {
  test('metrics: the numbers are PixelAccumulator\'s on the same maps, the JSON alone on stdout', async () => {
    const r = await runCli(['bench', 'metrics', '--sizes', '3,2', '--image-size', '32', '--repeats', '1', '--peers', 'none', '--out', path.join(tmp, 'metrics'), '--json']);
    expect(r.code).toBe(0);
    const run = JSON.parse(r.stdout) as Run;
    const k = run.kernels[0];
    expect(k).toMatchObject({ kernel: 'metrics', size: 'anomaly maps', parameters: { side: 32, limit: 0.3 } });
    expect(k.peers).toEqual([{ name: 'scikit-learn + official AU-PRO', found: false, missing: [], reason: '--peers none' }]);
    expect(k.points.map((p) => p.size)).toEqual([2, 3]);
    const images = makeData(3, 32);
    for (const p of k.points) {
      expect(Object.keys(p.contenders)).toEqual(['imiad']);
      expect(p.speedup).toEqual({});
      const acc = new PixelAccumulator();
      await acc.addImages(images.slice(0, p.size));
      const expected = await acc.compute({ limits: [0.3] });
      expect(p.checks['pixel AUROC']).toBe(expected.auroc);
      expect(p.checks['pixel AP']).toBe(expected.ap);
      expect(p.checks['AU-PRO 0.3']).toBe(expected.areaUnderPro[0]);
      expect(expected.auroc).toBeGreaterThan(0.6);
    }
  }, 120000);

  test('coreset: 10 % of each size, and the torch peers compared selection by selection when found', async () => {
    const out = path.join(tmp, 'coreset');
    const r = await runCli(['bench', 'coreset', '--sizes', '200,400', '--dims', '4', '--repeats', '1', '--out', out, '--json', path.join(out, 'run.json')]);
    expect(r.code).toBe(0);
    const k = (JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')) as Run).kernels[0];
    expect(k).toMatchObject({ kernel: 'coreset', size: 'rows', parameters: { dims: 4, fraction: 0.1, data: 'patch' } });
    expect(k.points.map((p) => p.size)).toEqual([200, 400]);
    expect(k.peers.map((p) => p.name)).toEqual(['torch strong', 'torch reference']);
    if (peerAvailable(['torch', 'numpy'])) {
      for (const p of k.points) {
        expect(Object.keys(p.contenders)).toEqual(['imiad', 'torch strong', 'torch reference']);
        for (const name of ['torch strong', 'torch reference']) expect(p.checks[`${name}: same selection`]).toMatch(/^(yes|from \d+)$/);
      }
      expect(Object.keys(k.growth)).toEqual(['imiad', 'torch strong', 'torch reference']);
    } else {
      expect(k.peers[0].install).toContain('python3-torch');
    }
  }, 180000);

  test('knn-queries: the bank fixed (--rows), the queries swept', async () => {
    const out = path.join(tmp, 'knn-queries');
    const r = await runCli(['bench', 'knn-queries', '--sizes', '8,32', '--rows', '300', '--dims', '4', '--repeats', '1', '--out', out, '--json', '-']);
    expect(r.code).toBe(0);
    const k = (JSON.parse(r.stdout) as Run).kernels[0];
    expect(k).toMatchObject({ kernel: 'knn-queries', size: 'queries', parameters: { rows: 300, dims: 4, k: 1 } });
    expect(k.points.map((p) => p.size)).toEqual([8, 32]);
    if (k.peers[0].found) for (const p of k.points) expect(p.checks['faiss: queries with other neighbours']).toBe(0);
    expect(fs.existsSync(path.join(out, 'knn-queries.svg'))).toBe(true);
  }, 60000);

  test('a Python without the modules: the peer is skipped, naming what is missing and how to install it', async () => {
    const saved = process.env.IMIAD_PEER_PYTHON;
    process.env.IMIAD_PEER_PYTHON = path.join(tmp, 'no-such-python');
    try {
      expect(findPeer('faiss', ['faiss', 'numpy'], 'auto')).toEqual({
        name: 'faiss',
        found: false,
        missing: ['faiss', 'numpy'],
        reason: `no Python at ${path.join(tmp, 'no-such-python')}`,
        install: 'sudo apt-get install python3-faiss python3-numpy (or pip install faiss-cpu numpy and set IMIAD_PEER_PYTHON to that python)',
      });
      const out = path.join(tmp, 'nopython');
      const r = await runCli(['bench', 'knn', '--sizes', '64', '--dims', '4', '--queries', '4', '--repeats', '1', '--out', out]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`peer faiss: skipped (no Python at ${path.join(tmp, 'no-such-python')}); to run it: sudo apt-get install python3-faiss python3-numpy`);
      // One size: no exponent.
      expect(r.stdout).toContain('imiad n/a (one size)');
    } finally {
      if (saved === undefined) delete process.env.IMIAD_PEER_PYTHON;
      else process.env.IMIAD_PEER_PYTHON = saved;
    }
    expect(installHint(['sklearn', 'PIL'])).toBe('sudo apt-get install python3-sklearn python3-pil (or pip install scikit-learn pillow and set IMIAD_PEER_PYTHON to that python)');
  }, 60000);
});

describe('imiad bench all', () => {
  test('every kernel into one folder and one page; without the training addon, train is skipped with the reason', async () => {
    const saved = process.env.IMIAD_TRAIN_ADDON;
    const addon = path.join(tmp, 'no-addon.node');
    process.env.IMIAD_TRAIN_ADDON = addon;
    const out = path.join(tmp, 'all');
    try {
      const r = await runCli(['bench', 'all', '--sizes', '16,32', '--dims', '8', '--queries', '8', '--rows', '64', '--image-size', '64', '--repeats', '1', '--peers', 'none', '--device', 'cpu', '--out', out, '--json', path.join(out, 'run.json')]);
      expect(r.code).toBe(0);
      const run = JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')) as Run;
      expect(run.kernels.map((k) => k.kernel)).toEqual(['knn', 'knn-queries', 'coreset', 'metrics', 'patchcore']);
      expect(run.skipped).toEqual([{ kernel: 'train', reason: expect.stringContaining(`not available (${addon}: not built)`) }]);
      expect(r.stderr).toContain('bench train: skipped: Trained detectors need');
      for (const k of run.kernels) {
        expect(k.points).toHaveLength(2);
        for (const f of [k.files.json, k.files.svg]) expect(fs.existsSync(f)).toBe(true);
      }
      // PatchCore's curve is against the memory bank: 10 % of the training patches, more with more images.
      const pc = run.kernels.find((k) => k.kernel === 'patchcore')!;
      expect(pc.points.map((p) => p.checks['training images'])).toEqual([16, 32]);
      expect(pc.points[1].size).toBeGreaterThan(pc.points[0].size);
      const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
      expect((html.match(/<section id="([\w-]+)">/g) ?? []).map((m) => m.slice(13, -2))).toEqual(['knn', 'knn-queries', 'coreset', 'metrics', 'patchcore']);
      expect((html.match(/<svg /g) ?? []).length).toBe(5);
    } finally {
      if (saved === undefined) delete process.env.IMIAD_TRAIN_ADDON;
      else process.env.IMIAD_TRAIN_ADDON = saved;
    }
  }, 180000);
});

describe('growth exponent and curve', () => {
  test('the least-squares slope in log-log space, R^2 from three sizes, none from one', () => {
    const pts = [1000, 4000, 16000].map((size) => ({ size, ms: 3e-4 * size ** 1.5 }));
    const g = growthExponent(pts);
    expect(g.exponent).toBeCloseTo(1.5, 10);
    expect(g.r2).toBeCloseTo(1, 10);
    expect(g.points).toBe(3);
    expect(growthExponent(pts.slice(0, 2))).toEqual({ exponent: expect.closeTo(1.5, 10), r2: null, points: 2 });
    expect(growthExponent([{ size: 10, ms: 1 }])).toEqual({ exponent: null, r2: null, points: 1 });
    // Noisy times: the slope of the fit through (log 1, log 1), (log 10, log 20), (log 100, log 100) is 1, R^2 < 1.
    const noisy = growthExponent([{ size: 1, ms: 1 }, { size: 10, ms: 20 }, { size: 100, ms: 100 }]);
    expect(noisy.exponent).toBeCloseTo(1, 10);
    expect(noisy.r2).toBeLessThan(1);
  });

  test('the SVG: one line and marker per point of each series, decade ticks, a legend with the exponents', () => {
    const svg = scalingSvg('t <&>', 'rows', [
      { name: 'imiad', points: [{ size: 100, ms: 1 }, { size: 1000, ms: 10 }] },
      { name: 'faiss', points: [{ size: 100, ms: 2 }, { size: 1000, ms: 200 }] },
    ]);
    expect(svg).toContain('t &lt;&amp;&gt;');
    expect((svg.match(/<polyline /g) ?? []).length).toBe(2);
    expect((svg.match(/<circle /g) ?? []).length).toBe(4);
    expect(svg).toContain('imiad ~ N^1.00');
    expect(svg).toContain('faiss ~ N^2.00');
    expect(svg).toContain('>1k</text>');
    expect(svg).toContain('rows (log)');
  });
});

describe('imiad bench: argument errors name the argument', () => {
  const cases: Array<[string[], string]> = [
    [['bench', 'faiss'], 'imiad: Expected one of knn, knn-queries, coreset, metrics, patchcore, train, all for <kernel> but received faiss of type string\n'],
    [['bench', 'knn', '--sizes', '1024,x'], 'imiad: Expected positive integers separated by commas for --sizes but received 1024,x of type string\n'],
    [['bench', 'knn', '--sizes', '0'], 'imiad: Expected positive integers separated by commas for --sizes but received 0 of type string\n'],
    [['bench', 'knn', '--repeats', '0'], 'imiad: Expected a positive integer for --repeats but received 0 of type string\n'],
    [['bench', 'knn-queries', '--rows', '-3'], 'imiad: Expected a positive integer for --rows but received -3 of type string\n'],
    [['bench', 'knn', '--dims', '1.5'], 'imiad: Expected a positive integer for --dims but received 1.5 of type string\n'],
    [['bench', 'knn', '--peers', 'some'], 'imiad: Expected auto or none for --peers but received some of type string\n'],
    [['bench', 'coreset', '--sizes', '5'], 'imiad: Expected integers >= 10 for --sizes of bench coreset but received 5 of type number\n'],
  ];
  test.each(cases)('%j', async (args, message) => {
    const r = await runCli([...args, '--device', 'cpu', '--out', path.join(tmp, 'errors')]);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('imiad:')).join('\n') + '\n').toBe(message);
  });

  test('--device cuda without a usable GPU is an error saying why', async () => {
    if (probeCuda().usable) return;
    const r = await runCli(['bench', 'knn', '--device', 'cuda', '--sizes', '64', '--out', path.join(tmp, 'errors')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^imiad: .*CUDA/m);
  });

  test('bench train without the training addon says how to build it', async () => {
    const saved = process.env.IMIAD_TRAIN_ADDON;
    process.env.IMIAD_TRAIN_ADDON = path.join(tmp, 'no-addon.node');
    try {
      const r = await runCli(['bench', 'train', '--sizes', '2', '--out', path.join(tmp, 'errors')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`imiad: Trained detectors need imiad's libtorch training addon, which is not available (${path.join(tmp, 'no-addon.node')}: not built)`);
    } finally {
      if (saved === undefined) delete process.env.IMIAD_TRAIN_ADDON;
      else process.env.IMIAD_TRAIN_ADDON = saved;
    }
  });
});
