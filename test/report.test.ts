import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { continualMatrices, reportData, statisticalComparisons, tableIX, tableVI, tableVII, tableX, tableXI, tableXIII, toCsv, toHtml, toLatex, toMarkdown, writeReport, tableVIII } from '../lib/report';
import { aggregate, metric } from '../lib/report/data';
import { ResultsStore } from '../lib/runner/store';
import { runCli } from './helpers/cli';
import { makeRow, storeRows } from './helpers/rows';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-report-'));
afterAll(() => process.env.IMIAD_KEEP_REPORT ? undefined : fs.rmSync(tmp, { recursive: true, force: true }));

describe('tables', () => {
  const data = reportData(storeRows());
  test('Table VI: mean over seeds then categories, best bold and second underlined per row', () => {
    const t = tableVI(data)!;
    expect(t.header).toEqual(['Dataset', 'Metric', 'padim', 'patchcore', 'spade']);
    const md = toMarkdown(t);
    // patchcore bottle: seeds 0.95 and 0.97 -> 0.96; cable 0.85 -> 0.905. spade: (0.9 + 0.8) / 2 = 0.85. padim: 0.8.
    expect(md).toContain('| MVTec AD | Image AUC | 0.800 | **0.905** | <u>0.850</u> |');
    expect(md).toContain('| MVTec LOCO AD | Mean sPRO | 0.550 | **0.650** | <u>0.600</u> |');
    expect(md).not.toContain('MVTec LOCO AD | Pixel PRO');
    expect(toLatex(t)).toContain('MVTec AD & Image AUC & 0.800 & \\textbf{0.905} & \\underline{0.850} \\\\');
    expect(toCsv(t).split('\n')[1]).toBe('MVTec AD,Image AUC,0.800,0.905,0.850,patchcore:best; spade:second');
    expect(toHtml(t)).toContain('<td>0.800</td><td class="best"><strong>0.905</strong></td><td class="second"><u>0.850</u></td>');
  });
  test('Table VII: LOCO logical / structural / mean', () => {
    expect(toMarkdown(tableVII(data)!)).toContain('| patchcore | **0.650** | **0.850** | **0.750** | **0.550** | **0.750** | **0.650** |');
  });
  test('Table VIII: supervised per category, with the note on ignored anomalies', () => {
    const [t] = tableVIII(data);
    expect(t.header).toEqual(['Method', 'Metric', 'bottle', 'Mean']);
    expect(toMarkdown(t)).toContain('| patchcore | Image AUC | **0.970** | **0.970** |');
    expect(t.notes).toEqual(['Ignores the labelled anomalies (trains on the normal images only): padim.']);
  });
  test('Table VIII: the supervised detectors (DevNet, DRA) get image AUROC rows, with the note that they score images only', () => {
    const sup = { name: 'supervised' as const, anomalies: 10 };
    const pixel = (a: number): Record<string, number | null> => ({ imageAUROC: a, pixelAUROC: a - 0.05, pixelAP: a / 2, pixelPRO: a - 0.1 });
    const imageOnly = (a: number): Record<string, number | null> => ({ imageAUROC: a, pixelAUROC: null, pixelAP: null, pixelPRO: null });
    const rows = [
      makeRow({ method: 'patchcore', category: 'bottle', setting: sup, metrics: pixel(0.9) }),
      makeRow({ method: 'patchcore', category: 'cable', setting: sup, metrics: pixel(0.8) }),
      makeRow({ method: 'devnet', category: 'bottle', setting: sup, metrics: imageOnly(0.95) }),
      makeRow({ method: 'devnet', category: 'cable', setting: sup, metrics: imageOnly(0.85) }),
      makeRow({ method: 'dra', category: 'bottle', setting: sup, metrics: imageOnly(0.97) }),
      makeRow({ method: 'dra', category: 'cable', setting: sup, metrics: imageOnly(0.87) }),
    ];
    const [t] = tableVIII(reportData(rows));
    const md = toMarkdown(t);
    expect(md).toContain('| devnet | Image AUC | <u>0.950</u> | <u>0.850</u> | <u>0.900</u> |');
    expect(md).toContain('| dra | Image AUC | **0.970** | **0.870** | **0.920** |');
    expect(md).toContain('| patchcore | Pixel AUC |');
    expect(md).not.toContain('| devnet | Pixel');
    expect(md).not.toContain('| dra | Pixel');
    expect(t.notes).toEqual(['Image-level only (no anomaly maps, so no pixel metrics): devnet, dra.']);
  });
  test('Table IX: shots x augmentation, marked within each shot group', () => {
    const [t] = tableIX(data);
    expect(t.header).toEqual(['Shots', 'Method', 'Vanilla', 'Rotation']);
    expect(t.rows).toHaveLength(12);
    expect(toMarkdown(t)).toContain('| 8 | patchcore | **0.830** | **0.880** |');
    expect(toMarkdown(t)).toContain('| 8 | spade | <u>0.780</u> | <u>0.830</u> |');
  });
  test('Table X: noise ratios, cap reported', () => {
    const t = tableX(data)!;
    expect(t.header).toEqual(['Method', '0.05', '0.1', '0.15', '0.2']);
    expect(toMarkdown(t)).toContain('| patchcore | **0.925** | **0.900** | **0.875** | **0.850** |');
    expect(t.notes).toEqual(['Capped at 75 % of the test anomalies (achieved ratio below the requested one): mvtec/bottle at 0.2.']);
  });
  test('Table XI: final value and FM (lower FM is best)', () => {
    const t = tableXI(data)!;
    expect(t.header).toEqual(['Method', 'Image AUC', 'FM']);
    // FM = base - (base - 0.3) = 0.3 for all: a three-way tie is all best. Final = (base - 0.3 + base) / 2.
    expect(toMarkdown(t)).toContain('| patchcore | **0.800** | **0.300** |');
    expect(toMarkdown(t)).toContain('| spade | <u>0.750</u> | **0.300** |');
    expect(t.notes).toEqual([
      'Accumulating (the memory grows with each task: memory-bank rows, or one Gaussian per task): patchcore, spade.',
      'Running statistics (Gaussians updated with each task, equal to a refit on the union of the tasks): padim.',
    ]);
    const matrix = continualMatrices(data).find((m) => m.slug === 'table-XI-matrix-mvtec-patchcore')!;
    expect(toMarkdown(matrix).split('\n').slice(2, 7)).toEqual([
      '| After task | bottle | cable | FM |',
      '| --- | ---: | ---: | ---: |',
      '| 1: bottle | 0.950 | - | - |',
      '| 2: cable | 0.650 | 0.950 | - |',
      '| FM | 0.300 | - | 0.300 |',
    ]);
  });
  test('Table XIII: uniform view', () => {
    const [t] = tableXIII(data);
    expect(t.header).toEqual(['Metric', 'Method', 'Vanilla', 'Noisy-0.15', 'Few-shot-8', 'Continual', 'Mean']);
    expect(toMarkdown(t)).toContain('| Image AUC ↑ | patchcore | **0.905** | **0.875** | **0.830** | **0.800** | **0.852** |');
  });
});

