//! The `spool` CLI against a real `spoold`, the way a user drives it: the
//! log commands, what a pipe closed early does, size limits, how errors
//! are printed, and the README's commands as written. The job commands are
//! in `cli_jobs.rs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Spoold;
use common::cli::Finished;

#[test]
fn topics_produce_consume_replay_offsets_and_checkpoints() {
    let server = Spoold::start_temp(&[]);
    server.ok(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "2",
        "--retention",
        "7d",
    ]);
    assert!(server.ok(&["topic", "list"]).contains("orders"));

    let lines: String = (0..50).map(|i| format!("order-{i}\n")).collect();
    server
        .spool(&["produce", "orders", "--partition", "0", "--durability", "fsync"])
        .stdin(lines)
        .ok();
    server
        .spool(&["produce", "orders", "--key", "customer-7"])
        .stdin("keyed-1\nkeyed-2\n")
        .ok();

    let consumed = server.ok(&[
        "consume",
        "orders",
        "--partition",
        "0",
        "--from",
        "earliest",
        "--format",
        "value",
    ]);
    let expected: Vec<String> = (0..50).map(|i| format!("order-{i}")).collect();
    let got: Vec<&str> = consumed.lines().collect();
    let keyed_in_0 = spool_proto::partitioner::partition_for_key(b"customer-7", 2) == 0;
    assert_eq!(got.len(), 50 + usize::from(keyed_in_0) * 2);
    assert_eq!(&got[..50], expected.as_slice());

    let from_offset = server.ok(&[
        "consume",
        "orders",
        "--partition",
        "0",
        "--from",
        "45",
        "--count",
        "3",
    ]);
    assert_eq!(
        from_offset.lines().collect::<Vec<_>>(),
        ["order-45", "order-46", "order-47"]
    );

    // Replay reads every partition to the end it found at start; piped,
    // it prints records and no progress line.
    let replayed = server.spool(&["replay", "orders", "--from", "earliest"]).output();
    assert!(replayed.status.success());
    let stdout = String::from_utf8(replayed.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 52);
    assert!(stdout.contains("keyed-2"));
    assert!(
        !String::from_utf8_lossy(&replayed.stderr).contains('\r'),
        "no progress redraws when not on a terminal"
    );

    let json = server.json(&[
        "consume",
        "orders",
        "--partition",
        "0",
        "--count",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(
        (json["offset"].as_u64(), json["value"].as_str()),
        (Some(0), Some("order-0"))
    );

    let offsets = server.ok(&["offsets", "orders"]);
    assert!(offsets.contains("50"), "{offsets}");

    server.ok(&["checkpoint", "set", "billing", "orders", "0=42"]);
    let checkpoint = server.ok(&["checkpoint", "get", "billing", "orders"]);
    assert!(checkpoint.contains("42"), "{checkpoint}");

    let described = server.ok(&["topic", "describe", "orders"]);
    assert!(described.contains("orders"));
    server.ok(&["topic", "delete", "orders"]);
    assert!(!server.ok(&["topic", "list"]).contains("orders"));
}

#[test]
fn errors_exit_1_with_a_hint_and_usage_errors_exit_2() {
    let server = Spoold::start_temp(&[]);
    let message = server.fails(&["consume", "nope", "--from", "earliest"]);
    assert!(
        message.contains("nope") && message.contains("topic create"),
        "{message}"
    );
    server.fails(&["topic", "create", "../x"]);

    let usage = server.spool(&["topic", "create"]).output();
    assert_eq!(usage.status.code(), Some(2));
    let bad_flag = server
        .spool(&["consume", "t", "--from", "yesterday-ish"])
        .output();
    assert_eq!(
        bad_flag.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad_flag.stderr)
    );
}

