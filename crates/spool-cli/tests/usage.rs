//! The `spool` binary's exit codes and messages for mistakes that need no
//! server: usage errors exit 2 before connecting, an unreachable server
//! exits 1 with a message that says what to do.

use std::process::{Command, Output};

fn spool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(args)
        .env_remove("SPOOL_SERVER")
        .output()
        .expect("run spool")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An address where nothing listens: a port the kernel just handed out
/// and that was closed again.
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

#[test]
fn bad_job_arguments_exit_2_and_name_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["job", "enqueue", "emails", "x", "--delay", "soon"], "--delay"),
        (&["job", "enqueue", "emails", "x", "--delay", "10"], "no unit"),
        (
            &["job", "enqueue", "emails", "x", "--attempts", "0"],
            "at least 1",
        ),
        (
            &["job", "enqueue", "emails", "x", "--timeout", "0s"],
            "longer than zero",
        ),
        (&["job", "enqueue", "emails", "x", "--at", "tomorrow"], "RFC 3339"),
        (
            &["job", "enqueue", "emails", "x", "--header", "traceparent"],
            "NAME=VALUE",
        ),
        (
            &["job", "enqueue", "emails", "x", "--delay", "1s", "--at", "@1"],
            "cannot be used with",
        ),
        (&["job", "get", "not-a-number"], "decimal numbers"),
        (
            &["job", "list", "emails", "--state", "finished"],
            "possible values",
        ),
        (&["job", "retry"], "--dead"),
        (&["job", "purge", "7", "--dead", "emails"], "cannot be used with"),
        (&["bench", "jobs", "--consumers", "0"], "--consumers"),
    ];
    for (args, needle) in cases {
        let output = spool(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(needle), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn an_unreachable_server_exits_1_with_what_to_do() {
    let server = closed_address();
    for args in [
        &["job", "get", "1"][..],
        &["job", "enqueue", "emails", "{}"],
        &["queue", "stats", "emails"],
        &["bench", "jobs", "--count", "10"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_spool"))
            .arg("--server")
            .arg(&server)
            .args(args)
            .output()
            .expect("run spool");
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains("could not connect"), "{args:?}: {message}");
        assert!(message.contains("is spoold running"), "{args:?}: {message}");
    }
}

#[test]
fn help_shows_examples_for_the_job_commands() {
    for args in [
        &["job", "--help"][..],
        &["job", "enqueue", "--help"],
        &["job", "retry", "--help"],
        &["queue", "stats", "--help"],
        &["bench", "jobs", "--help"],
    ] {
        let output = spool(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Examples:"), "{args:?}: {text}");
    }
}
