//! The job state machine with an injected clock: no test here sleeps.

mod common;

use bytes::Bytes;
use common::{Harness, T0, claim_spec, spec};
use spool_jobs::{
    ClaimSpec, DeadFilter, Event, JobError, JobSpec, JobState, JobsConfig, Reply, Request, Schedule, Target,
};

#[test]
fn enqueue_claim_complete() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    assert_eq!(h.state(id), JobState::Available);
    let claimed = h.claim("q", 10, 30_000, T0 + 1);
    assert_eq!(claimed, vec![(id, claimed[0].1, 1)]);
    assert_eq!(h.state(id), JobState::Running);
    let reply = h.request(
        Request::Complete {
            id,
            token: claimed[0].1,
            result: Bytes::from_static(b"done"),
        },
        T0 + 2,
    );
    assert_eq!(reply, Ok(Reply::Completed));
    let job = h.core.job(id).unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result.as_deref(), Some(&b"done"[..]));
    assert_eq!(job.finished_ms, Some(T0 + 2));
    // A retried Complete with the same token is fine; another token is not.
    let again = Request::Complete {
        id,
        token: claimed[0].1,
        result: Bytes::new(),
    };
    assert_eq!(h.request(again, T0 + 3), Ok(Reply::Completed));
    let forged = Request::Complete {
        id,
        token: claimed[0].1 ^ 1,
        result: Bytes::new(),
    };
    assert!(matches!(
        h.request(forged, T0 + 3),
        Err(JobError::StaleLease { .. })
    ));
    h.assert_replay_matches(T0 + 4);
}

#[test]
fn a_batch_decides_each_request_in_order_with_its_own_reply() {
    let mut h = Harness::new();
    let first = h.enqueue(spec("q"), T0);
    let second = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 2, 30_000, T0 + 1);
    let token = |id| claimed.iter().find(|c| c.0 == id).unwrap().1;
    let batch = Request::Batch(vec![
        Request::Complete {
            id: first,
            token: token(first),
            result: Bytes::from_static(b"ok"),
        },
        Request::Complete {
            id: second,
            token: token(second) ^ 1,
            result: Bytes::new(),
        },
        Request::Fail {
            id: second,
            token: token(second),
            error: "boom".into(),
            retryable: false,
            retry_delay_ms: None,
        },
        Request::Claim(claim_spec("q", 1, 1_000)),
        Request::Batch(vec![]),
    ]);
    let Ok(Reply::Batch(replies)) = h.request(batch, T0 + 2) else {
        panic!("a batch gets a batch reply")
    };
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[0], Ok(Reply::Completed));
    assert!(
        matches!(replies[1], Err(JobError::StaleLease { .. })),
        "{:?}",
        replies[1]
    );
    assert!(
        matches!(
            replies[2],
            Ok(Reply::Failed {
                state: JobState::Dead,
                ..
            })
        ),
        "{:?}",
        replies[2]
    );
    for nested in &replies[3..] {
        assert!(
            matches!(nested, Err(JobError::Invalid { field: "batch", .. })),
            "{nested:?}"
        );
    }
    assert_eq!(
        (h.state(first), h.state(second)),
        (JobState::Succeeded, JobState::Dead)
    );
    h.assert_replay_matches(T0 + 3);
}

#[test]
fn claims_follow_priority_then_age_across_queues() {
    let mut h = Harness::new();
    let low = h.enqueue(spec("a"), T0);
    let high = h.enqueue(
        JobSpec {
            priority: 5,
            ..spec("b")
        },
        T0 + 1,
    );
    let low_later = h.enqueue(spec("a"), T0 + 2);
    let request = Request::Claim(ClaimSpec {
        queues: vec!["a".into(), "b".into()],
        ..claim_spec("a", 3, 0)
    });
    let Ok(Reply::Claimed(jobs)) = h.request(request, T0 + 3) else {
        panic!()
    };
    let order: Vec<_> = jobs.iter().map(|c| c.job.id).collect();
    assert_eq!(order, vec![high, low, low_later]);
    assert_eq!(jobs[0].lease_ms, 30_000, "the default lease");
}

