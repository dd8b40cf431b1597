/**
 * `imiad run` (lib/cli/run.ts, the path the command line takes) with each detector trained on images, in its setting,
 * on the synthetic layouts: FastFlow, CFlow, CS-Flow, CFA, CutPaste, FAVAE, IGD and GCAD in the vanilla setting; DevNet, DRA,
 * BGAD, PRN, SemiREST and PatchCore in the supervised one; RegAD few-shot (K = 2, meta-trained on the layout's other
 * category; refused on MTD, which has one). Tiny images and one epoch: this proves the layouts' loaders, splits, masks
 * (MVTec LOCO: sPRO) and grey images (MTD, DAGM) reach each detector and its evaluation, not accuracy (each detector's
 * own test does that). Each detector runs on MVTec AD and two or three other layouts (CS-Flow, the slowest, on MVTec
 * AD only), chosen so that every layout is run by four to seven detectors, with vanilla and supervised ones on each
 * and the mask-supervised three on LOCO's multi-file masks: the layout-specific code (loaders, splits, masks) is
 * shared by all detectors and the detector-specific code by all layouts, so the full 15 x 7 matrix (about 13 minutes
 * here) would run the same paths again. `IMIAD_ALL_LAYOUTS=1 npx jest test/trained-layouts.test.ts` runs it. DRAEM's
 * layout test is in test/draem.test.ts. Then Ctrl-C: an abort
 * during training stops the flow heads, CFA, CutPaste, DRAEM, DevNet and DRA between steps. The tests skip, with
 * the reason printed, when the training addon is not built. The runs share one results store, and the report's
 * Tables VI, VII, XIII and Fig. 2 are checked to show every method that ran.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainAddonPath, trainingAvailable } from '../bindings/train/train';
import { runRun, type RunCommandOptions } from '../lib/cli/run';
import { loadDataset } from '../lib/datasets';
import { synthesize, SYNTH_LAYOUTS } from '../lib/datasets/synth';
import { createDetector } from '../lib/methods';
import { findMethod } from '../lib/methods/registry';
import { reportData } from '../lib/report/data';
import { accuracyEfficiencyFigures } from '../lib/report/figures';
import { toMarkdown } from '../lib/report/table';
import { tableVI, tableVII, tableVIII, tableXIII } from '../lib/report/tables';
import { ResultsStore } from '../lib/runner/store';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-layouts-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const available = trainingAvailable();
if (!available) process.stdout.write(`test/trained-layouts.test.ts: skipping: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
const withAddon = available ? test : test.skip;

/** Every run's row, for the report test at the end. */
const store = path.join(tmp, 'results.db');

/** One root per layout with two categories of 64 px images (RegAD meta-trains on the other one). */
const roots = new Map<string, { root: string; category: string }>();
beforeAll(async () => {
  for (const layout of SYNTH_LAYOUTS) {
    const root = path.join(tmp, layout);
    await synthesize(layout, root, { seed: 2, categories: 2, size: 64, train: 6, test: 8 });
    const [first] = await loadDataset(layout, root);
    roots.set(layout, { root, category: first.name });
  }
}, 300_000);

