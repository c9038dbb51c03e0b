//! Small file-system steps that must happen in a particular order to be
//! crash safe.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Replaces `path` with `contents` so that after a crash the file holds
/// either the old or the new contents, never a mix: write a temporary file,
/// fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().expect("file has a parent directory");
    let mut temp_name = path.file_name().expect("file has a name").to_owned();
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .ctx("create", &temp)?;
    file.write_all(contents).ctx("write", &temp)?;
    file.sync_all().ctx("fsync", &temp)?;
    drop(file);
    fs::rename(&temp, path).ctx("rename", path)?;
    sync_dir(dir)
}

/// fsync of a directory, which makes entries created, renamed or removed in
/// it durable.
/// Reads and decodes the small file at `path`; `None` when there is none.
/// Bytes `decode` refuses are a `BadFile` naming the path and its reason.
pub fn read_decoded<T>(
    path: &Path,
    decode: impl FnOnce(&[u8]) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(|reason| crate::Error::BadFile {
            path: path.to_owned(),
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::Error::io("read", path.to_owned(), e)),
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).ctx("open", dir)?.sync_all().ctx("fsync", dir)
}

/// Creates `dir` and any missing parents, then makes the new entries
/// durable. An existing `dir` is left alone: see [`ensure_dir_durable`] for
/// when it must be synced anyway.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    ensure_dir_durable(dir, false)
}

/// Like [`create_dir_durable`], but with `sync_existing` an existing `dir`
/// and its parent are synced too: after an unclean shutdown a directory may
/// exist without its entry being durable yet (a crash between mkdir and
/// fsync).
pub fn ensure_dir_durable(dir: &Path, sync_existing: bool) -> Result<()> {
    if dir.is_dir() && !sync_existing {
        return Ok(());
    }
    fs::create_dir_all(dir).ctx("create directory", dir)?;
    sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
