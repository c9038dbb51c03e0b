//! `spool job`, `spool queue`, `spool top` and `spool bench jobs` against
//! a real `spoold`, with a worker played by the Jobs client of
//! `spool-client`.

mod common;

use std::time::Duration;

use common::Spoold;
use serde_json::Value;
use spool_client::Client;
use spool_client::jobs::{Claim, ClaimedJob, JobState};

/// Claims up to `count` jobs of `queue` as worker `worker_id`, with leases
/// of a minute.
fn claim(
    server: &Spoold,
    queue: &str,
    count: u32,
    worker_id: &str,
) -> (tokio::runtime::Runtime, Client, Vec<ClaimedJob>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (client, claimed) = runtime.block_on(async {
        let client = Client::connect(server.url()).await.expect("connect");
        let claim = Claim {
            queues: vec![queue.to_owned()],
            max_jobs: count,
            lease: Duration::from_secs(60),
            max_wait: Duration::from_secs(2),
            worker_id: worker_id.to_owned(),
        };
        let claimed = client.jobs().claim(&claim).await.expect("claim");
        (client, claimed)
    });
    (runtime, client, claimed)
}

/// A worker's side: claims up to `count` jobs and fails each as
/// non-retryable with `error`, or completes them when `error` is `None`.
fn work(server: &Spoold, queue: &str, count: u32, error: Option<&str>) -> Vec<ClaimedJob> {
    let (runtime, client, claimed) = claim(server, queue, count, "test-worker");
    let outcomes = claimed
        .iter()
        .map(|job| match error {
            Some(error) => job.fail(error, false),
            None => job.complete("done"),
        })
        .collect();
    let results = runtime.block_on(client.jobs().finish(outcomes)).expect("finish");
    for result in results {
        let state = result.expect("each outcome is recorded");
        let expected = if error.is_some() {
            JobState::Dead
        } else {
            JobState::Succeeded
        };
        assert_eq!(state, Some(expected));
    }
    claimed
}

/// Claims up to `count` jobs and holds them (leases of a minute).
fn claim_and_hold(server: &Spoold, queue: &str, count: u32) -> Vec<ClaimedJob> {
    claim(server, queue, count, "holder").2
}

