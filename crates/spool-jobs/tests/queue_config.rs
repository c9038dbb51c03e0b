//! Per-queue configuration and the queue's lifetime: its own defaults for
//! attempts, backoff, lease, timeout and retention; its concurrency and
//! rate limits, enforced at claim whoever asks; its deletion. All survive
//! replay and snapshots.

mod common;

use bytes::Bytes;
use common::{Harness, T0, claim_spec, complete, fail, spec};
use spool_jobs::{
    Backoff, ClaimSpec, Event, JobError, JobSpec, JobState, JobsConfig, QueueConfig, QueueConfigChange,
    RateLimit, Reply, Request, snapshot,
};

fn configure(
    h: &mut Harness,
    queue: &str,
    change: QueueConfigChange,
    now: i64,
) -> Result<QueueConfig, JobError> {
    match h.request(
        Request::ConfigureQueue {
            queue: queue.into(),
            change,
        },
        now,
    )? {
        Reply::QueueConfigured(config) => Ok(config),
        other => panic!("{other:?}"),
    }
}

fn concurrency(limit: u32) -> QueueConfigChange {
    QueueConfigChange {
        concurrency_limit: Some(Some(limit)),
        ..QueueConfigChange::default()
    }
}

fn rate(jobs: u32, per_ms: u64) -> QueueConfigChange {
    QueueConfigChange {
        rate_limit: Some(Some(RateLimit { jobs, per_ms })),
        ..QueueConfigChange::default()
    }
}

fn enqueue_many(h: &mut Harness, queue: &str, count: usize, now: i64) {
    let specs = (0..count).map(|_| spec(queue)).collect();
    h.request(Request::Enqueue(specs), now).unwrap();
}

#[test]
fn a_queue_s_settings_apply_unless_the_job_or_the_claim_says_otherwise() {
    let mut h = Harness::new();
    let change = QueueConfigChange {
        attempts_max: Some(Some(3)),
        lease_ms: Some(Some(5_000)),
        timeout_ms: Some(Some(60_000)),
        ..QueueConfigChange::default()
    };
    let config = configure(&mut h, "emails", change, T0).unwrap();
    assert_eq!(config.attempts_max, Some(3));
    assert!(h.core.queue_known("emails"), "configuring makes a queue known");

    let plain = h.enqueue(spec("emails"), T0);
    let own = h.enqueue(
        JobSpec {
            attempts_max: Some(9),
            timeout_ms: Some(1_000),
            ..spec("emails")
        },
        T0,
    );
    let other = h.enqueue(spec("other"), T0);
    let job = h.core.job(plain).unwrap();
    assert_eq!((job.attempts_max, job.timeout_ms), (3, 60_000));
    let job = h.core.job(own).unwrap();
    assert_eq!((job.attempts_max, job.timeout_ms), (9, 1_000));
    let job = h.core.job(other).unwrap();
    assert_eq!(job.attempts_max, JobsConfig::default().attempts_max_default);

    // A claim asking no lease gets the queue's; one asking gets its own
    // (still bounded by the job's timeout).
    let claimed = match h.request(Request::Claim(claim_spec("emails", 1, 0)), T0).unwrap() {
        Reply::Claimed(jobs) => jobs,
        other => panic!("{other:?}"),
    };
    assert_eq!((claimed[0].job.id, claimed[0].lease_ms), (plain, 5_000));
    let claimed = match h
        .request(Request::Claim(claim_spec("emails", 1, 20_000)), T0)
        .unwrap()
    {
        Reply::Claimed(jobs) => jobs,
        other => panic!("{other:?}"),
    };
    assert_eq!((claimed[0].job.id, claimed[0].lease_ms), (own, 1_000));

    // Returning a setting to the server's default.
    let reset = QueueConfigChange {
        attempts_max: Some(None),
        ..QueueConfigChange::default()
    };
    let config = configure(&mut h, "emails", reset, T0).unwrap();
    assert_eq!(config.attempts_max, None);
    assert_eq!(config.lease_ms, Some(5_000), "other settings stay");
    h.assert_replay_matches(T0 + 1);
}

