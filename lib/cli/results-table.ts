/**
 * The one readable table of finished experiments (`imiad run`, `imiad grid`): a line per result with the metrics and
 * the efficiency figures. Columns appear only where they say something: method when several, setting when one is
 * not vanilla, AU-sPRO for MVTec LOCO AD, forgetting for continual runs, train img/s for trained detectors. Notes
 * follow the table, one line each.
 */
import { settingLabel } from '../settings';
import type { ResultJson } from '../runner/schema';

const fmt = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : Number.isFinite(v) ? v.toFixed(4) : String(v));
const ms = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(1));

export function formatResultsTable(results: ResultJson[]): string {
  const cols: [string, (r: ResultJson) => string, 'left' | 'right'][] = [['category', (r) => r.category, 'left']];
  if (new Set(results.map((r) => r.method)).size > 1) cols.push(['method', (r) => r.method ?? '-', 'left']);
  if (results.some((r) => r.setting && r.setting.name !== 'vanilla')) cols.push(['setting', (r) => (r.setting ? settingLabel(r.setting) : '-'), 'left']);
  const metric = (name: string) => (r: ResultJson): string => fmt(r.metrics[name]);
  cols.push(
    ['image AUROC', metric('imageAUROC'), 'right'],
    ['image AP', metric('imageAP'), 'right'],
    ['pixel AUROC', metric('pixelAUROC'), 'right'],
    ['pixel AP', metric('pixelAP'), 'right'],
    ['AU-PRO@0.3', metric('pixelPRO'), 'right'],
  );
  if (results.some((r) => r.dataset === 'loco')) cols.push(['AU-sPRO@0.05', metric('sPRO'), 'right']);
  if (results.some((r) => r.continual)) cols.push(['FM image AUROC', (r) => fmt(r.continual?.forgetting.imageAUROC), 'right']);
  const e = (r: ResultJson): NonNullable<ResultJson['efficiency']> => r.efficiency ?? { inferenceMsPerImage: Number.NaN, memoryBytes: Number.NaN };
  cols.push(
    // A detector restored with --load was not fitted.
    ['fit s', (r) => (e(r).fitMs !== undefined ? (e(r).fitMs! / 1000).toFixed(1) : e(r).loadMs !== undefined ? 'loaded' : '-'), 'right'],
    ['backbone ms p50', (r) => ms(e(r).backboneMsPerImage), 'right'],
    // Continual results average the medians of every evaluation: no 95th percentile.
    ['method ms p50/p95', (r) => (e(r).methodMsPerImageP95 === undefined ? ms(e(r).methodMsPerImage) : `${ms(e(r).methodMsPerImage)}/${ms(e(r).methodMsPerImageP95)}`), 'right'],
    ['state MB', (r) => (e(r).memoryBytes / 1e6).toFixed(1), 'right'],
  );
  if (results.some((r) => r.efficiency?.trainImagesPerSecond !== undefined)) {
    cols.push(['train img/s', (r) => (e(r).trainImagesPerSecond === undefined ? '-' : e(r).trainImagesPerSecond!.toFixed(1)), 'right']);
  }
  const header = cols.map(([h]) => h);
  const body = results.map((r) => cols.map(([, f]) => f(r)));
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (cols[i][2] === 'left' ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  const notes = results.flatMap((r) => r.notes.map((n) => `note: ${r.category}${r.setting ? ` ${settingLabel(r.setting)}` : ''}${cols[1]?.[0] === 'method' ? ` ${r.method}` : ''}: ${n}`));
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line), ...notes].join('\n');
}