#[test]
fn delayed_jobs_wait_for_their_time() {
    let mut h = Harness::new();
    let id = h.enqueue(
        JobSpec {
            schedule: Schedule::DelayMs(10_000),
            ..spec("q")
        },
        T0,
    );
    assert_eq!(h.state(id), JobState::Scheduled);
    assert!(h.claim("q", 1, 0, T0 + 9_999).is_empty());
    assert_eq!(h.claim("q", 1, 0, T0 + 10_000).len(), 1);
}

#[test]
fn failures_back_off_then_go_dead_after_attempts_max() {
    let mut h = Harness::new();
    let id = h.enqueue(
        JobSpec {
            attempts_max: Some(3),
            ..spec("q")
        },
        T0,
    );
    let mut now = T0;
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let claimed = h.claim("q", 1, 0, now);
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].2, attempt);
        let reply = h
            .request(
                Request::Fail {
                    id,
                    token: claimed[0].1,
                    error: format!("boom {attempt}"),
                    retryable: true,
                    retry_delay_ms: None,
                },
                now + 1,
            )
            .unwrap();
        match reply {
            Reply::Failed {
                state: JobState::Scheduled,
                retry_delay_ms: Some(delay),
            } => {
                delays.push(delay);
                assert!(
                    h.claim("q", 1, 0, now + 1 + delay as i64 - 1).is_empty(),
                    "no retry before the backoff"
                );
                now += 1 + delay as i64;
            }
            Reply::Failed {
                state: JobState::Dead,
                retry_delay_ms: None,
            } => assert_eq!(attempt, 3),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays.len(), 2);
    let config = JobsConfig::default();
    assert!(delays[0] >= config.backoff_ms(1, 0) && delays[0] < config.backoff_ms(1, 0) + 20_000);
    assert!(delays[1] >= config.backoff_ms(2, 0), "backoff grows");
    let job = h.core.job(id).unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(
        job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    h.assert_replay_matches(now + 10);
}

#[test]
fn a_non_retryable_failure_goes_dead_at_once() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 1, 0, T0);
    let reply = h.request(
        Request::Fail {
            id,
            token: claimed[0].1,
            error: "bad input".into(),
            retryable: false,
            retry_delay_ms: None,
        },
        T0 + 1,
    );
    assert_eq!(
        reply,
        Ok(Reply::Failed {
            state: JobState::Dead,
            retry_delay_ms: None
        })
    );
}

#[test]
fn an_expired_lease_fails_the_attempt_and_fences_the_late_worker() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    let first = h.claim("q", 1, 5_000, T0);
    assert_eq!(h.core.next_deadline(), Some(T0 + 5_000));
    let step = h.tick(T0 + 4_999);
    assert!(step.events.is_empty());
    let step = h.tick(T0 + 5_000);
    assert!(matches!(
        step.events[..],
        [Event::Failed {
            lease_expired: true,
            ..
        }]
    ));
    assert_eq!(h.state(id), JobState::Available, "offered again at once");
    let second = h.claim("q", 1, 5_000, T0 + 5_001);
    assert_eq!(second[0].2, 2, "attempt 2");
    // The first worker wakes up and tries to finish: refused, nothing changes.
    let late = Request::Complete {
        id,
        token: first[0].1,
        result: Bytes::new(),
    };
    assert!(matches!(
        h.request(late, T0 + 5_002),
        Err(JobError::StaleLease { .. })
    ));
    let late_fail = Request::Fail {
        id,
        token: first[0].1,
        error: "late".into(),
        retryable: true,
        retry_delay_ms: None,
    };
    assert!(matches!(
        h.request(late_fail, T0 + 5_002),
        Err(JobError::StaleLease { .. })
    ));
    assert_eq!(h.state(id), JobState::Running);
    let done = Request::Complete {
        id,
        token: second[0].1,
        result: Bytes::new(),
    };
    assert_eq!(h.request(done, T0 + 5_003), Ok(Reply::Completed));
    let job = h.core.job(id).unwrap();
    assert_eq!(job.attempt, 2);
    assert!(job.errors[0].error.contains("lease expired"));
    h.assert_replay_matches(T0 + 6_000);
}

