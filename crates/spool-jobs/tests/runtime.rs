//! The job runtime over a real store: requests are answered after their
//! events are durable, and the table comes back after a restart, from the
//! snapshot plus the events after it, or from the events alone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use common::{claim_through, enqueue_through};
use spool_jobs::{
    ClaimSpec, JobSpec, JobState, JobsRuntime, LoggedJob, Reply, Request, RuntimeConfig, Schedule,
};
use spool_log::{Store, StoreConfig};

fn spec(queue: &str, n: u32) -> JobSpec {
    JobSpec {
        queue: queue.into(),
        payload: Bytes::from(format!("job-{n}")),
        content_type: "text/plain".into(),
        headers: vec![("n".into(), n.to_string())],
        priority: 0,
        attempts_max: Some(3),
        timeout_ms: None,
        schedule: Schedule::Now,
        idempotency_key: Some(format!("key-{n}")),
    }
}

fn store_config() -> StoreConfig {
    StoreConfig {
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        ..StoreConfig::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<AtomicI64>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicI64::new(1_800_000_000_000)),
        }
    }

    fn config(&self, snapshot_events: u64) -> RuntimeConfig {
        let clock = Arc::clone(&self.clock);
        RuntimeConfig {
            snapshot_events,
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..RuntimeConfig::new(self.dir.path().join("jobs"))
        }
    }

    /// The store alone, with a fault injector the test drives.
    fn open_store_with_faults(&self) -> (Store, Arc<spool_log::FaultInjector>) {
        let faults = Arc::new(spool_log::FaultInjector::default());
        let config = StoreConfig {
            faults: Some(Arc::clone(&faults)),
            ..store_config()
        };
        let (store, _) = Store::open(self.dir.path().join("data"), config).unwrap();
        (store, faults)
    }

    fn open(&self, snapshot_events: u64) -> (Store, JobsRuntime, spool_jobs::Startup) {
        let (store, _) = Store::open(self.dir.path().join("data"), store_config()).unwrap();
        let (runtime, startup) = JobsRuntime::start(&store, self.config(snapshot_events)).unwrap();
        (store, runtime, startup)
    }
}

async fn enqueue_all(runtime: &JobsRuntime, count: u32) -> Vec<u64> {
    enqueue_range(runtime, 0, count).await
}

async fn enqueue_range(runtime: &JobsRuntime, from: u32, count: u32) -> Vec<u64> {
    enqueue_through(runtime, (from..from + count).map(|n| spec("q", n)).collect()).await
}

