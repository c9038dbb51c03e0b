//! Shared helpers for Spool's workspace-level tests and benchmarks.

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
