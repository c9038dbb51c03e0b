//! The internal topics stay bounded on a real `spoold`: `__jobs` under a
//! small history retention and `__checkpoints` under compaction, through
//! tens of thousands of jobs and commits; a kill -9 then loses no live or
//! dead job and no checkpoint, and history reads of trimmed jobs say so,
//! through the API and `spool job history`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Spoold;
use spool_client::jobs::{Claim, ClaimedJob, JobInfo, JobState, NewJob};
use spool_client::{Client, Durability, NewTopic, Record};

const SETTINGS: &[&str] = &[
    "internal_segment_bytes=256KiB",
    "batch_bytes_max=256KiB",
    "record_bytes_max=128KiB",
    "job_history_retention_bytes=1MiB",
    "job_snapshot_events=5000",
    "retention_check_interval_ms=100ms",
    "job_finished_in_memory_max=1000",
];

/// Bytes of every file under `dir` (their lengths: what a segment's
/// preallocation holds counts).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| {
            let entry = entry.expect("directory entry");
            let metadata = entry.metadata().expect("metadata");
            if metadata.is_dir() {
                dir_bytes(&entry.path())
            } else {
                metadata.len()
            }
        })
        .sum()
}

async fn claim(client: &Client, count: u32) -> Vec<ClaimedJob> {
    let claim = Claim {
        queues: vec!["q".into()],
        max_jobs: count,
        lease: Duration::from_secs(600),
        max_wait: Duration::from_secs(1),
        worker_id: "retention-test".into(),
    };
    client.jobs().claim(&claim).await.expect("claim")
}

/// Enqueues `count` jobs, claims them and completes all but every
/// hundredth, which fails for good; returns (dead ids, succeeded ids).
async fn run_round(client: &Client, count: usize) -> (Vec<String>, Vec<String>) {
    let jobs: Vec<NewJob> = (0..count)
        .map(|n| NewJob::new("q", format!("{n:0>100}")))
        .collect();
    client.jobs().enqueue_batch(jobs).await.expect("enqueue");
    let claimed = claim(client, count as u32).await;
    assert_eq!(claimed.len(), count);
    let (mut dead, mut succeeded) = (Vec::new(), Vec::new());
    let outcomes = claimed
        .iter()
        .enumerate()
        .map(|(i, job)| {
            if i % 100 == 0 {
                dead.push(job.id.clone());
                job.fail("boom", false)
            } else {
                succeeded.push(job.id.clone());
                job.complete("ok")
            }
        })
        .collect();
    for result in client.jobs().finish(outcomes).await.expect("finish") {
        result.expect("each outcome is recorded");
    }
    (dead, succeeded)
}

async fn get_all(client: &Client, ids: &[String]) -> Vec<JobInfo> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(client.jobs().get(id).await.expect("get"));
    }
    jobs
}

