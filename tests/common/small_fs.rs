//! A small file system of its own for a test that must fill a disk: a
//! tmpfs of the asked size, or, where tmpfs cannot be mounted, an ext4
//! image in a file mounted through a loop device. Both need root (CI runs
//! as root); a test that asks for one fails with the reason when neither
//! can be mounted, rather than passing without having run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted small file system, unmounted on drop.
pub struct SmallFs {
    mount_point: PathBuf,
    /// Holds the mount point (and the ext4 image, if any).
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a file system of `size_mib` MiB at a new directory.
    ///
    /// # Panics
    ///
    /// If the process is not root, or neither a tmpfs nor a loop-mounted
    /// ext4 image could be mounted; the message says why.
    pub fn mount(size_mib: u64) -> SmallFs {
        assert!(
            effective_uid() == Some(0),
            "this test fills a small file system of its own, and mounting one needs root: \
             run the tests as root (CI does)"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let tmpfs = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount_point));
        let Err(tmpfs_error) = tmpfs else {
            return SmallFs {
                mount_point,
                _dir: dir,
            };
        };
        let image = dir.path().join("ext4.img");
        let loop_mount = std::fs::File::create(&image)
            .and_then(|file| file.set_len(size_mib << 20))
            .map_err(|e| format!("creating {}: {e}", image.display()))
            .and_then(|()| run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image)))
            .and_then(|()| {
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(&mount_point))
            });
        match loop_mount {
            Ok(()) => SmallFs {
                mount_point,
                _dir: dir,
            },
            Err(loop_error) => panic!(
                "cannot mount a small file system for this test: tmpfs: {tmpfs_error}; \
                 ext4 image on a loop device: {loop_error}"
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy, so a server that has not quite exited does not keep the
        // mount (and the temporary directory under it) alive.
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
    }
}

/// Runs `command`; its stderr (or why it could not start) on failure.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The process's effective user id, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
