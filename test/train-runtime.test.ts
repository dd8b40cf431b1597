/**
 * The training engine's runtime (native/train/runtime.h, docs/training-speed.md): every call of every model runs on
 * one persistent training thread with the model's thread count; libtorch's tensors come from the caching allocator,
 * whose blocks a second step reuses instead of mapping new ones, and which gives its blocks back when a call leaves
 * them unused, when the thread is idle, and on request. Skips, with the reason printed, without the training addon.
 */
import { type Nchw, trainAddon, trainAddonPath, trainingAvailable, TrainModel } from '../bindings/train/train';

const available = trainingAvailable();
if (!available) {
  process.stdout.write(`test/train-runtime.test.ts: skipping: the training addon is not built (${trainAddonPath()}); run npm run build:train\n`);
}
const withAddon = available ? test : test.skip;

/** A tiny STPM batch: n images of size px and teacher layers of 4, 8 and 16 channels at 1/4, 1/8 and 1/16. */
function batch(n: number, size: number, seed: number): { images: Nchw; teacher: Nchw[] } {
  let s = seed;
  const fill = (len: number): Float32Array => {
    const a = new Float32Array(len);
    for (let i = 0; i < len; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      a[i] = s / 4294967296;
    }
    return a;
  };
  const teacher = [4, 8, 16].map((c, i): Nchw => {
    const h = size / 4 / 2 ** i;
    return { data: fill(n * c * h * h), shape: [n, c, h, h] };
  });
  return { images: { data: fill(n * 3 * size * size), shape: [n, 3, size, size] }, teacher };
}

const model = (threads: number): TrainModel => new TrainModel({ kind: 'stpm', channels: [4, 8, 16], seed: 0, threads, lr: 0.1 });

describe('training runtime', () => {
  withAddon("every call runs on the one training thread, with the calling model's thread count", async () => {
    const addon = trainAddon();
    const one = model(1);
    const two = model(2);
    const b = batch(2, 64, 1);
    await one.step(b.images, b.teacher);
    const first = addon.runtimeStats();
    expect(first.lastThreads).toBe(1);
    expect(first.threadId).toBeGreaterThan(0);
    expect(first.threadId).not.toBe(process.pid); // not the JS thread
    await two.step(b.images, b.teacher);
    expect(addon.runtimeStats().lastThreads).toBe(2);
    await one.maps(b.images, b.teacher, 64);
    expect(addon.runtimeStats().lastThreads).toBe(1);
    // Concurrent calls of two models queue on the same thread.
    const tasks = addon.runtimeStats().tasks;
    await Promise.all([one.step(b.images, b.teacher), two.step(b.images, b.teacher), one.step(b.images, b.teacher)]);
    const after = addon.runtimeStats();
    expect(after.tasks).toBe(tasks + 3);
    expect(after.threadId).toBe(first.threadId);
  });

  withAddon("the JS thread's own tensor work stays on one thread: no second OpenMP team beside the training thread's", async () => {
    // A model built with 2 threads (its constructor runs on the JS thread with that count), then state out and in on
    // the JS thread: afterwards the JS thread is back to 1 thread. Were it left at 2, its next parallel copy would start
    // a second OpenMP team, and libgomp, managing more threads than cores, would stop spinning between the training
    // team's parallel regions (DevNet at 2 threads: ~15,000 context switches in 10 steps instead of ~1,000, 1.1x
    // PyTorch's time instead of 0.91x; docs/training-speed.md).
    const addon = trainAddon();
    const m = model(2);
    expect(addon.runtimeStats().callerThreads).toBe(1);
    m.loadState(m.state());
    const b = batch(2, 64, 3);
    await m.step(b.images, b.teacher);
    const stats = addon.runtimeStats();
    expect(stats.callerThreads).toBe(1);
    expect(stats.lastThreads).toBe(2);
  });

  withAddon('tensors come from the caching allocator: later steps reuse the blocks instead of mapping new ones', async () => {
    const addon = trainAddon();
    expect(addon.runtimeStats().allocatorInstalled).toBe(true);
    const m = model(1);
    const b = batch(4, 128, 2);
    // The first two steps map the working set (the second adds what the optimiser's new state displaced).
    await m.step(b.images, b.teacher);
    await m.step(b.images, b.teacher);
    const before = addon.runtimeStats();
    const losses: number[] = [];
    for (let i = 0; i < 3; i++) losses.push(await m.step(b.images, b.teacher));
    const after = addon.runtimeStats();
    expect(after.mappedBlocks).toBe(before.mappedBlocks);
    expect(after.reusedBlocks).toBeGreaterThan(before.reusedBlocks + 30);
    expect(after.cachedBytes).toBeGreaterThan(0);
    expect(after.peakBytes).toBeGreaterThanOrEqual(after.liveBytes + after.cachedBytes);
    // Reused (uninitialised) memory changes nothing: a fresh model on fresh blocks gives the same losses.
    addon.releaseCachedMemory();
    const fresh = model(1);
    const again: number[] = [];
    for (let i = 0; i < 5; i++) again.push(await fresh.step(b.images, b.teacher));
    expect(again.slice(2)).toEqual(losses);
  });

  withAddon('cached blocks are given back on request, after a call that leaves them unused, and when idle', async () => {
    const addon = trainAddon();
    const m = model(1);
    const big = batch(4, 128, 3);
    const small = batch(1, 32, 4);
    await m.step(big.images, big.teacher);
    await m.step(big.images, big.teacher);
    const cached = addon.runtimeStats().cachedBytes;
    expect(cached).toBeGreaterThan(1 << 20);
    // A call of other shapes does not reuse the big blocks: they are unmapped when it ends.
    await m.maps(small.images, small.teacher, 32);
    expect(addon.runtimeStats().cachedBytes).toBeLessThan(cached / 4);
    await m.step(big.images, big.teacher);
    const unmapped = addon.runtimeStats().unmappedBlocks;
    expect(addon.releaseCachedMemory()).toBeGreaterThan(0);
    const released = addon.runtimeStats();
    expect(released.cachedBytes).toBe(0);
    expect(released.unmappedBlocks).toBeGreaterThan(unmapped);
    const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
    try {
      // A shorter idle time applies to the wait already under way.
      await m.step(big.images, big.teacher);
      expect(addon.runtimeStats().cachedBytes).toBeGreaterThan(0);
      addon.setIdleReleaseMs(50);
      await sleep(500);
      expect(addon.runtimeStats().cachedBytes).toBe(0);
      await m.step(big.images, big.teacher);
      expect(addon.runtimeStats().cachedBytes).toBeGreaterThan(0);
      await sleep(500);
      expect(addon.runtimeStats().cachedBytes).toBe(0);
    } finally {
      addon.setIdleReleaseMs(5000);
    }
    expect(addon.runtimeStats().idleReleaseMs).toBe(5000);
    expect(() => addon.setIdleReleaseMs(-1)).toThrow(expect.objectContaining({ code: 'ERR_IMIAD_RANGE', message: 'Expected integer between 0 and 3600000 for ms' }));
  });
});