/// A command whose reader went away ends at once, with status 0 and
/// nothing on stderr: no panic, no backtrace, no message.
fn assert_quiet(args: &[&str], finished: &Finished) {
    assert!(
        finished.status.success() && finished.stderr.is_empty(),
        "spool {args:?} with its stdout closed: {} and stderr {:?}",
        finished.status,
        finished.stderr
    );
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let server = Spoold::start_temp(&[]);
    server.create_topic("orders", 2);
    server.produce("orders", "a\nb\nc\n");
    server.ok(&["checkpoint", "set", "billing", "orders", "0=1"]);
    let job = server.enqueue("emails", "{}", &[]);
    let commands: &[&[&str]] = &[
        &["topic", "list"],
        &["topic", "describe", "orders"],
        &["offsets", "orders"],
        &["checkpoint", "get", "billing", "orders"],
        &["consume", "orders"],
        &["consume", "orders", "--format", "json"],
        &["replay", "orders"],
        &["job", "get", &job],
        &["job", "get", &job, "--format", "json"],
        &["job", "history", &job],
        &["job", "list", "emails"],
        &["queue", "stats", "emails"],
        &["queue", "stats", "emails", "--format", "json"],
        &["topic", "create", "more"],
        &["job", "enqueue", "emails", "{}"],
        &["metrics", "history", "spool_storage_poisoned", "--since", "1m"],
    ];
    for args in commands {
        assert_quiet(args, &server.spool(args).with_stdout_closed());
    }
}

#[test]
fn head_of_a_long_output_ends_quietly() {
    let server = Spoold::start_temp(&[]);
    server.create_topic("orders", 1);
    let lines: String = (0..20_000).map(|i| format!("order-{i}\n")).collect();
    server.produce("orders", &lines);
    for args in [
        &["consume", "orders"][..],
        &["replay", "orders", "--format", "json"],
    ] {
        let (read, finished) = server.spool(args).head(1);
        assert_eq!(read.len(), 1, "{args:?}");
        assert_quiet(args, &finished);
    }
}

#[test]
fn an_oversized_line_is_refused_naming_the_limit_and_how_to_raise_it() {
    let server = Spoold::start_temp(&[]);
    server.create_topic("orders", 1);
    let mut input = b"first\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100 << 20));
    input.extend_from_slice(b"\nthird\n");
    let message = server.spool(&["produce", "orders"]).stdin(input).fails();
    for needle in [
        "stdin line 2",
        "104857600 bytes",
        "record_bytes_max",
        "--set record_bytes_max=",
        "SPOOL_RECORD_BYTES_MAX",
        "1 line before it was produced",
    ] {
        assert!(message.contains(needle), "{needle:?} missing from: {message}");
    }
    assert!(!message.contains("h2 protocol error"), "{message}");
    // The line before the oversized one went out; it and the lines after
    // it did not.
    let consumed = server.ok(&["consume", "orders"]);
    assert_eq!(consumed, "first\n");
}

#[test]
fn a_batch_limit_below_a_record_is_named_too() {
    let server = Spoold::start_temp(&["batch_bytes_max=64KiB", "record_bytes_max=64KiB"]);
    server.create_topic("orders", 1);
    let line = format!("{}\n", "y".repeat(100 << 10));
    let message = server.spool(&["produce", "orders"]).stdin(line).fails();
    for needle in [
        "stdin line 1",
        "record_bytes_max",
        "batch_bytes_max",
        "0 lines before it",
    ] {
        assert!(message.contains(needle), "{needle:?} missing from: {message}");
    }
    assert_eq!(server.ok(&["consume", "orders"]), "");
}

