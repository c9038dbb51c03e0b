//! Per-queue statistics (totals, latency percentiles, connected workers)
//! and the metrics snapshot, with an injected clock.

mod common;

use common::{Harness, T0, claim_spec, complete, fail, spec};
use spool_jobs::{ClaimSpec, JobId, JobSpec, JobState, JobsCore, QueueCounters, Request};

/// True when a reported percentile is `truth` within HdrHistogram's two
/// significant digits (it reports the top of the value's bucket).
fn near(reported: u64, truth: u64) -> bool {
    reported >= truth && reported <= truth + truth / 128
}

#[test]
fn totals_and_latencies_of_a_known_workload() {
    let mut h = Harness::new();
    // Ten jobs enqueued at T0; job i is claimed at T0 + 100 * (i + 1) and
    // completes 1 s (i even) or 3 s (i odd) later.
    let ids: Vec<JobId> = (0..10).map(|_| h.enqueue(spec("q"), T0)).collect();
    let mut completions = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let claimed_at = T0 + 100 * (i as i64 + 1);
        let claimed = h.claim("q", 1, 60_000, claimed_at);
        assert_eq!(claimed[0].0, id);
        let run = if i % 2 == 0 { 1_000 } else { 3_000 };
        completions.push((claimed_at + run, id, claimed[0].1));
    }
    completions.sort_unstable();
    for &(at, id, token) in &completions {
        complete(&mut h, id, token, at);
    }
    let now = completions.last().unwrap().0;
    // One more job fails once (retry in 2 s), then goes dead; one is
    // cancelled while waiting; one loses its lease.
    let flaky = h.enqueue(
        JobSpec {
            attempts_max: Some(2),
            ..spec("q")
        },
        now,
    );
    let claimed = h.claim("q", 1, 60_000, now + 10);
    fail(&mut h, flaky, claimed[0].1, Some(2_000), now + 20);
    let claimed = h.claim("q", 1, 60_000, now + 2_020);
    fail(&mut h, flaky, claimed[0].1, None, now + 2_030);
    let cancelled = h.enqueue(spec("q"), now + 2_040);
    h.request(Request::Cancel { id: cancelled }, now + 2_050).unwrap();
    let lost = h.enqueue(spec("q"), now + 2_060);
    h.claim("q", 1, 1_000, now + 2_060);
    h.tick(now + 3_060);
    let read_at = now + 3_100;

    let stats = h.core.stats("q", read_at).unwrap();
    let metrics = &stats.metrics;
    assert_eq!(
        metrics.counters,
        QueueCounters {
            enqueued: 13,
            claimed: 13,
            completed: 10,
            failed: 3,
            retried: 2,
            dead: 1,
            expired_lease: 1,
            cancelled: 1,
            released: 0,
            redriven: 0,
        }
    );
    assert_eq!(h.state(lost), JobState::Available);
    // Queue waits: 100, 200, ..., 1000 ms for the ten; 10 and 0 ms for the
    // flaky job's two attempts; 0 for the lost job. p50 of the 13 is the
    // 7th smallest (400 ms), p99 the largest.
    let wait = metrics.queue_wait.last_minute.unwrap();
    assert_eq!(wait.count, 13);
    assert!(
        near(wait.p50_ms, 400) && near(wait.p99_ms, 1_000) && near(wait.max_ms, 1_000),
        "{wait:?}"
    );
    assert_eq!(metrics.queue_wait.last_hour, metrics.queue_wait.last_minute);
    // Run times: five of 1 s, five of 3 s, the flaky job's 10 ms twice,
    // the lost job's 1 s lease.
    let run = metrics.run_time.last_minute.unwrap();
    assert_eq!(run.count, 13);
    assert!(near(run.p50_ms, 1_000) && near(run.p99_ms, 3_000), "{run:?}");
    // End to end: the ten completions and the dead job; not the
    // cancelled one.
    let end_to_end = metrics.end_to_end.histogram.clone();
    assert_eq!(end_to_end.count, 11);
    // The histogram since start: none of the ten took 1 s or less end to
    // end (the first: 100 ms wait + 1 s run).
    assert_eq!(end_to_end.cumulative_counts[8], 0, "le 1s");
    assert_eq!(
        metrics.run_time.histogram.cumulative_counts[3], 2,
        "le 25ms: the flaky job's attempts"
    );
    // An hour and a minute later, nothing is left in either window, but the
    // totals stay.
    let later = h.core.stats("q", read_at + 3_700_000).unwrap();
    assert_eq!(later.metrics.queue_wait.last_minute, None);
    assert_eq!(later.metrics.queue_wait.last_hour, None);
    assert_eq!(later.metrics.counters, metrics.counters);
    assert_eq!(later.metrics.queue_wait.histogram.count, 13);
}

