/** The paper's tables VI-XIII, built from whatever the store holds (a table without data is left out). */
import { findMethod } from '../methods/registry';
import {
  NOTE_CONTINUAL_JOINT,
  NOTE_CONTINUAL_SEQUENTIAL,
  NOTE_CONTINUAL_STATISTICS,
  NOTE_IGNORES_LABELLED_ANOMALIES,
  NOTE_MEMORY_BANK_ACCUMULATES,
  NOTE_REFIT_ON_UNION,
  type ResultRow,
} from '../runner/types';
import {
  aggregate,
  categoriesOf,
  DATASET_TITLES,
  datasetsOf,
  isSetting,
  mean,
  metric,
  METRIC_TITLES,
  methodsOf,
  select,
  type ReportData,
} from './data';
import { label, markColumn, markRow, value, valueOf, type Cell, type ReportTable, type ValueCell } from './table';

const VANILLA_METRICS = ['imageAUROC', 'imageAP', 'pixelAUROC', 'pixelAP', 'pixelPRO'];
const LOCO_METRICS = ['imageAUROC', 'imageAP', 'pixelAUROC', 'pixelAP', 'sPRO'];

const title = (d: string): string => DATASET_TITLES[d] ?? d;
const hasValue = (cells: Cell[]): boolean => cells.some((c) => c.kind === 'value' && c.value !== null);
const byMethod = (data: ReportData, rows: ResultRow[], m: string): ResultRow[] => rows.filter((r) => data.label.get(r) === m);

/** Table VI: vanilla methods x datasets x metrics (mean over categories); best per dataset and metric. */
export function tableVI(data: ReportData): ReportTable | null {
  const rows = select(data, isSetting('vanilla'));
  if (!rows.length) return null;
  const methods = methodsOf(data, rows);
  const t: ReportTable = { id: 'VI', slug: 'table-VI', title: 'Vanilla (unsupervised) IAD: mean over categories. sPRO at integration limit 0.05 (MVTec LOCO AD).', header: ['Dataset', 'Metric', ...methods], rows: [] };
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    for (const m of d === 'loco' ? LOCO_METRICS : VANILLA_METRICS) {
      const cells = methods.map((meth) => valueOf(aggregate(byMethod(data, dr, meth), metric(m))));
      if (!hasValue(cells)) continue;
      t.rows.push([label(title(d)), label(METRIC_TITLES[m]), ...cells]);
      markRow(t, t.rows.length - 1, methods.map((_, i) => i + 2), 'higher');
    }
  }
  return t.rows.length ? t : null;
}

/** Table VII: MVTec LOCO AD, logical / structural / mean for image AUROC and sPRO. */
export function tableVII(data: ReportData): ReportTable | null {
  const rows = select(data, (r) => r.config.setting.name === 'vanilla' && r.config.dataset === 'loco');
  if (!rows.length) return null;
  const t: ReportTable = {
    id: 'VII',
    slug: 'table-VII',
    title: 'MVTec LOCO AD: logical and structural anomalies and their mean (sPRO at 0.05).',
    header: ['Method', 'Logical', 'Structural', 'Mean', 'Logical', 'Structural', 'Mean'],
    groups: [{ label: '', span: 1 }, { label: 'Image AUROC', span: 3 }, { label: 'Pixel sPRO', span: 3 }],
    rows: [],
  };
  for (const meth of methodsOf(data, rows)) {
    const mr = byMethod(data, rows, meth);
    const il = aggregate(mr, metric('imageAUROCLogical')).value;
    const is = aggregate(mr, metric('imageAUROCStructural')).value;
    const sl = aggregate(mr, metric('sPROLogical')).value;
    const ss = aggregate(mr, metric('sPROStructural')).value;
    const sm = aggregate(mr, metric('sPRO')).value ?? mean([sl, ss]);
    const cells = [value(il), value(is), value(il !== null && is !== null ? (il + is) / 2 : null), value(sl), value(ss), value(sm)];
    if (hasValue(cells)) t.rows.push([label(meth), ...cells]);
  }
  for (let c = 1; c <= 6; c++) markColumn(t, c, t.rows.map((_, i) => i), 'higher');
  return t.rows.length ? t : null;
}

