//! Memory mappings of segment and index files: the only module with
//! `unsafe` code. `docs/SAFETY.md` states the invariants in full.
//!
//! A [`Mapping`] maps a file read-only with a fixed virtual capacity. Its
//! bytes are split at the *published length*: bytes below it are complete
//! and never change again; bytes at or above it belong to the single
//! [`MappingWriter`] (if any), which writes them with positioned writes
//! (`pwrite`) to the file, not through the mapping. Readers only ever form
//! references to published bytes, so no reference ever covers bytes that
//! change.
//!
//! Writes go through `pwrite` rather than a writable mapping because it is
//! faster here: a store into a fresh page of a mapping takes a page fault
//! that zero-fills the page before the copy overwrites it (measured in
//! `docs/performance.md`, "write path"). The file is still allocated with
//! `fallocate` in chunks ahead of the writes, so a full disk is an `ENOSPC`
//! error at allocation, and the pages readers map are always backed. A file
//! is only ever truncated to its published length or longer, so no
//! published byte loses its backing page while a reader holds it.

#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

use crate::config::FaultInjector;
use crate::error::{Error, IoContext, Result};

/// A shared, memory-mapped file with a published prefix.
#[derive(Debug)]
pub struct Mapping {
    raw: MmapRaw,
    capacity: u64,
    published: AtomicU64,
    path: PathBuf,
}

impl Mapping {
    /// Maps an existing file read-only; all `len` bytes are published.
    pub fn open_read_only(file: &File, path: &Path, len: u64) -> Result<Arc<Mapping>> {
        let raw = if len == 0 {
            // mmap refuses zero-length maps; an anonymous page stands in and
            // is never read since nothing is published.
            MmapOptions::new().len(1).map_anon().map(MmapRaw::from)
        } else {
            MmapOptions::new().len(len as usize).map_raw_read_only(file)
        }
        .ctx("mmap", path)?;
        Ok(Arc::new(Mapping {
            raw,
            capacity: len,
            published: AtomicU64::new(len),
            path: path.to_owned(),
        }))
    }

    /// Maps `file` (opened read-write) with room for `capacity` bytes, of
    /// which the first `published` are already valid, and returns the single
    /// writer. The file may be shorter than `capacity`; the writer allocates
    /// as it goes.
    pub fn open_writable(
        file: File,
        path: &Path,
        capacity: u64,
        published: u64,
        preallocate_bytes: u64,
        faults: Option<Arc<FaultInjector>>,
    ) -> Result<MappingWriter> {
        assert!(published <= capacity, "published length beyond capacity");
        let allocated = file.metadata().ctx("stat", path)?.len();
        let raw = MmapOptions::new()
            .len(capacity as usize)
            .map_raw_read_only(&file)
            .ctx("mmap", path)?;
        let mapping = Arc::new(Mapping {
            raw,
            capacity,
            published: AtomicU64::new(published),
            path: path.to_owned(),
        });
        Ok(MappingWriter {
            mapping,
            file,
            pending: published,
            allocated,
            preallocate_bytes,
            faults,
        })
    }

    /// Bytes that readers may see.
    pub fn published_len(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Borrows published bytes, or `None` if the range is not published.
    pub fn slice(&self, range: Range<u64>) -> Option<&[u8]> {
        if range.start > range.end || range.end > self.published_len() {
            return None;
        }
        let len = (range.end - range.start) as usize;
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: the range lies below the published length (checked above,
        // with an Acquire load that pairs with the writer's Release store),
        // so its bytes were completely written before publication and are
        // never written again; the mapping lives as long as `self`; no
        // other process writes the file (the data directory is locked) and
        // the file is never truncated below the published length.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(range.start as usize), len) })
    }

    /// An owned, zero-copy handle to published bytes that keeps the mapping
    /// alive (even after the file is deleted), or `None` if not published.
    pub fn bytes(self: &Arc<Self>, range: Range<u64>) -> Option<Bytes> {
        self.slice(range.clone())?;
        Some(Bytes::from_owner(PublishedSlice {
            mapping: Arc::clone(self),
            range,
        }))
    }

    /// Flushes published bytes in `range` to disk (msync, which Linux runs
    /// as fdatasync of that range).
    pub fn sync(&self, range: Range<u64>, faults: Option<&FaultInjector>) -> Result<()> {
        if let Some(error) = faults.and_then(FaultInjector::sync_error) {
            return Err(Error::io("msync", &self.path, error));
        }
        let end = range.end.min(self.published_len());
        if range.start >= end {
            return Ok(());
        }
        self.raw
            .flush_range(range.start as usize, (end - range.start) as usize)
            .ctx("msync", &self.path)
    }
}

struct PublishedSlice {
    mapping: Arc<Mapping>,
    range: Range<u64>,
}

impl AsRef<[u8]> for PublishedSlice {
    fn as_ref(&self) -> &[u8] {
        self.mapping
            .slice(self.range.clone())
            .expect("published bytes stay published")
    }
}

/// The one writer of a [`Mapping`]. Not `Clone`: holding `&mut` to it is
/// what makes a write exclusive.
#[derive(Debug)]
pub struct MappingWriter {
    mapping: Arc<Mapping>,
    file: File,
    /// End of the bytes written but not yet published.
    pending: u64,
    /// Length of the file as allocated on disk.
    allocated: u64,
    preallocate_bytes: u64,
    faults: Option<Arc<FaultInjector>>,
}

impl MappingWriter {
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// Bytes written, published or not.
    pub fn pending_len(&self) -> u64 {
        self.pending
    }

    /// Room left before the capacity.
    pub fn remaining(&self) -> u64 {
        self.mapping.capacity - self.pending
    }

    /// Makes sure the file is allocated up to `end`, growing it with
    /// `fallocate` in `preallocate_bytes` steps (never past the capacity).
    pub fn allocate_to(&mut self, end: u64) -> Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        assert!(end <= self.mapping.capacity, "allocation beyond the mapping");
        let target = end
            .max(self.allocated.saturating_add(self.preallocate_bytes))
            .min(self.mapping.capacity);
        if let Some(error) = self.faults.as_deref().and_then(FaultInjector::allocate_error) {
            return Err(Error::io("fallocate", &self.mapping.path, error));
        }
        fallocate(&self.file, self.allocated, target - self.allocated)
            .ctx("fallocate", &self.mapping.path)?;
        self.allocated = target;
        Ok(())
    }

    /// Writes `bytes` after everything written so far, allocating the file
    /// first. The bytes become visible only at [`Self::publish`].
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self
            .pending
            .checked_add(bytes.len() as u64)
            .filter(|&end| end <= self.mapping.capacity)
            .expect("caller checks remaining() before writing");
        self.allocate_to(end)?;
        if let Err(error) = self.file.write_all_at(bytes, self.pending) {
            // Whatever part landed is unpublished and is overwritten by the
            // next write (or cut by recovery).
            return Err(Error::io("write", &self.mapping.path, error));
        }
        self.pending = end;
        Ok(())
    }

