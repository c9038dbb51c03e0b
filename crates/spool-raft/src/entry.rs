//! What a Raft entry is in storage.
//!
//! A client's entry is the client's batch itself, one batch in the
//! partition's segments, so the segments hold client records only and
//! their offsets are the ones consumers see, without gaps. Raft's own
//! entries (the blank entry a new leader appends in its term, and
//! membership changes) hold no client record; they are kept beside the
//! segments in the `raft-entries` file (`crate::own_entries`), outside the
//! offset space.

use bytes::Bytes;
use spool_format::batch::{self, BatchHeader, BatchLimits};

use crate::error::{Error, Result};

/// What an entry is to Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A client's records: a batch in the segments.
    Records,
    /// A leader's first entry in its term (in `raft-entries`).
    Blank,
    /// A membership configuration (JSON, in `raft-entries`).
    Membership,
}

/// Checks a client's encoded batch before it becomes a Raft entry: a valid
/// stored batch within `limits`. A batch refused here never reaches the
/// log, where a bad entry would be a storage error that stops the replica.
/// Returns the batch's header.
pub fn check_client_batch(encoded: &Bytes, limits: BatchLimits) -> Result<BatchHeader> {
    batch::validate_encoded(encoded, limits).map_err(|source| Error::InvalidBatch { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_format::batch::Record;

    #[test]
    fn a_valid_batch_passes_and_a_damaged_one_is_refused() {
        let limits = BatchLimits {
            record_bytes_max: 1 << 20,
            batch_bytes_max: 1 << 20,
        };
        let plain = Bytes::from(batch::encode_to_vec(&[Record::value(b"x")], 7, limits).unwrap());
        check_client_batch(&plain, limits).unwrap();
        let mut damaged = plain.to_vec();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            check_client_batch(&Bytes::from(damaged), limits),
            Err(Error::InvalidBatch { .. })
        ));
    }
}