/** Table VIII: the supervised setting per category (pixel metrics), one table per dataset and anomaly count. */
export function tableVIII(data: ReportData): ReportTable[] {
  const rows = select(data, isSetting('supervised'));
  const out: ReportTable[] = [];
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    const counts = [...new Set(dr.map((r) => (r.config.setting.name === 'supervised' ? r.config.setting.anomalies : 0)))].sort((a, b) => a - b);
    for (const n of counts) {
      const nr = dr.filter((r) => r.config.setting.name === 'supervised' && r.config.setting.anomalies === n);
      const cats = categoriesOf(nr);
      const t: ReportTable = {
        id: 'VIII',
        slug: `table-VIII-${d}${counts.length > 1 ? `-n${n}` : ''}`,
        title: `Fully supervised setting on ${title(d)}: ${n} labelled anomalies moved from test into training, per category.`,
        header: ['Method', 'Metric', ...cats, 'Mean'],
        rows: [],
      };
      const groups = new Map<string, number[]>();
      const methods = methodsOf(data, nr);
      for (const m of ['imageAUROC', 'pixelAUROC', 'pixelAP', 'pixelPRO']) {
        for (const meth of methods) {
          const mr = byMethod(data, nr, meth);
          const cells = cats.map((c) => valueOf(aggregate(mr.filter((r) => r.config.category === c), metric(m))));
          if (!hasValue(cells)) continue;
          cells.push(value(mean(cells.map((c) => c.value))));
          t.rows.push([label(meth), label(METRIC_TITLES[m]), ...cells]);
          groups.set(m, [...(groups.get(m) ?? []), t.rows.length - 1]);
        }
      }
      for (const idx of groups.values()) for (let c = 2; c < t.header.length; c++) markColumn(t, c, idx, 'higher');
      const ignored = [...new Set(nr.filter((r) => r.notes.includes(NOTE_IGNORES_LABELLED_ANOMALIES)).map((r) => data.label.get(r)!))];
      const notes: string[] = [];
      if (ignored.length) notes.push(`Ignores the labelled anomalies (trains on the normal images only): ${ignored.join(', ')}.`);
      // The supervised detectors of the paper's Table VIII (DevNet, DRA) score images only: no pixel rows.
      const imageOnly = [...new Set(nr.filter((r) => findMethod(r.config.method)?.hasMaps === false).map((r) => data.label.get(r)!))].sort();
      if (imageOnly.length) notes.push(`Image-level only (no anomaly maps, so no pixel metrics): ${imageOnly.join(', ')}.`);
      if (notes.length) t.notes = notes;
      if (t.rows.length) out.push(t);
    }
  }
  return out;
}

const AUG_ORDER = ['rotation', 'flip', 'scale', 'translate', 'colorjitter', 'perspective'];
const AUG_TITLES: Record<string, string> = { rotation: 'Rotation', flip: 'Flip', scale: 'Scale', translate: 'Translate', colorjitter: 'ColorJitter', perspective: 'Perspective' };

/** Table IX: few-shot image AUROC per shot count and augmentation, one table per dataset. */
export function tableIX(data: ReportData): ReportTable[] {
  const rows = select(data, isSetting('fewshot'));
  const out: ReportTable[] = [];
  const spec = (r: ResultRow): { shots: number; augment: string | null } =>
    r.config.setting.name === 'fewshot' ? { shots: r.config.setting.shots, augment: r.config.setting.augment } : { shots: 0, augment: null };
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    const augs = [...new Set(dr.map((r) => spec(r).augment).filter((a): a is string => a !== null))].sort((a, b) => AUG_ORDER.indexOf(a) - AUG_ORDER.indexOf(b));
    const columns: (string | null)[] = [null, ...augs];
    const t: ReportTable = {
      id: 'IX',
      slug: `table-IX-${d}`,
      title: `Few-shot image AUROC on ${title(d)} by shots and augmentation (mean over categories).`,
      header: ['Shots', 'Method', 'Vanilla', ...augs.map((a) => AUG_TITLES[a] ?? a)],
      rows: [],
    };
    for (const k of [...new Set(dr.map((r) => spec(r).shots))].sort((a, b) => a - b)) {
      const kr = dr.filter((r) => spec(r).shots === k);
      const idx: number[] = [];
      for (const meth of methodsOf(data, kr)) {
        const mr = byMethod(data, kr, meth);
        const cells = columns.map((a) => valueOf(aggregate(mr.filter((r) => spec(r).augment === a), metric('imageAUROC'))));
        if (!hasValue(cells)) continue;
        t.rows.push([label(String(k)), label(meth), ...cells]);
        idx.push(t.rows.length - 1);
      }
      for (let c = 2; c < t.header.length; c++) markColumn(t, c, idx, 'higher');
    }
    const metaTrained = [...new Set(dr.filter(metaTrainedRow).map((r) => data.label.get(r)!))].sort();
    if (metaTrained.length) t.notes = [`Meta-trained on the dataset's other categories, then adapted to the K shots without training on them: ${metaTrained.join(', ')}.`];
    if (t.rows.length) out.push(t);
  }
  return out;
}

