//! A partition: an ordered list of segments, one writer, any number of
//! lock-free readers.
//!
//! Appends serialize on the writer mutex: assign the base offset, write the
//! batch into the active segment's mapping, publish its end, index it, then
//! advance the high watermark. Readers take a snapshot of the segment list
//! (an `Arc` behind a lock held only to clone it) and read published bytes
//! without ever waiting for the writer.

mod idempotence;
mod restart;
mod truncate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use spool_format::FormatError;
use spool_format::batch::{self, Batch, BatchHeader, BatchLimits, Record, RecordView};

use crate::checkpoint::RecoveryPoint;
use crate::config::TopicConfig;
use crate::context::StoreContext;
use crate::error::{Error, Result};
use crate::flusher::FlushTarget;
use crate::observer::FlushReport;
use crate::producers::ProducerTable;
pub use crate::recovery::PartitionRecovery;
use crate::recovery::{self, Recovered};
use crate::retention::{Retention, SegmentSummary, segments_below};
use crate::segment::{Damage, Segment, SegmentSettings, SegmentWriter, record_position};
use crate::terms::{TERM_MAX, TermLog, TermStart};
use crate::vote::{Vote, VoteFile};
use crate::watch::{OffsetWatch, WaitFor, WatchEnd};

/// How durable an append must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// In the page cache: survives a crash of the process, not of the
    /// machine.
    None,
    /// On disk (fsync), group-committed with other appends.
    Fsync,
}

/// What an append achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub last_offset: u64,
    /// Time the batch was appended; records without a timestamp carry it.
    pub append_time_ms: i64,
    pub durability: Durability,
    /// The batch was an idempotent producer's retry of a batch the
    /// partition already holds: nothing was appended, and the offsets are
    /// the original's.
    pub duplicate: bool,
}

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches; the first may start before the requested offset.
    pub batches: Vec<Batch>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// How far the reader may read: the high watermark, or for
    /// [`Partition::read_committed`] the committed offset.
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// A snapshot of a partition's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// Offsets below this are on disk.
    pub durable_offset: u64,
    pub size_bytes: u64,
    pub segment_count: u64,
}

/// Counts of what went through a partition since it was opened, for
/// metrics. Kept with relaxed atomic adds: a snapshot may be a moment
/// behind the log, never ahead of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub appended_records: u64,
    /// Encoded batch bytes appended, headers included.
    pub appended_bytes: u64,
    /// Records handed to consumers, as counted by
    /// [`Partition::count_fetched`].
    pub fetched_records: u64,
    /// Stored batch bytes those records came from.
    pub fetched_bytes: u64,
}

#[derive(Debug, Default)]
struct StatCounters {
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    fetched_records: AtomicU64,
    fetched_bytes: AtomicU64,
}

/// A handle to one partition. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Partition {
    shared: Arc<PartitionShared>,
}

#[derive(Debug)]
pub(crate) struct PartitionShared {
    topic: String,
    id: u32,
    dir: PathBuf,
    settings: SegmentSettings,
    segment_ms_max: u64,
    /// The topic's retention, or what the server set for one of its
    /// internal topics ([`Partition::set_retention`]). Read once per
    /// retention pass.
    retention: Mutex<Retention>,
    context: Arc<StoreContext>,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// `None` once the partition is closed.
    writer: Mutex<Option<SegmentWriter>>,
    high_watermark: Arc<OffsetWatch>,
    durable: Arc<OffsetWatch>,
    /// Offsets below this are committed by consensus; never truncated.
    /// Starts at the log start: nothing is known committed until the
    /// owner of the log says so.
    committed: Arc<OffsetWatch>,
    log_start: AtomicU64,
    poisoned: AtomicBool,
    flush_queued: AtomicBool,
    stats: StatCounters,
    /// Serializes flushes and checkpoints of this partition.
    flush_lock: Mutex<Option<RecoveryPoint>>,
    /// The term of every offset (`terms.rs`). Changed only under the
    /// writer lock, before the batch that needs the change is written.
    terms: Mutex<TermLog>,
    /// True once the partition has a term list: until then an append in
    /// term 0 (every single-node append) skips the lock above.
    terms_in_use: AtomicBool,
    /// The Raft vote (`vote.rs`); the lock serializes stores.
    vote: Mutex<VoteFile>,
    /// The idempotent producers of the log (`producers.rs`). Changed only
    /// under the writer lock, taken after it.
    producers: Mutex<ProducerTable>,
}

