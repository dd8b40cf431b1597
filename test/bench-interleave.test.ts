/**
 * bench/common.ts interleavedRepeats: each repeat runs the contenders in an order rotated by one, every result is
 * kept in repeat order, and the load report carries the load averages and a warning exactly when the machine is busy.
 */
import { formatSpread, interleavedRepeats, spread } from '../bench/common';

describe('interleavedRepeats', () => {
  test('rotates the order per repeat and keeps every result', async () => {
    const calls: string[] = [];
    const make = (name: string) => ({
      name,
      run: (repeat: number) => {
        calls.push(`${name}${repeat}`);
        return { name, repeat, cpu: 0 };
      },
      cpuSeconds: (r: { cpu: number }) => r.cpu,
    });
    const done = await interleavedRepeats([make('a'), make('b'), make('c')], 4);
    expect(done.order).toEqual([
      ['a', 'b', 'c'],
      ['b', 'c', 'a'],
      ['c', 'a', 'b'],
      ['a', 'b', 'c'],
    ]);
    expect(calls).toEqual(['a0', 'b0', 'c0', 'b1', 'c1', 'a1', 'c2', 'a2', 'b2', 'a3', 'b3', 'c3']);
    expect(done.runs.b.map((r) => r.repeat)).toEqual([0, 1, 2, 3]);
    expect(done.load.start).toHaveLength(3);
    expect(done.load.end).toHaveLength(3);
    const busy = done.load.start[0] >= 0.5 || (done.load.otherCores !== null && done.load.otherCores >= 0.25);
    expect(done.load.warning !== null).toBe(busy);
    if (busy) expect(done.load.warning).toMatch(/^WARNING: the machine was busy \(load average [\d.]+ [\d.]+ [\d.]+ at the start/);
  });

  test('without CPU seconds from a contender there is no estimate of the other processes', async () => {
    const done = await interleavedRepeats([{ name: 'x', run: () => 1 }], 2);
    expect(done.runs.x).toEqual([1, 1]);
    expect(done.load.otherCores).toBeNull();
  });

  test('spread and its table form', () => {
    const s = spread([3, 1, 2, 5]);
    expect(s).toEqual({ median: 3, min: 1, max: 5 });
    expect(formatSpread(s)).toBe('3.00 [1.00-5.00]');
  });
});
