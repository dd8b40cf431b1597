/** `imiad report --store FILE --out DIR`: the paper's tables and figures from whatever the store holds. */
import * as path from 'path';

import type { Command } from 'commander';

import { toMarkdown, writeReport } from '../report';
import { DEFAULT_STORE, ResultsStore } from '../runner/store';
import { action } from './action';
import { addJsonOption, jsonToStdout, writeJsonOutput, type JsonFlag } from './json-output';

interface ReportFlags {
  store: string;
  out: string;
  png: boolean;
  json?: JsonFlag;
}

export function registerReport(program: Command): void {
  const cmd = program
    .command('report')
    .description('Write the report (Markdown, CSV, LaTeX tables, SVG/PNG figures, one offline HTML page) from a results store')
    .option('--store <file>', 'results store', DEFAULT_STORE)
    .option('--out <dir>', 'output folder', 'imiad-report')
    .option('--no-png', 'skip the PNG copies of the figures');
  addJsonOption(cmd, 'the written files and tables');
  cmd.action(
      action(async (flags: ReportFlags) => {
        const store = new ResultsStore(flags.store, { readonly: true });
        let rows;
        try {
          rows = store.rows();
        } finally {
          store.close();
        }
        const report = await writeReport(rows, path.dirname(store.file), flags.out, { png: flags.png });
        const json = { html: report.html, markdown: report.markdown, tables: report.tables.map((t) => t.slug), figures: report.figures.map((f) => f.slug), files: report.files };
        if (!jsonToStdout(flags.json)) {
          const main = report.tables.find((t) => t.id === 'VI') ?? report.tables[0];
          if (main) process.stdout.write(`${toMarkdown(main)}\n`);
          process.stdout.write(`${rows.length} experiments, ${report.tables.length} tables, ${report.figures.length} figures\nReport: ${report.html}\n`);
        }
        const written = writeJsonOutput(flags.json, `${JSON.stringify(json, null, 2)}\n`);
        if (written) process.stdout.write(`JSON written to ${written}\n`);
      }),
  );
}
