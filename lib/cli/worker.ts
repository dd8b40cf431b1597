/**
 * `imiad worker --queue redis://HOST:PORT[/DB] [--concurrency N] [--device auto|cpu|cuda] [--name NAME]
 * [--work-dir DIR] [--stalled-after SECONDS]`: runs the experiments a coordinator (`imiad grid --queue`) queued,
 * until Ctrl-C or SIGTERM (the first lets the running experiments finish, a second quits at once and their jobs
 * pass to another worker). docs/grid-queue.md.
 */
import type { Command } from 'commander';

import { invalidType } from '../../bindings/errors';
import { requireDevice } from '../../bindings/validate';
import { parseQueueUrl } from '../queue/connection';
import { abortOnInterrupt } from '../runner/interrupt';
import { action } from './action';

interface WorkerFlags {
  queue: string;
  queueName?: string;
  concurrency?: string;
  device?: string;
  name?: string;
  workDir?: string;
  stalledAfter?: string;
  quiet?: boolean;
}

/** A positive number (integer when `integer`) from a flag, or an error naming the flag. */
export function positiveFlag(value: string | undefined, flag: string, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw invalidType(integer ? 'a positive integer' : 'a positive number', flag, value);
  return n;
}

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description('Run the experiments of a grid queued by `imiad grid --queue` (one worker per machine or per GPU)')
    .requiredOption('--queue <url>', 'Redis URL, redis://[:PASSWORD@]HOST:PORT[/DB] (or rediss:// for TLS); IMIAD_QUEUE_PASSWORD, when set, is the password')
    .option('--queue-name <name>', 'BullMQ queue (default imiad-grid; the coordinator\'s --queue-name)')
    .option('--concurrency <n>', 'experiments at a time in this worker (default 1)')
    .option('--device <device>', 'auto|cpu|cuda: cpu hides the GPU from this worker, cuda requires one (default auto)')
    .option('--name <name>', 'name shown on the coordinator\'s progress line (default HOSTNAME-PID)')
    .option('--work-dir <dir>', 'where the worker writes heatmaps while a job runs and few-shot copies (default ~/.cache/imiad/worker)')
    .option('--stalled-after <seconds>', 'a job whose worker went silent this long goes to another worker (default 30)')
    .option('--quiet', 'print only failures, rejections and connection problems')
    .addHelpText('after', '\nExample:\n  imiad worker --queue redis://gpu-head:6379/0 --concurrency 1 --device cuda --name box1-gpu0\n')
    .action(
      action(async (flags: WorkerFlags) => {
        const address = parseQueueUrl(flags.queue, { name: flags.queueName });
        const concurrency = positiveFlag(flags.concurrency, '--concurrency', true) ?? 1;
        const stalledAfterSeconds = positiveFlag(flags.stalledAfter, '--stalled-after', false);
        const device = requireDevice(flags.device, '--device');
        if (flags.name !== undefined && !/^[A-Za-z0-9_.:@-]{1,64}$/.test(flags.name)) throw invalidType('a name of 1-64 letters, digits, _ . : @ -', '--name', flags.name);
        const log = (line: string): void => {
          if (!flags.quiet || / failed | rejected |lost Redis|no Redis|refused/.test(line)) process.stderr.write(`${line}\n`);
        };
        const interrupt = abortOnInterrupt(() => log('imiad worker: stopping after the running experiments (Ctrl-C again to quit at once)'));
        const stop = new Promise<void>((resolve) => interrupt.signal.addEventListener('abort', () => resolve(), { once: true }));
        try {
          // BullMQ loads only for this command (a few hundred ms that every other command would pay).
          const { startQueueWorker } = await import('../queue/worker');
          const worker = await startQueueWorker(address, { concurrency, device, name: flags.name, workDir: flags.workDir, stalledAfterSeconds, log, signal: interrupt.signal });
          if (!worker) {
            log('imiad worker: stopped before Redis answered');
            return;
          }
          log(`imiad worker ${worker.name}: taking jobs from ${address.display} queue ${address.name}, ${concurrency} at a time, device ${device}`);
          await Promise.race([stop, worker.closed]);
          await worker.close();
          log(`imiad worker ${worker.name}: stopped`);
        } finally {
          interrupt.dispose();
        }
      }),
    );
}
