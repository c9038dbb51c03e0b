//! The `spool` CLI against a real `spoold`, the way a user drives it.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Spoold;

fn spool(server: &Spoold, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(common::binary("spool"))
        .arg("--server")
        .arg(server.url())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spool");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for spool")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "spool failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[test]
fn topics_produce_consume_replay_offsets_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    ok(spool(
        &server,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--retention",
            "7d",
        ],
        None,
    ));
    assert!(ok(spool(&server, &["topic", "list"], None)).contains("orders"));

    let lines: String = (0..50).map(|i| format!("order-{i}\n")).collect();
    ok(spool(
        &server,
        &["produce", "orders", "--partition", "0", "--durability", "fsync"],
        Some(&lines),
    ));
    ok(spool(
        &server,
        &["produce", "orders", "--key", "customer-7"],
        Some("keyed-1\nkeyed-2\n"),
    ));

    let consumed = ok(spool(
        &server,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--from",
            "earliest",
            "--format",
            "value",
        ],
        None,
    ));
    let expected: Vec<String> = (0..50).map(|i| format!("order-{i}")).collect();
    let got: Vec<&str> = consumed.lines().collect();
    assert_eq!(
        got.len(),
        50 + usize::from(spool_proto::partitioner::partition_for_key(b"customer-7", 2) == 0) * 2
    );
    assert_eq!(
        &got[..50],
        expected.iter().map(String::as_str).collect::<Vec<_>>().as_slice()
    );

    let from_offset = ok(spool(
        &server,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--from",
            "45",
            "--count",
            "3",
        ],
        None,
    ));
    assert_eq!(
        from_offset.lines().collect::<Vec<_>>(),
        ["order-45", "order-46", "order-47"]
    );

    // Replay reads every partition to the end it found at start; piped,
    // it prints records and no progress line.
    let replayed = spool(&server, &["replay", "orders", "--from", "earliest"], None);
    let stderr = String::from_utf8_lossy(&replayed.stderr).to_string();
    let replayed = ok(replayed);
    assert_eq!(replayed.lines().count(), 52);
    assert!(replayed.contains("keyed-2"));
    assert!(
        !stderr.contains('\r'),
        "no progress redraws when not on a terminal"
    );

    let json = ok(spool(
        &server,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--count",
            "1",
            "--format",
            "json",
        ],
        None,
    ));
    assert!(json.contains("\"offset\"") && json.contains("order-0"), "{json}");

    let offsets = ok(spool(&server, &["offsets", "orders"], None));
    assert!(offsets.contains("50"), "{offsets}");

    ok(spool(
        &server,
        &["checkpoint", "set", "billing", "orders", "0=42"],
        None,
    ));
    let checkpoint = ok(spool(&server, &["checkpoint", "get", "billing", "orders"], None));
    assert!(checkpoint.contains("42"), "{checkpoint}");

    let described = ok(spool(&server, &["topic", "describe", "orders"], None));
    assert!(described.contains("orders"));
    ok(spool(&server, &["topic", "delete", "orders"], None));
    assert!(!ok(spool(&server, &["topic", "list"], None)).contains("orders"));
}

#[test]
fn errors_exit_1_with_a_hint_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let missing = spool(&server, &["consume", "nope", "--from", "earliest"], None);
    assert_eq!(missing.status.code(), Some(1));
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(
        message.contains("nope") && message.contains("topic create"),
        "{message}"
    );

    let bad_name = spool(&server, &["topic", "create", "../x"], None);
    assert_eq!(bad_name.status.code(), Some(1));

    let usage = spool(&server, &["topic", "create"], None);
    assert_eq!(usage.status.code(), Some(2));
    let bad_flag = spool(&server, &["consume", "t", "--from", "yesterday-ish"], None);
    assert_eq!(
        bad_flag.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad_flag.stderr)
    );
}