fn summarize(segments: &[Arc<Segment>]) -> Vec<SegmentSummary> {
    segments
        .iter()
        .map(|segment| SegmentSummary {
            base_offset: segment.base_offset(),
            next_offset: segment.next_offset(),
            max_timestamp_ms: segment.max_timestamp_ms(),
            size_bytes: segment.size_bytes(),
        })
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, recovering it: `clean`
    /// says the store was shut down cleanly, so files are trusted up to the
    /// recovery point without a scan.
    pub(crate) fn open(
        topic: &str,
        id: u32,
        dir: &Path,
        config: &TopicConfig,
        context: &Arc<StoreContext>,
        clean: bool,
    ) -> Result<(Partition, PartitionRecovery)> {
        crate::fsutil::ensure_dir_durable(dir, !clean)?;
        let settings = SegmentSettings {
            segment_bytes_max: config.segment_bytes_max,
            index_interval_bytes: context.config.index_interval_bytes,
            preallocate_bytes: context.config.preallocate_bytes,
            faults: context.config.faults.clone(),
        };
        // A restart interrupted by a crash is finished before recovery
        // reads a segment, so that it finds the old log or the new one.
        restart::finish_pending(dir, &settings)?;
        let Recovered {
            segments,
            writer,
            point,
            report,
        } = recovery::recover(topic, id, dir, &settings, clean)?;
        let terms = TermLog::load(dir)?;
        let vote = VoteFile::load(dir)?;

        let high_watermark = writer.segment().next_offset();
        let log_start = segments[0].base_offset();
        context
            .open_segments
            .fetch_add(segments.len() as u64, Ordering::SeqCst);
        let shared = Arc::new(PartitionShared {
            topic: topic.to_owned(),
            id,
            dir: dir.to_owned(),
            settings,
            segment_ms_max: config.segment_ms_max,
            retention: Mutex::new(Retention {
                ms: config.retention_ms,
                bytes: config.retention_bytes,
            }),
            context: Arc::clone(context),
            segments: RwLock::new(Arc::new(segments)),
            writer: Mutex::new(Some(writer)),
            high_watermark: Arc::new(OffsetWatch::new(high_watermark)),
            // Everything recovered was synced by the scan or trusted.
            durable: Arc::new(OffsetWatch::new(high_watermark)),
            committed: Arc::new(OffsetWatch::new(log_start)),
            log_start: AtomicU64::new(log_start),
            poisoned: AtomicBool::new(false),
            flush_queued: AtomicBool::new(false),
            stats: StatCounters::default(),
            flush_lock: Mutex::new(point),
            terms_in_use: AtomicBool::new(!terms.is_empty()),
            terms: Mutex::new(terms),
            vote: Mutex::new(vote),
            producers: Mutex::new(ProducerTable::default()),
        });
        shared.rebuild_producers()?;
        Ok((Partition { shared }, report))
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The partition's directory, for the owner of a replicated log to keep
    /// its own small files beside the segments (spool-raft's
    /// `raft-entries` and `raft-commit`, `docs/storage-format.md` sections
    /// 14 and 15). Recovery leaves files it does not know alone, except
    /// `.tmp` files, which it removes as leftovers of an atomic write.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn high_watermark(&self) -> u64 {
        self.shared.high_watermark.get()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.shared.log_start.load(Ordering::Acquire)
    }

    /// True when `offset` lies in the active (last) segment: the batches
    /// this process wrote most recently, or recovered at open by reading
    /// them, so reading them normally touches only pages in memory. A
    /// server uses it to read small chunks on the calling thread instead of
    /// a blocking pool.
    pub fn in_active_segment(&self, offset: u64) -> bool {
        self.segments()
            .last()
            .is_some_and(|active| offset >= active.base_offset())
    }

    pub fn durable_offset(&self) -> u64 {
        self.shared.durable.get()
    }

    /// True once a failed write or fsync made the partition refuse appends
    /// (until the store is reopened).
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// Counts `records` handed to a consumer out of `bytes` of stored
    /// batches. The engine's own reads (replay, lookups) are not fetches:
    /// whoever serves consumers calls this, so that the counts say what
    /// consumers received.
    pub fn count_fetched(&self, records: u64, bytes: u64) {
        let stats = &self.shared.stats;
        stats.fetched_records.fetch_add(records, Ordering::Relaxed);
        stats.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// What went through the partition since it was opened.
    pub fn stats(&self) -> PartitionStats {
        let stats = &self.shared.stats;
        PartitionStats {
            appended_records: stats.appended_records.load(Ordering::Relaxed),
            appended_bytes: stats.appended_bytes.load(Ordering::Relaxed),
            fetched_records: stats.fetched_records.load(Ordering::Relaxed),
            fetched_bytes: stats.fetched_bytes.load(Ordering::Relaxed),
        }
    }

    /// The store's limits; an internal topic's records are held only to
    /// the batch limit. The server alone writes those, and what it writes
    /// is bounded where it is made (a job's payload by the job layer's own
    /// limit, a metrics sample by the series it holds), so the record limit
    /// an operator sets for clients (say 1 KiB) must not make a job event
    /// or a metrics sample unwritable.
    fn limits(&self) -> BatchLimits {
        let config = &self.shared.context.config;
        let record_bytes_max = if crate::is_internal_topic(&self.shared.topic) {
            config.batch_bytes_max
        } else {
            config.record_bytes_max
        };
        BatchLimits {
            record_bytes_max,
            batch_bytes_max: config.batch_bytes_max,
        }
    }

    /// The limits a batch must meet for every append to accept it: the
    /// store's record and batch limits, with the batch limit capped by the
    /// topic's `segment_bytes_max` (a batch never spans segments). For a
    /// caller that must refuse a batch before it commits to appending it,
    /// as a Raft leader does before proposing it.
    pub fn batch_limits(&self) -> BatchLimits {
        let limits = self.limits();
        BatchLimits {
            batch_bytes_max: limits.batch_bytes_max.min(self.shared.settings.segment_bytes_max),
            ..limits
        }
    }

    /// Appends `records` as one batch. With [`Durability::Fsync`] the call
    /// blocks until a flush covers the batch: call it from a thread that may
    /// block (not an async runtime's worker), or append with
    /// [`Durability::None`] and await [`Partition::wait_durable`].
    ///
    /// The batch is in term 0, as every batch of a partition that is not
    /// replicated: see [`Partition::append_in_term`].
    pub fn append(&self, records: &[Record<'_>], durability: Durability) -> Result<AppendOutcome> {
        self.append_in_term(records, 0, durability)
    }

    /// Appends `records` as one batch of Raft term `term`: the term is
    /// stamped into the batch header's leader-epoch field and, when it is
    /// newer than the last batch's, recorded in the partition's term list
    /// before the batch is written. Fails with [`Error::TermRegression`] if
    /// `term` is older than the last batch's, and with
    /// [`Error::LimitExceeded`] (`term_max`) above `i32::MAX`, the largest
    /// value the header field holds. Term 0 writes no term list.
    pub fn append_in_term(
        &self,
        records: &[Record<'_>],
        term: u64,
        durability: Durability,
    ) -> Result<AppendOutcome> {
        let now = now_ms();
        let plan = batch::plan(records, now, self.limits())?;
        let header = self.shared.append_with(
            plan.total_bytes as u64,
            plan.record_count,
            term,
            now,
            |buffer, base_offset| {
                batch::encode(buffer, base_offset, records, &plan, now);
                if term != 0 {
                    batch::stamp_leader_epoch(buffer, term as i32);
                }
                Ok(BatchHeader::parse(buffer)?)
            },
        )?;
        self.finish(header, now, durability)
    }

    /// Appends a batch that arrived already encoded in the storage format:
    /// checks its length, CRC and records, stamps the base offset, and
    /// copies it in without decoding a record again.
    pub fn append_encoded(&self, encoded: &[u8], durability: Durability) -> Result<AppendOutcome> {
        self.append_encoded_in_term(encoded, 0, durability)
    }

    /// [`Partition::append_encoded`] in Raft term `term`, with the term
    /// handled as [`Partition::append_in_term`] handles it. In term 0 the
    /// leader-epoch field keeps what the encoder wrote, as it always has.
    pub fn append_encoded_in_term(
        &self,
        encoded: &[u8],
        term: u64,
        durability: Durability,
    ) -> Result<AppendOutcome> {
        let now = now_ms();
        let header = batch::validate_encoded(encoded, self.limits())?;
        if let Some(fields) = header.producer() {
            let (header, duplicate) = self
                .shared
                .append_idempotent(encoded, header, fields, term, now)?;
            let outcome = self.finish(header, now, durability)?;
            return Ok(AppendOutcome { duplicate, ..outcome });
        }
        let header = self.shared.append_with(
            encoded.len() as u64,
            header.record_count,
            term,
            now,
            |buffer, base_offset| {
                buffer.copy_from_slice(encoded);
                batch::stamp_base_offset(buffer, base_offset);
                let mut leader_epoch = header.leader_epoch;
                if term != 0 {
                    leader_epoch = term as i32;
                    batch::stamp_leader_epoch(buffer, leader_epoch);
                }
                Ok(BatchHeader {
                    base_offset,
                    leader_epoch,
                    ..header
                })
            },
        )?;
        self.finish(header, now, durability)
    }

    /// Appends batches that a leader encoded and numbered, as a follower
    /// does: `batches` holds one encoded batch per element, in offset order,
    /// all of Raft term `term`. They are copied byte for byte (base offsets
    /// and leader epochs are the leader's, nothing is stamped).
    ///
    /// Checked before anything is written, each failure a typed error that
    /// leaves the partition as it was: every batch passes the header,
    /// length and CRC checks of a stored batch and is within
    /// `batch_bytes_max` and `segment_bytes_max` ([`Error::InvalidBatch`],
    /// [`Error::LimitExceeded`]); its leader epoch is `term`
    /// ([`Error::BatchTermMismatch`]); the first starts at the high
    /// watermark and each later one where the one before it ends
    /// ([`Error::UnexpectedBaseOffset`]); `term` is not older than the
    /// log's last term ([`Error::TermRegression`]). Records are not decoded
    /// again: the leader validated them, and the CRC shows they are the
    /// bytes it stored. An I/O failure part way (a full disk at a segment
    /// roll) can leave a prefix of the batches appended; the high watermark
    /// says how far.
    ///
    /// With [`Durability::Fsync`] the call returns once every batch is on
    /// disk, as [`Partition::append`] does.
    pub fn append_replicated<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
        term: u64,
        durability: Durability,
    ) -> Result<AppendOutcome> {
        let now = now_ms();
        let (base_offset, last_offset) = self.shared.append_replicated(batches, term, now)?;
        if durability == Durability::Fsync {
            self.wait_durable_blocking(last_offset + 1)?;
        }
        Ok(AppendOutcome {
            base_offset,
            last_offset,
            append_time_ms: now,
            durability,
            duplicate: false,
        })
    }

    /// The Raft term `offset` was appended in, from the partition's term
    /// list (never from the batch header); `None` if the log does not hold
    /// `offset`. Offsets appended without a term are in term 0.
    pub fn term_at(&self, offset: u64) -> Option<u64> {
        let terms = self.shared.terms.lock().expect("terms lock");
        let in_log = offset >= self.log_start_offset() && offset < self.high_watermark();
        in_log.then(|| terms.term_at(offset))
    }

    /// The term of the log's last batch (0 for a log that never saw a term,
    /// and for an empty one that never had a batch in a term).
    pub fn last_term(&self) -> u64 {
        let terms = self.shared.terms.lock().expect("terms lock");
        terms.last_term(self.high_watermark())
    }

    /// The partition's Raft vote: term 0 and no vote until one is saved.
    pub fn vote(&self) -> Vote {
        self.shared.vote.lock().expect("vote lock").vote()
    }

    /// Saves `vote` durably (the file is fsynced and renamed into place
    /// before this returns). Refused with [`Error::VoteRegression`], and
    /// nothing written, if it would go back: to an older term, to another
    /// node in the term already voted in, or from committed to not.
    pub fn save_vote(&self, vote: Vote) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.shared.poisoned_error());
        }
        self.shared.vote.lock().expect("vote lock").store(vote)
    }

    /// The partition's term list as stored: where each term after 0 starts.
    /// An entry may start at or past the end of the log after a crash or a
    /// failed append; it describes no batch and the next append removes it.
    pub fn term_starts(&self) -> Vec<TermStart> {
        self.shared.terms.lock().expect("terms lock").entries().to_vec()
    }

    fn finish(&self, header: BatchHeader, now: i64, durability: Durability) -> Result<AppendOutcome> {
        if durability == Durability::Fsync {
            self.shared.request_flush();
            self.shared
                .durable
                .wait_blocking(header.next_offset(), None)
                .map_err(|end| self.shared.end_error(end))?;
        }
        Ok(AppendOutcome {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            append_time_ms: now,
            durability,
            duplicate: false,
        })
    }

    /// A future that resolves once every offset below `offset` is on disk,
    /// starting a flush if needed. Needs no particular async runtime.
    pub fn wait_durable(&self, offset: u64) -> WaitFor {
        if self.shared.durable.get() < offset {
            self.shared.request_flush();
        }
        self.shared.durable.wait(offset)
    }

    /// Blocks until every offset below `offset` is on disk, starting a
    /// flush if needed. Fails if the partition is poisoned or closed first.
    pub fn wait_durable_blocking(&self, offset: u64) -> Result<()> {
        if self.shared.durable.get() < offset {
            self.shared.request_flush();
        }
        self.shared
            .durable
            .wait_blocking(offset, None)
            .map(|_| ())
            .map_err(|end| self.shared.end_error(end))
    }

    /// Asks the flusher to make everything appended so far durable, without
    /// waiting: for a writer that appends with [`Durability::None`] and lets
    /// others await [`Partition::wait_durable`].
    pub fn request_flush(&self) {
        if self.shared.durable.get() < self.shared.high_watermark.get() {
            self.shared.request_flush();
        }
    }

    /// Flushes everything appended so far on the calling thread.
    pub fn flush(&self) -> Result<()> {
        self.shared.flush()
    }

    /// A future that resolves once `offset` is readable (the high watermark
    /// passes it), for long polls. Fails if the partition is closed.
    pub fn wait_readable(&self, offset: u64) -> WaitFor {
        self.shared.high_watermark.wait(offset.saturating_add(1))
    }

    /// Blocks until `offset` is readable or the timeout passes; returns the
    /// high watermark.
    pub fn wait_readable_blocking(&self, offset: u64, timeout: Duration) -> Result<u64> {
        self.shared
            .high_watermark
            .wait_blocking(offset.saturating_add(1), Some(timeout))
            .map_err(|end| self.shared.end_error(end))
    }

    fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        self.shared.segments()
    }

    /// Reads whole batches from the one holding `offset`, up to about
    /// `max_bytes` (at least one batch when any is available).
    pub fn read(&self, offset: u64, max_bytes: u64) -> Result<ReadResult> {
        self.read_below(offset, u64::MAX, max_bytes, false)
    }

    /// [`Partition::read`] that returns only batches starting below
    /// `end_offset`: for a reader that knows where what it wants ends, so
    /// that it neither decodes nor checks the batches after it. At least
    /// the batch holding `offset` is returned, as with `read`.
    pub fn read_until(&self, offset: u64, end_offset: u64, max_bytes: u64) -> Result<ReadResult> {
        self.read_below(offset, end_offset, max_bytes, false)
    }

    /// [`Partition::read`] bounded by the committed offset instead of the
    /// high watermark: only batches wholly below
    /// [`Partition::committed_offset`] are served, so a reader never sees a
    /// record that a later truncation removes. The result's
    /// `high_watermark` is the committed offset, and an `offset` past it is
    /// [`Error::OffsetOutOfRange`] with the committed offset as `latest`.
    /// Opt-in: a partition that is not replicated is read with
    /// [`Partition::read`].
    pub fn read_committed(&self, offset: u64, max_bytes: u64) -> Result<ReadResult> {
        self.read_below(offset, u64::MAX, max_bytes, true)
    }

    /// Offsets below this are committed: consensus will never remove them.
    /// Starts at the log start when the partition opens (it is not stored:
    /// the owner of the log, which persists its own commit, sets it again).
    pub fn committed_offset(&self) -> u64 {
        self.shared.committed.get()
    }

    /// Moves the committed offset up to `offset`. Never moves it back: a
    /// lower value is ignored, as a stale commit message would be. Refused
    /// with [`Error::CommitBeyondDurable`] past the durable offset: a
    /// replica commits only what it holds on disk.
    pub fn set_committed(&self, offset: u64) -> Result<()> {
        // Under the writer lock, so no truncation moves the durable offset
        // back between the check and the update.
        let _writer = self.shared.lock_writer();
        let durable = self.shared.durable.get();
        if offset > durable {
            return Err(Error::CommitBeyondDurable {
                requested: offset,
                durable,
            });
        }
        self.shared.committed.advance(offset);
        Ok(())
    }

    /// A future that resolves once `offset` is committed (the committed
    /// offset passes it), for long polls in the committed read mode.
    pub fn wait_committed(&self, offset: u64) -> WaitFor {
        self.shared.committed.wait(offset.saturating_add(1))
    }

    fn read_below(
        &self,
        offset: u64,
        end_offset: u64,
        max_bytes: u64,
        committed: bool,
    ) -> Result<ReadResult> {
        let bound = || {
            if committed {
                self.committed_offset()
            } else {
                self.high_watermark()
            }
        };
        // The bound first: the segment list read after it holds every
        // batch below it (the committed offset never passes the high
        // watermark).
        let high_watermark = bound();
        let segments = self.segments();
        let log_start_offset = self.log_start_offset();
        if offset < log_start_offset || offset > high_watermark {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                earliest: log_start_offset,
                latest: high_watermark,
            });
        }
        let mut batches = Vec::new();
        let mut next_offset = offset;
        let mut budget = max_bytes;
        let mut i = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        while next_offset < high_watermark && i < segments.len() {
            let segment = &segments[i];
            let mut used = segment
                .read(next_offset, end_offset, budget, &mut batches)
                .map_err(|damage| self.shared.corrupt(segment, damage))?;
            // The writer publishes a batch's bytes just before it raises the
            // high watermark; serve nothing past the bound read above. The
            // high watermark lies between batches; the committed offset may
            // not, and a batch it cuts is not served yet.
            while batches.last().is_some_and(|b| b.last_offset() >= high_watermark) {
                used -= batches.pop().map_or(0, |b| b.bytes().len() as u64);
            }
            if let Some(last) = batches.last() {
                next_offset = last.last_offset() + 1;
            }
            budget = budget.saturating_sub(used);
            if budget == 0
                || next_offset >= high_watermark.min(end_offset)
                || next_offset < segment.next_offset()
            {
                break;
            }
            i += 1;
        }
        Ok(ReadResult {
            batches,
            next_offset,
            high_watermark: bound().max(next_offset),
            log_start_offset,
        })
    }

    /// Calls `visit` with every record from `from` up to the high watermark
    /// seen when the scan starts, in offset order, until it returns
    /// `Break`. Returns the offset after the last record visited. For
    /// replaying a log into state at start-up and for history lookups.
    pub fn scan(
        &self,
        from: u64,
        mut visit: impl FnMut(&Batch, &RecordView<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<u64> {
        let end = self.high_watermark();
        let mut offset = from.max(self.log_start_offset());
        while offset < end {
            let read = self.read(offset, 4 << 20)?;
            for batch in &read.batches {
                for record in self.records(batch) {
                    let record = record?;
                    if record.offset < offset {
                        continue;
                    }
                    if record.offset >= end {
                        return Ok(end);
                    }
                    let next = record.offset + 1;
                    if visit(batch, &record).is_break() {
                        return Ok(next);
                    }
                }
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        Ok(offset.min(end))
    }

    /// The records of `batch`, a batch read from this partition. A record
    /// that does not decode ends the iteration with [`Error::Corrupt`]
    /// naming where it lies (behind a matching CRC that means the batch was
    /// encoded wrongly, since batches are validated before they are stored).
    pub fn records<'a>(&'a self, batch: &'a Batch) -> impl Iterator<Item = Result<RecordView<'a>>> + 'a {
        batch
            .records()
            .map(move |record| record.map_err(|error| self.shared.corrupt_batch(batch, error)))
    }

    /// The first offset whose record timestamp is at least `timestamp_ms`,
    /// or `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        for segment in self.segments().iter() {
            let found = segment
                .offset_for_timestamp(timestamp_ms)
                .map_err(|damage| self.shared.corrupt(segment, damage))?;
            if let Some(offset) = found {
                return Ok(Some(offset.max(self.log_start_offset())));
            }
        }
        Ok(None)
    }

    pub fn info(&self) -> PartitionInfo {
        let segments = self.segments();
        PartitionInfo {
            log_start_offset: self.log_start_offset(),
            high_watermark: self.high_watermark(),
            durable_offset: self.durable_offset(),
            size_bytes: segments.iter().map(|s| s.size_bytes()).sum(),
            segment_count: segments.len() as u64,
        }
    }

    /// Deletes closed segments past the topic's retention; returns how many.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let retention = *self.shared.retention.lock().expect("retention lock");
        if retention.keeps_everything() {
            return Ok(0);
        }
        self.shared
            .delete_oldest(|segments| retention.segments_to_delete(segments, now_ms))
    }

    /// The log start offset that `retention` would leave at `now_ms`: the
    /// base offset of the oldest segment it would keep. Deletes nothing. For
    /// an owner of the log that keeps records past a retention of its own
    /// choosing: it bounds this by the offset it still needs and hands the
    /// result to [`delete_segments_below`](Self::delete_segments_below).
    pub fn retention_start(&self, retention: &Retention, now_ms: i64) -> u64 {
        let segments = self.segments();
        let summaries = summarize(&segments);
        let remove = retention.segments_to_delete(&summaries, now_ms);
        segments
            .get(remove)
            .map_or_else(|| self.log_start_offset(), |segment| segment.base_offset())
    }

    /// The log start offset that [`delete_segments_below`](Self::delete_segments_below)
    /// with `offset` would leave now: the base offset of the first segment
    /// it would keep. Deletes nothing. For an owner of the log that must
    /// record where its log will start before the segments go (spool-raft's
    /// purge); a roll in between changes nothing, since a segment rolled
    /// later starts at or past every offset below the high watermark.
    pub fn start_after_deleting_below(&self, offset: u64) -> u64 {
        let segments = self.segments();
        let remove = segments_below(&summarize(&segments), offset);
        segments
            .get(remove)
            .map_or_else(|| self.log_start_offset(), |segment| segment.base_offset())
    }

    /// Deletes the closed segments whose records all lie below `offset`,
    /// oldest first, and moves the log start to the first segment kept;
    /// returns how many. The active segment is never deleted.
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        self.shared
            .delete_oldest(|segments| segments_below(segments, offset))
    }

    /// Replaces the retention this partition enforces from now on, in
    /// memory only: for the server's internal topics, whose retention is a
    /// server setting applied at every start rather than the topic's stored
    /// configuration. `None` keeps forever.
    pub fn set_retention(&self, retention_ms: Option<u64>, retention_bytes: Option<u64>) {
        *self.shared.retention.lock().expect("retention lock") = Retention {
            ms: retention_ms,
            bytes: retention_bytes,
        };
    }

    /// Flushes and records the recovery point.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.checkpoint()
    }

    pub(crate) fn shared(&self) -> &Arc<PartitionShared> {
        &self.shared
    }
}

