//! The history retention of `__jobs` over a real store: the log stays
//! bounded however many jobs pass, the job table survives a crash whole
//! (from the snapshot the trimmed log relies on), and history reads are
//! either complete or say that their start was trimmed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{claim_through, enqueue_through};
use spool_jobs::{
    Job, JobSpec, JobState, JobsRuntime, LoggedJob, Request, RuntimeConfig, Schedule, StartError,
};
use spool_log::{Partition, Retention, Store, StoreConfig};

const SEGMENT_BYTES: u64 = 256 << 10;

fn store_config() -> StoreConfig {
    StoreConfig {
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        internal_segment_bytes_max: SEGMENT_BYTES,
        batch_bytes_max: SEGMENT_BYTES,
        record_bytes_max: SEGMENT_BYTES / 2,
        preallocate_bytes: SEGMENT_BYTES,
        ..StoreConfig::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<AtomicI64>,
    retention: Retention,
    snapshot_events: u64,
}

impl Fixture {
    fn new(retention: Retention, snapshot_events: u64) -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicI64::new(1_800_000_000_000)),
            retention,
            snapshot_events,
        }
    }

    fn config(&self) -> RuntimeConfig {
        let clock = Arc::clone(&self.clock);
        let mut config = RuntimeConfig {
            snapshot_events: self.snapshot_events,
            history_retention: self.retention,
            retention_check_interval_ms: 20,
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..RuntimeConfig::new(self.dir.path().join("jobs"))
        };
        config.jobs.finished_in_memory_max = 5_000;
        config
    }

    fn open(&self) -> (Store, JobsRuntime, spool_jobs::Startup) {
        self.open_with(self.config())
    }

    fn open_with(&self, config: RuntimeConfig) -> (Store, JobsRuntime, spool_jobs::Startup) {
        let (store, _) = Store::open(self.dir.path().join("data"), store_config()).unwrap();
        let (runtime, startup) = JobsRuntime::start(&store, config).unwrap();
        (store, runtime, startup)
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn snapshot_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("jobs").join(spool_jobs::snapshot::FILE_NAME))
            .map_or(0, |m| m.len())
    }
}

fn spec(n: u64) -> JobSpec {
    JobSpec {
        queue: "q".into(),
        payload: Bytes::from(format!("{n:0>100}")),
        content_type: "text/plain".into(),
        headers: vec![],
        priority: 0,
        attempts_max: Some(1),
        timeout_ms: None,
        schedule: Schedule::Now,
        idempotency_key: None,
    }
}

async fn enqueue(runtime: &JobsRuntime, from: u64, count: u64) -> Vec<u64> {
    enqueue_through(runtime, (from..from + count).map(spec).collect()).await
}

async fn claim(runtime: &JobsRuntime, max: u32) -> Vec<(u64, u64)> {
    claim_through(runtime, max, 600_000).await
}

/// Completes the claimed jobs, except that every `dead_every`th fails for
/// good (and stays in memory, dead).
async fn finish(runtime: &JobsRuntime, claimed: &[(u64, u64)], dead_every: usize) -> Vec<u64> {
    let mut dead = Vec::new();
    let requests = claimed
        .iter()
        .enumerate()
        .map(|(i, &(id, token))| {
            if i % dead_every == 0 {
                dead.push(id);
                Request::Fail {
                    id,
                    token,
                    error: "boom".into(),
                    retryable: false,
                    retry_delay_ms: None,
                }
            } else {
                Request::Complete {
                    id,
                    token,
                    result: Bytes::from_static(b"ok"),
                }
            }
        })
        .collect();
    runtime.call(Request::Batch(requests)).await.unwrap();
    dead
}

async fn table(runtime: &JobsRuntime) -> Vec<Job> {
    runtime
        .read(|core, _| core.jobs().cloned().collect())
        .await
        .unwrap()
}

/// Waits until the snapshot on disk covers the whole log.
fn wait_for_snapshot(fixture: &Fixture, partition: &Partition) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = fixture.config();
        let covered = spool_jobs::snapshot::load(&config.snapshot_dir, &config.jobs, 1)
            .is_some_and(|(_, offset)| offset == partition.high_watermark());
        if covered {
            return;
        }
        assert!(Instant::now() < deadline, "no snapshot covers the log");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a job's history must be: `expected` whole, or a trimmed suffix of
