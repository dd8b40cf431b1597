#!/usr/bin/env node
// Lists the CPU addon's C++ sources for binding.gyp (gyp has no globbing): every native/*.cc and bindings/*.cc.
// CUDA (native/*.cu, bindings/cuda/) and training (native/train/, bindings/train/) sources live in their own
// folders and never enter the CPU addon.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const out = [];
for (const dir of ['native', 'bindings']) {
  for (const f of fs.readdirSync(path.join(root, dir)).sort()) {
    if (f.endsWith('.cc')) out.push(`${dir}/${f}`);
  }
}
process.stdout.write(out.join(' '));
