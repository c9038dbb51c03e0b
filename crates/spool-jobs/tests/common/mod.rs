//! The harness of the state machine tests: a core fed with an injected
//! clock, and every event it emitted, to check replay against.
#![allow(dead_code)] // each test binary uses a different part

use bytes::Bytes;
use spool_jobs::{
    ClaimSpec, Event, JobError, JobId, JobSpec, JobState, JobsConfig, JobsCore, JobsRuntime, Reply, Request,
    Schedule, Step,
};

pub const T0: i64 = 1_800_000_000_000;

pub fn spec(queue: &str) -> JobSpec {
    JobSpec {
        queue: queue.into(),
        payload: Bytes::from_static(b"{}"),
        content_type: "application/json".into(),
        headers: vec![],
        priority: 0,
        attempts_max: None,
        timeout_ms: None,
        schedule: Schedule::Now,
        idempotency_key: None,
    }
}

pub fn claim_spec(queue: &str, max_jobs: u32, lease_ms: u64) -> ClaimSpec {
    ClaimSpec {
        queues: vec![queue.into()],
        max_jobs,
        lease_ms,
        wait_ms: 0,
        worker: "w".into(),
    }
}

/// A core plus every event it emitted, to check replay against.
pub struct Harness {
    pub core: JobsCore,
    pub log: Vec<Event>,
    next_request: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(JobsConfig::default())
    }

    pub fn with(config: JobsConfig) -> Self {
        Harness {
            core: JobsCore::new(config, 42),
            log: Vec::new(),
            next_request: 0,
        }
    }

    pub fn record(&mut self, step: Step) -> Step {
        self.log.extend(step.events.iter().cloned());
        step
    }

    pub fn request(&mut self, request: Request, now: i64) -> Result<Reply, JobError> {
        self.next_request += 1;
        let id = self.next_request;
        let step = self.core.handle(id, request, now);
        let step = self.record(step);
        step.replies
            .into_iter()
            .find(|(r, _)| *r == id)
            .map(|(_, reply)| reply)
            .expect("a reply")
    }

    pub fn tick(&mut self, now: i64) -> Step {
        let step = self.core.tick(now);
        self.record(step)
    }

    pub fn enqueue(&mut self, spec: JobSpec, now: i64) -> JobId {
        match self.request(Request::Enqueue(vec![spec]), now).unwrap() {
            Reply::Enqueued(results) => results[0].id,
            other => panic!("{other:?}"),
        }
    }

    pub fn claim(&mut self, queue: &str, max: u32, lease_ms: u64, now: i64) -> Vec<(JobId, u64, u32)> {
        match self
            .request(Request::Claim(claim_spec(queue, max, lease_ms)), now)
            .unwrap()
        {
            Reply::Claimed(jobs) => jobs.iter().map(|c| (c.job.id, c.token, c.job.attempt)).collect(),
            other => panic!("{other:?}"),
        }
    }

    pub fn state(&self, id: JobId) -> JobState {
        self.core.job(id).expect("job in memory").state
    }

    /// Replaying the log into a fresh core gives the same jobs, both
    /// brought to time `now`.
    pub fn assert_replay_matches(&mut self, now: i64) {
        self.tick(now);
        let mut replayed = JobsCore::new(self.core.config().clone(), 7);
        for event in &self.log {
            replayed.apply(event);
        }
        replayed.tick(now);
        let ids: Vec<_> = self.core.jobs().map(|j| j.id).collect();
        let replayed_ids: Vec<_> = replayed.jobs().map(|j| j.id).collect();
        assert_eq!(ids, replayed_ids);
        for id in ids {
            assert_eq!(
                self.core.job(id),
                replayed.job(id),
                "job {id} differs after replay"
            );
        }
    }
}

/// Completes the attempt holding `token`; it must succeed.
pub fn complete(h: &mut Harness, id: JobId, token: u64, now: i64) {
    let request = Request::Complete {
        id,
        token,
        result: Bytes::new(),
    };
    assert_eq!(h.request(request, now), Ok(Reply::Completed));
}

/// Fails the attempt holding `token`, retryable, with the error `boom`.
pub fn fail(h: &mut Harness, id: JobId, token: u64, retry_delay_ms: Option<u64>, now: i64) -> Reply {
    h.request(
        Request::Fail {
            id,
            token,
            error: "boom".into(),
            retryable: true,
            retry_delay_ms,
        },
        now,
    )
    .unwrap()
}

/// Enqueues `specs` through a running job runtime; returns their ids.
pub async fn enqueue_through(runtime: &JobsRuntime, specs: Vec<JobSpec>) -> Vec<JobId> {
    match runtime.call(Request::Enqueue(specs)).await.unwrap() {
        Reply::Enqueued(results) => results.iter().map(|r| r.id).collect(),
        other => panic!("{other:?}"),
    }
}

/// Claims up to `max` jobs of queue `q` through a running job runtime,
/// with leases of `lease_ms`, without waiting; returns ids and tokens.
pub async fn claim_through(runtime: &JobsRuntime, max: u32, lease_ms: u64) -> Vec<(JobId, u64)> {
    let request = Request::Claim(ClaimSpec {
        queues: vec!["q".into()],
        max_jobs: max,
        lease_ms,
        wait_ms: 0,
        worker: "w".into(),
    });
    match runtime.call(request).await.unwrap() {
        Reply::Claimed(jobs) => jobs.iter().map(|c| (c.job.id, c.token)).collect(),
        other => panic!("{other:?}"),
    }
}
