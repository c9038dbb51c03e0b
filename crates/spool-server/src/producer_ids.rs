//! Producer ids for idempotent producers (`Log.InitProducer`).
//!
//! An id is 63 random bits from the operating system's random source, made
//! positive and never 0: no counter to store, replicate or recover, and
//! the same on a single node and in a cluster, where any node may answer.
//! The price is a collision bound instead of a guarantee: among *n* ids
//! drawn, two are equal with probability about n² / 2⁶⁴ (one in
//! eighteen million for a million producers), and a collision matters only
//! when both producers write the same partition within the producer state
//! retention (`docs/api.md`, "InitProducer").

use tonic::Status;

/// A fresh producer id, at least 1.
pub fn allocate() -> Result<i64, Status> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|error| {
        Status::internal(format!(
            "no randomness from the system for a producer id: {error}"
        ))
    })?;
    let id = (u64::from_le_bytes(bytes) >> 1) as i64;
    Ok(id.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_differ() {
        let ids: std::collections::HashSet<i64> = (0..1000).map(|_| allocate().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|&id| id >= 1));
    }
}
