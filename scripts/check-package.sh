#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, then `npm install` of the tarball into an empty project with no compiler,
# make or Python on PATH (only node, npm, npx and sh), then `npx imiad demo --small` and `npx imiad bench knn --sizes
# 4096,16384` there (its Python peer, faiss, runs from the shipped bench/peers/ when Debian's /usr/bin/python3 has
# python3-faiss, and must then run; without it the bench says it skipped the peer). Fails if anything is
# compiled (nothing to compile with), if the CPU addon does not load from the shipped prebuilds/, or if the demo
# fails. With the npm registry as the only network, this also proves that no install script downloads anything
# (onnxruntime-node's CUDA provider, better-sqlite3's GitHub prebuild). Run by .ci/run after npm test.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/imiad-package.XXXXXX")
trap 'rm -rf "$work"' EXIT

npm pack --pack-destination "$work" >"$work/pack.log" 2>&1 || { cat "$work/pack.log"; exit 1; }
tarball=$(ls "$work"/imiad-*.tgz)

mkdir -p "$work/bin" "$work/project"
for tool in node npm npx; do ln -s "$(readlink -f "$(command -v "$tool")")" "$work/bin/$tool"; done
ln -s "$(readlink -f /bin/sh)" "$work/bin/sh"
cd "$work/project"
echo '{ "name": "imiad-user", "version": "1.0.0", "private": true }' >package.json
run() { env -i HOME="$HOME" PATH="$work/bin" TERM=dumb "$@"; }

if ! run npm install "$tarball" --foreground-scripts >"$work/install.log" 2>&1; then
  cat "$work/install.log"; echo "check-package: npm install of the packed tarball failed (above)"; exit 1
fi
# The CPU addon comes from prebuilds/ (nothing was compiled: no build/ folder).
test ! -e node_modules/imiad/build || { echo "check-package: node_modules/imiad/build exists: the addon was compiled"; exit 1; }
addon=$(run node -e "process.stdout.write(require('./node_modules/imiad/dist/bindings/load.js').cpuAddonPath())")
case "$addon" in */node_modules/imiad/prebuilds/*) ;; *) echo "check-package: the addon loaded from $addon, not prebuilds/"; exit 1 ;; esac
# onnxruntime-node downloaded nothing: its CUDA provider files are imiad's notes, not libraries.
grep -q 'Not a library' node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so
if ! run npx imiad demo --small --out demo >"$work/demo.log" 2>&1; then
  cat "$work/demo.log"; echo "check-package: npx imiad demo --small failed (above)"; exit 1
fi
test -s demo/report-small/index.html
if ! run npx imiad bench knn --sizes 4096,16384 --out bench >"$work/bench.log" 2>&1; then
  cat "$work/bench.log"; echo "check-package: npx imiad bench knn failed (above)"; exit 1
fi
for f in bench/knn.json bench/knn.svg bench/index.html; do test -s "$f" || { cat "$work/bench.log"; echo "check-package: imiad bench knn wrote no $f"; exit 1; }; done
grep -q '^bank rows ' "$work/bench.log" || { cat "$work/bench.log"; echo "check-package: imiad bench knn printed no table"; exit 1; }
if /usr/bin/python3 -c 'import faiss, numpy' 2>/dev/null; then
  grep -q '^peer faiss: ran$' "$work/bench.log" || { cat "$work/bench.log"; echo "check-package: python3-faiss is installed but the faiss peer did not run"; exit 1; }
else
  grep -q '^peer faiss: skipped ' "$work/bench.log" || { cat "$work/bench.log"; echo "check-package: the faiss peer was neither run nor reported skipped"; exit 1; }
fi
echo "check-package: the packed tarball installs without a compiler and runs imiad demo --small ($(grep -c . "$work/demo.log") lines of output) and imiad bench knn ($(grep '^peer faiss' "$work/bench.log"))"
