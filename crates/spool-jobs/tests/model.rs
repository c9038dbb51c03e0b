//! A model-based property test of the job state machine. Random sequences
//! of enqueues, claims, heartbeats, completions, failures, releases,
//! cancellations, re-drives, purges and clock advances run against
//! `JobsCore` and against a plain model written for this test from the
//! documented rules (`docs/jobs.md`); every reply, every job and every count
//! must agree after every step.
//!
//! Invariants checked besides agreement: a job holds a lease exactly when
//! it is running, and only its latest lease token is accepted; each claim
//! of a job has a higher attempt number than the one before and a token
//! never handed out for that job before (tokens are random so they cannot
//! be guessed, so it is the attempt number that grows); no dead or
//! scheduled job is ever claimed; the counts per state of each queue match
//! the model; and a fresh core applying the same events rebuilds the same
//! table.

mod common;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::{T0, spec};
use proptest::prelude::*;
use spool_jobs::{
    ClaimSpec, DeadFilter, Event, JobError, JobId, JobSpec, JobState, JobsConfig, JobsCore, Reply, Request,
    Schedule, Target,
};

const QUEUES: [&str; 3] = ["a", "b", "never-used"];
/// Queues jobs are enqueued to; the last of `QUEUES` stays unknown.
const USED_QUEUES: usize = 2;

