//! `write_path`: the two ways the engine could put a batch into a segment
//! file, measured outside the engine: copying into a writable shared
//! mapping (`MmapMut`, what `spool-log` does) or a positioned write
//! (`FileExt::write_all_at`, i.e. `pwrite`). Plus a plain `memcpy` into
//! heap memory that is already faulted in, as the floor.
//!
//! Both file variants write fresh pages of a file that was `fallocate`d
//! beforehand, as an append-only log does: every 4 KiB page is touched for
//! the first time. With the mapping that costs a page fault (and the
//! file system's `page_mkwrite`) per page; with `pwrite` the kernel fills
//! the page cache directly. When the file is full it is deleted and a new
//! one allocated, untimed. Nothing is synced: this compares the copies
//! only; a later `fdatasync` costs the same either way.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use memmap2::MmapMut;
use spool::{format_bytes, payloads};
use tempfile::TempDir;

use crate::rig::{self, KIB, MIB};
use crate::sys;

const WRITE_BYTES: [u64; 2] = [64 * KIB, MIB];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Copy into a shared, writable mapping of the file.
    Mmap,
    /// `pwrite` at the position.
    WriteAt,
    /// Copy into heap memory that is already faulted in (no file at all).
    Memcpy,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Mmap => "mmap_copy",
            Method::WriteAt => "write_at",
            Method::Memcpy => "memcpy_heap",
        }
    }
}

/// A preallocated file (or heap buffer) written front to back.
struct Target {
    method: Method,
    file_bytes: u64,
    generation: u64,
    file: Option<File>,
    map: Option<MmapMut>,
    heap: Vec<u8>,
    position: u64,
    /// Last, so the file is unmapped and closed before it is removed.
    dir: TempDir,
}

impl Target {
    fn new(method: Method, file_bytes: u64) -> Target {
        let mut target = Target {
            method,
            file_bytes,
            generation: 0,
            file: None,
            map: None,
            heap: Vec::new(),
            position: 0,
            dir: rig::scratch_dir(),
        };
        target.renew();
        target
    }

    fn path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.{}", self.method.name(), self.generation))
    }

    /// Replaces the full file with a new, allocated one.
    fn renew(&mut self) {
        self.position = 0;
        if self.method == Method::Memcpy {
            if self.heap.is_empty() {
                // Filled once, so every page is faulted in before timing.
                self.heap = vec![1u8; self.file_bytes as usize];
            }
            return;
        }
        self.map = None;
        if self.file.take().is_some() {
            std::fs::remove_file(self.path()).expect("remove the full file");
            self.generation += 1;
        }
        let path = self.path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create the file");
        sys::fallocate(&file, self.file_bytes).expect("fallocate");
        if self.method == Method::Mmap {
            // SAFETY: the file was just created in a private scratch
            // directory and is fully allocated; nothing else maps, writes
            // or truncates it while the mapping lives (it is dropped before
            // the file is removed), so the mapping's bytes stay backed and
            // only this `MmapMut` changes them.
            self.map = Some(unsafe { MmapMut::map_mut(&file) }.expect("mmap"));
        }
        self.file = Some(file);
    }

    /// Writes `buffer` `count` times at successive positions, renewing the
    /// file (untimed) when it is full. Returns the time spent writing.
    fn write(&mut self, buffer: &[u8], count: u64) -> Duration {
        let len = buffer.len() as u64;
        let mut elapsed = Duration::ZERO;
        let mut done = 0;
        while done < count {
            if self.position + len > self.file_bytes {
                self.renew();
            }
            let fit = ((self.file_bytes - self.position) / len).min(count - done);
            let start = Instant::now();
            for _ in 0..fit {
                let at = self.position as usize;
                match self.method {
                    Method::Mmap => {
                        let map = self.map.as_mut().expect("mapped");
                        map[at..at + buffer.len()].copy_from_slice(buffer);
                    }
                    Method::WriteAt => {
                        let file = self.file.as_ref().expect("file");
                        file.write_all_at(buffer, self.position).expect("pwrite");
                    }
                    Method::Memcpy => {
                        self.heap[at..at + buffer.len()].copy_from_slice(buffer);
                        black_box(&mut self.heap);
                    }
                }
                self.position += len;
            }
            elapsed += start.elapsed();
            done += fit;
        }
        elapsed
    }
}

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_path");
    // Large enough to leave the CPU caches, small enough that the dirty
    // pages of a deleted file never build up to the kernel's writeback
    // threshold.
    let file_bytes = rig::scaled(512 * MIB, 8 * MIB);
    for write_bytes in WRITE_BYTES {
        let buffer = payloads(1, write_bytes as usize).remove(0);
        group.throughput(Throughput::Bytes(write_bytes));
        for method in [Method::Mmap, Method::WriteAt, Method::Memcpy] {
            let mut target: Option<Target> = None;
            let id = BenchmarkId::new(method.name(), format_bytes(write_bytes).replace(' ', ""));
            group.bench_function(id, |b| {
                let target = target.get_or_insert_with(|| Target::new(method, file_bytes));
                b.iter_custom(|iters| target.write(&buffer, iters))
            });
        }
    }
    group.finish();
}
