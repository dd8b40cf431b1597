#!/usr/bin/env node
// imiad's `preinstall`: npm runs every package's preinstall before any package's install or postinstall script, so
// this is the one moment at which imiad can prepare two of its dependencies for an install that reaches only the npm
// registry and has no compiler:
//
// 1. better-sqlite3 (the results store) downloads its prebuilt binary from GitHub (prebuild-install) and compiles
//    itself when that fails. prebuild-install first looks for a local prebuild in the package's own `prebuilds/`
//    folder (its `local-prebuilds` option); imiad's package ships, for the platform and Node ABI it was packed on,
//    the tarball prebuild-install expects there (made by scripts/prepack.js), and copies it into that folder.
// 2. onnxruntime-node (the backbone) downloads its CUDA execution provider (~400 MB, from outside the npm registry)
//    on linux-x64 unless asked not to, and fails the whole install without internet. imiad does not use the CUDA
//    provider. Unless the user asked for onnxruntime-node's extra install (`--onnxruntime-node-install[=cuda12]`, or
//    its environment variables), the three provider files its installer looks for are written as short text notes,
//    so that its installer finds them and downloads nothing. The GPU opt-in is explicit (docs/cuda.md):
//      npm install imiad --onnxruntime-node-install=cuda12
//    or, after a CPU-only install: npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12 (it overwrites
//    the notes with the real libraries).
// Nothing here downloads anything; every step is skipped when what it needs is absent, and a failure only prints.
'use strict';
const fs = require('fs');
const path = require('path');

const here = path.join(__dirname, '..');
const say = (line) => process.stderr.write(`imiad preinstall: ${line}\n`);

/** The folder of an installed package, looked up the way Node resolves it from imiad's folder. */
function packageDir(name) {
  for (let dir = here; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.dirname(dir) === dir) return null;
  }
}

/** prebuild-install's file name: {name}-v{version}-{runtime}-v{abi}-{platform}{libc}-{arch}.tar.gz (glibc: no libc). */
function sqlitePrebuildName(version) {
  return `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
}

function seedSqlitePrebuild() {
  const dir = packageDir('better-sqlite3');
  if (!dir) return;
  const { version } = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const name = sqlitePrebuildName(version);
  const shipped = path.join(here, 'prebuilds', `${process.platform}-${process.arch}`, name);
  if (!fs.existsSync(shipped)) return;
  fs.mkdirSync(path.join(dir, 'prebuilds'), { recursive: true });
  fs.copyFileSync(shipped, path.join(dir, 'prebuilds', name));
}

/** onnxruntime-node's own switches (script/install-utils.js parseInstallFlag): any of them means the user chose. */
function onnxInstallRequested() {
  const names = ['ONNXRUNTIME_NODE_INSTALL', 'npm_config_onnxruntime_node_install', 'ONNXRUNTIME_NODE_INSTALL_CUDA', 'npm_config_onnxruntime_node_install_cuda'];
  return names.some((n) => process.env[n] !== undefined && process.env[n] !== '');
}

const ONNX_PROVIDER_FILES = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so'];

function skipOnnxCudaDownload() {
  if (process.platform !== 'linux' || process.arch !== 'x64' || onnxInstallRequested()) return;
  const dir = packageDir('onnxruntime-node');
  if (!dir) return;
  const bin = path.join(dir, 'bin', 'napi-v6', 'linux', 'x64');
  if (!fs.existsSync(bin)) return;
  const note =
    'Not a library: imiad installed onnxruntime-node for the CPU only and wrote this note so that its installer\n' +
    'downloads nothing. For the CUDA execution provider run: npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12\n';
  for (const f of ONNX_PROVIDER_FILES) {
    const file = path.join(bin, f);
    if (!fs.existsSync(file)) fs.writeFileSync(file, note);
  }
}

if (require.main === module) {
  for (const [what, step] of [['better-sqlite3 prebuild', seedSqlitePrebuild], ['onnxruntime-node CPU-only install', skipOnnxCudaDownload]]) {
    try {
      step();
    } catch (err) {
      say(`${what} skipped: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

module.exports = { sqlitePrebuildName, packageDir, ONNX_PROVIDER_FILES };
