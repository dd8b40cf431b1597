// Runs once before any test worker starts: makes sure the prebuilt binary (`npm run prebuild`, prebuildify
// --napi --strip) exists and is newer than the native sources, so test/addon.test.ts can prove it loads.
// Building it here, not inside a test, matters: prebuildify runs node-gyp in the package folder and would
// rebuild build/ under the feet of test files that are loading the addon in parallel.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const { prebuildIsStale } = require('../scripts/prebuild-stale');

const root = path.join(__dirname, '..');

module.exports = async function globalSetup() {
  if (!prebuildIsStale(root)) return;
  process.stderr.write('\n[imiad tests] building the prebuilt binary (npm run prebuild)...\n');
  const r = spawnSync('npm', ['run', 'prebuild'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run prebuild failed:\n${r.stdout}\n${r.stderr}`);
};