#[test]
fn replay_rebuilds_the_table_but_not_the_totals() {
    let mut h = Harness::new();
    let id = h.enqueue(spec("q"), T0);
    let claimed = h.claim("q", 1, 0, T0 + 5);
    complete(&mut h, id, claimed[0].1, T0 + 10);
    let mut replayed = JobsCore::new(h.core.config().clone(), 7);
    for event in &h.log {
        replayed.apply(event);
    }
    let served = h.core.stats("q", T0 + 20).unwrap().metrics;
    let rebuilt = replayed.stats("q", T0 + 20).unwrap().metrics;
    assert_eq!(served.counts, rebuilt.counts, "gauges follow the table");
    assert_eq!(served.counters.completed, 1);
    assert_eq!(
        rebuilt.counters,
        QueueCounters::default(),
        "totals count from this start"
    );
    assert_eq!(rebuilt.queue_wait.last_minute, None);
}

#[test]
fn workers_connected_hold_leases_wait_or_claimed_recently() {
    let mut h = Harness::new();
    for _ in 0..3 {
        h.enqueue(spec("q"), T0);
    }
    h.enqueue(spec("other"), T0);
    let claim = |worker: &str, max_jobs, wait_ms| ClaimSpec {
        queues: vec!["q".into()],
        max_jobs,
        lease_ms: 600_000,
        wait_ms,
        worker: worker.into(),
    };
    // a holds two leases; b holds one; c finds nothing and waits.
    h.request(Request::Claim(claim("a", 2, 0)), T0).unwrap();
    h.request(Request::Claim(claim("b", 1, 0)), T0).unwrap();
    let step = h.core.handle(99, Request::Claim(claim("c", 1, 50_000)), T0);
    assert!(step.replies.is_empty(), "c waits");
    let metrics = h.core.stats("q", T0).unwrap().metrics;
    assert_eq!((metrics.leases_held, metrics.workers_connected), (3, 3));
    // d claimed and found nothing without waiting: counted for the default
    // lease length (30 s), then not.
    h.request(Request::Claim(claim("d", 1, 0)), T0 + 1_000).unwrap();
    assert_eq!(
        h.core.stats("q", T0 + 30_999).unwrap().metrics.workers_connected,
        4
    );
    // c's wait ran out at T0 + 50 s; a and b still hold leases.
    h.tick(T0 + 50_000);
    assert_eq!(
        h.core.stats("q", T0 + 50_000).unwrap().metrics.workers_connected,
        2
    );
    // Another queue's workers are not this queue's.
    assert_eq!(h.core.stats("other", T0).unwrap().metrics.workers_connected, 0);
    let snapshot = h.core.metrics_snapshot(T0 + 50_000);
    let names: Vec<&str> = snapshot.iter().map(|m| m.queue.as_str()).collect();
    assert_eq!(names, ["other", "q"]);
    assert_eq!(snapshot[1].workers_connected, 2);
    assert_eq!(snapshot[1].counts[JobState::Running.index()], 3);
    assert_eq!(snapshot[0].oldest_available_age_ms, Some(50_000));
}

#[test]
fn the_snapshot_s_gauges_are_the_table_s() {
    let mut h = Harness::new();
    for queue in ["b", "a", "c"] {
        for _ in 0..4 {
            h.enqueue(spec(queue), T0);
        }
    }
    let claimed = h.claim("a", 2, 0, T0 + 1);
    complete(&mut h, claimed[0].0, claimed[0].1, T0 + 2);
    h.request(Request::Claim(claim_spec("c", 1, 0)), T0 + 3).unwrap();
    for metrics in h.core.metrics_snapshot(T0 + 4) {
        let mut counts = [0u64; 6];
        for job in h.core.jobs().filter(|j| *j.queue == *metrics.queue) {
            counts[job.state.index()] += 1;
        }
        assert_eq!(metrics.counts, counts, "{}", metrics.queue);
        assert_eq!(metrics.leases_held, counts[JobState::Running.index()]);
        assert_eq!(metrics, h.core.stats(&metrics.queue, T0 + 4).unwrap().metrics);
    }
}

#[test]
fn a_quiet_queue_gives_its_latency_memory_back() {
    let mut h = Harness::new();
    let mut now = T0;
    for _ in 0..200 {
        let id = h.enqueue(spec("q"), now);
        let claimed = h.claim("q", 1, 0, now + 700);
        complete(&mut h, id, claimed[0].1, now + 50_000);
        now += 60_000;
    }
    let busy = h.core.activity_bytes();
    // Three distributions, two windows of 12 buckets each, a few KiB each.
    assert!(busy > 0 && busy < 3 * 24 * 8 * 1_024, "{busy}");
    h.tick(now + 2 * 3_600_000);
    assert_eq!(h.core.activity_bytes(), 0);
    assert_eq!(h.core.stats("q", now).unwrap().metrics.counters.completed, 200);
}