/** A few-shot row whose split handed the detector the dataset's other categories (RegAD; split info metaCategories). */
function metaTrainedRow(r: ResultRow): boolean {
  return !Array.isArray(r.manifest) && Object.values(r.manifest).some((m) => (m.info.metaCategories?.length ?? 0) > 0);
}

/** Table X: image AUROC under noise ratios, datasets side by side. */
export function tableX(data: ReportData): ReportTable | null {
  const rows = select(data, isSetting('noisy'));
  if (!rows.length) return null;
  const noise = (r: ResultRow): number => (r.config.setting.name === 'noisy' ? r.config.setting.noise : 0);
  const datasets = datasetsOf(rows);
  const columns: { d: string; r: number }[] = [];
  for (const d of datasets) for (const r of [...new Set(rows.filter((x) => x.config.dataset === d).map(noise))].sort((a, b) => a - b)) columns.push({ d, r });
  const t: ReportTable = {
    id: 'X',
    slug: 'table-X',
    title: 'Noisy IAD: image AUROC by noise ratio n/(m+n) (anomalies labelled normal in training, removed from test).',
    header: ['Method', ...columns.map((c) => String(c.r))],
    groups: [{ label: '', span: 1 }, ...datasets.map((d) => ({ label: title(d), span: columns.filter((c) => c.d === d).length }))],
    rows: [],
  };
  for (const meth of methodsOf(data, rows)) {
    const mr = byMethod(data, rows, meth);
    const cells = columns.map((c) => valueOf(aggregate(mr.filter((r) => r.config.dataset === c.d && noise(r) === c.r), metric('imageAUROC'))));
    if (hasValue(cells)) t.rows.push([label(meth), ...cells]);
  }
  for (let c = 1; c < t.header.length; c++) markColumn(t, c, t.rows.map((_, i) => i), 'higher');
  const capped = new Set<string>();
  for (const r of rows) {
    const m = r.manifest as Record<string, { info?: { capped?: boolean } }>;
    for (const [cat, v] of Object.entries(m)) if (v?.info?.capped) capped.add(`${r.config.dataset}/${cat} at ${noise(r)}`);
  }
  if (capped.size) t.notes = [`Capped at 75 % of the test anomalies (achieved ratio below the requested one): ${[...capped].sort().join(', ')}.`];
  return t.rows.length ? t : null;
}

const CONTINUAL_METRICS = ['imageAUROC', 'imageAP', 'pixelAUROC', 'pixelAP', 'pixelPRO'];

/**
 * How a continual row learnt the tasks, from the note the executor stored with it (what ran, even if the method's
 * mode changes later): joint training (also the setting's option, and rows stored before the modes existed that were
 * refitted on the union), sequential, accumulating, running statistics; 'unknown' for a row without such a note.
 */
function continualMode(r: ResultRow): 'joint' | 'sequential' | 'accumulate' | 'statistics' | 'unknown' {
  const s = r.config.setting;
  if ((s.name === 'continual' && s.joint === true) || r.notes.includes(NOTE_CONTINUAL_JOINT) || r.notes.includes(NOTE_REFIT_ON_UNION)) return 'joint';
  if (r.notes.includes(NOTE_CONTINUAL_SEQUENTIAL)) return 'sequential';
  if (r.notes.includes(NOTE_CONTINUAL_STATISTICS)) return 'statistics';
  if (r.notes.includes(NOTE_MEMORY_BANK_ACCUMULATES)) return 'accumulate';
  return 'unknown';
}

/** Joint and sequential rows of a method are different experiments: joint rows are labelled apart. */
function continualLabels(data: ReportData, rows: ResultRow[]): ReportData {
  return { rows, label: new Map(rows.map((r) => [r, `${data.label.get(r)!}${continualMode(r) === 'joint' ? ' (joint)' : ''}`])) };
}