/// it, marked so.
fn check_history(runtime: &JobsRuntime, id: u64, expected: &[&str]) -> bool {
    let page = runtime.history(id, 0, 100).unwrap();
    let kinds: Vec<&str> = page.events.iter().map(|(_, e)| e.kind()).collect();
    match page.trimmed {
        None => {
            assert_eq!(kinds, expected, "job {id}: a history not marked trimmed is whole");
            false
        }
        Some(trimmed) => {
            assert!(
                expected.ends_with(&kinds) && kinds.len() < expected.len(),
                "job {id}: {kinds:?} is not a trimmed {expected:?}"
            );
            if let Some((_, first)) = page.events.first() {
                assert!(first.at_ms() >= trimmed.before_ms, "job {id}");
            }
            true
        }
    }
}

/// The scenario at the job runtime's level, in a debug build's time: 200,000
/// jobs through a 4 MiB history retention (the log appends about 50 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_through_a_small_retention_keep_the_log_bounded() {
    jobs_through_a_small_retention(200_000).await;
}

/// The same with a million jobs (about 250 MB appended). About 100 s in a
/// debug build, 10 s in release: `scripts/jobs-retention.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million jobs take about 100 s in a debug build; scripts/jobs-retention.sh runs it in release"]
async fn a_million_jobs_through_a_small_retention_keep_the_log_bounded() {
    jobs_through_a_small_retention(1_000_000).await;
}

