//! Queues: one rule for their names, known from their first enqueue on
//! (also across snapshots and replay), bulk changes that must name one,
//! and the cap on finished jobs in memory, counted per queue.

mod common;

use bytes::Bytes;
use common::{Harness, T0, claim_spec, spec};
use spool_jobs::core::DEAD_JOBS_PER_CALL_MAX;
use spool_jobs::{
    DeadFilter, JobError, JobFromLog, JobId, JobSpec, JobState, JobsConfig, JobsCore, Reply, Request, Target,
    snapshot,
};

fn filter(queue: &str) -> Target {
    Target::Filter(DeadFilter {
        queue: queue.into(),
        error_contains: String::new(),
        error_fingerprint: String::new(),
        dead_since_ms: None,
        dead_before_ms: None,
        limit: 0,
    })
}

/// Enqueues `count` jobs to `queue` that die on their first failure, and
/// fails them all at `now`.
fn dead_jobs(h: &mut Harness, queue: &str, count: usize, now: i64) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(h.enqueue(
            JobSpec {
                attempts_max: Some(1),
                ..spec(queue)
            },
            now,
        ));
    }
    let mut claimed = Vec::new();
    while claimed.len() < count {
        claimed.extend(h.claim(queue, 1_000, 0, now));
    }
    for (id, token, _) in claimed {
        let fail = Request::Fail {
            id,
            token,
            error: "boom".into(),
            retryable: false,
            retry_delay_ms: None,
        };
        h.request(fail, now).unwrap();
    }
    ids
}

fn invalid_field(result: Result<impl std::fmt::Debug, JobError>) -> &'static str {
    match result {
        Err(JobError::Invalid { field, .. }) => field,
        other => panic!("not refused as invalid: {other:?}"),
    }
}

#[test]
fn bulk_dead_calls_must_name_one_known_queue() {
    let mut h = Harness::new();
    let billing = dead_jobs(&mut h, "billing", 2, T0);
    let emails = dead_jobs(&mut h, "emails", 1, T0);
    for request in [Request::RetryDead(filter("")), Request::PurgeDead(filter(""))] {
        assert_eq!(invalid_field(h.request(request, T0 + 1)), "filter.queue");
    }
    assert_eq!(
        invalid_field(h.request(Request::PurgeDead(filter("__jobs")), T0 + 1)),
        "filter.queue"
    );
    assert_eq!(
        h.request(Request::PurgeDead(filter("never-used")), T0 + 1),
        Err(JobError::UnknownQueue {
            queue: "never-used".into()
        })
    );
    for id in billing.iter().chain(&emails) {
        assert_eq!(h.state(*id), JobState::Dead, "refused calls change nothing");
    }
    assert_eq!(
        h.request(Request::RetryDead(filter("billing")), T0 + 2),
        Ok(Reply::Count(2))
    );
    assert_eq!(h.state(emails[0]), JobState::Dead, "the other queue is untouched");
}

#[test]
fn a_bulk_dead_call_acts_on_at_most_its_cap() {
    let mut h = Harness::new();
    dead_jobs(&mut h, "q", DEAD_JOBS_PER_CALL_MAX + 5, T0);
    let asked_for_more = Target::Filter(DeadFilter {
        limit: u32::MAX,
        ..match filter("q") {
            Target::Filter(f) => f,
            Target::Job(_) => unreachable!(),
        }
    });
    assert_eq!(
        h.request(Request::PurgeDead(asked_for_more), T0 + 1),
        Ok(Reply::Count(DEAD_JOBS_PER_CALL_MAX as u64))
    );
    assert_eq!(
        h.request(Request::PurgeDead(filter("q")), T0 + 2),
        Ok(Reply::Count(5))
    );
}

#[test]
fn queue_names_with_the_internal_prefix_are_refused_everywhere() {
    let mut h = Harness::new();
    assert_eq!(
        invalid_field(h.request(Request::Enqueue(vec![spec("__mine")]), T0)),
        "queue"
    );
    assert_eq!(
        invalid_field(h.request(Request::Enqueue(vec![spec("ok"), spec("__jobs")]), T0)),
        "queue"
    );
    assert_eq!(h.core.job_count(), 0, "a refused batch enqueues nothing");
    assert_eq!(
        invalid_field(h.request(Request::Claim(claim_spec("__jobs", 1, 0)), T0)),
        "queues"
    );
    assert_eq!(invalid_field(h.core.stats("__jobs", T0)), "queue");
    assert_eq!(invalid_field(h.core.list("__jobs", None, 0, 10)), "queue");
    assert_eq!(invalid_field(h.core.list("", None, 0, 10)), "queue");
}