const CONTINUAL_MODE_FOOTNOTES: [ReturnType<typeof continualMode>, string][] = [
  ['sequential', 'Sequential (one model learns the tasks in turn, each from the weights the previous task left, on that task\'s images only)'],
  ['accumulate', 'Accumulating (the memory grows with each task: memory-bank rows, or one Gaussian per task)'],
  ['statistics', 'Running statistics (Gaussians updated with each task, equal to a refit on the union of the tasks)'],
  ['joint', 'Joint training on the union of the tasks so far after each task (an upper bound, not continual learning)'],
  ['unknown', 'Mode not recorded'],
];

/** Table XI's footnotes: which continual mode each method ran in. */
function continualModeNotes(data: ReportData, rows: ResultRow[]): string[] {
  const notes: string[] = [];
  for (const [mode, text] of CONTINUAL_MODE_FOOTNOTES) {
    const labels = methodsOf(data, rows.filter((r) => continualMode(r) === mode));
    if (labels.length) notes.push(`${text}: ${labels.join(', ')}.`);
  }
  return notes;
}

/** Table XI: continual learning, the metric after the last task and its forgetting measure (FM, lower is better). */
export function tableXI(stored: ReportData): ReportTable | null {
  const rows = select(stored, (r) => r.config.setting.name === 'continual' && r.continual !== null);
  if (!rows.length) return null;
  const data = continualLabels(stored, rows);
  const datasets = datasetsOf(rows);
  const columns: { d: string; m: string }[] = [];
  for (const d of datasets) {
    const dr = rows.filter((r) => r.config.dataset === d);
    for (const m of CONTINUAL_METRICS) if (dr.some((r) => r.continual!.matrix[m] !== undefined)) columns.push({ d, m });
  }
  const t: ReportTable = {
    id: 'XI',
    slug: 'table-XI',
    title: 'Continual IAD: mean over tasks after learning the last one, and the forgetting measure FM (lower is better).',
    header: ['Method', ...columns.flatMap((c) => [`${METRIC_TITLES[c.m]}`, 'FM']),],
    groups: [{ label: '', span: 1 }, ...datasets.map((d) => ({ label: title(d), span: 2 * columns.filter((c) => c.d === d).length }))],
    rows: [],
  };
  for (const meth of methodsOf(data, rows)) {
    const mr = byMethod(data, rows, meth);
    const cells: ValueCell[] = [];
    for (const c of columns) {
      const cr = mr.filter((r) => r.config.dataset === c.d);
      cells.push(valueOf(aggregate(cr, metric(c.m))), valueOf(aggregate(cr, (r) => r.continual!.forgetting[c.m])));
    }
    if (hasValue(cells)) t.rows.push([label(meth), ...cells]);
  }
  const all = t.rows.map((_, i) => i);
  for (let c = 1; c < t.header.length; c++) markColumn(t, c, all, c % 2 === 1 ? 'higher' : 'lower');
  t.notes = continualModeNotes(data, rows);
  return t.rows.length ? t : null;
}

/**
 * The stored continual result matrices behind Table XI: image AUROC on task j (columns) after learning task l (rows),
 * one table per dataset and method, mean over seeds; the last column is the task's forgetting after the last task.
 */