/// Polls `spool offsets` until `topic` holds `records`, for up to 10 s.
fn wait_for_records(server: &Spoold, topic: &str, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = server.ok(&["offsets", topic]);
        let held: u64 = table
            .lines()
            .skip(1)
            .filter_map(|row| row.split_whitespace().nth(2)?.parse::<u64>().ok())
            .sum();
        if held >= records {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never held {records} records: {table}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_error_is_printed_once_and_plainly() {
    let server = Spoold::start_temp(&[]);
    server.create_topic("orders", 1);
    // The topic goes away while `spool produce` is running: its next
    // batch is refused by the server.
    let mut produce = Command::new(common::binary("spool"))
        .args(["--server", &server.url(), "produce", "orders", "--linger-ms", "0"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn spool produce");
    let mut stdin = produce.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"one\n").unwrap();
    wait_for_records(&server, "orders", 1);
    server.ok(&["topic", "delete", "orders"]);
    std::io::Write::write_all(&mut stdin, b"two\n").unwrap();
    drop(stdin);
    let output = produce.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes on a stderr that is no terminal: {stderr:?}"
    );
    assert!(!stderr.contains("WARN"), "a log line besides the error: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("orders")).collect();
    assert_eq!(errors.len(), 1, "the error once: {stderr}");
    assert!(
        errors[0].starts_with("error: topic 'orders' does not exist"),
        "{stderr}"
    );

    // A warning of the client library reaches stderr as plain text too: a
    // checkpoint past the end of a topic deleted and created again.
    server.create_topic("orders", 1);
    server.produce("orders", "a\nb\n");
    server.ok(&["checkpoint", "set", "billing", "orders", "0=2"]);
    server.ok(&["topic", "delete", "orders"]);
    server.create_topic("orders", 1);
    let output = server
        .spool(&["consume", "orders", "--consumer", "billing"])
        .output();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("checkpoint outside the log"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes on a stderr that is no terminal: {stderr:?}"
    );
}

#[test]
fn produce_waits_for_fsync_unless_told_otherwise() {
    let server = Spoold::start_temp(&["default_durability=none"]);
    server.create_topic("orders", 1);
    let output = server.spool(&["produce", "orders"]).stdin("a\n").output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("(fsync)"), "{stderr}");
    let output = server
        .spool(&["produce", "orders", "--durability", "none"])
        .stdin("b\n")
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("(no fsync)"), "{stderr}");
}

/// The `spool` command lines of the README's `sh` blocks, in order: lines
/// that start with `spool ` or pipe into it. `spool bench` is left out (it
/// runs for seconds and has its own tests).
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            command
                if in_sh
                    && (command.starts_with("spool ") || command.contains("| spool "))
                    && !command.starts_with("spool bench ") =>
            {
                commands.push(command.to_owned());
            }
            _ => {}
        }
    }
    commands
}

#[test]
fn the_readme_commands_run_as_written() {
    let server = Spoold::start_temp(&[]);
    let spool = common::binary("spool");
    let bin_dir = spool.parent().expect("binary directory");
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .unwrap();
    let work_dir = tempfile::tempdir().unwrap();
    let commands = readme_commands();
    assert!(commands.len() >= 8, "found only {commands:?}");
    // The README shows an example job id; the real one replaces it.
    let example_id = "117690760285585408";
    let mut job_id: Option<String> = None;
    for command in &commands {
        let command = match &job_id {
            Some(id) => command.replace(example_id, id),
            None => command.clone(),
        };
        let output = Command::new("sh")
            .args(["-c", &command])
            .current_dir(work_dir.path())
            .env("PATH", &path)
            .env("SPOOL_SERVER", server.url())
            .env_remove("RUST_LOG")
            .output()
            .expect("run sh");
        assert!(
            output.status.success(),
            "README command `{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        if command.starts_with("spool job enqueue ") {
            job_id = Some(String::from_utf8(output.stdout).unwrap().trim().to_owned());
        }
    }
    assert!(job_id.is_some(), "the README enqueues a job");
    // What the README writes to a .jsonl file is JSON lines.
    let rebuilt = std::fs::read_to_string(work_dir.path().join("rebuilt.jsonl")).expect("rebuilt.jsonl");
    assert_eq!(rebuilt.lines().count(), 5, "{rebuilt}");
    for line in rebuilt.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?} is not JSON: {error}"));
        assert!(record["value"].as_str().unwrap().starts_with("order-"), "{line}");
    }
}

