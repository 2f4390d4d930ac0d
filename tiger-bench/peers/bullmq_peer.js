// BullMQ's side of tiger-bench's comparison: each scenario with BullMQ's own API, in one
// Node process that is both producer and worker. Prints one JSON line: {"values": [...],
// "partial": bool}.
//
//   node bullmq_peer.js enqueue COUNT                       S1: one `add` at a time
//   node bullmq_peer.js bulk COUNT                          S2: `addBulk`, 1 000 a call
//   node bullmq_peer.js fill COUNT                          S5: `addBulk`, nothing runs
//   node bullmq_peer.js drain COUNT CONCURRENCY CAP RUNS    S3: fill, then drain until empty
//   node bullmq_peer.js latency COUNT CONCURRENCY           S4: `add` every millisecond
//   node bullmq_peer.js backlog COUNT TAKE CONCURRENCY CAP RUNS
//                                                           S7: fill COUNT, drain TAKE per run
//
// The Redis port comes from BENCH_REDIS_PORT. Jobs are removed when they complete, as
// TaskTiger and tiger remove finished tasks. A drain stops after CAP seconds and reports the
// rate over the jobs done by then ("partial").
'use strict';

const { Queue, Worker } = require('bullmq');

const connection = { host: '127.0.0.1', port: Number(process.env.BENCH_REDIS_PORT || 6379) };
const QUEUE = 'bench';
const CHUNK = 1000;
const JOB = { removeOnComplete: true };
// Above this, `n` is the enqueue time in microseconds since the epoch (S4).
const STAMPED = 1e15;

const micros = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const seconds = () => performance.now() / 1000;

async function addBulk(queue, count) {
  for (let start = 0; start < count; start += CHUNK) {
    const jobs = [];
    for (let n = start; n < Math.min(count, start + CHUNK); n++) {
      jobs.push({ name: 'noop', data: { n: n % 1000 }, opts: JOB });
    }
    await queue.addBulk(jobs);
  }
}

// Runs a worker until `take` jobs are done or `cap` seconds pass; the clock starts at the
// first job. Returns [rate, partial].
function drain(take, concurrency, cap) {
  return new Promise((resolve) => {
    let done = 0;
    let first = null;
    let finished = false;
    const worker = new Worker(QUEUE, async () => {
      if (first === null) first = seconds();
    }, { connection, concurrency, autorun: false });
    const finish = (partial) => {
      if (finished) return;
      finished = true;
      const elapsed = seconds() - (first === null ? seconds() : first);
      worker.close().then(() => resolve([done / elapsed, partial]));
    };
    worker.on('completed', () => {
      done += 1;
      if (done >= take) finish(false);
    });
    setTimeout(() => finish(true), cap * 1000).unref();
    worker.run();
  });
}

async function main() {
  const [scenario, ...rest] = process.argv.slice(2);
  const args = rest.map(Number);
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  let values = [];
  let partial = false;
  if (scenario === 'enqueue') {
    const started = seconds();
    for (let n = 0; n < args[0]; n++) {
      await queue.add('noop', { n: n % 1000 }, JOB);
    }
    values = [args[0] / (seconds() - started)];
  } else if (scenario === 'bulk' || scenario === 'fill') {
    const started = seconds();
    await addBulk(queue, args[0]);
    values = [args[0] / (seconds() - started)];
  } else if (scenario === 'drain') {
    const [count, concurrency, cap, runs] = args;
    for (let run = 0; run < runs; run++) {
      await queue.obliterate({ force: true });
      await addBulk(queue, count);
      const [rate, cut] = await drain(count, concurrency, cap);
      values.push(rate);
      partial = partial || cut;
    }
  } else if (scenario === 'backlog') {
    const [count, take, concurrency, cap, runs] = args;
    await addBulk(queue, count);
    for (let run = 0; run < runs; run++) {
      const [rate, cut] = await drain(take, concurrency, cap);
      values.push(rate);
      partial = partial || cut;
    }
  } else if (scenario === 'latency') {
    const [count, concurrency] = args;
    const delays = [];
    const worker = new Worker(QUEUE, async (job) => {
      if (job.data.n > STAMPED) delays.push(micros() - job.data.n);
    }, { connection, concurrency });
    await worker.waitUntilReady();
    // One job first, so the worker is idle and waiting when the measured ones come.
    await queue.add('noop', { n: micros() }, JOB);
    while (delays.length < 1) await new Promise((r) => setTimeout(r, 5));
    delays.length = 0;
    const started = performance.now();
    for (let i = 0; i < count; i++) {
      const wait = started + i - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await queue.add('noop', { n: micros() }, JOB);
    }
    while (delays.length < count) await new Promise((r) => setTimeout(r, 5));
    await worker.close();
    values = delays;
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  await queue.close();
  console.log(JSON.stringify({ values, partial }));
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
