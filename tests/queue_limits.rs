//! Queue limits and queue management against a real `spoold`: ten workers
//! of fifty slots each compete for a queue limited to five running jobs, or
//! to a rate; the bounds are checked from the jobs' own claim and finish
//! times as the server recorded them. Settings set with `spool queue
//! config` survive a `kill -9`; `spool queue delete` purges a queue.
//!
//! Run `cargo build -p spool-server -p spool-cli` first: the binaries are
//! taken from `target/debug`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Spoold, scrape};
use serde_json::json;
use spool_client::Client;
use spool_client::jobs::{Claim, JobEventKind, JobInfo, NewJob};
use spool_client::worker::{Outcome, Worker, WorkerConfig};

const WORKERS: usize = 10;
const SLOTS: usize = 50;

/// Enqueues `count` jobs to `queue` and returns their ids.
async fn enqueue(client: &Client, queue: &str, count: usize) -> Vec<String> {
    let jobs = (0..count).map(|i| NewJob::new(queue, format!("{i}"))).collect();
    let enqueued = client.jobs().enqueue_batch(jobs).await.expect("enqueue");
    enqueued.into_iter().map(|e| e.job_id).collect()
}

/// Runs `WORKERS` workers of `SLOTS` slots, each on its own connection, on
/// `queue` until `ids` have all succeeded; each job takes `run`. Returns
/// the most handlers that ran at once, counted in the handlers, and the
/// jobs as the server holds them.
async fn run_workers(server: &Spoold, queue: &str, ids: &[String], run: Duration) -> (usize, Vec<JobInfo>) {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let client = Client::connect(server.url()).await.expect("connect");
        let config = WorkerConfig {
            concurrency: SLOTS,
            claim_wait: Duration::from_secs(1),
            ack_linger: Duration::from_millis(1),
            worker_id: format!("worker-{n}"),
            ..WorkerConfig::default()
        };
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        let handler = move |_job| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(run).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Outcome::Complete { result: Bytes::new() }
            }
        };
        let worker = Worker::new(&client, config).handle(queue, handler);
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            let report = worker
                .run_until(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
            (client, report)
        }));
    }
    let client = Client::connect(server.url()).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = client.jobs().stats(queue).await.expect("stats");
        if stats.succeeded_count == ids.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs still unfinished: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("workers listen");
    for worker in workers {
        let (_, report) = worker.await.expect("worker task");
        report.expect("worker report");
    }
    let mut jobs = Vec::new();
    for id in ids {
        jobs.push(client.jobs().get(id).await.expect("get"));
    }
    (most.load(Ordering::SeqCst), jobs)
}