export function continualMatrices(stored: ReportData): ReportTable[] {
  const rows = select(stored, (r) => r.config.setting.name === 'continual' && r.continual !== null && r.continual.matrix.imageAUROC !== undefined);
  const data = continualLabels(stored, rows);
  const out: ReportTable[] = [];
  for (const d of datasetsOf(rows)) {
    const dr = rows.filter((r) => r.config.dataset === d);
    for (const meth of methodsOf(data, dr)) {
      const mr = byMethod(data, dr, meth);
      const tasks = mr[0].continual!.tasks;
      const same = mr.filter((r) => r.continual!.tasks.join('\0') === tasks.join('\0'));
      const K = tasks.length;
      const cell = (l: number, j: number): number | null => mean(same.map((r) => r.continual!.matrix.imageAUROC[l]?.[j] ?? null));
      const t: ReportTable = {
        id: 'XI (matrix)',
        slug: `table-XI-matrix-${d}-${meth.replace(/[^A-Za-z0-9_.-]+/g, '_')}`,
        title: `Continual ${meth} on ${title(d)}: image AUROC on each task (columns) after learning each task (rows); FM after the last task.`,
        header: ['After task', ...tasks, 'FM'],
        rows: [],
      };
      for (let l = 0; l < K; l++) t.rows.push([label(`${l + 1}: ${tasks[l]}`), ...tasks.map((_, j) => value(j <= l ? cell(l, j) : null)), value(null)]);
      const fm: ValueCell[] = tasks.map((_, j) => {
        if (j === K - 1) return value(null);
        const best = Math.max(...Array.from({ length: K - 1 - j }, (_, i) => cell(j + i, j) ?? -Infinity));
        const last = cell(K - 1, j);
        return value(last !== null && best > -Infinity ? best - last : null);
      });
      t.rows.push([label('FM'), ...fm, valueOf(aggregate(same, (r) => r.continual!.forgetting.imageAUROC))]);
      out.push(t);
    }
  }
  return out;
}

/**
 * Table XIII: the uniform view per dataset: vanilla, noisy (ratio 0.15, else the nearest stored), few-shot (8 shots
 * without augmentation, else the most stored), continual, and their mean; image AUROC and pixel AP.
 */
export function tableXIII(data: ReportData): ReportTable[] {
  const out: ReportTable[] = [];
  for (const d of datasetsOf(data.rows)) {
    const dr = data.rows.filter((r) => r.config.dataset === d);
    const noisyRatios = [...new Set(dr.map((r) => (r.config.setting.name === 'noisy' ? r.config.setting.noise : NaN)).filter(Number.isFinite))];
    const ratio = noisyRatios.sort((a, b) => Math.abs(a - 0.15) - Math.abs(b - 0.15) || a - b)[0];
    const shotCounts = dr.map((r) => (r.config.setting.name === 'fewshot' && r.config.setting.augment === null ? r.config.setting.shots : NaN)).filter(Number.isFinite);
    const shots = shotCounts.includes(8) ? 8 : shotCounts.length ? Math.max(...shotCounts) : undefined;
    const columns: { name: string; filter: (r: ResultRow) => boolean }[] = [{ name: 'Vanilla', filter: (r) => r.config.setting.name === 'vanilla' }];
    if (ratio !== undefined) columns.push({ name: `Noisy-${ratio}`, filter: (r) => r.config.setting.name === 'noisy' && r.config.setting.noise === ratio });
    if (shots !== undefined) columns.push({ name: `Few-shot-${shots}`, filter: (r) => r.config.setting.name === 'fewshot' && r.config.setting.augment === null && r.config.setting.shots === shots });
    // Joint training is an upper bound, not the continual setting's result.
    const continual = (r: ResultRow): boolean => r.config.setting.name === 'continual' && continualMode(r) !== 'joint';
    if (dr.some(continual)) columns.push({ name: 'Continual', filter: continual });
    if (columns.length < 2) continue;
    const t: ReportTable = {
      id: 'XIII',
      slug: `table-XIII-${d}`,
      title: `Uniform view on ${title(d)}: the same methods across settings (mean over categories).`,
      header: ['Metric', 'Method', ...columns.map((c) => c.name), 'Mean'],
      rows: [],
    };
    const rowsOf = columns.map((c) => dr.filter(c.filter));
    for (const m of ['imageAUROC', 'pixelAP']) {
      const idx: number[] = [];
      for (const meth of methodsOf(data, dr)) {
        const cells = rowsOf.map((cr) => valueOf(aggregate(byMethod(data, cr, meth), metric(m))));
        if (!hasValue(cells)) continue;
        cells.push(value(mean(cells.map((c) => c.value))));
        t.rows.push([label(`${METRIC_TITLES[m]} ↑`), label(meth), ...cells]);
        idx.push(t.rows.length - 1);
      }
      for (let c = 2; c < t.header.length; c++) markColumn(t, c, idx, 'higher');
    }
    if (t.rows.length) out.push(t);
  }
  return out;
}

export function allTables(data: ReportData): ReportTable[] {
  return [tableVI(data), tableVII(data), ...tableVIII(data), ...tableIX(data), tableX(data), tableXI(data), ...continualMatrices(data), ...tableXIII(data)].filter((t): t is ReportTable => t !== null);
}
