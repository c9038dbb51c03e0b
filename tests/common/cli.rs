//! Running the `spool` command against a [`Spoold`], the way a user does:
//! arguments, stdin, and what comes back on stdout, stderr and the exit
//! status.
//!
//! ```ignore
//! let server = Spoold::start_temp(&[]);
//! server.create_topic("orders", 2);
//! server.spool(&["produce", "orders"]).stdin("a\nb\n").ok();
//! let consumed = server.ok(&["consume", "orders"]);
//! let message = server.fails(&["job", "get", "12345"]);
//! ```

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Output, Stdio};

use super::{Spoold, binary};

/// One `spool` invocation being prepared.
#[must_use = "a SpoolRun does nothing until it is run"]
pub struct SpoolRun {
    command: Command,
    args: Vec<OsString>,
    stdin: Vec<u8>,
}

/// What a `spool` run whose stdout was not captured left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Spoold {
    /// `spool --server <this server> args...`, to be run.
    pub fn spool(&self, args: &[&str]) -> SpoolRun {
        let mut command = Command::new(binary("spool"));
        command
            .arg("--server")
            .arg(self.url())
            .args(args)
            // A panic must show as a panic, whatever the caller's setting.
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .env_remove("SPOOL_SERVER");
        SpoolRun {
            command,
            args: args.iter().map(OsString::from).collect(),
            stdin: Vec::new(),
        }
    }

    /// Runs `spool args...` and returns its stdout; fails the test unless it
    /// exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        self.spool(args).ok()
    }

    /// Runs `spool args...` expecting exit status 1; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        self.spool(args).fails()
    }

    /// Runs `spool args...` and parses its stdout as one JSON document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok(args);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|error| panic!("spool {args:?} printed no JSON document ({error}): {stdout}"))
    }

    /// Runs `spool args...` and parses each line of its stdout as JSON.
    pub fn json_lines(&self, args: &[&str]) -> Vec<serde_json::Value> {
        self.ok(args)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| {
                    panic!("spool {args:?} printed a line that is not JSON ({error}): {line}")
                })
            })
            .collect()
    }

    /// `spool topic create name --partitions partitions`.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.ok(&["topic", "create", name, "--partitions", &partitions.to_string()]);
    }

    /// `spool produce topic` with one record per line of `lines`.
    pub fn produce(&self, topic: &str, lines: &str) {
        self.spool(&["produce", topic]).stdin(lines).ok();
    }

    /// `spool job enqueue queue payload extra...`; returns the job id.
    pub fn enqueue(&self, queue: &str, payload: &str, extra: &[&str]) -> String {
        let mut args = vec!["job", "enqueue", queue, payload];
        args.extend_from_slice(extra);
        let id = self.ok(&args).trim().to_owned();
        assert!(
            id.parse::<u64>().is_ok(),
            "`spool job enqueue` printed {id:?}, not a job id"
        );
        id
    }
}

impl SpoolRun {
    /// Bytes written to the command's stdin (then closed). Without this,
    /// stdin is empty.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = input.into();
        self
    }

    /// Sets an environment variable of the command.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.command.env(name, value);
        self
    }

    /// Runs the command to the end and returns everything it printed.
    pub fn output(mut self) -> Output {
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spool");
        let mut input = child.stdin.take().expect("stdin");
        let stdin = std::mem::take(&mut self.stdin);
        // From a thread: a large input would otherwise fill the pipe while
        // the child fills its stdout, and both would wait forever.
        let writer = std::thread::spawn(move || {
            // The command may stop reading early (it refused the input);
            // what it did with it is what the test checks.
            let _ = input.write_all(&stdin);
        });
        let output = child.wait_with_output().expect("wait for spool");
        writer.join().expect("stdin writer");
        output
    }

    /// Runs the command and returns its stdout; fails the test unless it
    /// exits 0.
    pub fn ok(self) -> String {
        let args = self.args.clone();
        let output = self.output();
        assert!(
            output.status.success(),
            "spool {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs the command expecting exit status 1 (an error reported on
    /// stderr); returns its stderr.
    pub fn fails(self) -> String {
        let args = self.args.clone();
        let output = self.output();
        assert_eq!(
            output.status.code(),
            Some(1),
            "spool {args:?} should fail with status 1: {output:?}"
        );
        String::from_utf8(output.stderr).expect("UTF-8 stderr")
    }

    /// Runs the command with its stdout a pipe whose reading end is already
    /// closed, as in `spool ... | true`: every write to stdout fails with a
    /// broken pipe.
    pub fn with_stdout_closed(mut self) -> Finished {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spool");
        let mut input = child.stdin.take().expect("stdin");
        let _ = input.write_all(&self.stdin);
        drop(input);
        let output = child.wait_with_output().expect("wait for spool");
        Finished {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs the command like `spool ... | head -n lines`: reads that many
    /// lines of its stdout, closes the pipe, and waits for the command to
    /// end. Returns the lines read.
    pub fn head(mut self, lines: usize) -> (Vec<String>, Finished) {
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spool");
        let stdout = child.stdout.take().expect("stdout");
        let read: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(lines)
            .map(|line| line.expect("a line of stdout"))
            .collect();
        // Dropping the reader closed the pipe; the command finds out on its
        // next write.
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        let status = child.wait().expect("wait for spool");
        (read, Finished { status, stderr })
    }
}
