//! The `spoold` binary's start-up behaviour: configuration errors name the
//! key, a second server on the same data directory is refused, `--help`
//! shows examples. (This test also makes `cargo test --workspace` build the
//! binary that the workspace's end-to-end tests start.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn spoold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spoold"))
}

#[test]
fn help_shows_examples() {
    let output = spoold().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("Examples:") && text.contains("--data-dir"),
        "{text}"
    );
}

#[test]
fn invalid_configuration_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // (arguments, environment, text the error must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (&["--set", "fetch_bytes_max=lots"], &[], "fetch_bytes_max"),
        (&["--listen", "nowhere"], &[], "listen"),
        (&["--admin-listen", "localhost:7071"], &[], "admin_listen"),
        (&[], &[("SPOOL_RETENTION_MS", "7 weeks")], "SPOOL_RETENTION_MS"),
        (&["--set", "segment_bytes=16GiB"], &[], "segment_bytes"),
    ];
    for (args, env, expected) in cases {
        let output = spoold()
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let config = dir.path().join("spool.toml");
    std::fs::write(&config, "flush_threads = \"many\"\n").unwrap();
    let output = spoold().arg("--config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("flush_threads") && stderr.contains("spool.toml"),
        "{stderr}"
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spoold()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let output = spoold()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("locked by another process"), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn an_admin_address_in_use_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = spoold()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", &address])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot listen on {address} (admin_listen")),
        "{stderr}"
    );
}

#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody reads the pipe: writing the address lines fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut server = spoold()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        assert!(
            server.try_wait().unwrap().is_none(),
            "spoold exited when its stdout was closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
