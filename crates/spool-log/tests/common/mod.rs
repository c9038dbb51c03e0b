//! What the kill -9 tests share: a seeded random source, so a failing
//! round can be replayed from the seed it prints, and the harness that runs
//! one of the test binary's own ignored tests as a child process and kills
//! it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// xorshift64: enough for choosing sizes and crash points.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A seed from the clock (never 0, which xorshift cannot leave).
pub fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos | 1
}

/// Runs the ignored test `child` of this test binary as a child process
/// with `env` (its directory and round), waits for it to print a line
/// ending in "ready", lets it work for `work_ms` more, kills it with
/// SIGKILL and returns every whole line it printed after "ready". A line
/// cut by the kill was never fully reported, so it is left out; the child
/// prints a line only after what it reports is done.
pub fn run_and_kill(
    child: &str,
    env: &[(&str, &Path)],
    round: u64,
    round_var: &str,
    work_ms: u64,
) -> Vec<String> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"])
        .env(round_var, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut process = command.spawn().unwrap();
    let stdout = process.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines_rx
            .recv_timeout(deadline - Instant::now())
            .expect("child never became ready");
        // libtest prints "test <name> ... " without a newline first.
        if line.ends_with("ready") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(work_ms));
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    reader.join().unwrap();
    lines_rx.try_iter().collect()
}