#[test]
fn a_checkpoint_past_the_end_is_refused_with_the_range_it_may_take() {
    let server = Spoold::start_temp(&[]);
    server.create_topic("orders", 1);
    server.produce("orders", "a\n");
    let stderr = server.fails(&["checkpoint", "set", "billing", "orders", "0=5"]);
    assert!(
        stderr.contains("a checkpoint stores the next offset to read, from 0 (the log start) to 1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("--from"),
        "a consume hint for a checkpoint: {stderr}"
    );
    let stored = server.ok(&["checkpoint", "get", "billing", "orders"]);
    assert!(!stored.contains('5'), "nothing stored: {stored}");
}

#[test]
fn a_job_id_that_never_existed_is_not_found_without_talk_of_history() {
    let server = Spoold::start_temp(&[]);
    let stderr = server.fails(&["job", "get", "123456789"]);
    assert!(stderr.contains("the log holds no job with that id"), "{stderr}");
    assert!(!stderr.contains("history"), "{stderr}");
}

/// `spool token` edits a token file without a server: the token is printed
/// once, the file holds its digest only, list shows grants, revoke removes.
#[test]
fn tokens_are_created_listed_and_revoked_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets/tokens.toml");
    let spool = |args: &[&str]| {
        Command::new(common::binary("spool"))
            .args(args)
            .arg("--file")
            .arg(&file)
            // No server runs at this address: token commands must not need one.
            .env("SPOOL_SERVER", "http://127.0.0.1:1")
            .output()
            .unwrap()
    };
    let created = spool(&[
        "token",
        "create",
        "billing",
        "--grant",
        "topic:orders-*=consume",
        "--grant",
        "queue:*=*",
    ]);
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("spool_") && token.len() == 79, "{token}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&token[15..]), "the secret is on disk:\n{text}");

    let listed = spool(&["token", "list", "--format", "json"]);
    let line: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(line["principal"], "billing");
    assert_eq!(line["id"], &token[6..14]);
    assert_eq!(
        line["grants"],
        serde_json::json!(["topic:orders-*=consume", "queue:*=enqueue,work,admin"])
    );

    let bad = spool(&["token", "create", "x", "--grant", "topic:orders=enqueue"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(stderr.contains("not a permission on a topic"), "{stderr}");

    let revoked = spool(&["token", "revoke", &token[6..14]]);
    assert!(revoked.status.success(), "{revoked:?}");
    let again = spool(&["token", "revoke", &token[6..14]]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("spool token list")
    );
    let listed = spool(&["token", "list"]);
    assert_eq!(
        String::from_utf8(listed.stdout).unwrap().lines().count(),
        1,
        "only the header is left"
    );
}

#[test]
fn bench_produce_sends_requests_of_exactly_the_records_asked() {
    let server = Spoold::start_temp(&[]);
    for durability in ["none", "fsync"] {
        let report = server.json(&[
            "bench",
            "produce",
            "--records-per-request",
            "1",
            "--in-flight",
            "2",
            "--durability",
            durability,
            "--count",
            "300",
            "--topic",
            &format!("small-{durability}"),
            "--keep",
            "--json",
        ]);
        assert_eq!(report["records"], 300, "{report}");
        assert_eq!(report["requests"], 300, "{report}");
        assert_eq!(report["records_per_request"], 1);
        assert_eq!(report["durability"], durability);
        assert_eq!(
            report["latency_us"]["samples"], 300,
            "every request's round trip is recorded"
        );
        assert!(report["requests_per_s"].as_f64().unwrap() > 0.0, "{report}");
        // One stored batch of one record per request: a fetch of one record
        // at a time (which refuses larger batches) reads all 300.
        let fetched = server.json(&[
            "bench",
            "fetch",
            "--count",
            "300",
            "--topic",
            &format!("small-{durability}"),
            "--json",
        ]);
        assert_eq!(fetched["requests"], 300, "{fetched}");
    }
    // Records round up to whole requests.
    let report = server.json(&[
        "bench",
        "produce",
        "--records-per-request",
        "7",
        "--count",
        "20",
        "--json",
    ]);
    assert_eq!(
        (report["requests"].as_u64(), report["records"].as_u64()),
        (Some(3), Some(21))
    );
}

#[test]
fn bench_fetch_reads_one_record_per_fetch() {
    let server = Spoold::start_temp(&[]);
    let report = server.json(&[
        "bench",
        "fetch",
        "--records-per-request",
        "1",
        "--count",
        "200",
        "--topic",
        "fetch1",
        "--keep",
        "--json",
    ]);
    assert_eq!(report["bench"], "fetch");
    assert_eq!(report["records"], 200, "{report}");
    assert_eq!(report["requests"], 200, "{report}");
    assert_eq!(report["latency_us"]["samples"], 200);
    assert!(report["requests_per_s"].as_f64().unwrap() > 0.0, "{report}");
    // The backlog is there already: read again without a preload.
    let again = server.json(&["bench", "fetch", "--count", "200", "--topic", "fetch1", "--json"]);
    assert_eq!(again["requests"], 200, "{again}");
    // A topic of larger batches is refused rather than measured.
    server.ok(&[
        "bench",
        "fetch",
        "--records-per-request",
        "10",
        "--count",
        "50",
        "--topic",
        "batches",
        "--keep",
    ]);
    let message = server.fails(&[
        "bench",
        "fetch",
        "--records-per-request",
        "1",
        "--count",
        "5",
        "--topic",
        "batches",
    ]);
    assert!(message.contains("holds larger batches"), "{message}");
}
