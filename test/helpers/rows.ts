/** Hand-made result rows for the report tests. */
import type { DatasetName } from '../../lib/datasets/types';
import { resultRow } from '../../lib/runner/grid';
import { experimentKey } from '../../lib/runner/key';
import type { Experiment, ExperimentResult, HeatmapRecord, ResultRow } from '../../lib/runner/types';
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
