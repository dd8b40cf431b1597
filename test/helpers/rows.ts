/** Hand-made result rows for the report tests. */
import type { DatasetName } from '../../lib/datasets/types';
import { resultRow } from '../../lib/runner/grid';
import { experimentKey } from '../../lib/runner/key';
import { NOTE_CONTINUAL_STATISTICS, NOTE_IGNORES_LABELLED_ANOMALIES, NOTE_MEMORY_BANK_ACCUMULATES, type Experiment, type ExperimentResult, type HeatmapRecord, type ResultRow } from '../../lib/runner/types';
import type { SettingManifest, SettingSpec } from '../../lib/settings/types';

const machine = { cpu: 'Test CPU', cores: 2, memoryBytes: 1 << 30, node: 'v20.0.0', platform: 'linux-x64', hostname: 'test' };

export function makeRow(o: {
  dataset?: DatasetName;
  category?: string;
  method: string;
  setting?: SettingSpec;
  seed?: number;
  params?: Record<string, string | number>;
  metrics?: Record<string, number | null>;
  inferenceMs?: number;
  memoryBytes?: number;
  continual?: ExperimentResult['continual'];
  heatmaps?: HeatmapRecord[];
  notes?: string[];
  manifest?: SettingManifest;
}): ResultRow {
  const config = { dataset: o.dataset ?? 'mvtec', category: o.category ?? 'bottle', method: o.method, params: o.params ?? {}, setting: o.setting ?? { name: 'vanilla' as const }, seed: o.seed ?? 0 };
  const key = experimentKey(config, 'test');
  const exp: Experiment = { key, config, root: '/data', manifest: o.manifest ?? {}, heatmapDir: '' };
  const result: ExperimentResult = {
    metrics: o.metrics ?? {},
    efficiency: { inferenceMsPerImage: o.inferenceMs ?? 10, memoryBytes: o.memoryBytes ?? 1 << 20 },
    ...(o.continual ? { continual: o.continual } : {}),
    heatmaps: o.heatmaps ?? [],
    notes: o.notes ?? [],
  };
  return resultRow(exp, result, new Date(0), new Date(1000), machine, 'test');
}

/** A store's worth of rows: three methods over every setting on MVTec AD, plus vanilla on MVTec LOCO AD. */
const M = (auroc: number, extra: Record<string, number | null> = {}) => ({ imageAUROC: auroc, imageAP: auroc + 0.01, pixelAUROC: auroc - 0.01, pixelAP: auroc / 2, pixelPRO: auroc - 0.1, ...extra });

export function storeRows(): ResultRow[] {
  const rows: ResultRow[] = [];
  // Vanilla: two categories, two seeds for patchcore on bottle.
  for (const [method, base, ms, mem] of [['patchcore', 0.95, 40, 200e6], ['padim', 0.85, 10, 50e6], ['spade', 0.9, 80, 400e6]] as const) {
    rows.push(makeRow({ method, category: 'bottle', metrics: M(base), inferenceMs: ms, memoryBytes: mem }));
    rows.push(makeRow({ method, category: 'cable', metrics: M(base - 0.1), inferenceMs: ms, memoryBytes: mem }));
    rows.push(makeRow({ method, dataset: 'loco', category: 'breakfast_box', inferenceMs: ms, memoryBytes: mem,
      metrics: { ...M(base - 0.2), pixelPRO: null, imageAUROCLogical: base - 0.3, imageAUROCStructural: base - 0.1, sPROLogical: base - 0.4, sPROStructural: base - 0.2, sPRO: base - 0.3 } }));
    for (const shots of [1, 2, 4, 8]) {
      rows.push(makeRow({ method, setting: { name: 'fewshot', shots, augment: null, augmentCount: 0 }, metrics: M(base - 0.2 + shots / 100) }));
      rows.push(makeRow({ method, setting: { name: 'fewshot', shots, augment: 'rotation', augmentCount: 4 }, metrics: M(base - 0.15 + shots / 100) }));
    }
    for (const noise of [0.05, 0.1, 0.15, 0.2]) {
      rows.push(makeRow({ method, setting: { name: 'noisy', noise }, metrics: M(base - noise / 2),
        manifest: { bottle: { train: [], test: [], info: { setting: 'noisy', seed: 0, noise, capped: noise === 0.2 } } } }));
    }
    rows.push(makeRow({ method, setting: { name: 'supervised', anomalies: 10 }, metrics: M(base + 0.02), notes: method === 'padim' ? [NOTE_IGNORES_LABELLED_ANOMALIES] : [] }));
    const final = base - 0.3;
    rows.push(makeRow({ method, category: 'bottle+cable', setting: { name: 'continual', order: null, joint: false },
      continual: { tasks: ['bottle', 'cable'], matrix: { imageAUROC: [[base, null], [final, base]] } }, notes: [method === 'padim' ? NOTE_CONTINUAL_STATISTICS : NOTE_MEMORY_BANK_ACCUMULATES] }));
  }
  rows.push(makeRow({ method: 'patchcore', category: 'bottle', seed: 1, metrics: M(0.97) }));
  return rows;
}