/// `jobs` jobs (each enqueued, claimed and completed, one in a hundred
/// dead) through a 4 MiB history retention. The log's size levels off, a
/// crash loses no job of the table, and every history read is whole or
/// marked trimmed.
async fn jobs_through_a_small_retention(jobs: u64) {
    const BATCH: u64 = 1_000;
    let rounds = jobs / BATCH;
    let retention_bytes = 4 << 20;
    let fixture = Fixture::new(
        Retention {
            ms: None,
            bytes: Some(retention_bytes),
        },
        20_000,
    );
    let (store, runtime, _) = fixture.open();
    let partition = store.internal_partition("__jobs").unwrap();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut dead = Vec::new();
    let mut succeeded = Vec::new();
    let mut appended_bytes = 0;
    for round in 0..rounds {
        fixture.advance(50);
        let ids = enqueue(&runtime, round * BATCH, BATCH).await;
        let claimed = claim(&runtime, BATCH as u32).await;
        assert_eq!(claimed.len(), ids.len());
        dead.extend(finish(&runtime, &claimed, 100).await);
        succeeded.push(claimed[1].0);
        if (round + 1) % (rounds / 20) == 0 {
            let info = partition.info();
            appended_bytes = partition.stats().appended_bytes;
            samples.push((round + 1, info.size_bytes, fixture.snapshot_bytes()));
        }
    }
    // Live jobs at the end: some available, some running.
    let available = enqueue(&runtime, jobs, 500).await;
    let running = claim(&runtime, 200).await;
    eprintln!(
        "{jobs} jobs in {:.1}s; __jobs appended {} bytes ({} per job); (rounds of {BATCH} jobs, __jobs bytes, snapshot bytes): {samples:?}",
        started.elapsed().as_secs_f64(),
        appended_bytes,
        appended_bytes / jobs
    );
    // The log levels off: past the first quarter no sample exceeds the
    // retention plus what the table still needs (the events since the
    // latest snapshot, at most about 2 x 20,000 events of ~100 bytes) plus
    // a segment, while the jobs appended grow fourfold.
    let bound = retention_bytes + 2 * 20_000 * 120 + 2 * SEGMENT_BYTES;
    for &(rounds, bytes, _) in &samples[samples.len() / 4..] {
        assert!(
            bytes <= bound,
            "after {rounds} rounds __jobs holds {bytes} bytes > {bound}"
        );
    }
    assert!(appended_bytes > 4 * bound, "{appended_bytes}");
    assert!(partition.log_start_offset() > 0);

    // History reads, old to new: whole or marked trimmed.
    let mut trimmed = 0;
    for (i, &id) in succeeded.iter().enumerate().step_by(rounds as usize / 20) {
        let expected = ["enqueued", "claimed", "completed"];
        trimmed += usize::from(check_history(&runtime, id, &expected));
        match runtime.job_from_log(id).unwrap() {
            LoggedJob::Found(job) => assert_eq!(job.job.state, JobState::Succeeded, "round {i}"),
            LoggedJob::Trimmed(_) => {}
            LoggedJob::Unknown => panic!("job {id} of round {i} is unknown"),
        }
    }
    for &id in dead.iter().step_by(dead.len() / 20) {
        trimmed += usize::from(check_history(&runtime, id, &["enqueued", "claimed", "dead"]));
    }
    assert!(trimmed > 0, "the oldest histories were trimmed");
    let last = *succeeded.last().unwrap();
    assert!(!check_history(
        &runtime,
        last,
        &["enqueued", "claimed", "completed"]
    ));
    assert!(!check_history(&runtime, running[0].0, &["enqueued", "claimed"]));
    assert!(!check_history(
        &runtime,
        *available.last().unwrap(),
        &["enqueued"]
    ));

    // A crash (no snapshot at stop): the table comes back whole.
    let before = table(&runtime).await;
    assert!(before.iter().filter(|j| j.state == JobState::Dead).count() == dead.len());
    drop(runtime.read(|_, _| ()).await);
    std::mem::forget(runtime);
    store.simulate_crash();
    drop(store);
    let (_store, runtime, startup) = fixture.open();
    assert!(startup.snapshot_offset.is_some());
    assert!(startup.replayed_events <= 2 * 20_000 + 3 * BATCH, "{startup:?}");
    let after = table(&runtime).await;
    assert_eq!(after.len(), before.len());
    assert!(after == before, "the table differs after the crash");
    for (id, _) in &running {
        let job = after.iter().find(|j| j.id == *id).unwrap();
        assert_eq!(job.state, JobState::Running);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_trims_a_quiet_log_and_reads_say_so() {
    let day_ms: i64 = 86_400_000;
    let fixture = Fixture::new(
        Retention {
            ms: Some(day_ms as u64),
            bytes: None,
        },
        1_000_000,
    );
    let (store, runtime, _) = fixture.open();
    let partition = store.internal_partition("__jobs").unwrap();
    // An old dead job (kept in memory), an old succeeded one that leaves
    // memory, then enough events to fill a few segments.
    enqueue(&runtime, 0, 2).await;
    let claimed = claim(&runtime, 2).await;
    let old_dead = finish(&runtime, &claimed, 2).await[0];
    let old_done = claimed.iter().map(|c| c.0).find(|&id| id != old_dead).unwrap();
    for round in 0..10 {
        fixture.advance(10);
        enqueue(&runtime, 10 + round * 1_000, 1_000).await;
        let claimed = claim(&runtime, 1_000).await;
        finish(&runtime, &claimed, usize::MAX).await;
    }
    assert!(partition.info().segment_count > 3);
    // Two days later, one more job: the retention wants everything before
    // it gone, but no snapshot was due by count, so one is taken for it.
    fixture.advance(2 * day_ms);
    let recent = enqueue(&runtime, 1_000_000, 1).await[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    while partition.info().segment_count > 1 {
        assert!(Instant::now() < deadline, "{:?}", partition.info());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The dead job is in the table; its events are gone.
    let page = runtime.history(old_dead, 0, 100).unwrap();
    let trimmed = page.trimmed.expect("marked trimmed");
    assert!(page.events.is_empty());
    assert!(
        trimmed.before_ms > spool_jobs::job::id_time_ms(old_done),
        "{trimmed:?}"
    );
    let job = runtime
        .read(move |core, _| core.job(old_dead).cloned())
        .await
        .unwrap()
        .expect("a dead job stays in the table");
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.payload, spec(0).payload);
    // The succeeded one left memory: it cannot be rebuilt, and says why.
    assert!(
        runtime
            .read(move |core, _| core.job(old_done).is_none())
            .await
            .unwrap()
    );
    assert_eq!(
        runtime.job_from_log(old_done).unwrap(),
        LoggedJob::Trimmed(trimmed)
    );
    let page = runtime.history(old_done, 0, 100).unwrap();
    assert_eq!((page.events.len(), page.trimmed), (0, Some(trimmed)));
    // The recent job's history is whole; an id from before the log's
    // start that never existed is "maybe trimmed", one after it unknown.
    let page = runtime.history(recent, 0, 100).unwrap();
    assert_eq!((page.events.len(), page.trimmed), (1, None));
    assert!(matches!(
        runtime.job_from_log(old_dead - 1).unwrap(),
        LoggedJob::Trimmed(_)
    ));
    assert_eq!(runtime.job_from_log(recent + 1).unwrap(), LoggedJob::Unknown);

    // A clean restart starts from the snapshot and serves the same.
    let before = table(&runtime).await;
    runtime.stop();
    store.close().unwrap();
    let (_store, runtime, _) = fixture.open();
    assert!(table(&runtime).await == before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_log_without_its_snapshot_refuses_to_start() {
    let fixture = Fixture::new(
        Retention {
            ms: None,
            bytes: Some(1),
        },
        1_000,
    );
    {
        let (store, runtime, _) = fixture.open();
        let partition = store.internal_partition("__jobs").unwrap();
        for round in 0..10 {
            enqueue(&runtime, round * 1_000, 1_000).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while partition.log_start_offset() == 0 {
            assert!(Instant::now() < deadline, "nothing was trimmed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        runtime.stop();
        store.close().unwrap();
    }
    std::fs::remove_file(
        fixture
            .dir
            .path()
            .join("jobs")
            .join(spool_jobs::snapshot::FILE_NAME),
    )
    .unwrap();
    let (store, _) = Store::open(fixture.dir.path().join("data"), store_config()).unwrap();
    match JobsRuntime::start(&store, fixture.config()) {
        Err(StartError::SnapshotMissing {
            log_start_offset,
            snapshot_offset: None,
            ..
        }) => assert!(log_start_offset > 0),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started without the jobs enqueued before the log's start"),
    }
}

/// With the default settings (no test-only snapshot spacing), a server
/// that lives a moment and crashes, again and again, replays a bounded
/// tail: a start that replayed a snapshot's worth takes one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_server_replays_a_bounded_tail() {
    let fixture = Fixture::new(Retention::default(), 1_000);
    let mut config = fixture.config();
    config.jobs.finished_in_memory_max = 100;
    let mut replayed = Vec::new();
    for life in 0..6 {
        let (store, runtime, startup) = fixture.open_with(config.clone());
        replayed.push(startup.replayed_events);
        let partition = store.internal_partition("__jobs").unwrap();
        if startup.replayed_events >= 1_000 {
            wait_for_snapshot(&fixture, &partition);
        }
        // Each life runs 300 jobs, 900 events: under the count that calls
        // for a snapshot.
        enqueue(&runtime, life * 300, 300).await;
        let claimed = claim(&runtime, 300).await;
        finish(&runtime, &claimed, usize::MAX).await;
        drop(runtime.read(|_, _| ()).await);
        std::mem::forget(runtime);
        store.simulate_crash();
    }
    assert!(
        replayed.iter().all(|&n| n < 2_000),
        "replayed per start: {replayed:?}"
    );
    assert!(
        replayed.iter().filter(|&&n| n < 1_000).count() >= 3,
        "{replayed:?}"
    );
}

/// The store's batch limit bounds the job runtime's appends: a turn with
/// more events than one batch holds is split, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_larger_than_the_store_batch_limit_are_split() {
    let fixture = Fixture::new(Retention::default(), 1_000_000);
    let (store, runtime, _) = fixture.open();
    // 2,000 enqueues of ~200 bytes each: about 400 KiB in one turn, over
    // the 256 KiB batch limit, under the runtime's own 4 MiB.
    let ids = enqueue(&runtime, 0, 2_000).await;
    assert_eq!(ids.len(), 2_000);
    assert!(store.internal_partition("__jobs").unwrap().info().segment_count > 1);
}
