#!/usr/bin/env node
// `npm pack` / `npm publish` (prepack): puts the prebuilt binaries for this platform into prebuilds/<platform>-<arch>/
// so that an install on the same platform compiles nothing:
// - imiad's own CPU addon, built by prebuildify (`npm run prebuild`: N-API, stripped), when absent or older than
//   the native sources (the check test/global-setup.js uses too);
// - better-sqlite3's binary for this Node ABI, packed as the tarball its prebuild-install looks for in a local
//   `prebuilds/` folder (scripts/preinstall.js copies it there on the user's machine).
// The TypeScript build is `prepare`, which npm runs after this.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const { sqlitePrebuildName, packageDir } = require('./preinstall');
const { prebuildIsStale } = require('./prebuild-stale');

const root = path.join(__dirname, '..');
const target = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit code ${r.status})`);
}

if (prebuildIsStale(root)) run('npm', ['run', 'prebuild']);

const sqlite = packageDir('better-sqlite3');
const binary = sqlite && path.join(sqlite, 'build', 'Release', 'better_sqlite3.node');
// Only a binary this Node loads: its ABI is the one the tarball's name promises.
const loads = (file) => spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], { stdio: 'ignore' }).status === 0;
if (binary && fs.existsSync(binary) && loads(binary)) {
  const { version } = JSON.parse(fs.readFileSync(path.join(sqlite, 'package.json'), 'utf8'));
  fs.mkdirSync(target, { recursive: true });
  for (const old of fs.readdirSync(target)) if (old.startsWith('better-sqlite3-')) fs.rmSync(path.join(target, old));
  // The layout prebuild-install unpacks into the package folder: build/Release/better_sqlite3.node.
  run('tar', ['-czf', path.join(target, sqlitePrebuildName(version)), '-C', sqlite, 'build/Release/better_sqlite3.node']);
} else {
  process.stderr.write(`imiad prepack: no better-sqlite3 binary that Node ${process.version} loads; the package will not carry its prebuild\n`);
}
