/**
 * Every command example of README.md and docs/*.md runs. Each page's ```sh blocks run in order, as one user would
 * type them, in a fresh folder of their own (HOME too), with `imiad` on PATH as this checkout's dist/lib/cli.js.
 * A block preceded by `<!-- doc-test: ... -->` says what runs it instead (.ci/run, scripts/check-package.sh or a
 * named test); this test checks that the files it names exist. The README's Node example runs twice (it used to fail
 * the second time).
 *
 * Overrides, to keep this test to a couple of minutes (each is applied to the command text before it runs):
 * - `npx imiad` and `node dist/lib/cli.js` become `imiad` (the same program; npx would look the name up outside a
 *   project);
 * - `imiad run` without `--image-size` or `--load` gets `--image-size 64` (the same code path on smaller tensors);
 * - trained methods run `--epochs 1` on one category (`--categories woven`) with the ResNet-18-shaped default
 *   teacher (`--backbone-shape resnet18`; RD4AD's own default is the WRN-50-2 shape, 3x slower here), and their
 *   lines are skipped, saying why, without the libtorch addon;
 * - lines that install system packages or build addons (`apt-get`, `npm run build:*`) are run by .ci/run, not here;
 * - `scripts/export-backbone.py` runs with `--random-weights` (no download) and `--arch resnet18` instead of
 *   wide_resnet50_2 (a 270 MB export), and its block is skipped, saying why, without python3's torch + torchvision.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { trainingAvailable } from '../bindings/train/train';

const root = path.join(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-docs-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Block {
  file: string;
  line: number;
  lang: string;
  code: string;
  /** The `<!-- doc-test: ... -->` note above the block, if any. */
  note?: string;
}

function blocks(file: string): Block[] {
  const lines = fs.readFileSync(path.join(root, file), 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^```(\w+)/.exec(lines[i]);
    if (!m) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].startsWith('```'); i++) body.push(lines[i]);
    const prev = lines[start - 1] ?? '';
    const note = /^<!-- doc-test: (.*) -->$/.exec(prev)?.[1];
    out.push({ file, line: start + 1, lang: m[1], code: body.join('\n'), note });
  }
  return out;
}

const pages = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];

const torchAvailable = spawnSync('python3', ['-c', 'import torch, torchvision'], { encoding: 'utf8' }).status === 0;
const TRAINED = /--method (stpm|rd4ad|cfa|cflow|csflow|fastflow|cutpaste|devnet|dra|bgad|prn|semirest|regad|draem|favae|igd|gcad)\b/;

