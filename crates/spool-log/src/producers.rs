//! The idempotent producer's state of one partition, Kafka's design: for
//! each producer id, its epoch and the last [`BATCHES_REMEMBERED`]
//! batches it appended (base sequence, record count, base offset). A batch
//! equal to a remembered one is a duplicate (answered with the original's
//! offsets, never appended again); otherwise its base sequence must follow
//! the producer's last one, with an unknown producer starting at 0.
//!
//! The table is a function of the log: [`ProducerTable::record`] is called
//! for every batch with a producer id that is appended (locally or
//! replicated), and [`ProducerTable::rebuild`]-style replay of the batch
//! headers gives the same table. A snapshot file, `{offset:020}.producers`,
//! written when a segment rolls, holds the table as of that offset, so
//! that opening the partition replays only the headers after it
//! (`docs/storage-format.md`, section 16).
//!
//! Bounded two ways: a producer whose last batch's max timestamp is older
//! than `producer_state_retention_ms` is forgotten at the next roll or
//! open, and at most `producers_max` producers are kept (the least recently
//! active one is forgotten first).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use spool_format::batch::{BatchHeader, ProducerFields};

use crate::error::{Error, Result};
use crate::fsutil;

/// How many of a producer's last batches are remembered for duplicate
/// detection: Kafka's `max.in.flight.requests.per.connection` bound for an
/// idempotent producer.
pub const BATCHES_REMEMBERED: usize = 5;

/// Extension of the producer snapshot files.
pub const SNAPSHOT_EXTENSION: &str = "producers";
const MAGIC: &[u8; 4] = b"SPPS";
const VERSION: u32 = 1;
/// How many snapshot files are kept; older ones are deleted at a roll.
const SNAPSHOTS_KEPT: usize = 2;

/// One batch a producer appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub base_sequence: i32,
    pub record_count: u32,
    pub base_offset: u64,
}

impl ProducerBatch {
    /// The sequence of the batch's last record, wrapping past `i32::MAX`
    /// to 0 as Kafka's sequences do.
    pub fn last_sequence(&self) -> i32 {
        add_sequence(self.base_sequence, self.record_count)
    }

    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }
}

/// `sequence + count - 1` in Kafka's wrapping sequence space (0 to
/// `i32::MAX`, then 0 again).
fn add_sequence(sequence: i32, count: u32) -> i32 {
    let span = i64::from(i32::MAX) + 1;
    ((i64::from(sequence) + i64::from(count) - 1).rem_euclid(span)) as i32
}

/// The sequence after `last`.
fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

/// What one producer has appended to a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`BATCHES_REMEMBERED`], all of `epoch`.
    pub batches: VecDeque<ProducerBatch>,
    /// The max timestamp of its last batch: what retention measures.
    pub last_timestamp_ms: i64,
}

/// What the table says about a batch about to be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The batch is the producer's next: append it.
    Append,
    /// The batch was appended already, at these offsets.
    Duplicate(ProducerBatch),
}

impl ProducerEntry {
    /// The base sequence the producer's next batch must have.
    pub fn next_sequence(&self) -> i32 {
        self.batches
            .back()
            .map_or(0, |last| next_sequence(last.last_sequence()))
    }