describe('writeReport', () => {
  test('writes Markdown, CSV, LaTeX, HTML and SVG/PNG figures, with heatmaps embedded', async () => {
    const storeDir = path.join(tmp, 'store');
    const rows = storeRows();
    // Heatmap PNGs for the vanilla bottle rows, as the runner saves them.
    for (const r of rows.filter((x) => x.config.setting.name === 'vanilla' && x.config.category === 'bottle' && x.config.dataset === 'mvtec')) {
      const dir = path.join(storeDir, 'heatmaps', r.key);
      fs.mkdirSync(dir, { recursive: true });
      for (const kind of ['image', 'mask', 'overlay']) {
        await sharp({ create: { width: 16, height: 16, channels: 3, background: kind === 'mask' ? '#fff' : '#f80' } }).png().toFile(path.join(dir, `0-${kind}.png`));
      }
      r.heatmaps = [{ sample: '/data/bottle/test/broken/000.png', defectType: 'broken', image: `heatmaps/${r.key}/0-image.png`, mask: `heatmaps/${r.key}/0-mask.png`, overlay: `heatmaps/${r.key}/0-overlay.png` }];
    }
    const out = path.join(tmp, 'report');
    const report = await writeReport(rows, storeDir, out);
    expect(report.tables.map((t) => t.slug)).toEqual(['table-VI', 'table-VII', 'table-VIII-mvtec', 'table-IX-mvtec', 'table-X', 'table-XI', 'table-XI-matrix-mvtec-padim', 'table-XI-matrix-mvtec-patchcore', 'table-XI-matrix-mvtec-spade', 'table-XIII-mvtec', 'table-stats-vanilla']);
    expect(report.figures.map((f) => f.slug)).toEqual(['fig2-mvtec', 'fig2-loco', 'fig3-mvtec', 'fig4-mvtec', 'fig-cd-vanilla']);
    for (const t of report.tables) for (const ext of ['md', 'csv', 'tex']) expect(fs.existsSync(path.join(out, 'tables', `${t.slug}.${ext}`))).toBe(true);
    for (const f of report.figures) {
      const png = await sharp(path.join(out, 'figures', `${f.slug}.png`)).metadata();
      expect(png.format).toBe('png');
      expect(png.width).toBeGreaterThan(100);
    }
    const fig2 = fs.readFileSync(path.join(out, 'figures', 'fig2-mvtec.svg'), 'utf8');
    expect(fig2.match(/<circle class="point"/g)).toHaveLength(3);
    // Circle radius grows with memory: spade (400 MB) > patchcore (200 MB) > padim (50 MB).
    const radius = (m: string): number => Number(new RegExp(`r="([0-9.]+)"[^>]*><title>${m}:`).exec(fig2)![1]);
    expect(radius('spade')).toBeGreaterThan(radius('patchcore'));
    expect(radius('patchcore')).toBeGreaterThan(radius('padim'));
    const fig3 = fs.readFileSync(path.join(out, 'figures', 'fig3-mvtec.svg'), 'utf8');
    expect(fig3.match(/<image class="heatmap"/g)).toHaveLength(5);
    expect(fig3).toContain('href="data:image/png;base64,');
    const fig4 = fs.readFileSync(path.join(out, 'figures', 'fig4-mvtec.svg'), 'utf8');
    expect(fig4.match(/<polyline class="series"/g)).toHaveLength(3);
    const html = fs.readFileSync(report.html, 'utf8');
    expect(html.match(/<table id=/g)).toHaveLength(11);
    expect(html.match(/<figure id=/g)).toHaveLength(5);
    const cd = fs.readFileSync(path.join(out, 'figures', 'fig-cd-vanilla.svg'), 'utf8');
    expect(cd.match(/class="cd-method"/g)).toHaveLength(3);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    const md = fs.readFileSync(report.markdown, 'utf8');
    expect(md).toContain('![Fig. 2 (MVTec AD)');
    expect(md).toContain('**Table XI.**');
  });
  test('an empty store gives a report that says so', async () => {
    const report = await writeReport([], tmp, path.join(tmp, 'empty'));
    expect(report.tables).toEqual([]);
    expect(fs.readFileSync(report.html, 'utf8')).toContain('The store holds no results yet.');
  });
});