#[test]
fn a_queue_is_known_from_its_first_enqueue_and_stays_known() {
    let config = JobsConfig {
        finished_retention_ms: 1_000,
        ..JobsConfig::default()
    };
    let mut h = Harness::with(config.clone());
    let unknown = Err(JobError::UnknownQueue { queue: "q".into() });
    assert_eq!(h.core.stats("q", T0), unknown);
    assert_eq!(
        h.core.list("q", None, 0, 10).map(|jobs| jobs.len()),
        unknown.map(|_| 0)
    );
    // A claim on a queue nobody used yet is not an error: it finds nothing.
    assert!(h.claim("q", 1, 0, T0).is_empty());
    assert!(!h.core.queue_known("q"), "a claim does not make a queue known");

    let id = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 1, 0, T0);
    let complete = Request::Complete {
        id,
        token: claimed[0].1,
        result: Bytes::new(),
    };
    h.request(complete, T0 + 1).unwrap();
    h.tick(T0 + 2_000);
    assert!(h.core.job(id).is_none(), "the job left memory");
    assert_eq!(h.core.stats("q", T0 + 2_000).unwrap().metrics.counts, [0; 6]);

    // Through a snapshot...
    let encoded = snapshot::encode(&h.core, 0);
    let (restored, _) = snapshot::decode(Bytes::from(encoded), config.clone(), 1).expect("a snapshot");
    assert!(restored.queue_known("q"));
    assert_eq!(restored.list("q", None, 0, 10).unwrap().len(), 0);
    // ... and through a replay of the events.
    let mut replayed = JobsCore::new(config, 1);
    for event in &h.log {
        replayed.apply(event);
    }
    replayed.tick(T0 + 2_000);
    assert!(replayed.queue_known("q"));
}

#[test]
fn the_finished_cap_evicts_the_oldest_early_and_counts_them_per_queue() {
    let config = JobsConfig {
        finished_in_memory_max: 2,
        ..JobsConfig::default()
    };
    let mut h = Harness::with(config);
    let mut finished = Vec::new();
    for (i, queue) in ["a", "a", "b", "a", "b"].into_iter().enumerate() {
        let now = T0 + i as i64;
        let id = h.enqueue(spec(queue), now);
        let claimed = h.claim(queue, 1, 0, now);
        let complete = Request::Complete {
            id,
            token: claimed[0].1,
            result: Bytes::from(format!("result {i}")),
        };
        h.request(complete, now).unwrap();
        finished.push((id, h.core.job(id).unwrap().clone()));
    }
    h.tick(T0 + 10);
    let a = h.core.stats("a", T0 + 10).unwrap();
    let b = h.core.stats("b", T0 + 10).unwrap();
    assert_eq!(a.finished_in_memory, 2, "the cap holds across queues");
    assert_eq!((a.finished_evicted_early, b.finished_evicted_early), (2, 1));
    assert_eq!(
        finished
            .iter()
            .filter(|(id, _)| h.core.job(*id).is_some())
            .count(),
        2
    );
    assert!(h.core.job(finished[4].0).is_some(), "the newest stay");

    // A job that left memory is rebuilt from its events as it was.
    for (id, before) in &finished[..3] {
        assert!(h.core.job(*id).is_none());
        let mut events = h.log.iter().filter(|e| e.id() == *id);
        let mut rebuilt = JobFromLog::enqueued(events.next().unwrap()).expect("starts with its enqueue");
        for event in events {
            rebuilt.apply(event);
        }
        assert_eq!(&rebuilt.job, before);
        assert_eq!(rebuilt.purged_at_ms, None);
    }
}

#[test]
fn a_purged_dead_job_is_rebuilt_as_dead_with_its_purge_time() {
    let mut h = Harness::new();
    let id = dead_jobs(&mut h, "q", 1, T0)[0];
    let before = h.core.job(id).unwrap().clone();
    assert_eq!(
        h.request(Request::PurgeDead(Target::Job(id)), T0 + 5),
        Ok(Reply::Count(1))
    );
    assert!(h.core.job(id).is_none());
    let mut events = h.log.iter().filter(|e| e.id() == id);
    let mut rebuilt = JobFromLog::enqueued(events.next().unwrap()).unwrap();
    for event in events {
        rebuilt.apply(event);
    }
    assert_eq!(rebuilt.job, before);
    assert_eq!(rebuilt.purged_at_ms, Some(T0 + 5));
}

fn pause(h: &mut Harness, queue: &str, paused: bool, now: i64) -> Result<Reply, JobError> {
    h.request(
        Request::PauseQueue {
            queue: queue.into(),
            paused,
        },
        now,
    )
}

