import * as os from 'os';

import { formatSpread, measureInterleaved, ratioSpread, spreadOf, watchLoad } from '../bench/common';

describe('bench/common: interleaved repeats', () => {
  test('rounds run every contender once, the order reversed every other round, warm-ups first', async () => {
    const calls: string[] = [];
    // Contender `name` returns its times in call order (warm-ups included) and results name0, name1, ...
    const contender = (name: string, times: number[], warmup = 0) => {
      let n = 0;
      return {
        name,
        warmup,
        run: () => {
          calls.push(name);
          const ms = times[n];
          return { ms, result: `${name}${n++}` };
        },
      };
    };
    const seen: string[] = [];
    const a = contender('a', [0, 0, 10, 30, 20], 2);
    const b = contender('b', [100, 90, 80]);
    const [ma, mb] = await measureInterleaved([a, b], 3, (name, r, round) => seen.push(`${round}:${name}:${r.ms}`));
    expect(calls).toEqual(['a', 'a', 'a', 'b', 'b', 'a', 'a', 'b']);
    expect(seen).toEqual(['0:a:10', '0:b:100', '1:b:90', '1:a:30', '2:a:20', '2:b:80']);
    expect(ma.ms).toEqual({ median: 20, min: 10, max: 30, runs: [10, 30, 20] });
    expect(ma.results).toEqual(['a2', 'a3', 'a4']);
    expect(mb.ms.median).toBe(90);
    // Ratios per round: 100 / 10, 90 / 30, 80 / 20.
    expect(ratioSpread(mb, ma)).toEqual({ median: 4, min: 3, max: 10, runs: [10, 3, 4] });
  });

  test('spreads print as median (min-max), a single or constant figure alone', () => {
    expect(formatSpread(spreadOf([95.24, 90.1, 110.3]))).toBe('95.2 (90.1-110)');
    expect(formatSpread(spreadOf([1234.4, 1500.6, 1100.2]))).toBe('1234 (1100-1501)');
    expect(formatSpread(spreadOf([7]))).toBe('7.00');
    expect(formatSpread(spreadOf([2160, 2160]))).toBe('2160');
    expect(spreadOf([3, 1, 2, 4]).median).toBe(3);
  });

  test('watchLoad prints the load average at start and end and reports the other processes\' CPU', () => {
    const out: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (out.push(String(chunk)), true));
    try {
      const watch = watchLoad('demo');
      let x = 0;
      for (let i = 0; i < 2e6; i++) x += Math.sqrt(i);
      expect(x).toBeGreaterThan(0);
      const report = watch.finish();
      expect(report.cores).toBe(os.availableParallelism());
      expect(report.loadStart).toHaveLength(3);
      expect(report.loadEnd).toHaveLength(3);
      if (process.platform === 'linux') {
        expect(report.otherCores).not.toBeNull();
        expect(report.otherCores as number).toBeGreaterThanOrEqual(0);
        expect(report.otherCores as number).toBeLessThanOrEqual(report.cores);
      }
      expect(report.busy).toBe((report.otherCores !== null && report.otherCores > 0.1 * report.cores) || report.loadStart[0] > 0.5 * report.cores);
      expect(out[0]).toMatch(/^demo: load average \(1 \/ 5 \/ 15 min\) at start \d+\.\d\d \/ \d+\.\d\d \/ \d+\.\d\d on \d+ cores\n$/);
      expect(out[1]).toMatch(/^demo: load average at end .* other processes used \d+\.\d\d cores on average over \d+ s\n$/);
      expect(out.length).toBe(report.busy ? 3 : 2);
      if (report.busy) expect(out[2]).toBe('WARNING: the machine was busy during this benchmark; its figures are not quiet-machine figures\n');
    } finally {
      spy.mockRestore();
    }
  });
});
