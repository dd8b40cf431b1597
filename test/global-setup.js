// Runs once before any test worker starts: makes sure the prebuilt binary (`npm run prebuild`, prebuildify
// --napi --strip) exists and is newer than the native sources, so test/addon.test.ts can prove it loads.
// Building it here, not inside a test, matters: prebuildify runs node-gyp in the package folder and would
// rebuild build/ under the feet of test files that are loading the addon in parallel.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');

function newestSource() {
  let newest = fs.statSync(path.join(root, 'binding.gyp')).mtimeMs;
  for (const dir of ['native', 'bindings']) {
    for (const f of fs.readdirSync(path.join(root, dir))) {
      if (/\.(cc|h)$/.test(f)) newest = Math.max(newest, fs.statSync(path.join(root, dir, f)).mtimeMs);
    }
  }
  return newest;
}

function prebuildIsStale() {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return true;
  const binaries = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
  if (binaries.length === 0) return true;
  const built = Math.min(...binaries.map((f) => fs.statSync(path.join(dir, f)).mtimeMs));
  return newestSource() > built;
}

module.exports = async function globalSetup() {
  if (!prebuildIsStale()) return;
  process.stderr.write('\n[imiad tests] building the prebuilt binary (npm run prebuild)...\n');
  const r = spawnSync('npm', ['run', 'prebuild'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run prebuild failed:\n${r.stdout}\n${r.stderr}`);
};
