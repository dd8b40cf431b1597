import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import sharp from 'sharp';

import { continualMatrices, reportData, tableIX, tableVI, tableVII, tableX, tableXI, tableXIII, toCsv, toHtml, toLatex, toMarkdown, writeReport, tableVIII } from '../lib/report';
import { storeRows } from './helpers/rows';

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
    expect(report.tables.map((t) => t.slug)).toEqual(['table-VI', 'table-VII', 'table-VIII-mvtec', 'table-IX-mvtec', 'table-X', 'table-XI', 'table-XI-matrix-mvtec-padim', 'table-XI-matrix-mvtec-patchcore', 'table-XI-matrix-mvtec-spade', 'table-XIII-mvtec']);
    expect(report.figures.map((f) => f.slug)).toEqual(['fig2-mvtec', 'fig2-loco', 'fig3-mvtec', 'fig4-mvtec']);
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
    expect(html.match(/<table id=/g)).toHaveLength(10);
    expect(html.match(/<figure id=/g)).toHaveLength(4);
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
