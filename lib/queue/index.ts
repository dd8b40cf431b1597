/** lib/queue: the experiment grid across machines on a BullMQ queue in Redis (docs/grid-queue.md). */
export { parseQueueUrl, redactQueueUrl, DEFAULT_QUEUE_NAME, QUEUE_PREFIX, type QueueAddress } from './connection';
export { validateJob, validateOutcome, jobOf, JOB_NAME, type ExperimentJob, type JobOutcome } from './jobs';
export { runQueuedGrid, DEFAULT_RETRIES, type QueueGridOptions, type QueueGridState, type QueueGridSummary } from './coordinator';
export { startQueueWorker, experimentOfJob, type QueueWorker, type QueueWorkerOptions, type JobProgress } from './worker';