#[test]
fn enqueue_inspect_and_dedup() {
    let server = Spoold::start_temp(&[]);
    let id = server.ok(&[
        "job",
        "enqueue",
        "emails",
        "{\"to\":\"a@example.com\"}",
        "--content-type",
        "application/json",
    ]);
    let id = id.trim();
    assert!(id.parse::<u64>().is_ok(), "{id}");

    // The payload from stdin, `-` or absent.
    let stdin_id = server
        .spool(&["job", "enqueue", "emails", "-", "--header", "trace=t1"])
        .stdin("from stdin")
        .ok();
    let stdin_id = stdin_id.trim();
    let job = server.json(&["job", "get", stdin_id, "--format", "json"]);
    assert_eq!(job["payload"], "from stdin");
    assert_eq!(job["headers"]["trace"], "t1");
    assert_eq!(job["state"], "available");

    // An idempotency key: the second enqueue returns the first job.
    let first = server.ok(&["job", "enqueue", "emails", "x", "--key", "welcome-1"]);
    let output = server
        .spool(&["job", "enqueue", "emails", "y", "--key", "welcome-1"])
        .output();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), first);
    assert!(String::from_utf8_lossy(&output.stderr).contains("deduplicated"));
    let again = server.json(&[
        "job",
        "enqueue",
        "emails",
        "y",
        "--key",
        "welcome-1",
        "--format",
        "json",
    ]);
    assert_eq!(again["deduplicated"], true);

    // Delay, priority, attempts, timeout.
    let delayed = server.json(&[
        "job",
        "enqueue",
        "emails",
        "later",
        "--delay",
        "1h",
        "--priority",
        "-2",
        "--attempts",
        "3",
        "--timeout",
        "30s",
        "--format",
        "json",
    ]);
    assert_eq!(delayed["state"], "scheduled");
    let job = server.json(&[
        "job",
        "get",
        delayed["job_id"].as_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        (job["priority"].as_i64(), job["attempts_max"].as_u64()),
        (Some(-2), Some(3))
    );
    assert_eq!(job["timeout_ms"], 30_000);

    let text = server.ok(&["job", "get", id]);
    assert!(text.contains("state         available"), "{text}");
    assert!(text.contains("content type  application/json"), "{text}");

    let stats = server.json(&["queue", "stats", "emails", "--format", "json"]);
    assert_eq!(
        (stats["available"].as_u64(), stats["scheduled"].as_u64()),
        (Some(3), Some(1))
    );
    let listed = server.ok(&["job", "list", "emails", "--state", "scheduled"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let listed = server.ok(&["job", "list", "emails", "--format", "json", "--limit", "2"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // Server refusals exit 1 and say what to do.
    let message = server.fails(&["job", "get", "12345"]);
    assert!(message.contains("the log holds no job with that id"), "{message}");
    let message = server.fails(&["job", "enqueue", "emails", "x", "--delay", "400d"]);
    assert!(message.contains("delay_ms"), "{message}");
    let message = server.fails(&["job", "retry", id]);
    assert!(message.contains("not dead"), "{message}");
}

#[test]
fn dead_jobs_history_retry_purge_and_cancel() {
    let server = Spoold::start_temp(&[]);
    for i in 0..3 {
        server.ok(&[
            "job",
            "enqueue",
            "billing",
            &format!("invoice-{i}"),
            "--attempts",
            "1",
        ]);
    }
    let failed = work(&server, "billing", 2, Some("smtp: connection refused"));
    assert_eq!(failed.len(), 2);
    let failed_id = failed[0].id.as_str();
    let dead = server.ok(&["job", "list", "billing", "--state", "dead"]);
    assert_eq!(dead.lines().count(), 3, "{dead}");
    assert!(dead.contains("smtp: connection refused"), "{dead}");

    let history = server.ok(&["job", "history", failed_id]);
    let kinds: Vec<&str> = history
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(kinds, ["enqueued", "claimed", "dead"], "{history}");
    assert!(history.contains("test-worker"), "{history}");
    let events: Vec<Value> = server
        .ok(&["job", "history", failed_id, "--format", "json"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[2]["error"], "smtp: connection refused");
    assert_eq!(events[1]["lease_ms"], 60_000);

    // One by id, then in bulk by error text.
    let out = server.ok(&["job", "retry", failed_id]);
    assert!(out.contains("re-drove job"), "{out}");
    assert_eq!(
        server.json(&["job", "get", failed_id, "--format", "json"])["state"],
        "available"
    );
    let again = work(&server, "billing", 3, Some("smtp: timeout"));
    assert_eq!(again.len(), 2, "the re-driven job and the third one");
    let redriven = again.iter().find(|job| job.id == failed_id).unwrap();
    assert_eq!(
        redriven.attempt, 2,
        "attempt numbers keep counting across re-drives"
    );
    let out = server.ok(&[
        "job",
        "retry",
        "--dead",
        "billing",
        "--error-contains",
        "timeout",
        "--since",
        "1h",
    ]);
    assert!(out.contains("re-drove 2 dead jobs"), "{out}");
    let out = server.ok(&["job", "purge", "--dead", "billing", "--before", "@1"]);
    assert!(out.contains("purged 0 dead jobs"), "{out}");
    let out = server.ok(&["job", "purge", "--dead", "billing"]);
    assert!(out.contains("purged 1 dead jobs"), "{out}");
    let message = server.fails(&["job", "purge", failed_id]);
    assert!(message.contains("not dead"), "{message}");

    // Cancel: at once when waiting, on the next heartbeat when running.
    let waiting = server.ok(&["job", "enqueue", "reports", "r1", "--delay", "1h"]);
    let out = server.ok(&["job", "cancel", waiting.trim()]);
    assert!(out.contains("cancelled job"), "{out}");
    server.ok(&["job", "enqueue", "reports", "r2"]);
    let running = claim_and_hold(&server, "reports", 1);
    let out = server.ok(&["job", "cancel", &running[0].id]);
    assert!(out.contains("next heartbeat"), "{out}");
    let done = server.ok(&["job", "enqueue", "reports", "r3"]);
    work(&server, "reports", 1, None);
    let message = server.fails(&["job", "cancel", done.trim()]);
    assert!(message.contains("succeeded"), "{message}");
    let job = server.json(&["job", "get", done.trim(), "--format", "json"]);
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str()),
        (Some("succeeded"), Some("done"))
    );
}

#[test]
fn bench_jobs_completes_every_job() {
    let server = Spoold::start_temp(&[]);
    let report = server.json(&[
        "bench",
        "jobs",
        "--count",
        "3000",
        "--enqueue-batch",
        "250",
        "--claim-batch",
        "100",
        "--json",
    ]);
    assert_eq!(report["jobs"], 3000);
    assert_eq!(report["enqueued"], 3000);
    assert_eq!(report["finish_failures"], 0);
    assert_eq!(report["latency_us"]["samples"], 3000);
    assert!(report["completed_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_jobs_holds_the_rate_asked_for() {
    let server = Spoold::start_temp(&[]);
    let started = std::time::Instant::now();
    let report = server.json(&[
        "bench",
        "jobs",
        "--count",
        "300",
        "--rate",
        "200",
        "--enqueue-batch",
        "10",
        "--json",
    ]);
    // 300 jobs at 200 a second: the last batch leaves after about 1.45 s.
    let elapsed = started.elapsed();
    assert_eq!(report["jobs"], 300);
    assert_eq!(report["rate"], 200);
    assert!(elapsed >= Duration::from_millis(1_400), "{elapsed:?}");
    assert!(report["enqueued_per_s"].as_f64().unwrap() <= 230.0, "{report}");
}

#[test]
fn job_get_shows_stages_and_queue_stats_show_totals_and_latencies() {
    let server = Spoold::start_temp(&[]);
    let id = server.ok(&["job", "enqueue", "staged", "x", "--attempts", "2"]);
    let id = id.trim();
    server.ok(&["job", "enqueue", "other", "y"]);
    // Attempt 1 fails with a retry in 200 ms; attempt 2, claimed by a long
    // poll when the backoff ends, completes.
    let (runtime, client, claimed) = claim(&server, "staged", 1, "stager");
    let retry = spool_client::jobs::Finish::Fail {
        job_id: claimed[0].id.clone(),
        lease_token: claimed[0].lease_token.clone(),
        error: "flaky".into(),
        retryable: true,
        retry_delay: Some(Duration::from_millis(200)),
    };
    let results = runtime.block_on(client.jobs().finish(vec![retry])).unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &Some(JobState::Scheduled));
    work(&server, "staged", 1, None);

    let job = server.json(&["job", "get", id, "--format", "json"]);
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["backoff_after_ms"], 200);
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(attempts[1]["backoff_after_ms"], Value::Null);
    assert!(attempts[1]["run_ms"].as_u64().is_some(), "{job}");
    assert_eq!(job["stages"]["initial_delay_ms"], 0);
    let total = job["stages"]["total_ms"].as_u64().unwrap();
    assert!(total >= 200, "{job}");
    let text = server.ok(&["job", "get", id]);
    assert!(
        text.contains("stages        available at enqueue; total "),
        "{text}"
    );
    assert!(text.contains("enqueued to succeeded\n"), "{text}");
    assert!(text.contains("failed  then backoff 200ms\n"), "{text}");
    assert!(text.contains("  attempt 2   wait "), "{text}");

    let stats = server.json(&["queue", "stats", "staged", "--format", "json"]);
    let totals = &stats["totals"];
    assert_eq!(
        [
            &totals["enqueued"],
            &totals["claimed"],
            &totals["completed"],
            &totals["failed"],
            &totals["retried"],
            &totals["dead"]
        ],
        [1, 2, 1, 1, 1, 0]
    );
    assert_eq!(stats["latency"]["run_time"]["last_minute"]["count"], 2);
    assert_eq!(stats["latency"]["end_to_end"]["last_hour"]["count"], 1);
    // One observation, the job's total, reported as the top of its
    // HdrHistogram bucket.
    let p50 = stats["latency"]["end_to_end"]["last_minute"]["p50_ms"]
        .as_u64()
        .unwrap();
    assert!(p50 >= total && p50 <= total + total / 128, "{p50} {total}");
    assert_eq!(stats["workers_connected"], 2, "{stats}");
    let text = server.ok(&["queue", "stats", "staged"]);
    assert!(text.contains("end to end        p50 "), "{text}");
    assert!(
        text.contains("completed 1, failed 1 (retried 1, dead 0"),
        "{text}"
    );

    let listed = server.ok(&["queue", "list"]);
    let rows: Vec<&str> = listed.lines().collect();
    assert_eq!(rows.len(), 3, "{listed}");
    assert!(
        rows[1].starts_with("other ") && rows[2].starts_with("staged "),
        "{listed}"
    );
    let lines: Vec<Value> = server
        .ok(&["queue", "list", "--format", "json"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["queue"], "other");
    assert_eq!(lines[0]["available"], 1);
    assert_eq!(lines[1]["succeeded"], 1);
}

/// A workload whose every number `spool top` shows is known: topic
/// `orders` with 3 partitions and 30 records, consumer `billing` 25 behind
/// in it, queue `emails` with one job completed, one running, one
/// available.
fn known_workload(server: &Spoold) -> (tokio::runtime::Runtime, Client, Vec<ClaimedJob>) {
    server.create_topic("orders", 3);
    let lines: String = (0..30).map(|i| format!("order-{i}\n")).collect();
    server
        .spool(&["produce", "orders", "--partition", "1"])
        .stdin(lines)
        .ok();
    server.ok(&["checkpoint", "set", "billing", "orders", "1=5"]);
    for n in 0..3 {
        server.ok(&["job", "enqueue", "emails", &format!("mail-{n}")]);
    }
    work(server, "emails", 1, None);
    claim(server, "emails", 1, "holder")
}

/// The cells of the table row that starts with `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .find(|line| line.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
        .split_whitespace()
        .collect()
}

#[test]
fn top_once_prints_a_snapshot_of_a_known_workload() {
    let server = Spoold::start_temp(&[]);
    let _held = known_workload(&server);
    // stdout is a pipe here, so `spool top` prints one snapshot even
    // without --once.
    let text = server.ok(&[
        "top",
        "--interval",
        "200ms",
        "--consumer",
        "billing",
        "--consumer",
        "nobody",
    ]);
    assert!(
        text.starts_with(&format!("spool top  {}  ", server.url())),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no escape sequences off a terminal: {text:?}"
    );
    let orders = row(&text, "orders");
    assert_eq!(&orders[..4], ["orders", "3", "30", "0"], "{text}");
    assert_eq!(row(&text, "billing"), ["billing", "orders", "25", "1"], "{text}");
    assert!(
        !text.contains("nobody"),
        "a consumer without checkpoints has no row: {text}"
    );
    let emails = row(&text, "emails");
    // QUEUE SCHED AVAIL RUN DEAD OLDEST ENQ/S DONE/S FAIL/S WAIT-P99 RUN-P99 WORKERS
    assert_eq!(&emails[..5], ["emails", "0", "1", "1", "0"], "{text}");
    assert!(emails[5].ends_with('s'), "an oldest age: {text}");
    assert_eq!(
        (emails[6], emails[7], emails[8]),
        ("0.050", "0.017", "0"),
        "{text}"
    );
    assert_ne!(emails[9], "-", "two claims gave queue waits: {text}");
    assert_ne!(emails[10], "-", "one completion gave a run time: {text}");
    assert_eq!(
        emails[11], "2",
        "test-worker claimed, holder holds a lease: {text}"
    );
    // The internal topics only when asked.
    assert!(!text.contains("__jobs"), "{text}");
    let internal = server.ok(&["top", "--once", "--internal", "--interval", "100ms"]);
    assert!(row(&internal, "__jobs").len() > 3, "{internal}");
}

/// The lines `stty -g` printed (colon-separated hexadecimal settings).
fn stty_lines(text: &str) -> Vec<String> {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| {
            line.len() > 20
                && line
                    .split(':')
                    .all(|field| u64::from_str_radix(field, 16).is_ok())
        })
        .map(str::to_owned)
        .collect()
}

/// Runs `shell` in a pseudo-terminal with `script` (util-linux, always
/// present on Debian as part of bsdutils), writing `keys` to it after
/// `delay`; returns everything the terminal showed.
fn in_a_terminal(shell: &str, delay: Duration, keys: &[u8]) -> String {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("script")
        .args(["-qfec", shell, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect(
            "`script` runs commands in a pseudo-terminal; install util-linux's bsdutils to run this test",
        );
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        stdout.read_to_end(&mut seen).unwrap();
        seen
    });
    std::thread::sleep(delay);
    stdin.write_all(keys).unwrap();
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the terminal session did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    let seen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{status}: {seen}");
    seen
}

#[test]
fn top_in_a_terminal_refreshes_until_q_and_restores_the_terminal() {
    let server = Spoold::start_temp(&[]);
    let _held = known_workload(&server);
    let spool = common::binary("spool");
    let shell = format!(
        "stty -g; {} --server {} top --interval 200ms; echo \"top exited $?\"; stty -g",
        spool.display(),
        server.url()
    );
    let seen = in_a_terminal(&shell, Duration::from_millis(1_500), b"q");
    assert!(seen.contains("top exited 0"), "{seen}");
    let enter = seen
        .find("\x1b[?1049h")
        .expect("the alternate screen was entered");
    let leave = seen.rfind("\x1b[?1049l").expect("the alternate screen was left");
    assert!(enter < leave);
    let frames = seen.matches("\x1b[Hspool top  ").count();
    assert!(frames >= 3, "refreshed every 200 ms for 1.5 s: {frames} frames");
    assert!(seen.contains("(q quits)"), "{seen}");
    assert!(seen[enter..leave].contains("emails"), "{seen}");
    let stty = stty_lines(&seen);
    assert_eq!(stty.len(), 2, "{seen:?}");
    assert_eq!(stty[0], stty[1], "the terminal's settings are back as they were");

    // SIGTERM ends the view the same way.
    let shell = format!(
        "stty -g; {} --server {} top --interval 200ms </dev/tty & pid=$!; sleep 1; kill -TERM $pid; \
         wait $pid; echo \"top exited $?\"; stty -g",
        spool.display(),
        server.url()
    );
    let seen = in_a_terminal(&shell, Duration::from_millis(100), b"");
    assert!(seen.contains("top exited 0"), "{seen}");
    assert!(seen.contains("\x1b[?1049l"), "{seen}");
    let stty = stty_lines(&seen);
    assert_eq!(stty.len(), 2, "{seen:?}");
    assert_eq!(stty[0], stty[1], "the terminal's settings are back as they were");
}

/// Claims from `queue` with no wait; how many jobs came.
fn claim_now(server: &Spoold, queue: &str) -> usize {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = Client::connect(server.url()).await.expect("connect");
        let claim = Claim {
            queues: vec![queue.to_owned()],
            max_jobs: 10,
            lease: Duration::from_secs(60),
            max_wait: Duration::ZERO,
            worker_id: "pause-test".to_owned(),
        };
        client.jobs().claim(&claim).await.expect("claim").len()
    })
}