    /// Makes every written byte visible to readers.
    pub fn publish(&mut self) {
        self.mapping.published.store(self.pending, Ordering::Release);
    }

    /// Forgets bytes written since the last publish.
    pub fn discard_pending(&mut self) {
        self.pending = self.mapping.published_len();
    }

    /// Sets the file's length to the published length, releasing the
    /// preallocated tail. Used when a segment is sealed or closed.
    pub fn truncate_to_published(&mut self) -> Result<()> {
        self.discard_pending();
        let len = self.mapping.published_len();
        self.file.set_len(len).ctx("truncate", &self.mapping.path)?;
        self.allocated = len;
        Ok(())
    }

    /// fsync of the whole file, metadata included.
    pub fn sync_all(&self) -> Result<()> {
        if let Some(error) = self.faults.as_deref().and_then(FaultInjector::sync_error) {
            return Err(Error::io("fsync", &self.mapping.path, error));
        }
        self.file.sync_all().ctx("fsync", &self.mapping.path)
    }
}

#[cfg(target_os = "linux")]
fn fallocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: a plain system call on a file descriptor we own; no memory
        // is passed to the kernel.
        let result =
            unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as libc::off_t, len as libc::off_t) };
        if result == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn fallocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    // Without fallocate the file is only extended (sparse); a full disk can
    // then surface as SIGBUS. Spool's supported platform is Linux.
    file.set_len(offset + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn writable(dir: &Path, capacity: u64) -> MappingWriter {
        let path = dir.join("m");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        Mapping::open_writable(file, &path, capacity, 0, 4096, None).unwrap()
    }

    #[test]
    fn readers_see_only_published_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writable(dir.path(), 1 << 20);
        let mapping = Arc::clone(writer.mapping());
        writer.write(b"hello").unwrap();
        assert_eq!(mapping.slice(0..5), None);
        writer.publish();
        assert_eq!(mapping.slice(0..5), Some(&b"hello"[..]));
        let held = mapping.bytes(1..4).unwrap();
        writer.write(b"abc").unwrap();
        writer.discard_pending();
        assert_eq!(mapping.published_len(), 5);
        assert_eq!(&held[..], b"ell");
    }

    #[test]
    fn allocation_grows_in_steps_and_truncation_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writable(dir.path(), 1 << 20);
        writer.write(&[7; 10]).unwrap();
        writer.publish();
        let len = std::fs::metadata(dir.path().join("m")).unwrap().len();
        assert_eq!(len, 4096);
        writer.truncate_to_published().unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("m")).unwrap().len(), 10);
    }

    #[test]
    fn injected_disk_full_fails_the_reservation_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let faults = Arc::new(FaultInjector::default());
        let mut writer = Mapping::open_writable(file, &path, 1 << 20, 0, 4096, Some(faults.clone())).unwrap();
        faults.set_disk_full(true);
        assert!(matches!(writer.write(&[1; 10]), Err(Error::DiskFull { .. })));
        assert_eq!(writer.pending_len(), 0);
        faults.set_disk_full(false);
        writer.write(&[1; 10]).unwrap();
    }
}