#[test]
fn heartbeats_extend_the_lease_and_report_progress() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 1, 1_000, T0);
    let beat = |progress: &str| Request::Heartbeat {
        id,
        token: claimed[0].1,
        extend_ms: 1_000,
        progress: Some(progress.into()),
    };
    for i in 1..10 {
        let reply = h.request(beat(&format!("{}%", i * 10)), T0 + i * 900).unwrap();
        assert_eq!(
            reply,
            Reply::Heartbeat {
                cancel_requested: false,
                lease_ms: 1_000
            }
        );
        assert!(h.tick(T0 + i * 900 + 1).events.is_empty(), "lease kept alive");
    }
    assert_eq!(h.core.job(id).unwrap().progress.as_deref(), Some("90%"));
    // Stop heartbeating: it expires.
    assert!(!h.tick(T0 + 8_100 + 1_000).events.is_empty());
    assert!(matches!(
        h.request(beat("x"), T0 + 9_200),
        Err(JobError::StaleLease { .. })
    ));
}

#[test]
fn a_job_timeout_caps_the_lease_even_with_heartbeats() {
    let mut h = Harness::new();
    let id = h.enqueue(
        JobSpec {
            timeout_ms: Some(2_500),
            ..spec("q")
        },
        T0,
    );
    let claimed = h.claim("q", 1, 10_000, T0);
    let beat = Request::Heartbeat {
        id,
        token: claimed[0].1,
        extend_ms: 10_000,
        progress: None,
    };
    let Ok(Reply::Heartbeat { lease_ms, .. }) = h.request(beat, T0 + 2_000) else {
        panic!()
    };
    assert_eq!(lease_ms, 500);
    let step = h.tick(T0 + 2_500);
    let Event::Failed { error, .. } = &step.events[0] else {
        panic!()
    };
    assert!(error.contains("timed out"), "{error}");
}

#[test]
fn idempotency_keys_dedup_inside_the_window_only() {
    let mut h = Harness::new();
    let keyed = |key: &str| JobSpec {
        idempotency_key: Some(key.into()),
        ..spec("q")
    };
    let first = h.enqueue(keyed("order-1"), T0);
    // Two in one batch, and one later: all the same job.
    let Ok(Reply::Enqueued(results)) =
        h.request(Request::Enqueue(vec![keyed("order-1"), keyed("order-1")]), T0 + 1)
    else {
        panic!()
    };
    assert!(results.iter().all(|r| r.id == first && r.deduplicated));
    let other_queue = h.enqueue(
        JobSpec {
            queue: "other".into(),
            ..keyed("order-1")
        },
        T0 + 2,
    );
    assert_ne!(other_queue, first, "keys are per queue");
    let window = JobsConfig::default().dedup_window_ms as i64;
    h.tick(T0 + window + 1);
    let after = h.enqueue(keyed("order-1"), T0 + window + 2);
    assert_ne!(after, first);
}

