/** The benchmarks' shared helpers live in lib/bench/common.ts (shipped: `imiad bench` uses them too). */
export * from '../lib/bench/common';