#[test]
fn internal_topics_stay_bounded_and_a_kill_9_loses_nothing_they_need() {
    let mut server = Spoold::start_temp(SETTINGS);
    let jobs_dir = server.data_dir.join("topics/__jobs");
    let checkpoints_dir = server.data_dir.join("topics/__checkpoints");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(Client::connect(server.url())).expect("connect");

    // 20,000 jobs, about 5 MB of job events, while four consumers commit
    // 8,000 times, about 3 MB of checkpoints.
    runtime
        .block_on(client.create_topic(NewTopic::new("orders", 16)))
        .expect("create topic");
    for partition in 0..16 {
        let records = (0..100).map(|i| Record::new(format!("r{i}"))).collect();
        runtime
            .block_on(client.produce_records("orders", Some(partition), records, Durability::None))
            .expect("produce");
    }
    let mut dead = Vec::new();
    let mut succeeded = Vec::new();
    let mut sizes = Vec::new();
    let mut commits = 0u64;
    for round in 0..40u64 {
        let (d, s) = runtime.block_on(run_round(&client, 500));
        dead.extend(d);
        succeeded.push(s[0].clone());
        for consumer in 0..4 {
            for step in 0..50 {
                let positions: Vec<(u32, u64)> = (0..16).map(|p| (p, (round * 50 + step) % 101)).collect();
                runtime
                    .block_on(client.commit_checkpoint(
                        &format!("consumer-{consumer}"),
                        "orders",
                        &positions,
                        Durability::None,
                    ))
                    .expect("commit");
                commits += 1;
            }
        }
        sizes.push((round, dir_bytes(&jobs_dir), dir_bytes(&checkpoints_dir)));
    }
    // Live jobs at the end: 300 available, 100 running.
    runtime
        .block_on(
            client
                .jobs()
                .enqueue_batch((0..400).map(|n| NewJob::new("q", format!("live-{n}"))).collect()),
        )
        .expect("enqueue");
    let running = runtime.block_on(claim(&client, 100));
    let live: Vec<String> = runtime.block_on(async {
        let mut ids = Vec::new();
        for state in [JobState::Available, JobState::Running] {
            let query = spool_client::jobs::JobQuery {
                queue: "q".into(),
                state: Some(state),
                include_payload: true,
            };
            let page = client.jobs().list(&query, None, 1_000).await.expect("list");
            ids.extend(page.items.into_iter().map(|job| job.id));
        }
        ids
    });
    assert_eq!(live.len(), 400);
    assert_eq!(running.len(), 100);

    // Both topics level off: past the first quarter, no sample is above a
    // bound set by the settings (1 MiB of history, 2 x 5,000 events the
    // table needs at most, two segments; for checkpoints, a segment behind
    // the latest compaction, the positions, a segment's growth), while
    // far more was written.
    let jobs_bound = (1 << 20) + 2 * 5_000 * 120 + 3 * (256 << 10);
    let checkpoints_bound = 4 * (256 << 10);
    eprintln!("(round, __jobs bytes, __checkpoints bytes): {sizes:?}; {commits} commits");
    for &(round, jobs_bytes, checkpoints_bytes) in &sizes[sizes.len() / 4..] {
        assert!(
            jobs_bytes <= jobs_bound,
            "round {round}: __jobs holds {jobs_bytes} > {jobs_bound}"
        );
        assert!(
            checkpoints_bytes <= checkpoints_bound,
            "round {round}: __checkpoints holds {checkpoints_bytes} > {checkpoints_bound}"
        );
    }
    let dead_before = runtime.block_on(get_all(&client, &dead));
    let live_before = runtime.block_on(get_all(&client, &live));
    let positions_before: Vec<_> = (0..4)
        .map(|c| {
            runtime
                .block_on(client.get_checkpoint(&format!("consumer-{c}"), "orders"))
                .expect("get")
        })
        .collect();
    assert!(dead_before.iter().all(|job| job.state == JobState::Dead));
    assert_eq!(dead_before.len(), 200);

    // A kill -9, and a start from what is on disk.
    drop(client);
    server.kill9();
    server.restart();
    let client = runtime.block_on(Client::connect(server.url())).expect("connect");
    assert!(
        runtime.block_on(get_all(&client, &dead)) == dead_before,
        "dead jobs changed"
    );
    assert!(
        runtime.block_on(get_all(&client, &live)) == live_before,
        "live jobs changed"
    );
    for (c, before) in positions_before.iter().enumerate() {
        let after = runtime
            .block_on(client.get_checkpoint(&format!("consumer-{c}"), "orders"))
            .expect("get");
        assert_eq!(&after, before, "consumer-{c}");
    }

    // The oldest dead job is in the table, its history gone: the page says
    // so, and so does the CLI, with the table's view.
    let old_dead = &dead[0];
    let page = runtime
        .block_on(client.jobs().history(old_dead, None, 0))
        .expect("history");
    let trimmed_before_ms = page.trimmed_before_ms.expect("marked trimmed");
    assert!(page.items.is_empty(), "{page:?}");
    let text = server.ok(&["job", "history", old_dead]);
    assert!(
        text.contains("history before ") && text.contains(" was trimmed"),
        "{text}"
    );
    assert!(text.contains("the job table's view of the job"), "{text}");
    assert!(text.contains("dead"), "{text}");
    let lines = server.json_lines(&["job", "history", old_dead, "--format", "json"]);
    assert_eq!(lines[0]["trimmed_before_ms"], trimmed_before_ms);
    assert_eq!(lines[0]["job"]["state"], "dead");
    // The oldest succeeded job left memory: it cannot be rebuilt, and the
    // error says why.
    let error = server.fails(&["job", "get", &succeeded[0]]);
    assert!(error.contains("deleted by its retention"), "{error}");
    let error = server.fails(&["job", "history", &succeeded[0]]);
    assert!(error.contains("retention"), "{error}");
    // A recent job's history is whole.
    let recent = succeeded.last().unwrap();
    let page = runtime
        .block_on(client.jobs().history(recent, None, 0))
        .expect("history");
    assert_eq!(page.trimmed_before_ms, None);
    let kinds: Vec<String> = page.items.iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds, ["enqueued", "claimed", "completed"]);
}
