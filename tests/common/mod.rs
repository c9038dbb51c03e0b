//! Starting and stopping real `spoold` processes for end-to-end tests, and
//! (in `cli.rs`) running the `spool` command against them.
//!
//! The binaries come from the target directory of the test executable:
//! `cargo test --workspace` builds them; a test run without them fails
//! with the command that builds them, it never passes without running.
#![allow(dead_code)] // each test binary uses a different part

pub mod cli;
pub mod cluster;
pub mod dashboard;
pub mod job_load;
pub mod netns;
pub mod otlp;
pub mod scrape;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod small_fs;

/// Path of a workspace binary built by `cargo test --workspace` (or
/// `cargo build`), next to the test executable's `deps` directory. Panics
/// with the command that builds it when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    let package = match name {
        "spoold" => "spool-server",
        "spool" => "spool-cli",
        "spool-worker" => "spool-worker",
        other => other,
    };
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {package}` (or run `cargo test --workspace`, \
         which builds every binary before the tests), then run the test again",
        path.display()
    );
    path
}

/// A running `spoold` on a loopback port of its own, with its admin HTTP
/// listener (metrics, health) on another, unless the test turned it off.
pub struct Spoold {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The admin listener's address; `None` with `--admin-listen off`.
    pub admin_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// What runs `spoold` (such as `ip netns exec NS`), or nothing.
    launcher: Vec<String>,
    /// The data directory, when the server made its own: deleted with it.
    scratch: Option<tempfile::TempDir>,
}

impl Spoold {
    /// Starts `spoold` on `data_dir` with port 0 and extra `--set` pairs.
    pub fn start(data_dir: &Path, settings: &[&str]) -> Spoold {
        Self::start_in(&[], data_dir, "127.0.0.1:0", settings)
    }

    /// Starts `spoold` through `launcher` (a command prefix such as
    /// `ip netns exec NS`, which must exec it so that the pid is the
    /// server's) on `listen`, with extra `--set` pairs.
    pub fn start_in(launcher: &[String], data_dir: &Path, listen: &str, settings: &[&str]) -> Spoold {
        let args: Vec<String> = settings
            .iter()
            .flat_map(|s| ["--set".to_owned(), (*s).to_owned()])
            .collect();
        Self::start_with(launcher, data_dir, listen, args)
    }

    /// Starts `spoold` on a temporary data directory of its own, deleted
    /// when the server is dropped, with extra `--set` pairs.
    pub fn start_temp(settings: &[&str]) -> Spoold {
        let scratch = tempfile::tempdir().expect("temporary data directory");
        let mut server = Self::start(scratch.path(), settings);
        server.scratch = Some(scratch);
        server
    }

    fn start_with(launcher: &[String], data_dir: &Path, listen: &str, args: Vec<String>) -> Spoold {
        // The default admin port (7071) is one for the whole machine: tests
        // take a free one unless they choose.
        let chooses_admin = args
            .iter()
            .any(|arg| arg == "--admin-listen" || arg.starts_with("admin_listen="));
        let admin_off = args
            .windows(2)
            .any(|pair| pair == ["--admin-listen", "off"] || pair == ["--set", "admin_listen=off"]);
        let mut command = match launcher.split_first() {
            Some((program, prefix)) => {
                let mut command = Command::new(program);
                command.args(prefix).arg(binary("spoold"));
                command
            }
            None => Command::new(binary("spoold")),
        };
        command.arg("--data-dir").arg(data_dir).args(["--listen", listen]);
        if !chooses_admin {
            command.args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(&args)
            // TEST_SPOOLD_LOG=info shows what the servers of a test did.
            .env(
                "RUST_LOG",
                std::env::var("TEST_SPOOLD_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn spoold");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next_address = |prefix: &str| loop {
            assert!(Instant::now() < deadline, "spoold did not start in time");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        break addr.parse::<SocketAddr>().expect("address");
                    }
                }
                _ => panic!("spoold exited before listening: {:?}", child.wait()),
            }
        };
        let addr = next_address("listening on ");
        let admin_addr = (!admin_off).then(|| next_address("admin listening on "));
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Spoold {
            child: Some(child),
            addr,
            admin_addr,
            data_dir: data_dir.to_owned(),
            args,
            launcher: launcher.to_vec(),
            scratch: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR` of the admin listener; panics when it is off.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr.expect("the admin listener is on"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no flush, no clean-shutdown marker.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
        }
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("wait")
    }

    /// Starts a new process on the same data directory and settings, on a
    /// new port of the same IP address.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let listen = SocketAddr::new(self.addr.ip(), 0).to_string();
        let mut next = Self::start_with(&self.launcher, &self.data_dir, &listen, self.args.clone());
        next.scratch = self.scratch.take();
        *self = next;
    }

    /// Like [`restart`](Self::restart), on the address the server had, so
    /// clients connected before can reconnect.
    pub fn restart_on_same_address(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let mut next = Self::start_with(
            &self.launcher,
            &self.data_dir,
            &self.addr.to_string(),
            self.args.clone(),
        );
        next.scratch = self.scratch.take();
        *self = next;
    }

    /// Anonymous resident memory of the process (heap and stacks, not the
    /// page-cache pages of mapped segment files), from /proc.
    pub fn anonymous_rss_bytes(&self) -> u64 {
        anonymous_rss_bytes(self.pid())
    }
}

impl Drop for Spoold {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Anonymous resident memory of process `pid`, from /proc.
pub fn anonymous_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number");
    kib * 1024
}