#[derive(Debug, Clone, Copy)]
enum Token {
    /// The job's live lease token, if it has one.
    Live,
    /// A token of an earlier attempt of the job.
    Stale,
    Forged,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: usize,
        delay_ms: u64,
        attempts_max: u32,
        priority: i32,
    },
    Claim {
        queue: usize,
        max_jobs: u32,
        lease_ms: u64,
    },
    Heartbeat {
        pick: usize,
        token: Token,
        extend_ms: u64,
    },
    Complete {
        pick: usize,
        token: Token,
    },
    Fail {
        pick: usize,
        token: Token,
        retryable: bool,
        retry_delay_ms: Option<u64>,
    },
    Release {
        pick: usize,
        token: Token,
    },
    Cancel {
        pick: usize,
    },
    /// One job by pick, or every dead job of a queue.
    RetryDead {
        pick: Option<usize>,
        queue: usize,
    },
    PurgeDead {
        pick: Option<usize>,
        queue: usize,
    },
    Advance {
        ms: u64,
    },
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![6 => Just(Token::Live), 2 => Just(Token::Stale), 1 => Just(Token::Forged)]
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        3 => (0..USED_QUEUES, prop_oneof![Just(0u64), 1..1_500u64], 1..4u32, 0..3i32).prop_map(
            |(queue, delay_ms, attempts_max, priority)| Op::Enqueue { queue, delay_ms, attempts_max, priority }
        ),
        3 => (0..QUEUES.len(), 0..4u32, prop_oneof![Just(0u64), 100..2_000u64])
            .prop_map(|(queue, max_jobs, lease_ms)| Op::Claim { queue, max_jobs, lease_ms }),
        2 => (pick, token(), prop_oneof![Just(0u64), 100..2_000u64])
            .prop_map(|(pick, token, extend_ms)| Op::Heartbeat { pick, token, extend_ms }),
        2 => (pick, token()).prop_map(|(pick, token)| Op::Complete { pick, token }),
        2 => (
            pick,
            token(),
            any::<bool>(),
            prop_oneof![Just(None), Just(Some(0u64)), (1..1_500u64).prop_map(Some)]
        )
            .prop_map(|(pick, token, retryable, retry_delay_ms)| Op::Fail {
                pick,
                token,
                retryable,
                retry_delay_ms
            }),
        1 => (pick, token()).prop_map(|(pick, token)| Op::Release { pick, token }),
        1 => pick.prop_map(|pick| Op::Cancel { pick }),
        1 => (proptest::option::of(pick), 0..QUEUES.len())
            .prop_map(|(pick, queue)| Op::RetryDead { pick, queue }),
        1 => (proptest::option::of(pick), 0..QUEUES.len())
            .prop_map(|(pick, queue)| Op::PurgeDead { pick, queue }),
        2 => (1..2_500u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn config() -> JobsConfig {
    JobsConfig {
        finished_retention_ms: 3_000,
        dead_retention_ms: 10_000,
        finished_in_memory_max: 3,
        ..JobsConfig::default()
    }
}

#[derive(Debug, Clone)]
struct ModelLease {
    token: u64,
    until_ms: i64,
    lease_ms: u64,
}

#[derive(Debug, Clone)]
struct ModelJob {
    queue: usize,
    priority: i32,
    state: JobState,
    run_at_ms: i64,
    finished_ms: Option<i64>,
    attempt: u32,
    attempts_max: u32,
    attempts_forgiven: u32,
    lease: Option<ModelLease>,
    cancel_requested: bool,
    completed_token: Option<u64>,
    /// Every token handed out for this job, oldest first.
    tokens: Vec<u64>,
}

impl ModelJob {
    fn has_attempts_left(&self) -> bool {
        self.attempt - self.attempts_forgiven < self.attempts_max
    }

    fn finish(&mut self, state: JobState, now: i64) {
        self.state = state;
        self.finished_ms = Some(now);
        self.lease = None;
    }
}

/// The rules of `docs/jobs.md`, as plainly as they can be written.
struct Model {
    config: JobsConfig,
    jobs: BTreeMap<JobId, ModelJob>,
    /// Jobs that have left memory.
    gone: BTreeSet<JobId>,
    /// Every id ever enqueued, in order: what ops pick from.
    ids: Vec<JobId>,
    known: BTreeSet<usize>,
}

impl Model {
    fn promote(&mut self, now: i64) {
        for job in self.jobs.values_mut() {
            if job.state == JobState::Scheduled && job.run_at_ms <= now {
                job.state = JobState::Available;
            }
        }
    }

    fn leased(&self, id: JobId, token: u64) -> Result<&ModelJob, JobError> {
        let job = self.jobs.get(&id).ok_or(JobError::UnknownJob { id })?;
        match &job.lease {
            Some(lease) if job.state == JobState::Running && lease.token == token => Ok(job),
            _ => Err(JobError::StaleLease { id, state: job.state }),
        }
    }

    fn tick(&mut self, now: i64) {
        self.promote(now);
        let mut expired: Vec<(i64, JobId)> = self
            .jobs
            .iter()
            .filter_map(|(id, j)| {
                j.lease
                    .as_ref()
                    .filter(|l| l.until_ms <= now)
                    .map(|l| (l.until_ms, *id))
            })
            .collect();
        expired.sort();
        for (_, id) in expired {
            let job = self.jobs.get_mut(&id).unwrap();
            if job.cancel_requested {
                job.finish(JobState::Cancelled, now);
            } else if job.has_attempts_left() {
                job.lease = None;
                job.state = JobState::Available;
                job.run_at_ms = now;
            } else {
                job.finish(JobState::Dead, now);
            }
        }
        // Retention by time, then the cap on succeeded and cancelled jobs,
        // oldest first.
        let finished_cutoff = now - self.config.finished_retention_ms as i64;
        let dead_cutoff = now - self.config.dead_retention_ms as i64;
        let leaving: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| match (j.state, j.finished_ms) {
                (JobState::Dead, Some(f)) => f <= dead_cutoff,
                (JobState::Succeeded | JobState::Cancelled, Some(f)) => f <= finished_cutoff,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in leaving {
            self.leave(id);
        }
        let mut kept: Vec<(i64, JobId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.state, JobState::Succeeded | JobState::Cancelled))
            .map(|(id, j)| (j.finished_ms.unwrap(), *id))
            .collect();
        kept.sort();
        let excess = kept.len().saturating_sub(self.config.finished_in_memory_max);
        for (_, id) in kept.into_iter().take(excess) {
            self.leave(id);
        }
    }

    fn leave(&mut self, id: JobId) {
        self.jobs.remove(&id);
        self.gone.insert(id);
    }

    fn counts(&self, queue: usize) -> [u64; 6] {
        let mut counts = [0; 6];
        for job in self.jobs.values().filter(|j| j.queue == queue) {
            counts[job.state.index()] += 1;
        }
        counts
    }
}

/// Runs one sequence against the core and the model.
struct Run {
    core: JobsCore,
    model: Model,
    log: Vec<Event>,
    now: i64,
    next_request: u64,
}

impl Run {
    fn new() -> Self {
        Run {
            core: JobsCore::new(config(), 11),
            model: Model {
                config: config(),
                jobs: BTreeMap::new(),
                gone: BTreeSet::new(),
                ids: Vec::new(),
                known: BTreeSet::new(),
            },
            log: Vec::new(),
            now: T0,
            next_request: 0,
        }
    }

    fn request(&mut self, request: Request) -> Result<Reply, JobError> {
        self.next_request += 1;
        let step = self.core.handle(self.next_request, request, self.now);
        self.log.extend(step.events);
        assert_eq!(step.replies.len(), 1, "claims never wait here");
        let (id, reply) = step.replies.into_iter().next().unwrap();
        assert_eq!(id, self.next_request);
        reply
    }

    fn pick(&self, pick: usize) -> Option<JobId> {
        (!self.model.ids.is_empty()).then(|| self.model.ids[pick % self.model.ids.len()])
    }

    fn token(&self, id: JobId, which: Token) -> u64 {
        const FORGED: u64 = 0x0123_4567_89ab_cdef;
        let Some(job) = self.model.jobs.get(&id) else {
            return FORGED;
        };
        let live = job.lease.as_ref().map(|l| l.token);
        match which {
            Token::Live => live.or(job.tokens.last().copied()).unwrap_or(FORGED),
            Token::Stale => job
                .tokens
                .iter()
                .rev()
                .find(|t| Some(**t) != live)
                .copied()
                .unwrap_or(FORGED),
            Token::Forged => FORGED,
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Enqueue {
                queue,
                delay_ms,
                attempts_max,
                priority,
            } => {
                let spec = JobSpec {
                    attempts_max: Some(attempts_max),
                    priority,
                    schedule: if delay_ms == 0 {
                        Schedule::Now
                    } else {
                        Schedule::DelayMs(delay_ms)
                    },
                    ..spec(QUEUES[queue])
                };
                let Ok(Reply::Enqueued(results)) = self.request(Request::Enqueue(vec![spec])) else {
                    panic!("enqueue refused")
                };
                let id = results[0].id;
                let state = if delay_ms == 0 {
                    JobState::Available
                } else {
                    JobState::Scheduled
                };
                assert_eq!(results[0].state, Some(state));
                self.model.promote(now);
                self.model.jobs.insert(
                    id,
                    ModelJob {
                        queue,
                        priority,
                        state,
                        run_at_ms: now + delay_ms as i64,
                        finished_ms: None,
                        attempt: 0,
                        attempts_max,
                        attempts_forgiven: 0,
                        lease: None,
                        cancel_requested: false,
                        completed_token: None,
                        tokens: Vec::new(),
                    },
                );
                self.model.ids.push(id);
                self.model.known.insert(queue);
            }
            Op::Claim {
                queue,
                max_jobs,
                lease_ms,
            } => {
                let spec = ClaimSpec {
                    queues: vec![QUEUES[queue].into()],
                    max_jobs,
                    lease_ms,
                    wait_ms: 0,
                    worker: "model".into(),
                };
                let reply = self.request(Request::Claim(spec));
                self.model.promote(now);
                let mut ready: Vec<(Reverse<i32>, JobId)> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.queue == queue && j.state == JobState::Available)
                    .map(|(id, j)| (Reverse(j.priority), *id))
                    .collect();
                ready.sort();
                ready.truncate(max_jobs.max(1) as usize);
                let Ok(Reply::Claimed(claimed)) = reply else {
                    panic!("claim refused: {reply:?}")
                };
                let ids: Vec<JobId> = claimed.iter().map(|c| c.job.id).collect();
                let expected: Vec<JobId> = ready.iter().map(|(_, id)| *id).collect();
                assert_eq!(ids, expected, "claimed jobs, in order");
                let lease_ms = if lease_ms == 0 {
                    self.model.config.lease_ms_default
                } else {
                    lease_ms
                };
                for c in &claimed {
                    let job = self.model.jobs.get_mut(&c.job.id).unwrap();
                    assert_eq!(job.state, JobState::Available, "only available jobs are claimed");
                    assert!(c.job.attempt > job.attempt, "attempt numbers grow");
                    assert!(
                        !job.tokens.contains(&c.token),
                        "a token is never handed out twice"
                    );
                    assert_eq!(c.lease_ms, lease_ms);
                    job.attempt += 1;
                    assert_eq!(c.job.attempt, job.attempt);
                    job.tokens.push(c.token);
                    job.state = JobState::Running;
                    job.lease = Some(ModelLease {
                        token: c.token,
                        until_ms: now + lease_ms as i64,
                        lease_ms,
                    });
                }
            }
            Op::Heartbeat {
                pick,
                token,
                extend_ms,
            } => {
                let Some(id) = self.pick(pick) else { return };
                let token = self.token(id, token);
                let reply = self.request(Request::Heartbeat {
                    id,
                    token,
                    extend_ms,
                    progress: None,
                });
                self.model.promote(now);
                let expected = self.model.leased(id, token).map(|job| {
                    let lease = job.lease.as_ref().unwrap();
                    let extend = if extend_ms == 0 { lease.lease_ms } else { extend_ms };
                    (job.cancel_requested, extend)
                });
                let expected = expected.map(|(cancel_requested, extend)| {
                    let job = self.model.jobs.get_mut(&id).unwrap();
                    job.lease.as_mut().unwrap().until_ms = now + extend as i64;
                    Reply::Heartbeat {
                        cancel_requested,
                        lease_ms: extend,
                    }
                });
                assert_eq!(reply, expected);
            }
            Op::Complete { pick, token } => {
                let Some(id) = self.pick(pick) else { return };
                let token = self.token(id, token);
                let reply = self.request(Request::Complete {
                    id,
                    token,
                    result: Bytes::new(),
                });
                self.model.promote(now);
                let repeated = self
                    .model
                    .jobs
                    .get(&id)
                    .is_some_and(|j| j.state == JobState::Succeeded && j.completed_token == Some(token));
                let expected = if repeated {
                    Ok(Reply::Completed)
                } else {
                    self.model.leased(id, token).map(|_| Reply::Completed)
                };
                if expected.is_ok() && !repeated {
                    let job = self.model.jobs.get_mut(&id).unwrap();
                    job.finish(JobState::Succeeded, now);
                    job.completed_token = Some(token);
                }
                assert_eq!(reply, expected);
            }
            Op::Fail {
                pick,
                token,
                retryable,
                retry_delay_ms,
            } => {
                let Some(id) = self.pick(pick) else { return };
                let token = self.token(id, token);
                let reply = self.request(Request::Fail {
                    id,
                    token,
                    error: "model".into(),
                    retryable,
                    retry_delay_ms,
                });
                self.model.promote(now);
                if let Err(error) = self.model.leased(id, token) {
                    assert_eq!(reply, Err(error));
                    return;
                }
                let job = self.model.jobs.get_mut(&id).unwrap();
                let expected = if job.cancel_requested {
                    job.finish(JobState::Cancelled, now);
                    Reply::Failed {
                        state: JobState::Cancelled,
                        retry_delay_ms: None,
                    }
                } else if retryable && job.has_attempts_left() {
                    // Without an override the delay is the backoff with its
                    // jitter: the model takes it from the reply.
                    let delay = match (retry_delay_ms, &reply) {
                        (Some(delay), _) => delay,
                        (
                            None,
                            Ok(Reply::Failed {
                                retry_delay_ms: Some(delay),
                                ..
                            }),
                        ) => *delay,
                        (None, other) => panic!("a retry without its delay: {other:?}"),
                    };
                    job.lease = None;
                    job.run_at_ms = now + delay as i64;
                    job.state = if delay == 0 {
                        JobState::Available
                    } else {
                        JobState::Scheduled
                    };
                    Reply::Failed {
                        state: job.state,
                        retry_delay_ms: Some(delay),
                    }
                } else {
                    job.finish(JobState::Dead, now);
                    Reply::Failed {
                        state: JobState::Dead,
                        retry_delay_ms: None,
                    }
                };
                assert_eq!(reply, Ok(expected));
            }
            Op::Release { pick, token } => {
                let Some(id) = self.pick(pick) else { return };
                let token = self.token(id, token);
                let reply = self.request(Request::Release { id, token });
                self.model.promote(now);
                let expected = self.model.leased(id, token).map(|_| Reply::Released);
                if expected.is_ok() {
                    let job = self.model.jobs.get_mut(&id).unwrap();
                    if job.cancel_requested {
                        job.finish(JobState::Cancelled, now);
                    } else {
                        job.lease = None;
                        job.state = JobState::Available;
                        job.run_at_ms = now;
                        job.attempts_forgiven += 1;
                    }
                }
                assert_eq!(reply, expected);
            }
            Op::Cancel { pick } => {
                let Some(id) = self.pick(pick) else { return };
                let reply = self.request(Request::Cancel { id });
                self.model.promote(now);
                let expected = match self.model.jobs.get_mut(&id) {
                    None => Err(JobError::UnknownJob { id }),
                    Some(job) => match job.state {
                        JobState::Scheduled | JobState::Available => {
                            job.finish(JobState::Cancelled, now);
                            Ok(Reply::Cancel {
                                state: JobState::Cancelled,
                                cancel_requested: false,
                            })
                        }
                        JobState::Running => {
                            job.cancel_requested = true;
                            Ok(Reply::Cancel {
                                state: JobState::Running,
                                cancel_requested: true,
                            })
                        }
                        JobState::Cancelled => Ok(Reply::Cancel {
                            state: JobState::Cancelled,
                            cancel_requested: false,
                        }),
                        state => Err(JobError::Finished { id, state }),
                    },
                };
                assert_eq!(reply, expected);
            }
            Op::RetryDead { pick, queue } | Op::PurgeDead { pick, queue } => {
                let retry = matches!(op, Op::RetryDead { .. });
                let target = match pick {
                    Some(pick) => match self.pick(pick) {
                        Some(id) => Target::Job(id),
                        None => return,
                    },
                    None => Target::Filter(DeadFilter {
                        queue: QUEUES[queue].into(),
                        error_contains: String::new(),
                        error_fingerprint: String::new(),
                        dead_since_ms: None,
                        dead_before_ms: None,
                        limit: 0,
                    }),
                };
                let reply = self.request(if retry {
                    Request::RetryDead(target.clone())
                } else {
                    Request::PurgeDead(target.clone())
                });
                self.model.promote(now);
                let chosen: Result<Vec<JobId>, JobError> = match target {
                    Target::Job(id) => match self.model.jobs.get(&id) {
                        None => Err(JobError::UnknownJob { id }),
                        Some(job) if job.state != JobState::Dead => {
                            Err(JobError::NotDead { id, state: job.state })
                        }
                        Some(_) => Ok(vec![id]),
                    },
                    Target::Filter(_) if !self.model.known.contains(&queue) => Err(JobError::UnknownQueue {
                        queue: QUEUES[queue].into(),
                    }),
                    Target::Filter(_) => Ok(self
                        .model
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.queue == queue && j.state == JobState::Dead)
                        .map(|(id, _)| *id)
                        .collect()),
                };
                if let Ok(ids) = &chosen {
                    for id in ids {
                        if retry {
                            let job = self.model.jobs.get_mut(id).unwrap();
                            job.state = JobState::Available;
                            job.run_at_ms = now;
                            job.finished_ms = None;
                            job.attempts_forgiven = job.attempt;
                            job.cancel_requested = false;
                        } else {
                            self.model.leave(*id);
                        }
                    }
                }
                assert_eq!(reply, chosen.map(|ids| Reply::Count(ids.len() as u64)));
            }
            Op::Advance { ms } => {
                self.now += ms as i64;
                let step = self.core.tick(self.now);
                assert!(step.replies.is_empty());
                self.log.extend(step.events);
                self.model.tick(self.now);
            }
        }
    }

    /// Core and model agree on every job and every count.
    fn check(&self) {
        assert_eq!(self.core.job_count(), self.model.jobs.len(), "jobs in memory");
        for (id, expected) in &self.model.jobs {
            let job = self.core.job(*id).unwrap_or_else(|| panic!("job {id} missing"));
            assert_eq!(job.state, expected.state, "state of job {id}");
            assert_eq!(job.attempt, expected.attempt, "attempt of job {id}");
            assert_eq!(job.attempts_forgiven, expected.attempts_forgiven, "job {id}");
            assert_eq!(job.cancel_requested, expected.cancel_requested, "job {id}");
            assert_eq!(job.finished_ms, expected.finished_ms, "finish time of job {id}");
            // A lease exactly while running, and the one the model knows.
            assert_eq!(
                job.lease.is_some(),
                job.state == JobState::Running,
                "lease of job {id}"
            );
            assert_eq!(
                job.lease.as_ref().map(|l| (l.token, l.until_ms)),
                expected.lease.as_ref().map(|l| (l.token, l.until_ms)),
                "lease of job {id}"
            );
            if matches!(job.state, JobState::Scheduled | JobState::Available) {
                assert_eq!(job.run_at_ms, expected.run_at_ms, "not-before time of job {id}");
            }
        }
        for id in &self.model.gone {
            assert!(self.core.job(*id).is_none(), "job {id} should have left memory");
        }
        for (queue, name) in QUEUES.iter().enumerate() {
            assert_eq!(
                self.core.queue_known(name),
                self.model.known.contains(&queue),
                "{name}"
            );
            if let Ok(stats) = self.core.stats(name, self.now) {
                assert_eq!(
                    stats.metrics.counts,
                    self.model.counts(queue),
                    "counts of queue {name}"
                );
            }
        }
    }

    /// A fresh core applying every event rebuilds the same table.
    fn check_replay(&mut self) {
        let mut replayed = JobsCore::new(config(), 99);
        for event in &self.log {
            replayed.apply(event);
        }
        let step = self.core.tick(self.now);
        self.log.extend(step.events);
        replayed.tick(self.now);
        let jobs: Vec<_> = self.core.jobs().collect();
        let rebuilt: Vec<_> = replayed.jobs().collect();
        assert_eq!(jobs, rebuilt, "the table rebuilt from the events differs");
        for name in QUEUES {
            assert_eq!(
                self.core.stats(name, self.now).map(|s| s.metrics.counts),
                replayed.stats(name, self.now).map(|s| s.metrics.counts)
            );
        }
    }
}

proptest! {
    // A few dozen sequences keep the test to a few seconds in debug builds;
    // raise PROPTEST_CASES to search longer.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_core_follows_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut run = Run::new();
        for op in &ops {
            run.step(op);
            run.check();
        }
        run.check_replay();
    }
}