#[test]
fn a_queue_s_backoff_doubles_from_its_minimum_to_its_maximum() {
    let backoff = Backoff {
        min_ms: 5_000,
        max_ms: 3_600_000,
    };
    for random in [0, 1, 12_345, u64::MAX] {
        for attempt in 1..40 {
            let full = (5_000u64 << (attempt - 1).min(40)).min(3_600_000);
            let delay = backoff.delay_ms(attempt, random);
            assert!(
                delay <= full && delay >= full - full / 5,
                "{attempt}: {delay} vs {full}"
            );
            assert!(delay >= 5_000);
        }
    }

    let mut h = Harness::new();
    let change = QueueConfigChange {
        backoff: Some(Some(Backoff {
            min_ms: 1_000,
            max_ms: 4_000,
        })),
        ..QueueConfigChange::default()
    };
    configure(&mut h, "q", change, T0).unwrap();
    let id = h.enqueue(spec("q"), T0);
    let mut now = T0;
    for full in [1_000u64, 2_000, 4_000, 4_000] {
        let (_, token, _) = h.claim("q", 1, 0, now)[0];
        let Reply::Failed {
            retry_delay_ms: Some(delay),
            ..
        } = fail(&mut h, id, token, None, now)
        else {
            panic!("no retry");
        };
        assert!((full - full / 5..=full).contains(&delay), "{delay} vs {full}");
        now += delay as i64;
        h.tick(now);
    }
    h.assert_replay_matches(now);
}

#[test]
fn a_concurrency_limit_holds_across_claimers_and_waiting_claims_get_freed_slots() {
    let mut h = Harness::new();
    configure(&mut h, "q", concurrency(3), T0).unwrap();
    enqueue_many(&mut h, "q", 10, T0);
    let first = h.claim("q", 100, 0, T0);
    assert_eq!(first.len(), 3, "one claim asking 100 gets the limit");
    assert!(h.claim("q", 100, 0, T0).is_empty(), "another gets none");
    let stats = h.core.stats("q", T0).unwrap();
    assert_eq!(
        stats.metrics.counts[JobState::Available.index()],
        7,
        "held back, still available"
    );

    // Two claims wait; a finished job frees one slot for the first in line.
    for (request, worker) in [(101, "a"), (102, "b")] {
        let step = h.core.handle(
            request,
            Request::Claim(ClaimSpec {
                wait_ms: 10_000,
                worker: worker.into(),
                ..claim_spec("q", 50, 0)
            }),
            T0,
        );
        assert!(h.record(step).replies.is_empty(), "a claim at the limit waits");
    }
    let (id, token, _) = first[0];
    let step = h.core.handle(
        103,
        Request::Complete {
            id,
            token,
            result: Bytes::new(),
        },
        T0 + 5,
    );
    let step = h.record(step);
    let served: Vec<_> = step
        .replies
        .iter()
        .map(|(r, reply)| (*r, reply.clone()))
        .collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(served[0].0, 103);
    let Ok(Reply::Claimed(jobs)) = &served[1].1 else {
        panic!("{served:?}")
    };
    assert_eq!(
        (served[1].0, jobs.len()),
        (101, 1),
        "the first waiting claim gets the one freed slot"
    );
    assert_eq!(h.core.stats("q", T0).unwrap().metrics.leases_held, 3);

    // Raising the limit serves the second waiting claim at once.
    let step = h.core.handle(
        104,
        Request::ConfigureQueue {
            queue: "q".into(),
            change: concurrency(5),
        },
        T0 + 6,
    );
    let step = h.record(step);
    let claimed: usize = step
        .replies
        .iter()
        .filter_map(|(r, reply)| match reply {
            Ok(Reply::Claimed(jobs)) if *r == 102 => Some(jobs.len()),
            _ => None,
        })
        .sum();
    assert_eq!(claimed, 2);
    h.assert_replay_matches(T0 + 7);
}

