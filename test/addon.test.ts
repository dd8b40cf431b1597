import { spawnSync } from 'child_process';
import * as path from 'path';
import { Worker } from 'worker_threads';

import { cpuAddon, cpuAddonPath, packageRoot } from '../bindings/load';

const root = packageRoot();

describe('CPU addon loading', () => {
  test('loads and reports its backend and thread count', () => {
    const addon = cpuAddon<{ backend: string; threadCount: () => number }>();
    expect(addon.backend).toBe('cpu');
    expect(addon.threadCount()).toBeGreaterThanOrEqual(1);
  });

  test('IMIAD_THREADS sets the kernels\' thread count', () => {
    const r = spawnSync(process.execPath, ['-e', "console.log(require('./dist/bindings/load').cpuAddon().threadCount())"], {
      cwd: root,
      env: { ...process.env, IMIAD_THREADS: '3' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('3');
  });

  test('loads in two worker_threads at once', async () => {
    const code = `
      const { parentPort } = require('worker_threads');
      const addon = require(${JSON.stringify(path.join(root, 'dist/bindings/load.js'))}).cpuAddon();
      parentPort.postMessage(addon.backend + ':' + addon.threadCount());`;
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const w = new Worker(code, { eval: true });
        w.once('message', resolve);
        w.once('error', reject);
      });
    const results = await Promise.all([run(), run()]);
    for (const r of results) expect(r).toMatch(/^cpu:\d+$/);
  });
});

describe('prebuilt binary', () => {
  const prebuildDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);

  // test/global-setup.js builds the prebuild (npm run prebuild) before any test runs, when absent or stale.

  test('loads with PREBUILDS_ONLY=1 from prebuilds/', () => {
    const r = spawnSync(
      process.execPath,
      ['-e', "const l=require('./dist/bindings/load'); l.cpuAddon(); console.log(l.cpuAddonPath())"],
      { cwd: root, env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim().startsWith(prebuildDir)).toBe(true);
    expect(r.stdout.trim()).toMatch(/\.node$/);
  });
});