describe('statistical comparison (Friedman, Nemenyi, Wilcoxon-Holm)', () => {
  // Vanilla has 3 blocks (mvtec/bottle, mvtec/cable, loco/breakfast_box); every other setting one category only.
  const data = reportData(storeRows());
  const { comparisons, tables, figures } = statisticalComparisons(data, { control: 'patchcore' });
  test('one table and one CD diagram per setting with 2 methods and 2 blocks; a test per metric with complete blocks', () => {
    expect(tables.map((t) => t.slug)).toEqual(['table-stats-vanilla']);
    expect(figures.map((f) => f.slug)).toEqual(['fig-cd-vanilla']);
    // pixelPRO: MVTec AD only (LOCO stores none); sPRO: one LOCO category, too few blocks.
    expect(comparisons.map((c) => [c.metric, c.blocks.length])).toEqual([['imageAUROC', 3], ['imageAP', 3], ['pixelAUROC', 3], ['pixelAP', 3], ['pixelPRO', 2]]);
  });
  test('image AUROC: patchcore > spade > padim in every block: ranks 1, 2, 3, chi2 = 6 (p = e^-3), F infinite, CD 1.91', () => {
    const c = comparisons[0];
    expect(c.blocks).toEqual(['loco/breakfast_box', 'mvtec/bottle', 'mvtec/cable']);
    expect(c.methods).toEqual(['padim', 'patchcore', 'spade']);
    expect(c.friedman.averageRanks).toEqual([3, 1, 2]);
    expect(c.friedman.chiSquare).toBeCloseTo(6, 12);
    expect(c.friedman.chiSquareP).toBeCloseTo(Math.exp(-3), 12);
    expect(c.friedman.imanDavenportF).toBe(Infinity);
    expect(c.cd[0].value).toBeCloseTo(2.3437 * Math.sqrt(12 / 18), 3);
    // patchcore - padim = 2 >= CD: the only significant pair at 0.05.
    expect(c.cd[0].groups).toEqual([['patchcore', 'spade'], ['spade', 'padim']]);
    // Wilcoxon against patchcore: 3 negative differences each, exact p = 2/8; Holm: 2 x 0.25.
    expect(c.control!.results.map((r) => [r.method, r.p, r.pHolm])).toEqual([['padim', 0.25, 0.5], ['spade', 0.25, 0.5]]);
  });
  test('the table: ranks marked (lowest best), statistics, CDs, and notes with the significant pairs and the control', () => {
    const md = toMarkdown(tables[0]);
    expect(md).toContain('| Image AUC | 3 | 3.00 | **1.00** | <u>2.00</u> | 6.00 | 0.0498 | ∞ | < 0.0001 | 1.91 | 1.68 |');
    expect(md).toContain('**Table Statistics, vanilla.** Average ranks (1 = best)');
    expect(tables[0].notes).toContain('Image AUC: significant Nemenyi differences at 0.05: patchcore > padim; at 0.1: patchcore > padim.');
    expect(tables[0].notes).toContain('Image AUC, Wilcoxon signed-ranks against patchcore (mean difference, p, Holm-adjusted p): padim -0.103 (p = 0.2500, Holm = 0.5000); spade -0.053 (p = 0.2500, Holm = 0.5000).');
    expect(figures[0].svg).toContain('Friedman χ² = 6.00 (p = 0.0498)');
  });
});