impl PartitionShared {
    fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.segments.read().expect("segment list lock"))
    }

    /// The error for damage found in `segment` of this partition.
    fn corrupt(&self, segment: &Segment, damage: Damage) -> Error {
        segment.corrupt(&self.topic, self.id, damage)
    }

    /// The error for a batch read from this partition whose records do not
    /// decode: [`Error::Corrupt`] at the record's place in its segment.
    fn corrupt_batch(&self, batch: &Batch, error: FormatError) -> Error {
        let base_offset = batch.base_offset();
        let segments = self.segments();
        let holder = segments
            .iter()
            .rev()
            .find(|segment| segment.base_offset() <= base_offset && base_offset < segment.next_offset());
        let Some(segment) = holder else {
            // Retention deleted the batch's segment after the read: its
            // offsets are gone from the log, which is what a reader asking
            // again would hear.
            tracing::warn!(topic = %self.topic, partition = self.id, base_offset, %error, "a batch that does not decode was deleted by retention");
            return Error::OffsetOutOfRange {
                requested: base_offset,
                earliest: self.log_start.load(Ordering::Acquire),
                latest: self.high_watermark.get(),
            };
        };
        let damage = match segment.position_of(base_offset) {
            Ok(Some(position)) => Damage {
                position: position + record_position(&error),
                first_offset: base_offset,
                last_offset: batch.last_offset(),
                reason: error.to_string(),
            },
            Ok(None) => Damage {
                position: 0,
                first_offset: base_offset,
                last_offset: batch.last_offset(),
                reason: format!("{error} (the batch is no longer where it was read)"),
            },
            Err(damage) => damage,
        };
        self.corrupt(segment, damage)
    }

    fn end_error(&self, end: WatchEnd) -> Error {
        match end {
            WatchEnd::Closed => Error::Closed,
            WatchEnd::Poisoned => self.poisoned_error(),
        }
    }

    fn poisoned_error(&self) -> Error {
        Error::Poisoned {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, Option<SegmentWriter>> {
        self.writer.lock().expect("partition writer lock")
    }

    /// The writer lock, for an append: refused when the partition is
    /// poisoned or closed.
    fn lock_writer_for_append(&self) -> Result<MutexGuard<'_, Option<SegmentWriter>>> {
        let slot = self.lock_writer();
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.poisoned_error());
        }
        if slot.is_none() {
            return Err(Error::Closed);
        }
        Ok(slot)
    }

    fn append_with(
        &self,
        len: u64,
        record_count: u32,
        term: u64,
        now: i64,
        encode: impl FnOnce(&mut [u8], u64) -> Result<BatchHeader>,
    ) -> Result<BatchHeader> {
        self.check_segment_room(len)?;
        let mut slot = self.lock_writer_for_append()?;
        let base_offset = self.high_watermark.get();
        // Every single-node append is in term 0 on a partition without a
        // term list: one load and a branch, checked here so that the call
        // below stays off the hot path.
        if term != 0 || self.terms_in_use.load(Ordering::Acquire) {
            self.prepare_term(term, base_offset)?;
        }
        self.append_locked(&mut slot, len, record_count, base_offset, now, encode)
    }

    /// Appends batches encoded by a leader, byte for byte, after checking
    /// them all (`Partition::append_replicated` documents the checks).
    fn append_replicated<B: AsRef<[u8]>>(&self, batches: &[B], term: u64, now: i64) -> Result<(u64, u64)> {
        let limits = BatchLimits {
            record_bytes_max: self.context.config.record_bytes_max,
            batch_bytes_max: self.context.config.batch_bytes_max,
        };
        let mut headers = Vec::with_capacity(batches.len());
        for bytes in batches {
            let bytes = bytes.as_ref();
            let len_max = limits.batch_bytes_max.min(self.settings.segment_bytes_max);
            if bytes.len() as u64 > len_max {
                let limit = if len_max == limits.batch_bytes_max {
                    "batch_bytes_max"
                } else {
                    "segment_bytes_max"
                };
                return Err(Error::LimitExceeded {
                    limit,
                    actual: bytes.len() as u64,
                    max: len_max,
                });
            }
            let header = batch::verify(bytes)?;
            if u64::try_from(header.leader_epoch).ok() != Some(term) {
                return Err(Error::BatchTermMismatch {
                    base_offset: header.base_offset,
                    header_epoch: header.leader_epoch,
                    term,
                });
            }
            if let Some(previous) = headers.last().map(BatchHeader::next_offset)
                && header.base_offset != previous
            {
                return Err(Error::UnexpectedBaseOffset {
                    expected: previous,
                    found: header.base_offset,
                });
            }
            headers.push(header);
        }
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Err(FormatError::EmptyBatch.into());
        };
        let mut slot = self.lock_writer();
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.poisoned_error());
        }
        if slot.is_none() {
            return Err(Error::Closed);
        }
        let end = self.high_watermark.get();
        if first.base_offset != end {
            return Err(Error::UnexpectedBaseOffset {
                expected: end,
                found: first.base_offset,
            });
        }
        self.prepare_term(term, end)?;
        for (bytes, header) in batches.iter().zip(&headers) {
            let bytes = bytes.as_ref();
            self.append_locked(
                &mut slot,
                bytes.len() as u64,
                header.record_count,
                header.base_offset,
                now,
                |buffer, _| {
                    buffer.copy_from_slice(bytes);
                    Ok(*header)
                },
            )?;
        }
        Ok((first.base_offset, last.last_offset()))
    }

    /// Writes one batch at `base_offset`, the high watermark, rolling
    /// first if the active segment is full or old, and publishes it.
    #[inline]
    fn append_locked(
        &self,
        slot: &mut MutexGuard<'_, Option<SegmentWriter>>,
        len: u64,
        record_count: u32,
        base_offset: u64,
        now: i64,
        encode: impl FnOnce(&mut [u8], u64) -> Result<BatchHeader>,
    ) -> Result<BatchHeader> {
        let writer = slot.as_mut().expect("writer present");
        let expired = writer
            .first_batch_ms()
            .is_some_and(|first| now.saturating_sub(first) >= self.segment_ms_max as i64);
        if expired || !writer.has_room(len, base_offset, record_count) {
            self.roll(slot, base_offset)?;
        }
        let writer = slot.as_mut().expect("writer present");
        let header = writer.append(len, now, |buffer| encode(buffer, base_offset))?;
        if header.producer_id != -1 {
            self.record_producer(&header);
        }
        self.high_watermark.advance(header.next_offset());
        self.stats
            .appended_records
            .fetch_add(u64::from(header.record_count), Ordering::Relaxed);
        self.stats.appended_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(header)
    }

    /// Makes the term list right for a batch of `term` about to be written
    /// at `end`, under the writer lock. The list is written before the
    /// batch, so a crash never leaves a batch whose term is not recorded;
    /// a failed write poisons the partition, since the file on disk may
    /// then be either version.
    #[cold]
    #[inline(never)]
    fn prepare_term(&self, term: u64, end: u64) -> Result<()> {
        if term == 0 && !self.terms_in_use.load(Ordering::Acquire) {
            return Ok(());
        }
        if term > TERM_MAX {
            return Err(Error::LimitExceeded {
                limit: "term_max",
                actual: term,
                max: TERM_MAX,
            });
        }
        let mut terms = self.terms.lock().expect("terms lock");
        let log_start = self.log_start.load(Ordering::Acquire);
        match terms.prepare_append(term, end, log_start) {
            Ok(()) => {
                self.terms_in_use.store(!terms.is_empty(), Ordering::Release);
                Ok(())
            }
            Err(error @ Error::TermRegression { .. }) => Err(error),
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.id, %error, "writing the term list failed; refusing further appends");
                self.poison();
                Err(error)
            }
        }
    }

    /// Starts a new segment at `base_offset`. The new segment's files exist
    /// and are allocated before the old one is sealed, so a full disk leaves
    /// the partition as it was.
    fn roll(&self, slot: &mut Option<SegmentWriter>, base_offset: u64) -> Result<()> {
        let context = &self.context;
        self.snapshot_producers(base_offset);
        let open = context.open_segments.fetch_add(1, Ordering::SeqCst) + 1;
        if open > context.config.open_segments_max {
            context.open_segments.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::LimitExceeded {
                limit: "open_segments_max",
                actual: open,
                max: context.config.open_segments_max,
            });
        }
        let new = match SegmentWriter::create(&self.dir, base_offset, &self.settings) {
            Ok(new) => new,
            Err(error) => {
                context.open_segments.fetch_sub(1, Ordering::SeqCst);
                return Err(error);
            }
        };
        let new_segment = Arc::clone(new.segment());
        let old = slot.replace(new).expect("writer present");
        {
            let mut list = self.segments.write().expect("segment list lock");
            let mut segments = Vec::clone(&list);
            segments.push(new_segment);
            *list = Arc::new(segments);
        }
        if let Err(error) = old.seal() {
            // The sealed file's length on disk is now unknown.
            self.poison();
            return Err(error);
        }
        tracing::debug!(topic = %self.topic, partition = self.id, base_offset, "rolled a new segment");
        Ok(())
    }

    fn poison(&self) {
        let already = self.poisoned.swap(true, Ordering::SeqCst);
        self.durable.end(WatchEnd::Poisoned);
        if !already && let Some(observer) = &self.context.config.observer {
            observer.poisoned(&self.topic, self.id);
        }
    }

    fn request_flush(self: &Arc<Self>) {
        if !self.context.flusher.request(self) {
            // The flusher has stopped (store closing): flush here.
            let _ = self.flush();
        }
    }

    /// Syncs every published byte and advances the durable offset. On
    /// failure the partition is poisoned: after a failed fsync the kernel
    /// may have dropped the dirty pages, so retrying could report success
    /// for data that is gone.
    fn flush(&self) -> Result<()> {
        let _serial = self.flush_lock.lock().expect("flush lock");
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.poisoned_error());
        }
        let target = self.high_watermark.get();
        let durable = self.durable.get();
        if target <= durable {
            return Ok(());
        }
        let started = Instant::now();
        let segments = self.segments();
        let faults = self.context.config.faults.as_deref();
        for segment in segments.iter().rev() {
            if segment.synced_len() >= segment.size_bytes() && segment.next_offset() <= self.durable.get() {
                break;
            }
            if let Err(error) = segment.sync_log(faults) {
                tracing::error!(topic = %self.topic, partition = self.id, %error, "flush failed; refusing further appends");
                self.poison();
                return Err(error);
            }
        }
        self.context.flushes.fetch_add(1, Ordering::Relaxed);
        // Reported before the waiters wake, so a flush is counted by the
        // time any append it made durable is acknowledged.
        if let Some(observer) = &self.context.config.observer {
            observer.flushed(&FlushReport {
                topic: &self.topic,
                partition: self.id,
                records: target - durable,
                elapsed: started.elapsed(),
            });
        }
        self.durable.advance(target);
        Ok(())
    }

    /// Flushes, syncs the indexes of the segments the recovery point moves
    /// past, and writes the new recovery point.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut last_point = self.flush_lock.lock().expect("flush lock");
        let point = {
            let slot = self.lock_writer();
            let Some(writer) = slot.as_ref() else {
                return Ok(());
            };
            writer.recovery_point()
        };
        if *last_point == Some(point) {
            return Ok(());
        }
        self.flush_locked()?;
        let from = last_point.map_or(0, |p| p.segment_base);
        let faults = self.context.config.faults.as_deref();
        for segment in self.segments().iter().filter(|s| s.base_offset() >= from) {
            if let Err(error) = segment.sync_indexes(faults) {
                self.poison();
                return Err(error);
            }
        }
        point.store(&self.dir)?;
        *last_point = Some(point);
        Ok(())
    }

    /// Deletes the oldest segments, as many as `count` says of the
    /// summaries of the current list (taken under the writer lock, so no
    /// roll changes the list meanwhile).
    fn delete_oldest(&self, count: impl FnOnce(&[SegmentSummary]) -> usize) -> Result<usize> {
        let _writer = self.lock_writer();
        let segments = self.segments();
        let remove = count(&summarize(&segments)).min(segments.len().saturating_sub(1));
        if remove == 0 {
            return Ok(0);
        }
        let kept = Arc::new(segments[remove..].to_vec());
        // The log start moves first: a reader that sees the shorter list
        // then also sees the new start and never seeks below a segment.
        self.log_start.store(kept[0].base_offset(), Ordering::Release);
        *self.segments.write().expect("segment list lock") = Arc::clone(&kept);
        for segment in &segments[..remove] {
            segment.delete_files()?;
            self.context.open_segments.fetch_sub(1, Ordering::SeqCst);
        }
        tracing::info!(topic = %self.topic, partition = self.id, segments = remove, log_start_offset = kept[0].base_offset(), "retention deleted segments");
        Ok(remove)
    }

    /// Clean close: seal the active segment (truncating its files), flush
    /// everything and record the recovery point at the end of the log.
    pub(crate) fn close(&self) -> Result<()> {
        let mut last_point = self.flush_lock.lock().expect("flush lock");
        let Some(writer) = self.lock_writer().take() else {
            return Ok(());
        };
        let result = (|| {
            if self.poisoned.load(Ordering::SeqCst) {
                return Err(self.poisoned_error());
            }
            let point = writer.recovery_point();
            writer.seal()?;
            if *last_point == Some(point) {
                // Nothing was appended since the recovery point was last
                // written, and everything below it was flushed then.
                return Ok(());
            }
            // Sealed segments are fsynced whole (data, indexes, lengths).
            let from = last_point.map_or(0, |p| p.segment_base);
            let faults = self.context.config.faults.as_deref();
            for segment in self.segments().iter().filter(|s| s.base_offset() >= from) {
                segment.sync_indexes(faults)?;
            }
            point.store(&self.dir)?;
            *last_point = Some(point);
            Ok(())
        })();
        if result.is_ok() {
            // Everything is on disk: Fsync appends still waiting are answered.
            self.durable.advance(self.high_watermark.get());
        }
        self.end(WatchEnd::Closed);
        result
    }

    /// Stops the partition without flushing (deletion, or a simulated
    /// crash in tests).
    pub(crate) fn abandon(&self) {
        if self.lock_writer().take().is_some() {
            self.end(WatchEnd::Closed);
        }
    }

    fn end(&self, end: WatchEnd) {
        self.high_watermark.end(end);
        self.durable.end(end);
        self.committed.end(end);
        let count = self.segments().len() as u64;
        self.context.open_segments.fetch_sub(count, Ordering::SeqCst);
    }
}

impl FlushTarget for PartitionShared {
    fn flush_queued(&self) -> &AtomicBool {
        &self.flush_queued
    }

    fn flush(&self) -> Result<()> {
        PartitionShared::flush(self)
    }
}