#[test]
fn a_paused_queue_hands_out_nothing_and_stays_paused_across_kill_9_and_restart() {
    let mut server = Spoold::start_temp(&[]);
    for _ in 0..3 {
        server.ok(&["job", "enqueue", "emails", "x"]);
    }
    let said = server.ok(&["queue", "pause", "emails"]);
    assert!(said.contains("queue emails paused"), "{said}");
    let said = server.ok(&["queue", "pause", "emails"]);
    assert!(said.contains("was paused already"), "{said}");
    assert_eq!(claim_now(&server, "emails"), 0, "claims stop");
    let stats = server.json(&["queue", "stats", "emails", "--format", "json"]);
    assert_eq!(
        (stats["paused"].as_bool(), stats["available"].as_u64()),
        (Some(true), Some(3))
    );
    let listed = server.ok(&["queue", "list"]);
    assert!(listed.contains("emails (paused)"), "{listed}");
    let metrics = common::scrape::get(server.admin_addr.unwrap(), "/metrics").body;
    assert!(
        metrics.contains("spool_queue_paused{queue=\"emails\"} 1"),
        "{metrics}"
    );
    let unknown = server.fails(&["queue", "pause", "nothing-here"]);
    assert!(unknown.contains("nothing-here"), "{unknown}");

    // The pause is in the log: a kill -9 (replay) keeps it, and so does a
    // clean stop (the snapshot).
    server.kill9();
    server.restart();
    assert_eq!(claim_now(&server, "emails"), 0, "still paused after kill -9");
    server.terminate();
    server.restart();
    let stats = server.json(&["queue", "stats", "emails", "--format", "json"]);
    assert_eq!(
        stats["paused"], true,
        "still paused after a restart from the snapshot"
    );

    let said = server.ok(&["queue", "resume", "emails"]);
    assert!(said.contains("queue emails resumed"), "{said}");
    assert_eq!(claim_now(&server, "emails"), 3, "claims go on");
    server.kill9();
    server.restart();
    let stats = server.json(&["queue", "stats", "emails", "--format", "json"]);
    assert_eq!(stats["paused"], false, "the resume is in the log too");
}