describe('--ci: spreads in the tables', () => {
  const interval = (estimate: number, se: number) => ({ estimate, low: estimate - 0.05, high: estimate + 0.04, level: 0.95, resamples: 1000, seed: 0, standardError: se });
  test('two or more seeds in every category: ± the standard deviation over seeds of the cell', () => {
    const rows = [0, 1, 2].flatMap((seed) => [
      makeRow({ method: 'a', category: 'bottle', seed, metrics: { imageAUROC: 0.8 + seed / 10 } }),
      makeRow({ method: 'a', category: 'cable', seed, metrics: { imageAUROC: 0.6 } }),
      makeRow({ method: 'b', category: 'bottle', seed, metrics: { imageAUROC: 0.5 } }),
      makeRow({ method: 'b', category: 'cable', seed, metrics: { imageAUROC: 0.5 } }),
    ]);
    const t = tableVI(reportData(rows))!;
    // a per seed: (0.8 + 0.6) / 2 = 0.70, 0.75, 0.80 -> mean 0.75, std 0.05.
    expect(toMarkdown(t, { ci: true })).toContain('| MVTec AD | Image AUC | **0.750 ± 0.050** | <u>0.500 ± 0.000</u> |');
    expect(toMarkdown(t)).toContain('| MVTec AD | Image AUC | **0.750** | <u>0.500</u> |');
    expect(toCsv(t, { ci: true }).split('\n')[1]).toBe('MVTec AD,Image AUC,0.750,0.500,a:best; b:second,a: ± 0.050;b: ± 0.000');
    expect(toHtml(t, { ci: true })).toContain('<td class="best"><strong>0.750 ± 0.050</strong></td>');
  });
  test('one seed: the stored bootstrap interval; several categories: the normal interval of their mean', () => {
    const rows = [
      makeRow({ method: 'a', category: 'bottle', metrics: { imageAUROC: 0.9 } }),
      makeRow({ method: 'a', category: 'cable', metrics: { imageAUROC: 0.7 } }),
      makeRow({ method: 'b', category: 'bottle', metrics: { imageAUROC: 0.6 } }),
    ];
    rows[0].intervals = { imageAUROC: interval(0.9, 0.03) };
    rows[1].intervals = { imageAUROC: interval(0.7, 0.04) };
    rows[2].intervals = { imageAUROC: interval(0.6, 0.02) };
    const data = reportData(rows);
    const t = tableVI(data)!;
    // a: 0.8 +- 1.959964 * sqrt(0.03^2 + 0.04^2) / 2 = 0.8 +- 0.049; b: its own interval [0.55, 0.64].
    expect(toMarkdown(t, { ci: true })).toContain('| MVTec AD | Image AUC | **0.800 [0.751, 0.849]** | <u>0.600 [0.550, 0.640]</u> |');
    // Near 1 the normal interval is clipped to the AUROC's range.
    const high = [makeRow({ method: 'a', category: 'bottle', metrics: { imageAUROC: 0.99 } }), makeRow({ method: 'a', category: 'cable', metrics: { imageAUROC: 0.97 } })];
    high[0].intervals = { imageAUROC: interval(0.99, 0.03) };
    high[1].intervals = { imageAUROC: interval(0.97, 0.04) };
    expect(aggregate(high, metric('imageAUROC')).spread).toEqual({ kind: 'interval', low: 0.98 - 1.959963984540054 * 0.025, high: 1, level: 0.95 });
    // Metrics without intervals show the value alone.
    expect(aggregate(rows, metric('imageAP')).spread).toBeUndefined();
  });
});

