// BullMQ's enqueue-and-process workload for scripts/bench-jobs.sh, on a
// local Redis. Prints one JSON line.
//
//   NODE_PATH=<dir>/node_modules node bullmq_bench.cjs PORT JOBS CONCURRENCY
//
// 1. enqueue: JOBS no-op jobs with Queue.addBulk, 1000 jobs per call, one
//    call after the other (each awaited);
// 2. process: a Worker with the given concurrency runs a handler that does
//    nothing, from the moment the Worker starts until its 'completed' event
//    has fired JOBS times.
// BullMQ's defaults otherwise (completed jobs are kept: removeOnComplete is
// off; 1 attempt). The queue is obliterated first and last.
'use strict';

const { Queue, Worker } = require('bullmq');

async function main() {
  const [port, jobs, concurrency] = process.argv.slice(2).map(Number);
  if (!port || !jobs || !concurrency) {
    console.error('usage: bullmq_bench.cjs PORT JOBS CONCURRENCY');
    process.exit(2);
  }
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const name = `bench-c${concurrency}-${Date.now()}`;
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();

  const enqueueStarted = process.hrtime.bigint();
  for (let first = 0; first < jobs; first += 1000) {
    const size = Math.min(1000, jobs - first);
    const bulk = new Array(size);
    for (let i = 0; i < size; i++) bulk[i] = { name: 'noop', data: { n: first + i } };
    await queue.addBulk(bulk);
  }
  const enqueueSeconds = Number(process.hrtime.bigint() - enqueueStarted) / 1e9;

  let completed = 0;
  let failed = 0;
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });
  const worker = new Worker(name, async () => {}, { connection, concurrency, autorun: false });
  worker.on('completed', () => { if (++completed === jobs) resolveDone(); });
  worker.on('failed', () => { failed++; });
  const processStarted = process.hrtime.bigint();
  worker.run();
  await done;
  const processSeconds = Number(process.hrtime.bigint() - processStarted) / 1e9;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();

  let version = 'unknown';
  try {
    version = require('bullmq/package.json').version;
  } catch (_) {
    // package.json hidden by the package's "exports": the script reports it.
  }
  console.log(JSON.stringify({
    bench: 'bullmq', bullmq: version, node: process.version, jobs, concurrency,
    enqueue_seconds: +enqueueSeconds.toFixed(3), enqueue_jobs_per_s: Math.round(jobs / enqueueSeconds),
    process_seconds: +processSeconds.toFixed(3), process_jobs_per_s: Math.round(jobs / processSeconds),
    failed,
  }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
