//! Criterion benchmark of the job state machine alone: the cost per job of
//! a full cycle through `JobsCore` (enqueue, claim, complete), without the
//! log, the network or a clock. It is what the per-queue statistics and
//! attempt records add to, so comparing it with a build without them
//! measures their cost (`docs/performance.md`).
//!
//! The second group, `jobs_claim`, times one claim of one job from a
//! backlog (jobs are enqueued and completed outside the timed part): with
//! no queue settings (the cost a server pays for limits it does not use),
//! and with a concurrency and a rate limit that never bind.
//!
//! Run with `cargo bench -p spool-jobs --bench core`. Under `cargo test
//! --benches` (criterion's test mode) it runs once.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spool_jobs::{
    ClaimSpec, JobSpec, JobsConfig, JobsCore, QueueConfigChange, RateLimit, Reply, Request, Schedule,
};

const T0: i64 = 1_800_000_000_000;
/// Jobs per enqueue, claim and acknowledgement: as `spool bench jobs`
/// sends them (its default batches are 500).
const BATCH: usize = 500;
/// Batches run before measuring, so the table holds as many finished jobs
/// as a busy server (up to `finished_in_memory_max`) and evicts as it
/// goes.
const WARM_BATCHES: usize = 40;
/// Jobs waiting in the queue while claims are timed, as on a busy server.
const BACKLOG: usize = 10_000;

fn spec() -> JobSpec {
    JobSpec {
        queue: "bench".into(),
        payload: Bytes::from_static(&[0u8; 100]),
        content_type: String::new(),
        headers: vec![],
        priority: 0,
        attempts_max: None,
        timeout_ms: None,
        schedule: Schedule::Now,
        idempotency_key: None,
    }
}

/// The reply to `request`, which must be accepted at once.
fn answer(core: &mut JobsCore, id: u64, request: Request, now: i64) -> Reply {
    let step = core.handle(id, request, now);
    step.replies
        .into_iter()
        .next()
        .expect("a reply")
        .1
        .expect("accepted")
}

/// A core and its clock.
struct Rig {
    core: JobsCore,
    now: i64,
    request: u64,
}

impl Rig {
    fn new() -> Self {
        let config = JobsConfig {
            finished_in_memory_max: 10_000,
            ..JobsConfig::default()
        };
        let mut rig = Rig {
            core: JobsCore::new(config, 7),
            now: T0,
            request: 0,
        };
        for _ in 0..WARM_BATCHES {
            rig.cycle();
        }
        rig
    }

    fn handle(&mut self, request: Request) -> Reply {
        self.request += 1;
        answer(&mut self.core, self.request, request, self.now)
    }

    /// One batch of jobs through their whole life, a millisecond per step.
    fn cycle(&mut self) {
        self.handle(Request::Enqueue((0..BATCH).map(|_| spec()).collect()));
        self.now += 1;
        let Reply::Claimed(claimed) = self.handle(Request::Claim(ClaimSpec {
            queues: vec!["bench".into()],
            max_jobs: BATCH as u32,
            lease_ms: 30_000,
            wait_ms: 0,
            worker: "bench-worker".into(),
        })) else {
            panic!("a claim answers with jobs");
        };
        assert_eq!(claimed.len(), BATCH);
        self.now += 1;
        let completes = claimed
            .iter()
            .map(|c| Request::Complete {
                id: c.job.id,
                token: c.token,
                result: Bytes::new(),
            })
            .collect();
        self.handle(Request::Batch(completes));
        self.now += 1;
        self.core.tick(self.now);
    }
}

fn job_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("jobs_core");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut rig = Rig::new();
    group.bench_function("enqueue_claim_complete", |b| b.iter(|| rig.cycle()));
    group.finish();
}

/// A core with a backlog of jobs, for timing claims alone.
struct ClaimRig {
    core: JobsCore,
    now: i64,
    request: u64,
}

impl ClaimRig {
    fn new(limits: bool) -> Self {
        let config = JobsConfig {
            finished_in_memory_max: 10_000,
            ..JobsConfig::default()
        };
        let mut rig = ClaimRig {
            core: JobsCore::new(config, 7),
            now: T0,
            request: 0,
        };
        if limits {
            let change = QueueConfigChange {
                concurrency_limit: Some(Some(u32::MAX)),
                rate_limit: Some(Some(RateLimit {
                    jobs: 1_000_000,
                    per_ms: 1,
                })),
                ..QueueConfigChange::default()
            };
            rig.handle(Request::ConfigureQueue {
                queue: "bench".into(),
                change,
            });
        }
        rig.handle(Request::Enqueue((0..BACKLOG).map(|_| spec()).collect()));
        rig
    }

    fn handle(&mut self, request: Request) -> Reply {
        self.request += 1;
        answer(&mut self.core, self.request, request, self.now)
    }

    /// Times `iters` claims of one job each; tops the backlog up and
    /// completes the claimed jobs untimed.
    fn claims(&mut self, iters: u64) -> Duration {
        let claim = ClaimSpec {
            queues: vec!["bench".into()],
            max_jobs: 1,
            lease_ms: 30_000,
            wait_ms: 0,
            worker: "w".into(),
        };
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let round = left.min(1_000);
            left -= round;
            let mut claimed = Vec::with_capacity(round as usize);
            let started = Instant::now();
            for _ in 0..round {
                self.request += 1;
                let step = self
                    .core
                    .handle(self.request, Request::Claim(claim.clone()), self.now);
                claimed.push(step);
            }
            total += started.elapsed();
            self.now += 1;
            let mut finishes = Vec::with_capacity(claimed.len());
            for step in claimed {
                let Some((_, Ok(Reply::Claimed(jobs)))) = step.replies.into_iter().next() else {
                    panic!("a claim was refused");
                };
                for job in jobs {
                    finishes.push(Request::Complete {
                        id: job.job.id,
                        token: job.token,
                        result: Bytes::new(),
                    });
                }
            }
            self.handle(Request::Batch(finishes));
            self.handle(Request::Enqueue((0..round).map(|_| spec()).collect()));
            self.core.tick(self.now);
        }
        total
    }
}

fn claim(c: &mut Criterion) {
    let mut group = c.benchmark_group("jobs_claim");
    group.throughput(Throughput::Elements(1));
    let mut plain = ClaimRig::new(false);
    group.bench_function("one_job_no_limits", |b| {
        b.iter_custom(|iters| plain.claims(iters))
    });
    let mut limited = ClaimRig::new(true);
    group.bench_function("one_job_limits_not_binding", |b| {
        b.iter_custom(|iters| limited.claims(iters))
    });
    group.finish();
}

criterion_group!(benches, job_cycle, claim);
criterion_main!(benches);
