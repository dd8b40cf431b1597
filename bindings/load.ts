/**
 * Loads the CPU addon with node-gyp-build: a prebuilt binary from prebuilds/ when one fits this platform,
 * else the one compiled into build/Release by `npm install`. PREBUILDS_ONLY=1 (node-gyp-build's own switch)
 * refuses the compiled fallback, which is how the tests prove the shipped prebuild loads.
 */
import * as fs from 'fs';
import * as path from 'path';

/** Root of the installed package (the folder holding package.json), from src (bindings/) or dist (dist/bindings/). */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const candidate = path.join(dir, 'package.json');
    if (fs.existsSync(candidate) && fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`imiad: cannot find the package root above ${__dirname}`);
    dir = parent;
  }
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const nodeGypBuild = require('node-gyp-build') as ((dir: string) => unknown) & { path: (dir: string) => string };

let cached: unknown;

/** The raw CPU addon (untyped: the typed wrappers live beside each kernel family). */
export function cpuAddon<T = Record<string, unknown>>(): T {
  if (cached === undefined) cached = nodeGypBuild(packageRoot());
  return cached as T;
}

/** The file the CPU addon was loaded from. */
export function cpuAddonPath(): string {
  return nodeGypBuild.path(packageRoot());
}
