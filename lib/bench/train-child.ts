/**
 * `node dist/lib/bench/train-child.js JOB.json`: imiad's side of one training benchmark run, in its own process so
 * that its peak resident memory covers the same work as the peer's (lib/bench/train.ts measureTrainCase starts it).
 */
import { trainChild } from './train';

if (require.main === module) {
  const job = process.argv[2];
  if (!job) {
    process.stderr.write('usage: node train-child.js JOB.json\n');
    process.exitCode = 2;
  } else {
    trainChild(job).catch((err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 1;
    });
  }
}