/** Each detector's layouts besides MVTec AD (see the top); every layout but MVTec AD appears 4-7 times. */
const cases: { method: string; layouts: string[]; flags: Partial<RunCommandOptions> }[] = [
  { method: 'fastflow', layouts: ['loco', 'dagm'], flags: { imageSize: '64', batchSize: '4' } },
  // CFlow on the ResNet-18-shaped default backbone (its own default is the WRN-50-2 shape, 4x the channels: ~30 s a
  // layout here); CS-Flow with its official 1024 hidden channels (~45 s a layout) on MVTec AD only.
  { method: 'cflow', layouts: ['mpdd', 'mtd'], flags: { imageSize: '64', batchSize: '4', backboneShape: 'resnet18' } },
  { method: 'csflow', layouts: [], flags: { imageSize: '128', batchSize: '4' } },
  { method: 'cfa', layouts: ['loco', 'mtd'], flags: { imageSize: '64', batchSize: '4' } },
  { method: 'cutpaste', layouts: ['visa', 'dagm'], flags: { imageSize: '64', batchSize: '4' } },
  { method: 'favae', layouts: ['mpdd', 'btad'], flags: { imageSize: '128', batchSize: '4' } },
  { method: 'igd', layouts: ['loco', 'visa'], flags: { imageSize: '64', batchSize: '4' } },
  { method: 'gcad', layouts: ['mtd', 'dagm', 'btad'], flags: { imageSize: '64', batchSize: '4' } },
  { method: 'devnet', layouts: ['btad', 'mtd'], flags: { imageSize: '64', batchSize: '4', setting: 'supervised', anomalies: '2' } },
  { method: 'dra', layouts: ['visa', 'dagm'], flags: { imageSize: '64', batchSize: '6', setting: 'supervised', anomalies: '2' } },
  { method: 'bgad', layouts: ['loco', 'mpdd'], flags: { imageSize: '64', batchSize: '4', setting: 'supervised', anomalies: '2' } },
  { method: 'prn', layouts: ['loco', 'dagm'], flags: { imageSize: '32', batchSize: '4', setting: 'supervised', anomalies: '2' } },
  { method: 'semirest', layouts: ['loco', 'mtd'], flags: { imageSize: '64', batchSize: '4', setting: 'supervised', anomalies: '2' } },
  // The unsupervised reference of Table VIII: PatchCore in the supervised setting (trains on the normals only).
  { method: 'patchcore', layouts: ['mpdd', 'btad', 'visa'], flags: { imageSize: '64', setting: 'supervised', anomalies: '2' } },
  // MTD: the refusal (one category), which costs nothing.
  { method: 'regad', layouts: ['loco', 'dagm', 'mtd'], flags: { imageSize: '64', batchSize: '4', setting: 'fewshot', shots: '2' } },
];
const allLayouts = process.env.IMIAD_ALL_LAYOUTS === '1';

test('every layout is run by vanilla and by supervised detectors', () => {
  for (const layout of SYNTH_LAYOUTS) {
    const on = cases.filter((c) => layout === 'mvtec' || c.layouts.includes(layout));
    expect(on.length).toBeGreaterThanOrEqual(4);
    expect(on.some((c) => c.flags.setting === undefined)).toBe(true);
    expect(on.some((c) => c.flags.setting === 'supervised' && findMethod(c.method)!.hasMaps)).toBe(true);
  }
  for (const c of cases) for (const l of c.layouts) expect(SYNTH_LAYOUTS).toContain(l);
});

