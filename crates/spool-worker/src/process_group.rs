//! [`ProcessGroup`]: kills every process of a command's process group, the
//! command's children and grandchildren included, not only the shell. Each
//! group is reported to the worker's guard (`guard.rs`) while it lives.

use std::io;

/// The process group of a child started with `process_group(0)` (its pid is
/// the group id). Killed with SIGKILL on [`ProcessGroup::kill`] or on drop,
/// so a handler future dropped at a timeout leaves no process behind.
#[derive(Debug)]
pub struct ProcessGroup {
    id: Option<i32>,
}

impl ProcessGroup {
    /// The group led by `leader_pid`; `None` for a pid that cannot name a
    /// group (0, 1 or out of range), which would make `kill` hit far more
    /// than the command.
    pub fn led_by(leader_pid: Option<u32>) -> Self {
        let id = leader_pid
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|&pid| pid > 1);
        if let Some(id) = id {
            crate::guard::watch(id);
        }
        ProcessGroup { id }
    }

    /// Kills every process left in the group, once. Call it before the
    /// group could be gone and its id reused: while the leader is running,
    /// or right after it was reaped while any child it left still holds the
    /// id (the kernel does not reuse a pid that names a live group).
    pub fn kill(&mut self) {
        if let Some(id) = self.id.take() {
            match kill_group(id) {
                Ok(()) => tracing::debug!(process_group = id, "killed the process group"),
                // Nobody left in the group: the usual case after a clean exit.
                Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
                Err(error) => tracing::warn!(process_group = id, %error, "could not kill the process group"),
            }
            crate::guard::release(id);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGKILL to every process of group `id` (`id > 1`).
#[allow(unsafe_code)]
pub(crate) fn kill_group(id: i32) -> io::Result<()> {
    assert!(
        id > 1,
        "process group {id} would name more than one command's processes"
    );
    // SAFETY: kill(2) takes two integers and reads or writes no memory of
    // this process. A negative pid names the process group `id`, which the
    // caller created for one command (`process_group(0)`); the assertion
    // keeps it from being -1 (every process) or 0 (our own group).
    let result = unsafe { libc::kill(-id, libc::SIGKILL) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_that_name_no_single_group_are_refused() {
        assert!(ProcessGroup::led_by(None).id.is_none());
        assert!(ProcessGroup::led_by(Some(0)).id.is_none());
        assert!(ProcessGroup::led_by(Some(1)).id.is_none());
        assert!(ProcessGroup::led_by(Some(u32::MAX)).id.is_none());
        let mut group = ProcessGroup::led_by(Some(12_345));
        assert_eq!(group.id, Some(12_345));
        group.id = None; // not ours to kill
    }

    #[test]
    fn killing_the_group_kills_the_children_too() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .process_group(0)
            .spawn()
            .unwrap();
        let leader = child.id();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let members = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    // The field after the parenthesized name: state, ppid, pgrp.
                    let fields: Vec<&str> = stat
                        .rsplit_once(')')
                        .map_or("", |(_, rest)| rest)
                        .split_whitespace()
                        .collect();
                    fields.get(2) == Some(&leader.to_string().as_str()) && fields.first() != Some(&"Z")
                })
                .count()
        };
        assert!(
            members() >= 2,
            "the shell (or the sleep it became) and the background sleep"
        );
        ProcessGroup::led_by(Some(leader)).kill();
        child.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(members(), 0);
    }
}
