//! Shared helpers for Spool's workspace-level tests and benchmarks.
//!
//! Only `std` is available here (the root package has no regular
//! dependencies); helpers that need the engine live beside their users.

use std::path::PathBuf;

/// Deterministic record payloads: `count` values of `size` bytes each,
/// varied so that compression or deduplication could not flatter a result.
pub fn payloads(count: usize, size: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut value = vec![0u8; size];
            for (j, byte) in value.iter_mut().enumerate() {
                *byte = (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(7))) as u8;
            }
            value
        })
        .collect()
}

/// Where tests and benchmarks put their scratch data: `SPOOL_SCRATCH_DIR`
/// if set, else the system's temporary directory (`TMPDIR`). Benchmarks
/// that touch the disk measure whatever file system this is on.
pub fn scratch_root() -> PathBuf {
    std::env::var_os("SPOOL_SCRATCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// `bytes` as a short human-readable size with binary units, e.g. "64 KiB".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}