#[test]
fn a_rate_limit_holds_in_every_window_and_a_waiting_claim_is_served_when_it_opens() {
    let mut h = Harness::new();
    configure(&mut h, "q", rate(5, 1_000), T0).unwrap();
    enqueue_many(&mut h, "q", 20, T0);
    assert_eq!(h.claim("q", 100, 0, T0).len(), 5);
    assert!(h.claim("q", 100, 0, T0 + 999).is_empty(), "the window is full");

    let step = h.core.handle(
        50,
        Request::Claim(ClaimSpec {
            wait_ms: 30_000,
            ..claim_spec("q", 100, 0)
        }),
        T0 + 10,
    );
    assert!(h.record(step).replies.is_empty());
    assert_eq!(
        h.core.next_deadline(),
        Some(T0 + 1_000),
        "the runtime wakes when the window opens"
    );
    let step = h.tick(T0 + 1_000);
    let Some((50, Ok(Reply::Claimed(jobs)))) = step.replies.first() else {
        panic!("{:?}", step.replies)
    };
    assert_eq!(jobs.len(), 5);

    // Claims spread over time: never more than 5 in any 1,000 ms.
    let mut now = T0 + 1_000;
    for _ in 0..40 {
        now += 137;
        h.claim("q", 3, 0, now);
        for job in h
            .core
            .jobs()
            .filter(|j| j.state == JobState::Running)
            .map(|j| j.id)
            .collect::<Vec<_>>()
        {
            let token = h.core.job(job).unwrap().lease.as_ref().unwrap().token;
            complete(&mut h, job, token, now);
        }
        enqueue_many(&mut h, "q", 3, now);
    }
    let claims: Vec<i64> = h
        .log
        .iter()
        .filter_map(|e| match e {
            Event::Claimed { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
        .collect();
    for &start in &claims {
        let in_window = claims
            .iter()
            .filter(|&&t| t >= start && t < start + 1_000)
            .count();
        assert!(in_window <= 5, "{in_window} claims in the window from {start}");
    }
    h.assert_replay_matches(now + 1);
}

#[test]
fn a_queue_s_retention_decides_when_its_finished_jobs_leave() {
    let mut h = Harness::new();
    let change = QueueConfigChange {
        finished_retention_ms: Some(Some(1_000)),
        dead_retention_ms: Some(Some(2_000)),
        ..QueueConfigChange::default()
    };
    configure(&mut h, "short", change, T0).unwrap();
    let done = h.enqueue(spec("short"), T0);
    let dead = h.enqueue(
        JobSpec {
            attempts_max: Some(1),
            ..spec("short")
        },
        T0,
    );
    let kept = h.enqueue(spec("long"), T0);
    for (id, token, _) in h.claim("short", 2, 0, T0) {
        if id == done {
            complete(&mut h, id, token, T0);
        } else {
            fail(&mut h, id, token, None, T0);
        }
    }
    let (id, token, _) = h.claim("long", 1, 0, T0)[0];
    complete(&mut h, id, token, T0);
    assert_eq!(h.state(dead), JobState::Dead);

    h.tick(T0 + 999);
    assert!(h.core.job(done).is_some());
    h.tick(T0 + 1_000);
    assert!(h.core.job(done).is_none(), "gone after the queue's retention");
    assert!(
        h.core.job(kept).is_some(),
        "another queue keeps the server's hour"
    );
    assert!(h.core.job(dead).is_some());
    let step = h.tick(T0 + 2_000);
    assert!(
        step.events
            .iter()
            .any(|e| matches!(e, Event::Purged { id, .. } if *id == dead)),
        "the dead job is purged by an event"
    );

    // Lengthening a retention keeps jobs that would have left.
    let kept2 = h.enqueue(spec("short"), T0 + 3_000);
    let (id, token, _) = h.claim("short", 1, 0, T0 + 3_000)[0];
    complete(&mut h, id, token, T0 + 3_000);
    let longer = QueueConfigChange {
        finished_retention_ms: Some(Some(60_000)),
        ..QueueConfigChange::default()
    };
    configure(&mut h, "short", longer, T0 + 3_001).unwrap();
    h.tick(T0 + 10_000);
    assert!(h.core.job(kept2).is_some());
    assert_eq!(
        h.core.next_deadline(),
        Some(T0 + 63_000),
        "it leaves by the new retention, before the other queue's job (an hour)"
    );
    h.assert_replay_matches(T0 + 10_001);
}

#[test]
fn deleting_a_queue_purges_its_jobs_and_forgets_it() {
    let mut h = Harness::new();
    configure(&mut h, "q", concurrency(2), T0).unwrap();
    let keyed = h.enqueue(
        JobSpec {
            idempotency_key: Some("k".into()),
            ..spec("q")
        },
        T0,
    );
    enqueue_many(&mut h, "q", 3, T0);
    let other = h.enqueue(spec("other"), T0);
    let running = h.claim("q", 1, 0, T0);
    let delete = |force| Request::DeleteQueue {
        queue: "q".into(),
        force,
    };
    assert_eq!(
        h.request(delete(false), T0 + 1),
        Err(JobError::QueueBusy {
            queue: "q".into(),
            running: 1
        })
    );
    assert_eq!(h.core.job_count(), 5, "a refused deletion changes nothing");

    assert_eq!(
        h.request(delete(true), T0 + 2),
        Ok(Reply::QueueDeleted { purged: 4 })
    );
    assert_eq!(h.core.job_count(), 1);
    assert!(h.core.job(other).is_some());
    assert!(!h.core.queue_known("q"));
    assert_eq!(
        h.request(delete(false), T0 + 3),
        Err(JobError::UnknownQueue { queue: "q".into() })
    );
    let purges = h
        .log
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Purged {
                    reason: spool_jobs::event::PurgeReason::QueueDeleted,
                    ..
                }
            )
        })
        .count();
    assert_eq!(purges, 4, "one purge event per job");

    // The worker that held a job of the deleted queue is refused.
    let (id, token, _) = running[0];
    let complete = Request::Complete {
        id,
        token,
        result: Bytes::new(),
    };
    assert_eq!(h.request(complete, T0 + 4), Err(JobError::UnknownJob { id }));

    // A queue of the same name starts afresh: no limit, no old key.
    let again = h.enqueue(
        JobSpec {
            idempotency_key: Some("k".into()),
            ..spec("q")
        },
        T0 + 5,
    );
    assert_ne!(again, keyed, "the deleted queue's idempotency keys are gone");
    assert_eq!(h.core.queue_config("q").unwrap(), &QueueConfig::default());
    h.assert_replay_matches(T0 + 6);
}