    /// Checks a batch of `record_count` records with `fields` against this
    /// producer's state (`None`: a producer the partition does not know).
    pub fn check(
        entry: Option<&ProducerEntry>,
        fields: ProducerFields,
        record_count: u32,
    ) -> Result<SequenceCheck> {
        let Some(entry) = entry else {
            if fields.base_sequence != 0 {
                return Err(Error::UnknownProducer {
                    producer_id: fields.producer_id,
                    base_sequence: fields.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        };
        if fields.producer_epoch < entry.epoch {
            return Err(Error::ProducerFenced {
                producer_id: fields.producer_id,
                epoch: fields.producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        if fields.producer_epoch > entry.epoch {
            // A new epoch starts its sequences again (Kafka's bump).
            return match fields.base_sequence {
                0 => Ok(SequenceCheck::Append),
                got => Err(Error::OutOfOrderSequence {
                    producer_id: fields.producer_id,
                    expected: 0,
                    got,
                }),
            };
        }
        let remembered = entry
            .batches
            .iter()
            .find(|b| b.base_sequence == fields.base_sequence && b.record_count == record_count);
        if let Some(original) = remembered {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        let expected = entry.next_sequence();
        if fields.base_sequence != expected {
            return Err(Error::OutOfOrderSequence {
                producer_id: fields.producer_id,
                expected,
                got: fields.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    fn record(&mut self, epoch: i16, batch: ProducerBatch, timestamp_ms: i64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_REMEMBERED {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp_ms = self.last_timestamp_ms.max(timestamp_ms);
    }
}

/// Limits of a partition's producer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// A producer idle for longer than this is forgotten.
    pub retention_ms: u64,
    /// Most producers remembered per partition.
    pub producers_max: usize,
}

/// Every producer a partition remembers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerTable {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a batch about to be appended; see [`ProducerEntry::check`].
    pub fn check(&self, fields: ProducerFields, record_count: u32) -> Result<SequenceCheck> {
        ProducerEntry::check(self.get(fields.producer_id), fields, record_count)
    }

    /// Remembers an appended batch. Plain batches are not looked at;
    /// whatever the header holds is recorded, since a replicated batch was
    /// checked by the leader that appended it first.
    pub fn record(&mut self, header: &BatchHeader, limits: ProducerLimits) {
        let Some(fields) = header.producer() else {
            return;
        };
        let batch = ProducerBatch {
            base_sequence: fields.base_sequence,
            record_count: header.record_count,
            base_offset: header.base_offset,
        };
        if !self.producers.contains_key(&fields.producer_id) && self.producers.len() >= limits.producers_max {
            self.forget_least_recent();
        }
        self.producers
            .entry(fields.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: fields.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_REMEMBERED),
                last_timestamp_ms: header.max_timestamp_ms,
            })
            .record(fields.producer_epoch, batch, header.max_timestamp_ms);
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, entry)| entry.last_timestamp_ms)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Forgets producers whose last batch is older than the retention.
    pub fn expire(&mut self, now_ms: i64, limits: ProducerLimits) -> usize {
        let before = self.producers.len();
        let horizon = now_ms.saturating_sub(i64::try_from(limits.retention_ms).unwrap_or(i64::MAX));
        self.producers
            .retain(|_, entry| entry.last_timestamp_ms >= horizon);
        before - self.producers.len()
    }

    /// The snapshot file's bytes: magic `SPPS`, version u32, producer count
    /// u32, then per producer id i64, epoch i16, last timestamp i64, batch
    /// count u8 and per batch base sequence i32, record count u32, base
    /// offset u64; a CRC-32 of everything before it ends the file. All
    /// little-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.producers.len() * 100);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&entry.epoch.to_le_bytes());
            out.extend_from_slice(&entry.last_timestamp_ms.to_le_bytes());
            out.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                out.extend_from_slice(&batch.base_sequence.to_le_bytes());
                out.extend_from_slice(&batch.record_count.to_le_bytes());
                out.extend_from_slice(&batch.base_offset.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<ProducerTable, String> {
        let body_len = bytes.len().checked_sub(4).ok_or("shorter than its CRC")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("CRC mismatch".to_owned());
        }
        let mut reader = Reader { bytes: body, at: 0 };
        if reader.take(4)? != MAGIC {
            return Err("bad magic".to_owned());
        }
        let version = u32::from_le_bytes(reader.array()?);
        if version != VERSION {
            return Err(format!("version {version} is not {VERSION}"));
        }
        let count = u32::from_le_bytes(reader.array()?);
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = i64::from_le_bytes(reader.array()?);
            let epoch = i16::from_le_bytes(reader.array()?);
            let last_timestamp_ms = i64::from_le_bytes(reader.array()?);
            let batch_count = reader.take(1)?[0] as usize;
            if batch_count > BATCHES_REMEMBERED {
                return Err(format!("producer {id} has {batch_count} batches"));
            }
            let mut batches = VecDeque::with_capacity(BATCHES_REMEMBERED);
            for _ in 0..batch_count {
                batches.push_back(ProducerBatch {
                    base_sequence: i32::from_le_bytes(reader.array()?),
                    record_count: u32::from_le_bytes(reader.array()?),
                    base_offset: u64::from_le_bytes(reader.array()?),
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                },
            );
        }
        if reader.at != body.len() {
            return Err("bytes after the last producer".to_owned());
        }
        Ok(ProducerTable { producers })
    }

    /// Keeps only what describes batches below `offset`: a table rebuilt
    /// from a snapshot at `offset` must not name later batches, and the
    /// snapshot was written at a roll, so this only guards damage.
    pub(crate) fn below(mut self, offset: u64) -> ProducerTable {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.base_offset < offset);
        }
        self.producers.retain(|_, entry| !entry.batches.is_empty());
        self
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let part = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        self.at += n;
        Ok(part)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
}

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXTENSION}"))
}

/// Offsets of the snapshot files in `dir`, newest first.
fn snapshot_offsets(dir: &Path) -> Result<Vec<u64>> {
    let mut offsets = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some((stem, extension)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        if extension == SNAPSHOT_EXTENSION
            && let Ok(offset) = stem.parse::<u64>()
        {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    Ok(offsets)
}

/// Writes the table as of `offset` (it describes every batch below it) and
/// deletes older snapshots past the few kept.
pub(crate) fn store_snapshot(dir: &Path, offset: u64, table: &ProducerTable) -> Result<()> {
    fsutil::write_atomic(&snapshot_path(dir, offset), &table.encode())?;
    for old in snapshot_offsets(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        let path = snapshot_path(dir, old);
        std::fs::remove_file(&path).map_err(|e| Error::io("remove", path, e))?;
    }
    Ok(())
}

/// Deletes the snapshots past `offset`, which describe batches a
/// truncation removed.
pub(crate) fn delete_snapshots_after(dir: &Path, offset: u64) -> Result<()> {
    for old in snapshot_offsets(dir)?.into_iter().filter(|&o| o > offset) {
        let path = snapshot_path(dir, old);
        std::fs::remove_file(&path).map_err(|e| Error::io("remove", path, e))?;
    }
    Ok(())
}

/// Writes `encoded` (a table's bytes, [`ProducerTable::encode`]) as the
/// snapshot at `offset`, after checking that it decodes.
pub(crate) fn store_encoded_snapshot(dir: &Path, offset: u64, encoded: &[u8]) -> Result<()> {
    ProducerTable::decode(encoded).map_err(|reason| Error::BadFile {
        path: snapshot_path(dir, offset),
        reason,
    })?;
    fsutil::write_atomic(&snapshot_path(dir, offset), encoded)
}

/// Whether `encoded` is a producer table's bytes.
pub(crate) fn check_encoded(encoded: &[u8]) -> std::result::Result<(), String> {
    ProducerTable::decode(encoded).map(|_| ())
}

/// Deletes every snapshot, when the log they describe is replaced
/// (`Partition::restart_at`).
pub(crate) fn delete_snapshots(dir: &Path) -> Result<()> {
    for old in snapshot_offsets(dir)? {
        let path = snapshot_path(dir, old);
        std::fs::remove_file(&path).map_err(|e| Error::io("remove", path, e))?;
    }
    Ok(())
}

/// The newest snapshot at or below `end` that reads back, with its offset;
/// `None` when there is none (the log is then replayed from its start).
/// A snapshot that does not decode is skipped with a warning: it only
/// saves replay work.
pub(crate) fn load_snapshot(dir: &Path, end: u64) -> Result<Option<(u64, ProducerTable)>> {
    for offset in snapshot_offsets(dir)?.into_iter().filter(|&o| o <= end) {
        let path = snapshot_path(dir, offset);
        match fsutil::read_decoded(&path, ProducerTable::decode) {
            Ok(Some(table)) => return Ok(Some((offset, table.below(offset)))),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "skipping a producer snapshot that does not read back"),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ProducerLimits = ProducerLimits {
        retention_ms: 1000,
        producers_max: 3,
    };

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: u32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            leader_epoch: 0,
            magic: spool_format::batch::MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp_ms: 0,
            max_timestamp_ms: base_offset as i64,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: count,
        }
    }

    fn fields(producer_id: i64, epoch: i16, base_sequence: i32) -> ProducerFields {
        ProducerFields {
            producer_id,
            producer_epoch: epoch,
            base_sequence,
        }
    }

    #[test]
    fn sequences_wrap_like_kafkas() {
        let batch = ProducerBatch {
            base_sequence: i32::MAX - 1,
            record_count: 3,
            base_offset: 0,
        };
        assert_eq!(batch.last_sequence(), 0);
        assert_eq!(next_sequence(i32::MAX), 0);
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut table = ProducerTable::default();
        assert!(matches!(
            table.check(fields(7, 0, 3), 1),
            Err(Error::UnknownProducer { base_sequence: 3, .. })
        ));
        assert_eq!(table.check(fields(7, 0, 0), 2).unwrap(), SequenceCheck::Append);
        table.record(&header(7, 0, 0, 2, 10), LIMITS);
        table.record(&header(7, 0, 2, 3, 12), LIMITS);
        assert_eq!(
            table.check(fields(7, 0, 0), 2).unwrap(),
            SequenceCheck::Duplicate(ProducerBatch {
                base_sequence: 0,
                record_count: 2,
                base_offset: 10
            })
        );
        assert!(matches!(
            table.check(fields(7, 0, 6), 1),
            Err(Error::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        assert_eq!(table.check(fields(7, 0, 5), 1).unwrap(), SequenceCheck::Append);
        // A new epoch restarts at 0; an older one is fenced.
        table.record(&header(7, 2, 0, 1, 15), LIMITS);
        assert!(matches!(
            table.check(fields(7, 1, 5), 1),
            Err(Error::ProducerFenced {
                epoch: 1,
                current_epoch: 2,
                ..
            })
        ));
        assert_eq!(table.check(fields(7, 2, 1), 1).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerTable::default();
        for n in 0..7 {
            table.record(&header(1, 0, n, 1, n as u64), LIMITS);
        }
        assert_eq!(table.get(1).unwrap().batches.len(), BATCHES_REMEMBERED);
        assert!(matches!(
            table.check(fields(1, 0, 1), 1),
            Err(Error::OutOfOrderSequence { expected: 7, .. })
        ));
        assert!(matches!(
            table.check(fields(1, 0, 2), 1),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn limits_forget_idle_and_least_recent_producers() {
        let mut table = ProducerTable::default();
        for id in 0..4 {
            table.record(&header(id, 0, 0, 1, 100 * id as u64), LIMITS);
        }
        assert_eq!(table.len(), 3);
        assert!(table.get(0).is_none(), "the least recent went first");
        assert_eq!(table.expire(1150, LIMITS), 1);
        assert!(table.get(1).is_none());
    }

    #[test]
    fn snapshots_read_back_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = ProducerTable::default();
        table.record(&header(5, 1, 0, 4, 0), LIMITS);
        table.record(&header(6, 0, 0, 1, 4), LIMITS);
        store_snapshot(dir.path(), 5, &table).unwrap();
        assert_eq!(load_snapshot(dir.path(), 10).unwrap(), Some((5, table.clone())));
        assert_eq!(load_snapshot(dir.path(), 4).unwrap(), None);
        let path = snapshot_path(dir.path(), 5);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[14] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(load_snapshot(dir.path(), 10).unwrap(), None);
        for offset in [6, 7, 8] {
            store_snapshot(dir.path(), offset, &table).unwrap();
        }
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), [8, 7]);
        delete_snapshots_after(dir.path(), 7).unwrap();
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), [7]);
    }
}
