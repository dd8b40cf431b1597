/** `imiad report --store FILE --out DIR`: the paper's tables and figures from whatever the store holds. */
import * as path from 'path';

import type { Command } from 'commander';

import { invalidType } from '../../bindings/errors';
import { formatP, methodLabels, toMarkdown, writeReport, type MetricComparison } from '../report';
import { DEFAULT_STORE, ResultsStore } from '../runner/store';
import { action } from './action';

interface ReportFlags {
  store: string;
  out: string;
  png: boolean;
  ci?: boolean;
  control?: string;
  json?: boolean;
}

/** One line per statistical comparison, for the terminal. */
function statisticsLines(comparisons: MetricComparison[]): string[] {
  return comparisons.map((c) => {
    const f = c.friedman;
    const ranks = c.methods.map((m, i) => [m, f.averageRanks[i]] as const).sort((a, b) => a[1] - b[1]).map(([m, r]) => `${m} ${r.toFixed(2)}`).join(', ');
    const control = c.control ? `; vs ${c.control.method} (Wilcoxon, Holm): ${c.control.results.map((r) => `${r.method} p=${formatP(r.pHolm)}`).join(', ')}` : '';
    return `${c.setting} ${c.metric}: ranks ${ranks} over ${c.blocks.length} blocks; Friedman p=${formatP(f.chiSquareP)}, Iman-Davenport p=${formatP(f.imanDavenportP)}; CD(0.05)=${c.cd[0].value.toFixed(2)}${control}`;
  });
}

export function registerReport(program: Command): void {
  program
    .command('report')
    .description('Write the report (Markdown, CSV, LaTeX tables, SVG/PNG figures, one offline HTML page) from a results store')
    .option('--store <file>', 'results store', DEFAULT_STORE)
    .option('--out <dir>', 'output folder', 'imiad-report')
    .option('--no-png', 'skip the PNG copies of the figures')
    .option('--ci', 'show each value with ± its standard deviation over seeds, or its bootstrap interval (one seed)')
    .option('--control <method>', 'also test every method against this one (Wilcoxon signed-ranks, Holm-adjusted)')
    .option('--json', 'print the written files, tables and statistical tests as JSON')
    .addHelpText('after', '\nExample:\n  imiad report --store imiad-results/results.db --out imiad-report --ci --control patchcore\n')
    .action(
      action(async (flags: ReportFlags) => {
        const store = new ResultsStore(flags.store, { readonly: true });
        let rows;
        try {
          rows = store.rows();
        } finally {
          store.close();
        }
        if (flags.control !== undefined) {
          const labels = [...new Set(methodLabels(rows).values())].sort();
          if (!labels.includes(flags.control)) throw invalidType(`one of the stored methods (${labels.join(', ') || 'none'})`, '--control', flags.control);
        }
        const report = await writeReport(rows, path.dirname(store.file), flags.out, { png: flags.png, ci: flags.ci, control: flags.control });
        if (flags.json) {
          const out = { html: report.html, markdown: report.markdown, tables: report.tables.map((t) => t.slug), figures: report.figures.map((f) => f.slug), statistics: report.statistics, files: report.files };
          process.stdout.write(`${JSON.stringify(out, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
          return;
        }
        const main = report.tables.find((t) => t.id === 'VI') ?? report.tables[0];
        if (main) process.stdout.write(`${toMarkdown(main, { ci: flags.ci })}\n`);
        const lines = statisticsLines(report.statistics);
        if (lines.length) process.stdout.write(`Statistical comparison (Friedman, Nemenyi):\n${lines.map((l) => `  ${l}`).join('\n')}\n`);
        process.stdout.write(`${rows.length} experiments, ${report.tables.length} tables, ${report.figures.length} figures\nReport: ${report.html}\n`);
      }),
    );
}