#[test]
fn settings_outside_the_server_s_limits_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let cases: Vec<(QueueConfigChange, &str)> = vec![
        (
            QueueConfigChange {
                attempts_max: Some(Some(0)),
                ..Default::default()
            },
            "config.attempts_max",
        ),
        (
            QueueConfigChange {
                backoff: Some(Some(Backoff {
                    min_ms: 10_000,
                    max_ms: 5_000,
                })),
                ..Default::default()
            },
            "config.backoff.max_ms",
        ),
        (
            QueueConfigChange {
                lease_ms: Some(Some(u64::MAX)),
                ..Default::default()
            },
            "config.lease_ms",
        ),
        (concurrency(0), "config.concurrency_limit"),
        (rate(0, 1_000), "config.rate_limit.jobs"),
        (rate(10, 0), "config.rate_limit.per_ms"),
        (rate(u32::MAX, 1_000), "config.rate_limit.jobs"),
    ];
    for (change, field) in cases {
        match configure(&mut h, "q", change, T0) {
            Err(JobError::Invalid { field: refused, .. }) => assert_eq!(refused, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(h.log.is_empty(), "nothing was decided");
    assert!(matches!(
        configure(&mut h, "__jobs", concurrency(1), T0),
        Err(JobError::Invalid { field: "queue", .. })
    ));
}

#[test]
fn configurations_survive_snapshots() {
    let mut h = Harness::new();
    let change = QueueConfigChange {
        attempts_max: Some(Some(4)),
        backoff: Some(Some(Backoff {
            min_ms: 2_000,
            max_ms: 60_000,
        })),
        concurrency_limit: Some(Some(7)),
        rate_limit: Some(Some(RateLimit {
            jobs: 100,
            per_ms: 60_000,
        })),
        finished_retention_ms: Some(Some(1_000)),
        ..QueueConfigChange::default()
    };
    let config = configure(&mut h, "q", change, T0).unwrap();
    let id = h.enqueue(spec("q"), T0);
    let (_, token, _) = h.claim("q", 1, 0, T0)[0];
    complete(&mut h, id, token, T0);
    configure(&mut h, "plain", QueueConfigChange::default(), T0).unwrap();

    let encoded = snapshot::encode(&h.core, 1);
    let (restored, _) = snapshot::decode(Bytes::from(encoded), JobsConfig::default(), 1).unwrap();
    assert_eq!(restored.queue_config("q").unwrap(), &config);
    assert!(restored.queue_known("plain"));
    assert_eq!(
        restored.next_deadline(),
        Some(T0 + 1_000),
        "the finished job leaves by its queue's retention after a restore"
    );
}

/// Many claimers with random batch sizes, completions and lease expiries
/// against a queue limited to 4 running: the running count, rebuilt from
/// the events alone, never passes 4 and reaches it.
#[test]
fn random_claimers_never_run_more_than_the_limit() {
    let mut h = Harness::new();
    configure(&mut h, "q", concurrency(4), T0).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = T0;
    for _ in 0..2_000 {
        now += (next() % 50) as i64;
        match next() % 4 {
            0 => enqueue_many(&mut h, "q", (next() % 5) as usize + 1, now),
            1 => {
                h.claim("q", (next() % 10) as u32 + 1, 200, now);
            }
            2 => {
                let running: Vec<_> = h
                    .core
                    .jobs()
                    .filter(|j| j.state == JobState::Running)
                    .map(|j| (j.id, j.lease.as_ref().unwrap().token))
                    .collect();
                if let Some(&(id, token)) = running.get((next() % 8) as usize) {
                    complete(&mut h, id, token, now);
                }
            }
            _ => {
                h.tick(now);
            }
        }
    }
    let mut running = 0i64;
    let mut most = 0;
    let mut held = std::collections::HashSet::new();
    for event in &h.log {
        match event {
            Event::Claimed { id, .. } => {
                assert!(held.insert(*id));
                running += 1;
            }
            Event::Completed { id, .. } | Event::Failed { id, .. } | Event::Released { id, .. }
                if held.remove(id) =>
            {
                running -= 1;
            }
            _ => {}
        }
        assert!(running <= 4, "{running} running");
        most = most.max(running);
    }
    assert_eq!(most, 4);
    h.assert_replay_matches(now + 1);
}
