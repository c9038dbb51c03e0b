//! Stage times per attempt (available, claimed, finished, outcome), the
//! same whether the job was served, replayed or rebuilt from the log.

mod common;

use common::{Harness, T0, complete, fail, spec};
use spool_jobs::job::ATTEMPTS_KEPT_MAX;
use spool_jobs::{Attempt, AttemptOutcome, JobFromLog, JobId, JobSpec, JobState, Reply, Request, Schedule};

/// The job as `JobFromLog` folds its events from the harness's log.
fn rebuilt(h: &Harness, id: JobId) -> JobFromLog {
    let mut events = h.log.iter().filter(|e| e.id() == id);
    let mut job = JobFromLog::enqueued(events.next().unwrap()).unwrap();
    for event in events {
        job.apply(event);
    }
    job
}

#[test]
fn every_attempt_records_its_stage_times() {
    let mut h = Harness::new();
    // Delayed by 1 s at enqueue.
    let id = h.enqueue(
        JobSpec {
            schedule: Schedule::DelayMs(1_000),
            attempts_max: Some(5),
            ..spec("q")
        },
        T0,
    );
    // Attempt 1: waits 500 ms after becoming available, runs 2 s, fails;
    // retry after 10 s.
    let first = h.claim("q", 1, 30_000, T0 + 1_500);
    fail(&mut h, id, first[0].1, Some(10_000), T0 + 3_500);
    // Attempt 2: claimed 200 ms after the backoff, its lease of 5 s runs
    // out; available again at once.
    let second = h.claim("q", 1, 5_000, T0 + 13_700);
    assert_eq!(second[0].2, 2);
    h.tick(T0 + 18_700);
    // Attempt 3: released by a worker shutting down after 100 ms.
    let third = h.claim("q", 1, 30_000, T0 + 18_750);
    let release = Request::Release {
        id,
        token: third[0].1,
    };
    assert_eq!(h.request(release, T0 + 18_850), Ok(Reply::Released));
    // Attempt 4 succeeds after 1 s.
    let fourth = h.claim("q", 1, 30_000, T0 + 18_900);
    complete(&mut h, id, fourth[0].1, T0 + 19_900);

    let job = h.core.job(id).unwrap().clone();
    let attempt = |attempt, available_at_ms, claimed_at_ms, finished_at_ms, outcome| Attempt {
        attempt,
        available_at_ms,
        claimed_at_ms,
        finished_at_ms: Some(finished_at_ms),
        outcome,
    };
    assert_eq!(
        job.attempts.to_vec(),
        vec![
            attempt(1, T0 + 1_000, T0 + 1_500, T0 + 3_500, AttemptOutcome::Failed),
            attempt(
                2,
                T0 + 13_500,
                T0 + 13_700,
                T0 + 18_700,
                AttemptOutcome::LeaseExpired
            ),
            attempt(3, T0 + 18_700, T0 + 18_750, T0 + 18_850, AttemptOutcome::Released),
            attempt(
                4,
                T0 + 18_850,
                T0 + 18_900,
                T0 + 19_900,
                AttemptOutcome::Succeeded
            ),
        ]
    );
    assert_eq!((job.created_ms, job.finished_ms), (T0, Some(T0 + 19_900)));
    // The same from replay and from the log, for a job that left memory.
    h.assert_replay_matches(T0 + 20_000);
    assert_eq!(rebuilt(&h, id).job, job);
}

#[test]
fn a_running_attempt_is_open_and_a_cancel_ends_it() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 1, 5_000, T0 + 10);
    let running = h.core.job(id).unwrap().attempts.to_vec();
    assert_eq!(
        running,
        vec![Attempt {
            attempt: 1,
            available_at_ms: T0,
            claimed_at_ms: T0 + 10,
            finished_at_ms: None,
            outcome: AttemptOutcome::Running,
        }]
    );
    // Cancelled while running: the worker's Fail ends the attempt as
    // cancelled.
    h.request(Request::Cancel { id }, T0 + 20).unwrap();
    fail(&mut h, id, claimed[0].1, None, T0 + 30);
    let job = h.core.job(id).unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    let attempt = job.attempts.latest().unwrap();
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(attempt.outcome, AttemptOutcome::Cancelled);
    assert_eq!(attempt.finished_at_ms, Some(T0 + 30));
    // A job cancelled while waiting has no attempt.
    let waiting = h.enqueue(spec("q"), T0 + 40);
    h.request(Request::Cancel { id: waiting }, T0 + 50).unwrap();
    assert!(h.core.job(waiting).unwrap().attempts.is_empty());
    h.assert_replay_matches(T0 + 100);
}

#[test]
fn attempt_records_are_bounded_like_errors() {
    let mut h = Harness::new();
    let attempts = ATTEMPTS_KEPT_MAX as u32 + 5;
    let id = h.enqueue(
        JobSpec {
            attempts_max: Some(attempts),
            ..spec("q")
        },
        T0,
    );
    let mut now = T0;
    for _ in 0..attempts {
        let claimed = h.claim("q", 1, 0, now);
        fail(&mut h, id, claimed[0].1, Some(0), now + 1);
        now += 2;
    }
    let job = h.core.job(id).unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts.len(), ATTEMPTS_KEPT_MAX);
    let kept = job.attempts.to_vec();
    assert_eq!(kept.len(), ATTEMPTS_KEPT_MAX);
    assert_eq!(kept[0].attempt, 6, "the most recent are kept");
    assert_eq!(job.attempts.latest().unwrap().attempt, attempts);
    assert!(kept.windows(2).all(|w| w[0].attempt + 1 == w[1].attempt));
    assert_eq!(std::mem::size_of::<Attempt>(), 40);
    // What every job pays inline for its records: the latest attempt and a
    // pointer to the earlier ones.
    assert_eq!(std::mem::size_of::<spool_jobs::Attempts>(), 48);
    h.assert_replay_matches(now);
    assert_eq!(&rebuilt(&h, id).job, h.core.job(id).unwrap());
}
