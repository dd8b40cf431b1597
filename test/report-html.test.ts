/**
 * The HTML report in a real browser: Debian's headless Chromium loads index.html from disk with networking off and
 * dumps the DOM; the test checks that every table and figure is there. Skipped (with the reason printed) when no
 * Chromium is installed (.ci/run installs Debian's `chromium`).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { writeReport } from '../lib/report';
import { storeRows } from './helpers/rows';

const candidates = ['chromium', 'chromium-browser', 'google-chrome'];
const chromium = candidates.map((c) => spawnSync('sh', ['-c', `command -v ${c}`], { encoding: 'utf8' }).stdout.trim()).find((p) => p.length > 0);
if (!chromium) process.stdout.write(`report-html.test: skipped, no headless browser found (${candidates.join(', ')}); apt-get install -y chromium\n`);
const maybe = chromium ? test : test.skip;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imiad-html-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function runChromium(args: string[]): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(
    chromium!,
    ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(tmp, 'profile')}`, ...args],
    { encoding: 'utf8', timeout: 90000, maxBuffer: 64 << 20 },
  );
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', status: r.status };
}

maybe('the HTML report renders offline in headless Chromium with its tables and figures', async () => {
  const out = path.join(tmp, 'report');
  const report = await writeReport(storeRows(), tmp, out, { png: false });
  const url = `file://${report.html}`;
  const dom = runChromium(['--dump-dom', url]);
  expect(dom.status).toBe(0);
  expect(dom.stdout.match(/<table id="table-/g)).toHaveLength(report.tables.length);
  for (const t of report.tables) expect(dom.stdout).toContain(`<table id="${t.slug}"`);
  for (const f of report.figures) expect(dom.stdout).toContain(`<figure id="${f.slug}">`);
  expect(dom.stdout.match(/<svg /g)!.length).toBe(report.figures.length);
  expect(dom.stdout).toContain('<td class="best"><strong>');
  expect(dom.stdout).toContain('<td class="second"><u>');
  const shot = path.join(tmp, 'page.png');
  const screenshot = runChromium([`--screenshot=${shot}`, '--window-size=1280,2000', url]);
  expect(screenshot.status).toBe(0);
  // A PNG signature and a non-trivial size: the page was laid out and painted.
  const png = fs.readFileSync(shot);
  expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
  expect(png.length).toBeGreaterThan(20000);
});