async fn claim(runtime: &JobsRuntime, max: u32) -> Vec<(u64, u64)> {
    claim_through(runtime, max, 60_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_survives_a_clean_restart_and_a_crash() {
    let fixture = Fixture::new();
    let ids;
    {
        let (store, runtime, startup) = fixture.open(1_000_000);
        assert_eq!(startup.jobs, 0);
        ids = enqueue_all(&runtime, 100).await;
        let claimed = claim(&runtime, 10).await;
        for (id, token) in &claimed[..5] {
            let reply = runtime
                .call(Request::Complete {
                    id: *id,
                    token: *token,
                    result: Bytes::from_static(b"ok"),
                })
                .await
                .unwrap();
            assert_eq!(reply, Reply::Completed);
        }
        runtime.stop();
        store.close().unwrap();
    }
    // Clean restart: from the snapshot written at stop.
    {
        let (store, runtime, startup) = fixture.open(1_000_000);
        assert!(startup.snapshot_offset.is_some());
        assert_eq!(startup.replayed_events, 0);
        let counts = runtime
            .read(|core, now| core.stats("q", now).unwrap().metrics.counts)
            .await
            .unwrap();
        assert_eq!(counts[JobState::Succeeded.index()], 5);
        assert_eq!(counts[JobState::Running.index()], 5);
        assert_eq!(counts[JobState::Available.index()], 90);
        // Idempotency keys came back too.
        let Reply::Enqueued(again) = runtime.call(Request::Enqueue(vec![spec("q", 7)])).await.unwrap() else {
            panic!()
        };
        assert!(again[0].deduplicated);
        assert_eq!(again[0].id, ids[7]);
        // More work after the snapshot, then a crash: no snapshot covers it.
        let claimed = claim(&runtime, 3).await;
        for (id, token) in &claimed {
            runtime
                .call(Request::Fail {
                    id: *id,
                    token: *token,
                    error: "nope".into(),
                    retryable: false,
                    retry_delay_ms: None,
                })
                .await
                .unwrap();
        }
        drop(runtime.read(|_, _| ()).await);
        std::mem::forget(runtime); // no stop, no snapshot
        store.simulate_crash();
    }
    let (_store, runtime, startup) = fixture.open(1_000_000);
    assert!(startup.replayed_events >= 6, "{startup:?}");
    let counts = runtime
        .read(|core, now| core.stats("q", now).unwrap().metrics.counts)
        .await
        .unwrap();
    assert_eq!(counts[JobState::Dead.index()], 3);
    assert_eq!(counts[JobState::Available.index()], 87);
    let page = runtime.history(ids[0], 0, 100).unwrap();
    assert_eq!((page.next, page.trimmed), (None, None));
    let kinds: Vec<_> = page.events.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(kinds, vec!["enqueued", "claimed", "completed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_noticed_at_start_and_by_the_timer() {
    let fixture = Fixture::new();
    let id;
    {
        let (store, runtime, _) = fixture.open(1_000_000);
        id = enqueue_all(&runtime, 1).await[0];
        claim(&runtime, 1).await;
        runtime.stop();
        store.close().unwrap();
    }
    fixture.clock.fetch_add(120_000, Ordering::SeqCst);
    let (_store, runtime, _) = fixture.open(1_000_000);
    let job = runtime
        .read(move |core, _| core.job(id).cloned())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.state,
        JobState::Available,
        "the lease ran out while the server was down"
    );
    assert!(job.errors[0].error.contains("lease expired"));

    // And while running: the loop wakes for the lease deadline.
    let request = Request::Claim(ClaimSpec {
        queues: vec!["q".into()],
        max_jobs: 1,
        lease_ms: 1_000,
        wait_ms: 0,
        worker: "t".into(),
    });
    runtime.call(request).await.unwrap();
    fixture.clock.fetch_add(1_000, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let state = runtime
            .read(move |core, _| core.job(id).map(|j| j.state))
            .await
            .unwrap();
        if state == Some(JobState::Available) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lease never expired");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_bound_the_replay() {
    let fixture = Fixture::new();
    {
        let (store, runtime, _) = fixture.open(500);
        for round in 0..5 {
            enqueue_range(&runtime, round * 300, 300).await;
        }
        drop(runtime.read(|_, _| ()).await);
        std::mem::forget(runtime);
        store.simulate_crash();
    }
    let (_store, runtime, startup) = fixture.open(500);
    assert!(startup.snapshot_offset.is_some());
    assert!(startup.replayed_events < 1_500, "{startup:?}");
    let jobs = runtime.read(|core, _| core.job_count()).await.unwrap();
    assert_eq!(jobs, 1_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_comes_before_its_events_are_on_disk() {
    let fixture = Fixture::new();
    let (store, runtime, _) = fixture.open(1_000_000);
    let partition = store.internal_partition("__jobs").unwrap();
    for round in 0..20 {
        enqueue_range(&runtime, round * 10, 10).await;
        // Nothing else runs: every event appended so far belongs to an
        // answered request, so all of them must be durable.
        assert_eq!(partition.durable_offset(), partition.high_watermark());
        let claimed = claim(&runtime, 5).await;
        assert_eq!(claimed.len(), 5);
        // A claim is answered once everything before its five leases is
        // durable; the leases' own fsync may still be running.
        assert!(partition.durable_offset() + 5 >= partition.high_watermark());
    }
    // A read is answered with what it saw only once that is durable too.
    let pending = (0..50).map(|n| runtime.submit(Request::Enqueue(vec![spec("q", 10_000 + n)])));
    let pending: Vec<_> = pending.collect();
    let count = runtime.read(|core, _| core.job_count()).await.unwrap();
    let durable = partition.durable_offset();
    assert!(
        durable as usize >= count + 100,
        "{durable} events durable, {count} jobs seen"
    );
    for reply in pending {
        reply.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_what_it_depends_on_not_for_its_lease_or_other_jobs() {
    let fixture = Fixture::new();
    let (store, faults) = fixture.open_store_with_faults();
    let partition = store.internal_partition("__jobs").unwrap();
    let (runtime, _) = JobsRuntime::start(&store, fixture.config(1_000_000)).unwrap();
    enqueue_all(&runtime, 2).await;
    let patience = std::time::Duration::from_millis(300);

    // The disk stalls: a claim of a durably enqueued job is still answered,
    // before its lease is on disk.
    faults.set_sync_stalls(true);
    // Should an assertion fail, the stall ends anyway, so that dropping the
    // store (which joins the stalled flusher) reports the failure.
    struct EndStall(Arc<spool_log::FaultInjector>);
    impl Drop for EndStall {
        fn drop(&mut self) {
            self.0.set_sync_stalls(false);
        }
    }
    let _end_stall = EndStall(Arc::clone(&faults));
    let claimed = tokio::time::timeout(std::time::Duration::from_secs(10), claim(&runtime, 1))
        .await
        .expect("a claim waited for the fsync of its own lease");
    assert_eq!(claimed.len(), 1);
    assert!(partition.durable_offset() < partition.high_watermark());

    // Its completion is not acknowledged before the disk has it.
    let (id, token) = claimed[0];
    let mut complete = Box::pin(runtime.submit(Request::Complete {
        id,
        token,
        result: Bytes::from_static(b"done"),
    }));
    assert!(tokio::time::timeout(patience, &mut complete).await.is_err());

    // Nor is a job handed out before its enqueue is durable.
    let mut enqueue = Box::pin(runtime.submit(Request::Enqueue(vec![spec("other", 99)])));
    let mut early_claim = Box::pin(runtime.submit(Request::Claim(ClaimSpec {
        queues: vec!["other".into()],
        max_jobs: 1,
        lease_ms: 60_000,
        wait_ms: 5_000,
        worker: "t".into(),
    })));
    assert!(tokio::time::timeout(patience, &mut early_claim).await.is_err());

    // The worker's next claim does not wait for that completion either: it
    // is another job's event.
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), claim(&runtime, 1))
        .await
        .expect("a claim waited for the fsync of another job's completion");
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].0, id);

    faults.set_sync_stalls(false);
    assert!(matches!(complete.await.unwrap(), Reply::Completed));
    enqueue.as_mut().await.unwrap();
    match early_claim.await.unwrap() {
        Reply::Claimed(jobs) => assert_eq!(jobs.len(), 1),
        other => panic!("expected a claimed job, got {other:?}"),
    }

    // A queue with a concurrency limit counts its other jobs: a claim there
    // waits for every event before its lease, the completion of a job of
    // that queue included.
    let change = spool_jobs::QueueConfigChange {
        concurrency_limit: Some(Some(2)),
        ..Default::default()
    };
    let configured = runtime.call(Request::ConfigureQueue {
        queue: "limited".into(),
        change,
    });
    configured.await.unwrap();
    enqueue_through(&runtime, vec![spec("limited", 1), spec("limited", 2)]).await;
    let limited_claim = |worker: &str| {
        runtime.submit(Request::Claim(ClaimSpec {
            queues: vec!["limited".into()],
            max_jobs: 1,
            lease_ms: 60_000,
            wait_ms: 0,
            worker: worker.into(),
        }))
    };
    let (first, first_token) = match limited_claim("t").await.unwrap() {
        Reply::Claimed(jobs) => (jobs[0].job.id, jobs[0].token),
        other => panic!("expected a claimed job, got {other:?}"),
    };
    faults.set_sync_stalls(true);
    let mut done = Box::pin(runtime.submit(Request::Complete {
        id: first,
        token: first_token,
        result: Bytes::new(),
    }));
    let mut limited = Box::pin(limited_claim("t"));
    assert!(tokio::time::timeout(patience, &mut limited).await.is_err());
    faults.set_sync_stalls(false);
    done.as_mut().await.unwrap();
    match limited.await.unwrap() {
        Reply::Claimed(jobs) => assert_eq!(jobs.len(), 1),
        other => panic!("expected a claimed job, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_answered_as_done() {
    let fixture = Fixture::new();
    let (store, faults) = fixture.open_store_with_faults();
    let (runtime, _) = JobsRuntime::start(&store, fixture.config(1_000_000)).unwrap();
    enqueue_all(&runtime, 3).await;
    faults.set_sync_fails(true);
    let error = runtime
        .call(Request::Enqueue(vec![spec("q", 3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, spool_jobs::JobError::Unavailable { .. }),
        "{error}"
    );
    faults.set_sync_fails(false);
    // The partition stays poisoned: the service refuses until a restart
    // replays the log, and reads are refused as well.
    let error = runtime
        .call(Request::Enqueue(vec![spec("q", 4)]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, spool_jobs::JobError::Unavailable { .. }),
        "{error}"
    );
    let read = runtime.read(|core, _| core.job_count()).await;
    assert!(read.is_err(), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_left_memory_is_rebuilt_from_the_log() {
    let fixture = Fixture::new();
    let (store, _) = Store::open(fixture.dir.path().join("data"), store_config()).unwrap();
    let mut config = fixture.config(1_000_000);
    config.jobs.finished_retention_ms = 1_000;
    let (runtime, _) = JobsRuntime::start(&store, config).unwrap();
    let ids = enqueue_all(&runtime, 3).await;
    let claimed = claim(&runtime, 1).await;
    let (id, token) = claimed[0];
    let complete = Request::Complete {
        id,
        token,
        result: Bytes::from_static(b"done"),
    };
    runtime.call(complete).await.unwrap();
    let served = runtime
        .read(move |core, _| core.job(id).cloned())
        .await
        .unwrap()
        .unwrap();
    fixture.clock.fetch_add(2_000, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while runtime.read(move |core, _| core.job(id).is_some()).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "the job never left memory");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let LoggedJob::Found(rebuilt) = runtime.job_from_log(id).unwrap() else {
        panic!("not rebuilt from the log")
    };
    assert_eq!(rebuilt.job, served);
    assert_eq!(rebuilt.job.state, JobState::Succeeded);
    // A job still in memory reads the same from the log.
    let second = ids[1];
    let waiting = runtime
        .read(move |core, _| core.job(second).cloned())
        .await
        .unwrap()
        .unwrap();
    let LoggedJob::Found(rebuilt) = runtime.job_from_log(second).unwrap() else {
        panic!("not rebuilt from the log")
    };
    assert_eq!(rebuilt.job, waiting);
    // Ids that were never assigned: before the first job (its read stops
    // at the first later job), after the last.
    for unknown in [1, ids[2] + 1, u64::MAX] {
        assert_eq!(
            runtime.job_from_log(unknown).unwrap(),
            LoggedJob::Unknown,
            "{unknown}"
        );
        let page = runtime.history(unknown, 0, 10).unwrap();
        assert_eq!((page.events.len(), page.next, page.trimmed), (0, None, None));
    }
    runtime.stop();
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_snapshot_counts_what_this_process_served() {
    let fixture = Fixture::new();
    let (store, runtime, _) = fixture.open(1_000_000);
    enqueue_all(&runtime, 4).await;
    fixture.clock.fetch_add(250, Ordering::SeqCst);
    let claimed = claim(&runtime, 3).await;
    fixture.clock.fetch_add(1_000, Ordering::SeqCst);
    let (id, token) = claimed[0];
    let complete = Request::Complete {
        id,
        token,
        result: Bytes::new(),
    };
    runtime.call(complete).await.unwrap();
    let snapshot = runtime.metrics_snapshot().await.unwrap();
    assert_eq!(snapshot.len(), 1);
    let q = &snapshot[0];
    assert_eq!(q.queue, "q");
    assert_eq!(q.counts[JobState::Available.index()], 1);
    assert_eq!(q.counts[JobState::Running.index()], 2);
    assert_eq!((q.leases_held, q.workers_connected), (2, 1));
    assert_eq!(
        (q.counters.enqueued, q.counters.claimed, q.counters.completed),
        (4, 3, 1)
    );
    let wait = q.queue_wait.last_minute.unwrap();
    assert_eq!((wait.count, wait.p50_ms, wait.max_ms), (3, 250, 250));
    let run = q.run_time.last_minute.unwrap();
    // 1,000 ms, reported as the top of its HdrHistogram bucket.
    assert_eq!((run.count, run.p99_ms), (1, 1_003));
    assert_eq!(q.end_to_end.histogram.count, 1);
    // After a restart the table comes back, the totals start again.
    runtime.stop();
    drop(runtime);
    store.close().unwrap();
    let (store, runtime, _) = fixture.open(1_000_000);
    let snapshot = runtime.metrics_snapshot().await.unwrap();
    assert_eq!(snapshot[0].counts, q.counts);
    assert_eq!(snapshot[0].counters, spool_jobs::QueueCounters::default());
    runtime.stop();
    store.close().unwrap();
}
