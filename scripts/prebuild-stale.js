// Whether prebuilds/<platform>-<arch>/ lacks imiad's addon or holds one older than the native sources
// (binding.gyp, native/*.{cc,h}, bindings/*.{cc,h}). Used by scripts/prepack.js and test/global-setup.js.
'use strict';
const fs = require('fs');
const path = require('path');

function newestSource(root) {
  let newest = fs.statSync(path.join(root, 'binding.gyp')).mtimeMs;
  for (const dir of ['native', 'bindings']) {
    for (const f of fs.readdirSync(path.join(root, dir))) {
      if (/\.(cc|h)$/.test(f)) newest = Math.max(newest, fs.statSync(path.join(root, dir, f)).mtimeMs);
    }
  }
  return newest;
}

function prebuildIsStale(root) {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return true;
  const binaries = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
  if (binaries.length === 0) return true;
  const built = Math.min(...binaries.map((f) => fs.statSync(path.join(dir, f)).mtimeMs));
  return newestSource(root) > built;
}

module.exports = { prebuildIsStale };
