//! How a Raft entry is stored as a record batch.
//!
//! Every Raft entry is exactly one batch in the partition's log. A client's
//! entry is the client's batch itself. Raft's own entries (the blank entry
//! a new leader appends in its term, and membership changes) carry no
//! client records, but they occupy a Raft index, so they are stored as a
//! batch too: one record with no key, the header `spool.raft` naming the
//! kind (`blank` or `membership`), and for a membership entry the
//! membership as JSON in the value. The record's timestamp is 0, so that
//! every replica encodes the same entry into the same bytes (a replica
//! encodes Raft's own entries itself; they are not shipped as bytes).
//!
//! Such a batch is recognised by its shape: one record carrying that
//! header. A client batch of that shape is refused before it is proposed
//! ([`check_client_batch`]), so the two can never be confused.

use bytes::Bytes;
use spool_format::batch::{self, Batch, BatchLimits, Header, Record};

use crate::error::{Error, Result};

/// The record header that marks one of Raft's own entries.
pub const ENTRY_HEADER: &str = "spool.raft";
const BLANK: &[u8] = b"blank";
const MEMBERSHIP: &[u8] = b"membership";

/// What a stored batch is to Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A client's records.
    Records,
    /// A leader's first entry in its term.
    Blank,
    /// A membership configuration (JSON in the record's value).
    Membership,
}

/// Encodes Raft's own entry of `kind` (not [`EntryKind::Records`]) with
/// `value` as the record's value, base offset 0 and leader epoch 0; the
/// appender stamps both.
pub fn encode_own_entry(kind: EntryKind, value: &[u8], limits: BatchLimits) -> Result<Vec<u8>> {
    let marker = match kind {
        EntryKind::Blank => BLANK,
        EntryKind::Membership => MEMBERSHIP,
        EntryKind::Records => unreachable!("client entries are stored as the client encoded them"),
    };
    let headers = [Header {
        key: ENTRY_HEADER,
        value: Some(marker),
    }];
    let record = Record {
        key: None,
        value: Some(value),
        headers: &headers,
        timestamp_ms: Some(0),
    };
    let records = [record];
    let plan = batch::plan(&records, 0, limits).map_err(|source| Error::InvalidBatch { source })?;
    let mut out = vec![0u8; plan.total_bytes];
    batch::encode(&mut out, 0, &records, &plan, 0);
    Ok(out)
}

/// What `batch` is, and for Raft's own entries the record's value (the
/// membership JSON; empty for a blank entry).
pub fn classify(batch: &Batch) -> Result<(EntryKind, Bytes)> {
    if batch.record_count() != 1 {
        return Ok((EntryKind::Records, Bytes::new()));
    }
    let bad = |reason| Error::BadEntry {
        offset: batch.base_offset(),
        reason,
    };
    let record = batch
        .records()
        .next()
        .ok_or_else(|| bad("the batch holds no record"))?
        .map_err(|_| bad("the record does not decode"))?;
    let marker = record
        .headers()
        .find(|(key, _)| *key == ENTRY_HEADER)
        .map(|(_, value)| value);
    let kind = match marker {
        None => return Ok((EntryKind::Records, Bytes::new())),
        Some(Some(BLANK)) => EntryKind::Blank,
        Some(Some(MEMBERSHIP)) => EntryKind::Membership,
        Some(_) => return Err(bad("unknown Raft entry kind")),
    };
    let value = record.value.map_or_else(Bytes::new, |v| batch.slice_ref(v));
    Ok((kind, value))
}

/// Checks a client's encoded batch before it becomes a Raft entry: a valid
/// stored batch within `limits`, and not of the shape of Raft's own
/// entries. A batch refused here never reaches the log, where a bad entry
/// would be a storage error that stops the replica.
pub fn check_client_batch(encoded: &Bytes, limits: BatchLimits) -> Result<()> {
    batch::validate_encoded(encoded, limits).map_err(|source| Error::InvalidBatch { source })?;
    let batch = Batch::new(encoded.clone()).map_err(|source| Error::InvalidBatch { source })?;
    match classify(&batch)? {
        (EntryKind::Records, _) => Ok(()),
        _ => Err(Error::ReservedHeader { header: ENTRY_HEADER }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BatchLimits {
        BatchLimits {
            record_bytes_max: 1 << 20,
            batch_bytes_max: 1 << 20,
        }
    }

    #[test]
    fn own_entries_round_trip_and_encode_identically() {
        let membership = br#"{"configs":[[1,2,3]]}"#;
        let first = encode_own_entry(EntryKind::Membership, membership, limits()).unwrap();
        let second = encode_own_entry(EntryKind::Membership, membership, limits()).unwrap();
        assert_eq!(first, second, "every replica must store the same bytes");
        let (kind, value) = classify(&Batch::new(Bytes::from(first)).unwrap()).unwrap();
        assert_eq!(kind, EntryKind::Membership);
        assert_eq!(&value[..], membership);

        let blank = encode_own_entry(EntryKind::Blank, b"", limits()).unwrap();
        let (kind, value) = classify(&Batch::new(Bytes::from(blank)).unwrap()).unwrap();
        assert_eq!(kind, EntryKind::Blank);
        assert!(value.is_empty());
    }

    #[test]
    fn client_batches_are_records_and_reserved_shapes_are_refused() {
        let plain = Bytes::from(batch::encode_to_vec(&[Record::value(b"x")], 7, limits()).unwrap());
        check_client_batch(&plain, limits()).unwrap();
        let (kind, _) = classify(&Batch::new(plain).unwrap()).unwrap();
        assert_eq!(kind, EntryKind::Records);

        let forged = Bytes::from(encode_own_entry(EntryKind::Blank, b"", limits()).unwrap());
        assert!(matches!(
            check_client_batch(&forged, limits()),
            Err(Error::ReservedHeader { .. })
        ));
    }
}
