//! `--metrics-listen` prints its address on stdout; a closed stdout must
//! not stop the worker.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_closed_stdout_does_not_stop_the_worker() {
    // Nobody reads the pipe: writing the address line fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // No server there: the worker keeps retrying, which is what it does
    // until it is stopped.
    let mut worker = Command::new(env!("CARGO_BIN_EXE_spool-worker"))
        .args(["--server", "http://127.0.0.1:1", "--queue", "q", "--exec", "true"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "spool-worker exited when its stdout was closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
}