#[test]
fn cancellation_is_immediate_unless_running() {
    let mut h = Harness::new();
    let waiting = h.enqueue(
        JobSpec {
            schedule: Schedule::DelayMs(60_000),
            ..spec("q")
        },
        T0,
    );
    assert_eq!(
        h.request(Request::Cancel { id: waiting }, T0 + 1),
        Ok(Reply::Cancel {
            state: JobState::Cancelled,
            cancel_requested: false
        })
    );
    assert!(h.claim("q", 1, 0, T0 + 70_000).is_empty());

    let running = h.enqueue(spec("q"), T0 + 70_000);
    let claimed = h.claim("q", 1, 0, T0 + 70_001);
    assert_eq!(
        h.request(Request::Cancel { id: running }, T0 + 70_002),
        Ok(Reply::Cancel {
            state: JobState::Running,
            cancel_requested: true
        })
    );
    let beat = Request::Heartbeat {
        id: running,
        token: claimed[0].1,
        extend_ms: 0,
        progress: None,
    };
    assert!(matches!(
        h.request(beat, T0 + 70_003),
        Ok(Reply::Heartbeat {
            cancel_requested: true,
            ..
        })
    ));
    let stop = Request::Fail {
        id: running,
        token: claimed[0].1,
        error: "cancelled by request".into(),
        retryable: true,
        retry_delay_ms: None,
    };
    assert!(matches!(
        h.request(stop, T0 + 70_004),
        Ok(Reply::Failed {
            state: JobState::Cancelled,
            ..
        })
    ));
    assert_eq!(
        h.request(Request::Cancel { id: running }, T0 + 70_005),
        Ok(Reply::Cancel {
            state: JobState::Cancelled,
            cancel_requested: false
        }),
        "cancelling twice is not an error"
    );
    let done = h.enqueue(spec("q"), T0 + 80_000);
    let claimed = h.claim("q", 1, 0, T0 + 80_000);
    let complete = Request::Complete {
        id: done,
        token: claimed[0].1,
        result: Bytes::new(),
    };
    h.request(complete, T0 + 80_001).unwrap();
    assert!(matches!(
        h.request(Request::Cancel { id: done }, T0 + 80_002),
        Err(JobError::Finished { .. })
    ));
}

#[test]
fn dead_jobs_are_redriven_and_purged_by_filter() {
    let mut h = Harness::new();
    let mut dead = Vec::new();
    for i in 0..4 {
        let id = h.enqueue(
            JobSpec {
                attempts_max: Some(1),
                ..spec("q")
            },
            T0 + i,
        );
        let claimed = h.claim("q", 1, 0, T0 + i);
        let error = if i % 2 == 0 {
            "timeout talking to smtp"
        } else {
            "bad address"
        };
        h.request(
            Request::Fail {
                id,
                token: claimed[0].1,
                error: error.into(),
                retryable: true,
                retry_delay_ms: None,
            },
            T0 + i,
        )
        .unwrap();
        assert_eq!(
            h.state(id),
            JobState::Dead,
            "attempts_max 1: a poison job dies at once"
        );
        dead.push(id);
    }
    let filter = |error: &str| {
        Target::Filter(DeadFilter {
            queue: "q".into(),
            error_contains: error.into(),
            error_fingerprint: String::new(),
            dead_since_ms: None,
            dead_before_ms: None,
            limit: 0,
        })
    };
    assert_eq!(
        h.request(Request::RetryDead(filter("smtp")), T0 + 10),
        Ok(Reply::Count(2))
    );
    assert_eq!(h.state(dead[0]), JobState::Available);
    let claimed = h.claim("q", 1, 0, T0 + 11);
    assert_eq!(claimed[0].2, 2, "attempt numbers keep rising after a re-drive");
    assert_eq!(
        h.request(Request::PurgeDead(filter("")), T0 + 12),
        Ok(Reply::Count(2))
    );
    assert!(h.core.job(dead[1]).is_none());
    assert!(matches!(
        h.request(Request::RetryDead(Target::Job(dead[0])), T0 + 13),
        Err(JobError::NotDead { .. })
    ));
    h.assert_replay_matches(T0 + 20);
}

#[test]
fn finished_jobs_leave_memory_after_retention() {
    let config = JobsConfig {
        finished_retention_ms: 1_000,
        dead_retention_ms: 5_000,
        ..JobsConfig::default()
    };
    let mut h = Harness::with(config);
    let ok = h.enqueue(spec("q"), T0);
    let dead = h.enqueue(
        JobSpec {
            attempts_max: Some(1),
            ..spec("q")
        },
        T0,
    );
    let claimed = h.claim("q", 2, 0, T0);
    for (id, token, _) in claimed {
        let request = if id == ok {
            Request::Complete {
                id,
                token,
                result: Bytes::new(),
            }
        } else {
            Request::Fail {
                id,
                token,
                error: "x".into(),
                retryable: true,
                retry_delay_ms: None,
            }
        };
        h.request(request, T0 + 1).unwrap();
    }
    h.tick(T0 + 1_001);
    assert!(h.core.job(ok).is_none());
    assert!(h.core.job(dead).is_some(), "dead jobs are kept longer");
    let step = h.tick(T0 + 5_001);
    assert!(matches!(step.events[..], [Event::Purged { .. }]));
    assert!(h.core.job(dead).is_none());
    assert_eq!(h.core.job_count(), 0);
}