describe('imiad report --ci --control', () => {
  test('prints the statistical comparisons; an unknown control is an argument error naming the stored methods', async () => {
    const file = path.join(tmp, 'cli-store', 'results.db');
    const store = new ResultsStore(file);
    for (const r of storeRows()) store.insert(r);
    store.close();
    const out = path.join(tmp, 'cli-report');
    const ok = await runCli(['report', '--store', file, '--out', out, '--no-png', '--ci', '--control', 'patchcore']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('Statistical comparison (Friedman, Nemenyi):');
    expect(ok.stdout).toContain(
      '  vanilla imageAUROC: average ranks patchcore 1.00, spade 2.00, padim 3.00 over 3 blocks; Friedman p = 0.0498, Iman-Davenport p < 0.0001; CD(0.05) = 1.91; against patchcore (Wilcoxon, Holm): padim p = 0.5000, spade p = 0.5000',
    );
    expect(fs.existsSync(path.join(out, 'figures', 'fig-cd-vanilla.svg'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'figures', 'fig-cd-vanilla.png'))).toBe(false);
    const json = await runCli(['report', '--store', file, '--out', out, '--no-png', '--json']);
    const parsed = JSON.parse(json.stdout);
    expect(parsed.statistics[0]).toMatchObject({ setting: 'vanilla', metric: 'imageAUROC', methods: ['padim', 'patchcore', 'spade'] });
    expect(parsed.statistics[0].friedman.imanDavenportF).toBeNull();
    const bad = await runCli(['report', '--store', file, '--out', out, '--control', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('imiad: Expected one of the stored methods (padim, patchcore, spade) for --control but received nope of type string\n');
  });
});