/** The command text as this test runs it (the overrides listed at the top). */
export function override(line: string): { line: string; skip?: string } {
  let l = line.replace(/\s+#.*$/, '').trim();
  if (l === '') return { line: '' };
  if (/^(sudo )?apt-get\b|^npm run build:/.test(l)) return { line: '', skip: 'run by .ci/run' };
  l = l.replace(/^npx imiad\b/, 'imiad').replace(/^node dist\/lib\/cli\.js\b/, 'imiad');
  if (/^imiad run\b/.test(l) && !/--image-size\b/.test(l) && !/--load\b/.test(l)) l += ' --image-size 64';
  if (TRAINED.test(l)) {
    if (!trainingAvailable()) return { line: '', skip: 'the libtorch training addon is not built (npm run build:train)' };
    l = l.replace(/--epochs \d+/, '--epochs 1');
    if (!/--categories\b/.test(l)) l += ' --categories woven';
    if (!/--load\b|--backbone-shape\b/.test(l)) l += ' --backbone-shape resnet18';
  }
  if (/^python3 scripts\/export-backbone\.py\b/.test(l)) {
    l = l.replace(/^python3 scripts\//, `python3 ${path.join(root, 'scripts')}/`).replace('--arch wide_resnet50_2', '--arch resnet18') + ' --random-weights';
  }
  return { line: l };
}

function shim(): string {
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const file = path.join(bin, 'imiad');
  fs.writeFileSync(file, `#!/bin/sh\nexec "${process.execPath}" "${path.join(root, 'dist', 'lib', 'cli.js')}" "$@"\n`, { mode: 0o755 });
  return bin;
}

describe.each(pages)('%s', (page) => {
  const all = blocks(page);
  const sh = all.filter((b) => b.lang === 'sh');

  it('marks what it does not run here with what runs it', () => {
    for (const b of sh.filter((x) => x.note !== undefined)) {
      const named = b.note!.match(/(?:test|scripts)\/[\w./-]+\.(?:ts|sh|js)|\.ci\/run/g) ?? [];
      if (!/^not run/.test(b.note!)) expect(named.length).toBeGreaterThan(0);
      for (const f of named) expect(fs.existsSync(path.join(root, f))).toBe(true);
    }
  });

  const runnable = sh.filter((b) => b.note === undefined);
  (runnable.length ? it : it.skip)(`runs its ${runnable.length} sh example block(s) in order`, () => {
    const dir = path.join(tmp, page.replace(/[/.]/g, '-'));
    fs.mkdirSync(dir, { recursive: true });
    const env = { ...process.env, HOME: dir, PATH: `${shim()}:${process.env.PATH}`, IMIAD_CACHE_DIR: process.env.IMIAD_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'imiad') };
    for (const b of runnable) {
      if (/scripts\/export-backbone\.py/.test(b.code) && !torchAvailable) {
        console.log(`skipped ${b.file}:${b.line}: python3's torch and torchvision are not installed`);
        continue;
      }
      const lines = b.code.split('\n').map(override);
      for (const s of lines.filter((x) => x.skip)) console.log(`${b.file}:${b.line}: a line skipped: ${s.skip}`);
      const script = lines.map((x) => x.line).filter((x) => x !== '').join('\n');
      const r = spawnSync('bash', ['-e', '-c', script], { cwd: dir, env, encoding: 'utf8', timeout: 300_000 });
      if (r.status !== 0) throw new Error(`${b.file}:${b.line} failed (exit ${r.status})\n${script}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
    }
  }, 600_000);
});

describe('README.md for users', () => {
  it('stays short and its links to docs/ resolve', () => {
    const text = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    expect(text.split('\n').length).toBeLessThanOrEqual(250);
    const links = [...text.matchAll(/\]\((docs\/[^)#]+)(?:#[^)]*)?\)/g)].map((m) => m[1]);
    expect(links.length).toBeGreaterThan(5);
    for (const l of links) expect(fs.existsSync(path.join(root, l))).toBe(true);
  });
});

describe('README.md: the Node example', () => {
  it('runs, and runs again', () => {
    const example = blocks('README.md').find((b) => b.lang === 'ts' && b.code.includes("from 'imiad'"));
    expect(example).toBeDefined();
    // The imports as require() calls of this checkout's build, the body inside an async function.
    const imports: string[] = [];
    const body: string[] = [];
    for (const line of example!.code.split('\n')) {
      const star = /^import \* as (\w+) from '([\w:]+)';$/.exec(line);
      const named = /^import \{ (.*) \} from 'imiad';$/.exec(line);
      if (star) imports.push(`const ${star[1]} = require('${star[2]}');`);
      else if (named) imports.push(`const { ${named[1]} } = require(${JSON.stringify(path.join(root, 'dist', 'lib', 'index.js'))});`);
      else body.push(line);
    }
    const file = path.join(tmp, 'node-example.js');
    fs.writeFileSync(file, `${imports.join('\n')}\n(async () => {\n${body.join('\n')}\n})().catch((e) => { console.error(e); process.exit(1); });\n`);
    for (let run = 0; run < 2; run++) {
      const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 300_000 });
      if (r.status !== 0) throw new Error(`run ${run + 1} failed:\n${r.stderr}`);
      const out = r.stdout.trim().split('\n');
      expect(out[0]).toMatch(/^1 [\d.]+ \{ p50: [\d.]+, p95: [\d.]+ \}$/);
      expect(out[1]).toMatch(/^[\d.]+ normal \{/);
    }
  }, 600_000);
});
