//! The guard: a small process that outlives nothing but the worker itself.
//! It kills the process groups of the worker's `--exec` commands when the
//! worker dies without doing so (`kill -9`, an OOM kill, a crash), so a
//! handler never keeps running beside the re-delivered attempt of its job.
//!
//! The guard is this same binary, started as `/proc/self/exe __guard` in a
//! process group of its own (a Ctrl-C in the terminal reaches the worker,
//! which shuts down gracefully, but not the guard). The worker writes one
//! line per change to the guard's stdin: `+ID` when a command's group `ID`
//! starts, `-ID` when it is gone. The kernel closes the pipe when the worker
//! dies, however it dies; the guard reads end of file and sends SIGKILL to
//! every group still listed, then exits. Nothing depends on which thread
//! spawned a command (unlike `PR_SET_PDEATHSIG`, which fires when the
//! spawning *thread* exits), and the guard costs one idle process per
//! worker, not one per job.
//!
//! The window it leaves: a worker killed between starting a command and
//! writing its `+ID` line (a few microseconds) leaves that command to run.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::process_group::kill_group;

/// The first argument that makes this binary the guard.
pub const GUARD_ARG: &str = "__guard";

static GUARD: OnceLock<Guard> = OnceLock::new();

/// The worker's end of its guard.
#[derive(Debug)]
pub struct Guard {
    pipe: Mutex<Option<ChildStdin>>,
    pid: u32,
}

impl Guard {
    /// Starts this worker's guard; later [`watch`] and [`release`] calls go
    /// to it. Called once, before the first command runs.
    pub fn start() -> io::Result<()> {
        let mut child: Child = Command::new("/proc/self/exe")
            .arg(GUARD_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        let guard = Guard {
            pipe: Mutex::new(pipe),
            pid: child.id(),
        };
        tracing::debug!(
            pid = guard.pid,
            "started the guard of the commands' process groups"
        );
        GUARD
            .set(guard)
            .map_err(|_| io::Error::other("the guard was already started"))
    }

    fn send(&self, line: &str) {
        let mut pipe = self.pipe.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(writer) = pipe.as_mut() else { return };
        if let Err(error) = writer.write_all(line.as_bytes()) {
            tracing::error!(
                pid = self.pid,
                %error,
                "the guard process is gone: a command may now outlive a killed worker"
            );
            *pipe = None;
        }
    }
}

/// Tells the guard, when there is one, that group `id` now runs a command.
pub fn watch(id: i32) {
    if let Some(guard) = GUARD.get() {
        guard.send(&format!("+{id}\n"));
    }
}

/// Tells the guard, when there is one, that group `id` is gone.
pub fn release(id: i32) {
    if let Some(guard) = GUARD.get() {
        guard.send(&format!("-{id}\n"));
    }
}

/// The guard process: follows the lines on stdin until end of file, then
/// kills every group still listed. Returns the groups it killed.
pub fn run(input: impl BufRead) -> Vec<i32> {
    let mut groups = BTreeSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (sign, id) = line.split_at(line.len().min(1));
        match (sign, id.parse::<i32>()) {
            ("+", Ok(id)) if id > 1 => {
                groups.insert(id);
            }
            ("-", Ok(id)) => {
                groups.remove(&id);
            }
            _ => eprintln!("spool-worker guard: ignoring the line {line:?}"),
        }
    }
    let mut killed = Vec::new();
    for id in groups {
        match kill_group(id) {
            Ok(()) => killed.push(id),
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
            Err(error) => eprintln!("spool-worker guard: cannot kill process group {id}: {error}"),
        }
    }
    if !killed.is_empty() {
        eprintln!(
            "spool-worker guard: the worker is gone; killed the process groups of its commands: {killed:?}"
        );
    }
    killed
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn the_guard_kills_the_groups_still_listed_at_end_of_input() {
        let mut running = Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let mut finished = Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let running_id = running.id() as i32;
        let finished_id = finished.id() as i32;
        finished.kill().unwrap();
        finished.wait().unwrap();
        let input = format!("+{running_id}\n+{finished_id}\n-{finished_id}\nnonsense\n+1\n");
        assert_eq!(run(input.as_bytes()), [running_id]);
        let status = running.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