#[test]
fn a_paused_queue_hands_out_no_job_until_resumed() {
    let mut h = Harness::new();
    let paused_job = h.enqueue(spec("paused"), T0);
    let other_job = h.enqueue(spec("other"), T0);
    assert_eq!(
        pause(&mut h, "paused", true, T0 + 1),
        Ok(Reply::QueuePaused {
            paused: true,
            changed: true
        })
    );
    assert_eq!(
        pause(&mut h, "paused", true, T0 + 1),
        Ok(Reply::QueuePaused {
            paused: true,
            changed: false
        }),
        "pausing twice changes nothing"
    );
    assert!(matches!(
        pause(&mut h, "never-seen", true, T0 + 1),
        Err(JobError::UnknownQueue { .. })
    ));
    // A claim naming both queues gets only the other queue's job.
    let mut both = claim_spec("paused", 10, 0);
    both.queues.push("other".into());
    let Ok(Reply::Claimed(claimed)) = h.request(Request::Claim(both), T0 + 2) else {
        panic!("a claim answers with jobs");
    };
    let ids: Vec<JobId> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(ids, [other_job]);
    assert_eq!(h.state(paused_job), JobState::Available);
    let stats = h.core.stats("paused", T0 + 2).unwrap();
    assert!(stats.paused && stats.metrics.paused);
    assert_eq!(stats.metrics.counts[JobState::Available.index()], 1);

    // A claim waiting on the paused queue is served when it resumes.
    let mut waiting = claim_spec("paused", 1, 0);
    waiting.wait_ms = 10_000;
    let parked = h.core.handle(99, Request::Claim(waiting), T0 + 3);
    assert!(parked.replies.is_empty(), "the claim waits");
    let resumed = h.core.handle(
        100,
        Request::PauseQueue {
            queue: "paused".into(),
            paused: false,
        },
        T0 + 4,
    );
    let served: Vec<JobId> = resumed
        .replies
        .iter()
        .filter_map(|(request, reply)| match (request, reply) {
            (99, Ok(Reply::Claimed(jobs))) => Some(jobs.iter().map(|c| c.job.id)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(served, [paused_job]);
}

#[test]
fn a_pause_survives_replay_and_snapshots_of_both_versions() {
    let mut h = Harness::new();
    h.enqueue(spec("q"), T0);
    h.enqueue(spec("r"), T0);
    pause(&mut h, "q", true, T0 + 1).unwrap();
    pause(&mut h, "r", true, T0 + 1).unwrap();
    pause(&mut h, "r", false, T0 + 2).unwrap();
    let config = JobsConfig::default();

    let mut replayed = JobsCore::new(config.clone(), 1);
    for event in &h.log {
        replayed.apply(event);
    }
    assert_eq!(replayed.paused_queues().collect::<Vec<_>>(), ["q"]);

    let encoded = snapshot::encode(&h.core, 0);
    let (mut restored, _) =
        snapshot::decode(Bytes::from(encoded.clone()), config.clone(), 1).expect("a snapshot");
    assert_eq!(restored.paused_queues().collect::<Vec<_>>(), ["q"]);
    let step = restored.handle(1, Request::Claim(claim_spec("q", 1, 0)), T0 + 3);
    assert!(
        matches!(&step.replies[..], [(1, Ok(Reply::Claimed(none)))] if none.is_empty()),
        "still paused after the snapshot: {:?}",
        step.replies
    );

    // Snapshots of versions 4 (written before queue configurations
    // existed) and 3 (before pauses) are the same body without the lists
    // added since: they are read. The configured list is one byte (count
    // 0); the paused list three varint-coded bytes: count 1, length 1, `q`.
    let older = |version: u32, cut: usize| {
        let mut old = encoded.clone();
        let body_len = u64::from_le_bytes(old[16..24].try_into().unwrap()) as usize;
        old.truncate(28 + body_len - cut);
        let new_len = (old.len() - 28) as u64;
        old[4..8].copy_from_slice(&version.to_le_bytes());
        old[16..24].copy_from_slice(&new_len.to_le_bytes());
        let crc = crc32fast::hash(&old[28..]);
        old[24..28].copy_from_slice(&crc.to_le_bytes());
        snapshot::decode(Bytes::from(old), config.clone(), 1).expect("an older snapshot")
    };
    let (restored, _) = older(4, 1);
    assert_eq!(restored.paused_queues().collect::<Vec<_>>(), ["q"]);
    let (restored, _) = older(3, 1 + 3);
    assert!(restored.queue_known("q") && restored.queue_known("r"));
    assert_eq!(restored.paused_queues().count(), 0);
}

#[test]
fn the_oldest_available_age_matches_a_pass_over_every_available_job() {
    let mut h = Harness::new();
    // Two priorities, jobs enqueued a millisecond apart; then the oldest of
    // each priority is claimed and failed with a retry at once, so it is
    // available again since later than jobs enqueued after it.
    for i in 0..20 {
        let priority = if i % 3 == 0 { 5 } else { 0 };
        h.enqueue(
            JobSpec {
                priority,
                ..spec("q")
            },
            T0 + i,
        );
    }
    let claimed = h.claim("q", 2, 0, T0 + 100);
    for (id, token, _) in claimed {
        let fail = Request::Fail {
            id,
            token,
            error: "again".into(),
            retryable: true,
            retry_delay_ms: Some(0),
        };
        h.request(fail, T0 + 150).unwrap();
    }
    let now = T0 + 1_000;
    let brute = h
        .core
        .list("q", Some(JobState::Available), 0, 1_000)
        .unwrap()
        .iter()
        .map(|job| job.run_at_ms)
        .min()
        .map(|t| (now - t) as u64);
    let stats = h.core.stats("q", now).unwrap();
    assert_eq!(stats.metrics.oldest_available_age_ms, brute);
    assert_eq!(
        brute,
        Some(1_000 - 1),
        "the job enqueued at T0 + 1 is the oldest now"
    );
}