#[test]
fn parked_claims_are_served_by_new_jobs_or_time_out() {
    let mut h = Harness::new();
    let parked = ClaimSpec {
        wait_ms: 2_000,
        ..claim_spec("q", 5, 0)
    };
    let step = h.core.handle(100, Request::Claim(parked.clone()), T0);
    assert!(step.replies.is_empty(), "parked");
    let step = h.core.handle(101, Request::Enqueue(vec![spec("q")]), T0 + 10);
    let served = step
        .replies
        .iter()
        .find(|(r, _)| *r == 100)
        .expect("served by the enqueue");
    assert!(matches!(&served.1, Ok(Reply::Claimed(jobs)) if jobs.len() == 1));
    h.core.handle(102, Request::Claim(parked), T0 + 20);
    let step = h.core.tick(T0 + 2_020);
    assert_eq!(step.replies, vec![(102, Ok(Reply::Claimed(vec![])))]);
}

#[test]
fn released_jobs_come_back_at_once_without_using_an_attempt() {
    let mut h = Harness::new();
    let id = h.enqueue(
        JobSpec {
            attempts_max: Some(1),
            ..spec("q")
        },
        T0,
    );
    let claimed = h.claim("q", 1, 0, T0);
    assert_eq!(
        h.request(
            Request::Release {
                id,
                token: claimed[0].1
            },
            T0 + 1
        ),
        Ok(Reply::Released)
    );
    let again = h.claim("q", 1, 0, T0 + 2);
    assert_eq!(again[0].2, 2);
    assert_eq!(
        h.core.job(id).unwrap().attempts_used(),
        1,
        "the release did not count"
    );
}