describe('imiad run on the synthetic layouts', () => {
  for (const { method, layouts, flags } of cases) {
    const on = allLayouts ? [...SYNTH_LAYOUTS] : ['mvtec', ...layouts];
    withAddon(`${method} (${flags.setting ?? 'vanilla'}) on ${on.join(', ')}`, async () => {
      const { hasMaps, trained } = findMethod(method)!;
      const epochs = trained ? { epochs: '1' } : {};
      for (const layout of on) {
        const { root, category } = roots.get(layout)!;
        if (method === 'regad' && layout === 'mtd') {
          // MTD is one category (magnetic tiles): nothing to meta-train on, refused before anything runs.
          await expect(runRun({ dataset: layout, root, method, ...epochs, categories: category, ...flags })).rejects.toThrow(/RegAD meta-trains on the other categories of the dataset, but category mtd .* has none beside it/);
          continue;
        }
        const outcome = await runRun({ dataset: layout, root, method, ...epochs, categories: category, store, ...flags });
        expect(outcome.aborted).toBe(false);
        expect(outcome.results).toHaveLength(1);
        const m = outcome.results[0].metrics as Record<string, number | null | undefined>;
        // One epoch on 6 images: any AUROC in [0, 1] (a NaN, a missing metric or a crash fails).
        expect(m.imageAUROC).toBeGreaterThanOrEqual(0);
        expect(m.imageAUROC).toBeLessThanOrEqual(1);
        if (!hasMaps) expect(m.pixelAUROC ?? null).toBeNull();
        else if (layout === 'loco') expect(m.sPRO).toBeGreaterThanOrEqual(0);
        else expect(m.pixelAUROC).toBeGreaterThanOrEqual(0);
      }
    }, 900_000);
  }

  withAddon('the report shows them: Tables VI, VII (LOCO), XIII and Fig. 2 from the same store', () => {
    const results = new ResultsStore(store, { readonly: true });
    try {
      const rows = results.rows();
      const data = reportData(rows);
      // Checked for the methods that ran (all of them, asserted last; fewer when a -t filter ran some).
      const ran = new Set(rows.map((r) => r.config.method));
      const vanilla = cases.filter((c) => (c.flags.setting ?? 'vanilla') === 'vanilla' && ran.has(c.method)).map((c) => c.method);
      const header = toMarkdown(tableVI(data)!).split('\n').find((l) => l.startsWith('| Dataset'))!;
      for (const m of vanilla) expect(header).toContain(` ${m} `);
      const vii = toMarkdown(tableVII(data)!);
      const onLoco = vanilla.filter((m) => allLayouts || cases.find((c) => c.method === m)!.layouts.includes('loco'));
      expect(onLoco.length).toBeGreaterThanOrEqual(3);
      for (const m of onLoco) expect(vii).toMatch(new RegExp(`\\| ${m} \\| [*<u>]*\\d\\.\\d{3}`));
      // Table XIII: the vanilla methods beside RegAD's few-shot column, per dataset.
      const xiii = toMarkdown(tableXIII(data).find((t) => t.slug === 'table-XIII-mvtec')!);
      for (const m of [...vanilla, ...(ran.has('regad') ? ['regad'] : [])]) expect(xiii).toContain(` ${m} `);
      const fig2 = accuracyEfficiencyFigures(data).find((f) => f.slug === 'fig2-mvtec')!;
      for (const m of vanilla) expect(fig2.svg).toContain(`>${m}<`);
      // Table VIII (supervised, per dataset): the mask-supervised detectors with pixel rows, DevNet and DRA at image
      // level with the note saying why, PatchCore as the reference that ignores the labelled anomalies.
      const supervised = cases.filter((c) => c.flags.setting === 'supervised' && ran.has(c.method)).map((c) => c.method);
      const viii = tableVIII(data).find((t) => t.slug === 'table-VIII-mvtec');
      if (supervised.length > 0) {
        expect(viii).toBeDefined();
        const md = toMarkdown(viii!);
        for (const m of supervised) {
          expect(md).toMatch(new RegExp(`\\| ${m} \\| Image AUC \\|`));
          if (findMethod(m)!.hasMaps) expect(md).toMatch(new RegExp(`\\| ${m} \\| Pixel AUC \\|`));
          else expect(md).not.toMatch(new RegExp(`\\| ${m} \\| Pixel AUC \\|`));
        }
        if (ran.has('patchcore')) expect(viii!.notes).toContain('Ignores the labelled anomalies (trains on the normal images only): patchcore.');
        if (ran.has('devnet') && ran.has('dra')) expect(viii!.notes).toContain('Image-level only (no anomaly maps, so no pixel metrics): devnet, dra.');
      }
      expect(ran).toEqual(new Set(cases.map((c) => c.method)));
    } finally {
      results.close();
    }
  });
});

describe('Ctrl-C during training', () => {
  // The flow heads, CFA, CutPaste, DRAEM, DevNet and DRA on MVTec-layout images (labelled anomalies in training for
  // the supervised two): an abort after the first progress event stops training between steps with ABORT_ERR and
  // keeps no model.
  for (const method of ['fastflow', 'cflow', 'csflow', 'cfa', 'cutpaste', 'draem', 'devnet', 'dra', 'bgad', 'prn', 'semirest']) {
    withAddon(method, async () => {
      const [cat] = await loadDataset('mvtec', roots.get('mvtec')!.root);
      const supervised = findMethod(method)!.usesLabelledAnomalies;
      const train = cat.samples.filter((s) => s.split === 'train' || (supervised && s.label === 'anomaly'));
      const side = method === 'csflow' ? 128 : method === 'prn' ? 32 : 64; // CS-Flow's three scales need a multiple of 128
      // Smaller heads where the defaults would take most of this test's time to build (the abort path is the same).
      const smaller = method === 'prn' ? { attentionLayers: 1 } : method === 'cflow' ? { backboneShape: 'resnet18' } : method === 'csflow' ? { hidden: 64 } : {};
      const params = method === 'draem' ? { imageSize: 32, widths: [8, 4], batchSize: 4 } : { imageSize: side, cropSize: side, batchSize: 4, ...smaller };
      const d = createDetector(method as 'cutpaste', { ...params, epochs: 1000, trainThreads: 1, device: 'cpu' } as never);
      const ac = new AbortController();
      let events = 0;
      try {
        await expect(
          d.fit(train, {
            signal: ac.signal,
            onProgress: () => {
              events++;
              ac.abort();
            },
          }),
        ).rejects.toMatchObject({ code: 'ABORT_ERR' });
        expect(events).toBeGreaterThanOrEqual(1);
        expect(events).toBeLessThanOrEqual(3);
        expect(() => d.saveState!()).toThrow(/call fit\(\) before predict\(\)/);
      } finally {
        await d.dispose?.();
      }
    }, 300_000);
  }
});
