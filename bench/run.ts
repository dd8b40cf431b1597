/**
 * `npm run bench -- <name> [flags]`: runs bench/<name>.ts, which prints a table and writes bench/results/<name>.json.
 */
import * as fs from 'fs';
import * as path from 'path';

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const available = fs
    .readdirSync(__dirname)
    .filter((f) => f.endsWith('.js') && !['run.js', 'common.js'].includes(f))
    .map((f) => f.replace(/\.js$/, ''))
    .sort();
  if (!name || !available.includes(name)) {
    process.stderr.write(`usage: npm run bench -- <${available.join('|')}> [flags]\n`);
    process.exitCode = 2;
    return;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path.join(__dirname, name)) as { main: (args: string[]) => Promise<void> };
  await mod.main(args);
}

void main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
