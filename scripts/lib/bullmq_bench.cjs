// BullMQ's workloads for scripts/bench-jobs.sh and scripts/bench-small.sh,
// on a local Redis. Prints one JSON line.
//
//   NODE_PATH=<dir>/node_modules node bullmq_bench.cjs PORT JOBS CONCURRENCY [MODE]
//
// MODE bulk (the default):
// 1. enqueue: JOBS no-op jobs with Queue.addBulk, 1000 jobs per call, one
//    call after the other (each awaited);
// 2. process: a Worker with the given concurrency runs a handler that does
//    nothing, from the moment the Worker starts until its 'completed' event
//    has fired JOBS times: a Worker draining a preloaded backlog.
// MODE add: JOBS no-op jobs with Queue.add, one at a time, each awaited
// before the next (the shape of a web handler enqueuing one job); reports
// jobs/s and the percentiles of each call's round trip; no Worker runs
// (CONCURRENCY is ignored).
// BullMQ's defaults otherwise (completed jobs are kept: removeOnComplete is
// off; 1 attempt). The queue is obliterated at the end.
'use strict';

const { Queue, Worker } = require('bullmq');

function bullmqVersion() {
  try {
    return require('bullmq/package.json').version;
  } catch (_) {
    // package.json hidden by the package's "exports": the script reports it.
    return 'unknown';
  }
}

// The value at quantile q of sorted microseconds.
function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function addOneAtATime(queue, jobs) {
  const roundTripsUs = new Array(jobs);
  const started = process.hrtime.bigint();
  for (let i = 0; i < jobs; i++) {
    const sent = process.hrtime.bigint();
    await queue.add('noop', { n: i });
    roundTripsUs[i] = Number(process.hrtime.bigint() - sent) / 1e3;
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  roundTripsUs.sort((a, b) => a - b);
  const us = (q) => Math.round(quantile(roundTripsUs, q));
  return {
    bench: 'bullmq-add', bullmq: bullmqVersion(), node: process.version, jobs,
    add_seconds: +seconds.toFixed(3), add_jobs_per_s: Math.round(jobs / seconds),
    round_trip_us: { measures: 'Queue.add call, awaited', samples: jobs, p50: us(0.5), p99: us(0.99), p99_9: us(0.999), max: us(1) },
  };
}

async function main() {
  const [port, jobs, concurrency] = process.argv.slice(2, 5).map(Number);
  const mode = process.argv[5] || 'bulk';
  if (!port || !jobs || !concurrency || !['bulk', 'add'].includes(mode)) {
    console.error('usage: bullmq_bench.cjs PORT JOBS CONCURRENCY [bulk|add]');
    process.exit(2);
  }
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const name = `bench-${mode}-c${concurrency}-${Date.now()}`;
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  if (mode === 'add') {
    const result = await addOneAtATime(queue, jobs);
    await queue.obliterate({ force: true });
    await queue.close();
    console.log(JSON.stringify(result));
    return;
  }

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

  console.log(JSON.stringify({
    bench: 'bullmq', bullmq: bullmqVersion(), node: process.version, jobs, concurrency,
    enqueue_seconds: +enqueueSeconds.toFixed(3), enqueue_jobs_per_s: Math.round(jobs / enqueueSeconds),
    process_seconds: +processSeconds.toFixed(3), process_jobs_per_s: Math.round(jobs / processSeconds),
    failed,
  }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
