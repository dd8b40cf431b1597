/** `imiad report --store FILE --out DIR`: the paper's tables and figures from whatever the store holds. */
import * as path from 'path';

import type { Command } from 'commander';

import { invalidType } from '../../bindings/errors';
import { comparisonLine, methodLabels, toMarkdown, writeReport } from '../report';
import { DEFAULT_STORE, ResultsStore } from '../runner/store';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';

interface ReportFlags {
  store: string;
  out: string;
  png: boolean;
  json?: JsonFlag;
  ci?: boolean;
  control?: string;
}

export function registerReport(program: Command): void {
  const cmd = program
    .command('report')
    .description('Write the report (Markdown, CSV, LaTeX tables, SVG/PNG figures, one offline HTML page) from a results store')
    .option('--store <file>', 'results store', DEFAULT_STORE)
    .option('--out <dir>', 'output folder', 'imiad-report')
    .option('--no-png', 'skip the PNG copies of the figures')
    .option('--ci', 'show each value with ± its standard deviation over seeds, or its bootstrap interval (one seed)')
    .option('--control <method>', 'also test every method against this one (Wilcoxon signed-ranks, Holm-adjusted)')
    .addHelpText('after', '\nExample:\n  imiad report --store imiad-results/results.db --out imiad-report --ci --control patchcore\n');
  addJsonOption(cmd, 'the written files, tables and statistical tests');
  cmd.action(
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
        const json = { html: report.html, markdown: report.markdown, tables: report.tables.map((t) => t.slug), figures: report.figures.map((f) => f.slug), statistics: report.statistics, files: report.files };
        if (!jsonToStdout(flags.json)) {
          const main = report.tables.find((t) => t.id === 'VI') ?? report.tables[0];
          if (main) process.stdout.write(`${toMarkdown(main, { ci: flags.ci })}\n`);
          if (report.statistics.length) process.stdout.write(`Statistical comparison (Friedman, Nemenyi):\n${report.statistics.map((c) => `  ${comparisonLine(c)}`).join('\n')}\n`);
          process.stdout.write(`${rows.length} experiments, ${report.tables.length} tables, ${report.figures.length} figures\nReport: ${report.html}\n`);
        }
        const written = writeJsonOutput(flags.json, `${JSON.stringify(json, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
        if (written) process.stdout.write(`JSON written to ${written}\n`);
      }),
  );
}