#[test]
fn bench_jobs_enqueues_one_job_per_enqueue_call_and_leaves_none() {
    let server = Spoold::start_temp(&[]);
    let report = server.json(&[
        "bench",
        "jobs",
        "--mode",
        "enqueue",
        "--single-enqueue",
        "--enqueuers",
        "1",
        "--count",
        "200",
        "--queue",
        "enqueue1",
        "--json",
    ]);
    assert_eq!(report["mode"], "enqueue");
    assert_eq!(report["enqueue_rpc"], "Enqueue");
    assert_eq!(report["enqueued"], 200, "{report}");
    assert_eq!(report["enqueue_requests"], 200, "one request per job: {report}");
    assert_eq!(report["enqueue_round_trip_us"]["samples"], 200);
    assert!(report["jobs_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["jobs_per_s"], report["requests_per_s"]);
    assert!(report.get("completed_per_s").is_none(), "{report}");
    // The bench deleted its queue: nothing is left for a worker to run.
    let queues = server.ok(&["queue", "list"]);
    assert!(!queues.contains("enqueue1"), "{queues}");
}

#[test]
fn bench_jobs_drains_a_preloaded_backlog_through_the_worker_runtime() {
    let server = Spoold::start_temp(&[]);
    for concurrency in ["1", "50"] {
        let report = server.json(&[
            "bench",
            "jobs",
            "--mode",
            "backlog",
            "--worker-runtime",
            "--consumers",
            "1",
            "--claim-batch",
            concurrency,
            "--count",
            "300",
            "--json",
        ]);
        assert_eq!(report["mode"], "backlog");
        assert_eq!(report["jobs"], 300, "{report}");
        assert_eq!(report["enqueuers"], 0, "the backlog is preloaded, not timed");
        assert_eq!(report["latency_us"]["samples"], 300);
        assert!(report["jobs_per_s"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report.get("enqueued_per_s").is_none(), "{report}");
    }
    let message = server.fails(&["bench", "jobs", "--mode", "backlog"]);
    assert!(message.contains("give --count"), "{message}");
}