/// The most attempts running at once on the server: every attempt from its
/// claim to its end, an end counted before a claim at the same
/// millisecond (the server frees a slot, then hands it out).
fn most_running(jobs: &[JobInfo]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for job in jobs {
        for attempt in &job.attempts {
            edges.push((attempt.claimed_at_ms, 1));
            edges.push((attempt.finished_at_ms.expect("every attempt ended"), -1));
        }
    }
    edges.sort();
    let (mut running, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    most as usize
}

fn claims_served(server: &Spoold) -> f64 {
    let answer = scrape::get(server.admin_addr.expect("admin listener"), "/metrics");
    let samples = scrape::parse(&answer.body);
    scrape::matching(
        &samples,
        "spool_rpc_duration_seconds_count",
        &[("method", "Claim")],
    )
    .map(|sample| sample.value)
    .sum()
}

#[test]
fn ten_workers_of_fifty_slots_run_a_limited_queue_at_its_limit() {
    let server = Spoold::start_temp(&[]);
    let shown = server.ok(&["queue", "config", "smtp", "--concurrency-limit", "5"]);
    assert!(shown.contains("concurrency limit   5 running at once"), "{shown}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(Client::connect(server.url())).expect("connect");
    let ids = runtime.block_on(enqueue(&client, "smtp", 200));

    let claims_before = claims_served(&server);
    let started = Instant::now();
    let (most_in_handlers, jobs) =
        runtime.block_on(run_workers(&server, "smtp", &ids, Duration::from_millis(40)));
    let elapsed = started.elapsed();

    assert_eq!(most_running(&jobs), 5, "from the server's claim and finish times");
    assert!(most_in_handlers <= 5, "{most_in_handlers} handlers ran at once");
    assert!(jobs.iter().all(|job| job.attempts.len() == 1), "no job ran twice");
    // 200 jobs of 40 ms, 5 at a time, take at least 1.6 s. The 500 slots
    // that cannot get a job long-poll: a claim returns when a slot frees
    // or after its second of waiting, so claims number about one per job
    // plus one per worker-second, not thousands per second.
    assert!(elapsed >= Duration::from_millis(1_600), "{elapsed:?}");
    let claims = claims_served(&server) - claims_before;
    eprintln!(
        "200 jobs of 40 ms under a concurrency limit of 5: {elapsed:?} (1.6 s at best), {claims} Claim calls"
    );
    let bound = 200.0 + (WORKERS as f64) * (elapsed.as_secs_f64() + 2.0) * 2.0;
    assert!(
        claims <= bound,
        "{claims} claims in {elapsed:?}: workers spin instead of waiting"
    );

    let gauge = scrape::parse(&scrape::get(server.admin_addr.unwrap(), "/metrics").body);
    assert_eq!(
        scrape::value(&gauge, "spool_queue_concurrency_limit", &[("queue", "smtp")]),
        5.0
    );
}

#[test]
fn a_rate_limited_queue_starts_at_most_its_rate_in_any_window() {
    let server = Spoold::start_temp(&[]);
    server.ok(&["queue", "config", "webhooks", "--rate-limit", "20/1s"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(Client::connect(server.url())).expect("connect");
    let ids = runtime.block_on(enqueue(&client, "webhooks", 70));
    let (_, jobs) = runtime.block_on(run_workers(&server, "webhooks", &ids, Duration::ZERO));

    let mut claims: Vec<i64> = jobs
        .iter()
        .flat_map(|job| job.attempts.iter().map(|a| a.claimed_at_ms))
        .collect();
    claims.sort_unstable();
    assert_eq!(claims.len(), 70);
    for (i, &start) in claims.iter().enumerate() {
        let in_window = claims[i..].iter().take_while(|&&t| t < start + 1_000).count();
        assert!(in_window <= 20, "{in_window} claims in the second from {start}");
    }
    // 70 jobs at 20 a second: the last starts at least three windows after
    // the first.
    assert!(claims[69] - claims[0] >= 3_000, "{claims:?}");
    let stats = server.json(&["queue", "stats", "webhooks", "--format", "json"]);
    assert_eq!(
        stats["config"]["rate_limit"],
        json!({"jobs": 20, "per_ms": 1_000})
    );
}

#[test]
fn settings_survive_a_kill_and_a_deleted_queue_is_gone() {
    let mut server = Spoold::start_temp(&[]);
    server.ok(&[
        "queue",
        "config",
        "reports",
        "--attempts",
        "4",
        "--backoff",
        "5s..1h",
        "--lease",
        "45s",
        "--timeout",
        "5m",
        "--finished-retention",
        "1d",
        "--dead-retention",
        "30d",
        "--concurrency-limit",
        "3",
        "--rate-limit",
        "100/1m",
    ]);
    server.ok(&["queue", "pause", "reports"]);
    server.kill9();
    server.restart();

    let config = server.json(&["queue", "config", "reports", "--format", "json"]);
    assert_eq!(
        config["config"],
        json!({
            "attempts_max": 4,
            "backoff": {"min_ms": 5_000, "max_ms": 3_600_000},
            "lease_ms": 45_000,
            "timeout_ms": 300_000,
            "finished_retention_ms": 86_400_000,
            "dead_retention_ms": 2_592_000_000u64,
            "concurrency_limit": 3,
            "rate_limit": {"jobs": 100, "per_ms": 60_000},
        })
    );
    let list = server.json_lines(&["queue", "list", "--format", "json"]);
    assert_eq!(list[0]["paused"], json!(true));
    assert_eq!(list[0]["config"]["concurrency_limit"], json!(3));

    // The queue's settings reach its jobs.
    let id = server.enqueue("reports", "{}", &[]);
    let job = server.json(&["job", "get", &id, "--format", "json"]);
    assert_eq!(job["attempts_max"], json!(4));
    server.ok(&["queue", "resume", "reports"]);

    // A running job blocks the deletion until forced.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(Client::connect(server.url())).expect("connect");
    let claim = Claim {
        queues: vec!["reports".into()],
        max_jobs: 1,
        lease: Duration::ZERO,
        max_wait: Duration::from_secs(2),
        worker_id: "tester".into(),
    };
    let claimed = runtime.block_on(client.jobs().claim(&claim)).expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease, Duration::from_secs(45), "the queue's lease");
    server.enqueue("reports", "{}", &[]);
    let refused = server.fails(&["queue", "delete", "reports"]);
    assert!(refused.contains("1 running jobs"), "{refused}");
    let deleted = server.ok(&["queue", "delete", "reports", "--force"]);
    assert!(
        deleted.contains("queue reports deleted: 2 jobs purged"),
        "{deleted}"
    );

    let list = server.json_lines(&["queue", "list", "--format", "json"]);
    assert!(list.is_empty(), "{list:?}");
    let missing = server.fails(&["queue", "stats", "reports"]);
    assert!(missing.contains("does not exist"), "{missing}");
    let history = runtime
        .block_on(client.jobs().history(&id, None, 100))
        .expect("history");
    let last = history.items.last().expect("events");
    assert_eq!(last.kind, JobEventKind::Purged);
    assert_eq!(last.detail, "queue deleted");

    // Deleted stays deleted after a restart.
    server.kill9();
    server.restart();
    assert!(
        server
            .json_lines(&["queue", "list", "--format", "json"])
            .is_empty()
    );
    let refused = server
        .spool(&["queue", "config", "x", "--rate-limit", "0/1s"])
        .output();
    assert_eq!(refused.status.code(), Some(2), "a bad limit is a usage error");
}