#[test]
fn bad_requests_are_refused_with_the_field_named() {
    let mut h = Harness::new();
    let cases = [
        (spec("../x"), "queue"),
        (
            JobSpec {
                attempts_max: Some(0),
                ..spec("q")
            },
            "attempts_max",
        ),
        (
            JobSpec {
                timeout_ms: Some(0),
                ..spec("q")
            },
            "timeout_ms",
        ),
        (
            JobSpec {
                schedule: Schedule::DelayMs(u64::MAX),
                ..spec("q")
            },
            "delay_ms",
        ),
        (
            JobSpec {
                schedule: Schedule::NotBeforeMs(i64::MAX),
                ..spec("q")
            },
            "not_before_ms",
        ),
    ];
    for (spec, field) in cases {
        match h.request(Request::Enqueue(vec![spec]), T0) {
            Err(JobError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let big = JobSpec {
        payload: Bytes::from(vec![0u8; 600 * 1024]),
        ..spec("q")
    };
    assert!(matches!(
        h.request(Request::Enqueue(vec![big]), T0),
        Err(JobError::LimitExceeded { .. })
    ));
    assert!(matches!(
        h.request(Request::Cancel { id: 12345 }, T0),
        Err(JobError::UnknownJob { .. })
    ));
    assert!(h.core.job_count() == 0, "nothing was enqueued by bad requests");
    let id = h.enqueue(spec("q"), T0);
    let beat = Request::Heartbeat {
        id,
        token: 1,
        extend_ms: 0,
        progress: None,
    };
    assert!(matches!(h.request(beat, T0), Err(JobError::StaleLease { .. })));
}

#[test]
fn stats_count_states_and_rates() {
    let mut h = Harness::new();
    for _ in 0..6 {
        h.enqueue(spec("q"), T0);
    }
    let claimed = h.claim("q", 2, 0, T0 + 1_000);
    h.request(
        Request::Complete {
            id: claimed[0].0,
            token: claimed[0].1,
            result: Bytes::new(),
        },
        T0 + 2_000,
    )
    .unwrap();
    let stats = h.core.stats("q", T0 + 3_000).unwrap();
    assert_eq!(stats.metrics.counts[JobState::Available.index()], 4);
    assert_eq!(stats.metrics.counts[JobState::Running.index()], 1);
    assert_eq!(stats.metrics.counts[JobState::Succeeded.index()], 1);
    assert_eq!(stats.metrics.oldest_available_age_ms, Some(3_000));
    assert!((stats.enqueued_per_second - 0.1).abs() < 1e-9);
    assert_eq!(
        h.core.stats("none", T0),
        Err(JobError::UnknownQueue { queue: "none".into() })
    );
}

#[test]
fn claim_and_heartbeat_limits_are_refused_not_capped() {
    let mut h = Harness::new();
    let config = JobsConfig::default();
    let id = h.enqueue(spec("q"), T0);
    for (spec, field) in [
        (claim_spec("q", 1, u64::MAX), "lease_ms"),
        (claim_spec("q", 1, config.lease_ms_max + 1), "lease_ms"),
        (claim_spec("q", config.claim_jobs_max + 1, 0), "max_jobs"),
        (claim_spec("q", 1_000_000, 0), "max_jobs"),
    ] {
        match h.request(Request::Claim(spec), T0) {
            Err(JobError::Invalid { field: f, reason }) => {
                assert_eq!(f, field);
                assert!(reason.contains(&format!("{field}_max")) || reason.contains("claim_jobs_max"));
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(h.state(id), JobState::Available, "a refused claim takes nothing");
    // The limits themselves are granted in full.
    let Ok(Reply::Claimed(jobs)) = h.request(
        Request::Claim(claim_spec("q", config.claim_jobs_max, config.lease_ms_max)),
        T0,
    ) else {
        panic!()
    };
    assert_eq!(jobs[0].lease_ms, config.lease_ms_max);
    let beat = |extend_ms| Request::Heartbeat {
        id,
        token: jobs[0].token,
        extend_ms,
        progress: None,
    };
    assert!(matches!(
        h.request(beat(config.lease_ms_max + 1), T0 + 1),
        Err(JobError::Invalid {
            field: "extend_ms",
            ..
        })
    ));
    assert_eq!(
        h.request(beat(config.lease_ms_max), T0 + 1),
        Ok(Reply::Heartbeat {
            cancel_requested: false,
            lease_ms: config.lease_ms_max
        })
    );
}

#[test]
fn a_retry_without_delay_is_available_at_once_and_served_to_a_waiting_claim() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 1, 0, T0);
    let waiting = ClaimSpec {
        wait_ms: 10_000,
        ..claim_spec("q", 1, 0)
    };
    let step = h.core.handle(500, Request::Claim(waiting), T0 + 1);
    assert!(step.replies.is_empty(), "parked: nothing available");
    let step = h.core.handle(
        501,
        Request::Fail {
            id,
            token: claimed[0].1,
            error: "flaky".into(),
            retryable: true,
            retry_delay_ms: Some(0),
        },
        T0 + 2,
    );
    h.log.extend(step.events.iter().cloned());
    let reply = |request| {
        step.replies
            .iter()
            .find(|(r, _)| *r == request)
            .map(|(_, reply)| reply)
    };
    assert_eq!(
        reply(501),
        Some(&Ok(Reply::Failed {
            state: JobState::Available,
            retry_delay_ms: Some(0)
        }))
    );
    let Some(Ok(Reply::Claimed(jobs))) = reply(500) else {
        panic!("the waiting claim is served in the same step: {:?}", step.replies)
    };
    assert_eq!((jobs[0].job.id, jobs[0].job.attempt), (id, 2));
    // With a delay, the job is scheduled.
    let Ok(Reply::Failed { state, .. }) = h.request(
        Request::Fail {
            id,
            token: jobs[0].token,
            error: "flaky".into(),
            retryable: true,
            retry_delay_ms: Some(1),
        },
        T0 + 3,
    ) else {
        panic!()
    };
    assert_eq!(state, JobState::Scheduled);
    h.assert_replay_matches(T0 + 10);
}
