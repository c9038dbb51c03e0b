//! A segment: one log file of batches starting at a base offset, with its
//! offset index and time index beside it.
//!
//! [`Segment`] is the read side, shared by every reader through an `Arc`;
//! [`SegmentWriter`] is the write side of the partition's active segment.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use spool_format::FormatError;
use spool_format::batch::{self, Batch, BatchHeader, HEADER_BYTES};

use crate::config::FaultInjector;
use crate::error::{Error, IoContext, Result};
use crate::index::{Entry, IndexWriter, OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::mmap::{Mapping, MappingWriter};
use crate::names::{SegmentFile, segment_file_name};

thread_local! {
    /// Where a batch is encoded before it is written: one buffer per
    /// appending thread, reused from batch to batch.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer grown past this by a large batch is given back. Each
/// appending thread keeps its own, and a server's blocking pool can hold
/// dozens of threads: with 1 MiB batches, kept buffers were the largest part
/// of the server's heap under a producer flood. Batches larger than this
/// allocate per append, within the server's in-flight limit.
const SCRATCH_KEEP_BYTES: usize = 256 << 10;

/// Index files grow this much at a time.
const INDEX_PREALLOCATE_BYTES: u64 = 64 * 1024;

/// What a segment needs to know from its partition's configuration.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSettings {
    pub segment_bytes_max: u64,
    pub index_interval_bytes: u64,
    pub preallocate_bytes: u64,
    pub faults: Option<Arc<FaultInjector>>,
}

impl SegmentSettings {
    /// Most index entries a segment of `log_capacity` bytes can need: one
    /// per interval, and never more than one per (smallest possible) batch.
    fn index_capacity<E: Entry>(&self, log_capacity: u64) -> u64 {
        let spacing = self.index_interval_bytes.max(HEADER_BYTES as u64 + 1);
        (log_capacity / spacing + 2) * E::BYTES
    }
}

pub(crate) fn file_path(dir: &Path, base_offset: u64, kind: SegmentFile) -> PathBuf {
    dir.join(segment_file_name(base_offset, kind))
}

/// Bytes of a segment that fail their checks, as the segment sees them. The
/// partition, which knows its topic and id, turns this into
/// [`Error::Corrupt`] with [`Segment::corrupt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Byte position in the log file of the damaged batch (or record).
    pub position: u64,
    /// First and last offset the damage can make unreadable.
    pub first_offset: u64,
    pub last_offset: u64,
    pub reason: String,
}

/// Position within its batch of the record a format error names, or 0
/// for an error about the batch as a whole.
pub(crate) fn record_position(error: &FormatError) -> u64 {
    match error {
        FormatError::Record { position, .. } => *position as u64,
        _ => 0,
    }
}

/// Read side of a segment.
#[derive(Debug)]
pub struct Segment {
    base_offset: u64,
    dir: PathBuf,
    log: Arc<Mapping>,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Offset after the last published batch.
    next_offset: AtomicU64,
    /// Largest record timestamp in the segment; `i64::MIN` while empty.
    max_timestamp_ms: AtomicI64,
    /// Log bytes known to be on disk.
    synced_len: AtomicU64,
    sealed: AtomicBool,
}

impl Segment {
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset() == self.base_offset
    }

    /// Published bytes of the log file.
    pub fn size_bytes(&self) -> u64 {
        self.log.published_len()
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Acquire)
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn synced_len(&self) -> u64 {
        self.synced_len.load(Ordering::Acquire)
    }

    pub(crate) fn path(&self, kind: SegmentFile) -> PathBuf {
        file_path(&self.dir, self.base_offset, kind)
    }

    /// Damage found at `position`, where a batch starting at
    /// `expected_offset` should be but whose header cannot be trusted: the
    /// reader cannot walk past it, so every later offset of the segment may
    /// be affected.
    fn damaged_header(&self, position: u64, expected_offset: u64, reason: impl std::fmt::Display) -> Damage {
        Damage {
            position,
            first_offset: expected_offset,
            last_offset: self.next_offset().saturating_sub(1).max(expected_offset),
            reason: reason.to_string(),
        }
    }

    /// Damage in the batch at `position` whose header checked out: its own
    /// offsets are affected.
    fn damaged_batch(&self, position: u64, header: &BatchHeader, reason: impl std::fmt::Display) -> Damage {
        Damage {
            position,
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            reason: reason.to_string(),
        }
    }

    /// The error for `damage` in this segment, which belongs to partition
    /// `partition` of `topic`.
    pub(crate) fn corrupt(&self, topic: &str, partition: u32, damage: Damage) -> Error {
        Error::Corrupt {
            topic: topic.to_owned(),
            partition,
            segment: self.path(SegmentFile::Log),
            position: damage.position,
            first_offset: damage.first_offset,
            last_offset: damage.last_offset,
            reason: damage.reason,
        }
    }

    /// The header of the batch at `position`, which must start with
    /// `expected_offset` and end by `end`.
    fn header_at(&self, position: u64, end: u64, expected_offset: u64) -> Result<BatchHeader, Damage> {
        let damaged = |reason: &dyn std::fmt::Display| self.damaged_header(position, expected_offset, reason);
        let bytes = self
            .log
            .slice(position..position + HEADER_BYTES as u64)
            .filter(|_| position + HEADER_BYTES as u64 <= end)
            .ok_or_else(|| damaged(&"batch header runs past the end of the log"))?;
        let header = BatchHeader::parse(bytes).map_err(|reason| damaged(&reason))?;
        if header.base_offset != expected_offset {
            return Err(damaged(&format_args!(
                "batch starts at offset {} instead of {expected_offset}",
                header.base_offset
            )));
        }
        if position + header.total_bytes() as u64 > end {
            return Err(damaged(&"batch runs past the end of the log"));
        }
        Ok(header)
    }

    /// Position and first offset of the batch holding `offset`, or `None`
    /// if the published log ends before it.
    fn seek(&self, offset: u64, end: u64) -> Result<Option<(u64, u64)>, Damage> {
        let relative = u32::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(u32::MAX);
        let (mut position, mut batch_offset) = match self.index.lookup(relative) {
            Some(entry) if u64::from(entry.position) < end => (
                u64::from(entry.position),
                self.base_offset + u64::from(entry.relative_offset),
            ),
            _ => (0, self.base_offset),
        };
        while position < end {
            let header = self.header_at(position, end, batch_offset)?;
            if header.next_offset() > offset {
                return Ok(Some((position, batch_offset)));
            }
            position += header.total_bytes() as u64;
            batch_offset = header.next_offset();
        }
        Ok(None)
    }

    /// Calls `visit` with the header of every published batch from the one
    /// holding `offset` on, checking headers and offset continuity but not
    /// CRCs: for state kept in the headers (the producer table), rebuilt
    /// from batches that recovery or the append path already checked.
    pub(crate) fn visit_headers(
        &self,
        offset: u64,
        mut visit: impl FnMut(&BatchHeader),
    ) -> Result<(), Damage> {
        let end = self.log.published_len();
        let Some((mut position, mut batch_offset)) = self.seek(offset, end)? else {
            return Ok(());
        };
        while position < end {
            let header = self.header_at(position, end, batch_offset)?;
            visit(&header);
            position += header.total_bytes() as u64;
            batch_offset = header.next_offset();
        }
        Ok(())
    }

    /// Byte position and base offset of the batch holding `offset`, if it
    /// is published.
    pub(crate) fn batch_holding(&self, offset: u64) -> Result<Option<(u64, u64)>, Damage> {
        self.seek(offset, self.log.published_len())
    }

    /// Byte position of the batch holding `offset`, if it is published.
    pub(crate) fn position_of(&self, offset: u64) -> Result<Option<u64>, Damage> {
        Ok(self
            .seek(offset, self.log.published_len())?
            .map(|(position, _)| position))
    }

    /// Appends to `out` the batches from the one holding `offset` on, while
    /// they start below `end_offset` and their total stays within
    /// `budget_bytes`; the first batch is returned
    /// even if larger, so a reader always makes progress. Returns the bytes
    /// added. A batch that fails its CRC is never returned: it is an error
    /// if it would come first, otherwise the read stops before it.
    pub(crate) fn read(
        &self,
        offset: u64,
        end_offset: u64,
        budget_bytes: u64,
        out: &mut Vec<Batch>,
    ) -> Result<u64, Damage> {
        let end = self.log.published_len();
        let sought = match self.seek(offset, end) {
            Ok(sought) => sought,
            // Batches from an earlier segment are already in hand: return
            // them, and let the next read meet the damage first.
            Err(_) if !out.is_empty() => return Ok(0),
            Err(damage) => return Err(damage),
        };
        let Some((start, mut batch_offset)) = sought else {
            return Ok(0);
        };
        let mut spans = Vec::new();
        let mut stop = start;
        while stop < end && (batch_offset < end_offset || (out.is_empty() && spans.is_empty())) {
            let header = match self.header_at(stop, end, batch_offset) {
                Ok(header) => header,
                Err(damage) if spans.is_empty() && out.is_empty() => return Err(damage),
                Err(_) => break,
            };
            let size = header.total_bytes() as u64;
            let first = out.is_empty() && spans.is_empty();
            if !first && stop - start + size > budget_bytes {
                break;
            }
            spans.push((stop - start, header));
            stop += size;
            batch_offset = header.next_offset();
            if stop - start >= budget_bytes {
                break;
            }
        }
        let all = self.log.bytes(start..stop).expect("range is published");
        let mut used = 0;
        for (relative, header) in spans {
            let size = header.total_bytes() as u64;
            let bytes = all.slice(relative as usize..(relative + size) as usize);
            match Batch::new(bytes) {
                Ok(batch) => out.push(batch),
                Err(reason) if out.is_empty() => {
                    return Err(self.damaged_batch(start + relative, &header, reason));
                }
                Err(_) => break,
            }
            used += size;
        }
        Ok(used)
    }

    /// The first offset in this segment whose record timestamp is at least
    /// `timestamp_ms`, or `None` if every record is older.
    pub(crate) fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, Damage> {
        if self.max_timestamp_ms() < timestamp_ms {
            return Ok(None);
        }
        let end = self.log.published_len();
        let from = match self.time_index.last_before(timestamp_ms) {
            Some(entry) => self.base_offset + u64::from(entry.relative_offset),
            None => self.base_offset,
        };
        let Some((mut position, mut batch_offset)) = self.seek(from, end)? else {
            return Ok(None);
        };
        while position < end {
            let header = self.header_at(position, end, batch_offset)?;
            let size = header.total_bytes() as u64;
            if header.max_timestamp_ms >= timestamp_ms {
                let bytes = self.log.bytes(position..position + size).expect("published");
                let batch =
                    Batch::new(bytes).map_err(|reason| self.damaged_batch(position, &header, reason))?;
                for record in batch.records() {
                    let record = record.map_err(|error| {
                        let at = position + record_position(&error);
                        self.damaged_batch(at, &header, error)
                    })?;
                    if record.timestamp_ms >= timestamp_ms {
                        return Ok(Some(record.offset));
                    }
                }
            }
            position += size;
            batch_offset = header.next_offset();
        }
        Ok(None)
    }

    /// Flushes the published log bytes not yet known to be on disk.
    pub(crate) fn sync_log(&self, faults: Option<&FaultInjector>) -> Result<()> {
        let end = self.log.published_len();
        let synced = self.synced_len();
        if synced < end {
            self.log.sync(synced..end, faults)?;
            self.synced_len.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Flushes the index files (before a recovery point is written past
    /// them). Sealed segments also get their truncated lengths synced.
    pub(crate) fn sync_indexes(&self, faults: Option<&FaultInjector>) -> Result<()> {
        if self.is_sealed() {
            if let Some(error) = faults.and_then(FaultInjector::sync_error) {
                return Err(Error::io("fsync", self.path(SegmentFile::Log), error));
            }
            for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
                let path = self.path(kind);
                File::open(&path)
                    .ctx("open", &path)?
                    .sync_all()
                    .ctx("fsync", &path)?;
            }
            return Ok(());
        }
        for mapping in [self.index.mapping(), self.time_index.mapping()] {
            mapping.sync(0..mapping.published_len(), faults)?;
        }
        Ok(())
    }

    /// Removes the segment's files. Readers holding slices keep the
    /// mappings (and so the data) alive until they drop them.
    pub(crate) fn delete_files(&self) -> Result<()> {
        for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
            let path = self.path(kind);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Opens a sealed segment that needs no scan, trusting its files.
    /// Returns `None` if its index does not check out, so the caller can
    /// rebuild it with [`SegmentWriter::open`].
    pub(crate) fn open_sealed(
        dir: &Path,
        base_offset: u64,
        next_offset: u64,
    ) -> Result<Option<Arc<Segment>>> {
        let open = |kind| -> Result<Option<(File, u64, PathBuf)>> {
            let path = file_path(dir, base_offset, kind);
            match File::open(&path) {
                Ok(file) => {
                    let len = file.metadata().ctx("stat", &path)?.len();
                    Ok(Some((file, len, path)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("open", path, e)),
            }
        };
        let Some((log_file, log_len, log_path)) = open(SegmentFile::Log)? else {
            return Ok(None);
        };
        let (Some(index), Some(time_index)) = (open(SegmentFile::Index)?, open(SegmentFile::TimeIndex)?)
        else {
            return Ok(None);
        };
        if index.1 % OffsetEntry::BYTES != 0 || time_index.1 % TimeEntry::BYTES != 0 {
            return Ok(None);
        }
        let segment = Segment {
            base_offset,
            dir: dir.to_owned(),
            log: Mapping::open_read_only(&log_file, &log_path, log_len)?,
            index: OffsetIndex::new(Mapping::open_read_only(&index.0, &index.2, index.1)?),
            time_index: TimeIndex::new(Mapping::open_read_only(
                &time_index.0,
                &time_index.2,
                time_index.1,
            )?),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp_ms: AtomicI64::new(i64::MIN),
            synced_len: AtomicU64::new(log_len),
            sealed: AtomicBool::new(true),
        };
        if !segment.indexes_check_out(next_offset) {
            return Ok(None);
        }
        if let Some(last) = segment.time_index.last() {
            segment
                .max_timestamp_ms
                .store(last.timestamp_ms, Ordering::Release);
        }
        Ok(Some(Arc::new(segment)))
    }

    /// Cheap consistency check of a trusted segment's indexes: the last
    /// offset entry points at a batch with the right offset, and the time
    /// index exists for a non-empty log.
    fn indexes_check_out(&self, next_offset: u64) -> bool {
        let end = self.log.published_len();
        if end == 0 {
            return next_offset == self.base_offset;
        }
        let Some(entry) = self.index.last() else {
            return false;
        };
        let position = u64::from(entry.position);
        let offset = self.base_offset + u64::from(entry.relative_offset);
        position < end && self.header_at(position, end, offset).is_ok() && !self.time_index.is_empty()
    }
}

/// Where a recovery scan starts: a batch boundary, the offset there, and
/// the largest record timestamp before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanStart {
    pub position: u64,
    pub offset: u64,
    pub max_timestamp_ms: i64,
}

impl ScanStart {
    pub fn segment_start(base_offset: u64) -> Self {
        ScanStart {
            position: 0,
            offset: base_offset,
            max_timestamp_ms: i64::MIN,
        }
    }
}

/// How [`SegmentWriter::open`] treats damage it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// The tail may be torn: cut at the first bad batch.
    Recover,
    /// The bytes were flushed before (below the recovery point); only the
    /// indexes are rebuilt. The segment ends at `next_offset`.
    Rebuild { next_offset: u64 },
}

/// Result of walking batches from a scan start.
struct Scan {
    /// End of the last good batch (in `Rebuild` mode, of the last batch
    /// walked, good or skipped).
    end: u64,
    next_offset: u64,
    /// Non-zero bytes after `end` (zero-filled preallocation does not count).
    trailing_bytes: u64,
    damage: Option<String>,
}

/// Walks the batches of `log` from `start`, checking each header, offset
/// continuity and CRC, and hands every good batch to `on_batch`. In
/// `Recover` mode it stops at the first bad batch; in `Rebuild` mode it
/// skips a batch whose CRC fails when its header still leads on.
fn scan(log: &[u8], start: ScanStart, mut on_batch: impl FnMut(&BatchHeader, u64), mode: OpenMode) -> Scan {
    let mut position = start.position as usize;
    let mut offset = start.offset;
    let mut damage = None;
    while position < log.len() {
        let rest = &log[position..];
        let header_bytes = &rest[..rest.len().min(HEADER_BYTES)];
        if header_bytes.iter().all(|&b| b == 0) {
            break; // zero-filled preallocation: the clean end of the log
        }
        let header = match BatchHeader::parse(header_bytes) {
            Ok(header) if header.base_offset != offset => {
                damage = Some(format!(
                    "batch starts at offset {} instead of {offset}",
                    header.base_offset
                ));
                break;
            }
            Ok(header) if header.total_bytes() > rest.len() => {
                damage = Some(format!(
                    "batch of {} bytes runs past the end of the file",
                    header.total_bytes()
                ));
                break;
            }
            Ok(header) => header,
            Err(reason) => {
                damage = Some(reason.to_string());
                break;
            }
        };
        if let Err(reason) = batch::verify(&rest[..header.total_bytes()]) {
            let reason = format!("batch at offset {offset}: {reason}");
            damage.get_or_insert(reason);
            if mode == OpenMode::Recover {
                break;
            }
        } else {
            on_batch(&header, position as u64);
        }
        position += header.total_bytes();
        offset = header.next_offset();
    }
    let trailing_bytes = log[position.min(log.len())..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    if damage.is_none() && trailing_bytes > 0 && mode == OpenMode::Recover {
        damage = Some("non-zero bytes after the last batch".into());
    }
    Scan {
        end: position as u64,
        next_offset: offset,
        trailing_bytes,
        damage,
    }
}

/// Truncates a segment's index files to the entries that describe the
/// trusted prefix before `start` (all of them well formed and increasing),
/// creating missing files, and returns them with their kept lengths.
fn keep_trusted_index_entries(
    dir: &Path,
    base_offset: u64,
    start: ScanStart,
) -> Result<((File, u64), (File, u64))> {
    let mut kept = Vec::with_capacity(2);
    for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
        let path = file_path(dir, base_offset, kind);
        let file = open_rw(&path, !path.exists())?;
        let bytes = fs::read(&path).ctx("read", &path)?;
        let keep = match kind {
            _ if start.position == 0 => 0,
            SegmentFile::Index => valid_prefix(&bytes, OffsetEntry::BYTES, |e| {
                let e = OffsetEntry::decode(e);
                (u64::from(e.position) < start.position).then_some(u64::from(e.relative_offset))
            }),
            _ => valid_prefix(&bytes, TimeEntry::BYTES, |e| {
                let e = TimeEntry::decode(e);
                (base_offset + u64::from(e.relative_offset) < start.offset)
                    .then_some(e.timestamp_ms as u64 ^ (1 << 63))
            }),
        };
        if keep != bytes.len() as u64 {
            file.set_len(keep).ctx("truncate", &path)?;
        }
        kept.push((file, keep));
    }
    let time_index = kept.pop().expect("time index");
    let index = kept.pop().expect("index");
    Ok((index, time_index))
}

/// What a recovery scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub segment_base: u64,
    /// Where the valid log ends now.
    pub valid_bytes: u64,
    pub next_offset: u64,
    /// Bytes scanned and found valid.
    pub scanned_bytes: u64,
    /// Non-zero bytes cut after the valid end (zero-filled preallocation
    /// does not count).
    pub cut_bytes: u64,
    /// Why the scan stopped before the end of the file, if it found damage.
    pub damage: Option<String>,
}

/// Write side of the active segment.
#[derive(Debug)]
pub struct SegmentWriter {
    segment: Arc<Segment>,
    log: MappingWriter,
    index: IndexWriter<OffsetEntry>,
    time_index: IndexWriter<TimeEntry>,
    index_interval_bytes: u64,
    /// Log bytes appended since the last offset-index entry; `None` when an
    /// entry is due at the next batch.
    bytes_since_index: Option<u64>,
    /// Largest timestamp so far, and the one the last time entry holds.
    running_max_timestamp_ms: i64,
    indexed_max_timestamp_ms: i64,
    last_batch_relative_offset: Option<u32>,
    /// Wall-clock time of the first batch, for `segment_ms_max`.
    first_batch_ms: Option<i64>,
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)
        .ctx(if create { "create" } else { "open" }, path)
}

impl SegmentWriter {
    /// Creates a new, empty segment's files and allocates their first
    /// chunk. A full disk fails here, before any append depends on it.
    pub(crate) fn create(dir: &Path, base_offset: u64, settings: &SegmentSettings) -> Result<SegmentWriter> {
        let result = (|| {
            let mut files = Vec::new();
            for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
                files.push(open_rw(&file_path(dir, base_offset, kind), true)?);
            }
            let mut files = files.into_iter();
            let mut writer = Self::assemble(
                dir,
                base_offset,
                settings,
                (files.next().expect("log"), 0),
                (files.next().expect("index"), 0),
                (files.next().expect("time index"), 0),
            )?;
            writer
                .log
                .allocate_to(settings.preallocate_bytes.min(settings.segment_bytes_max))?;
            writer.index.preallocate()?;
            writer.time_index.preallocate()?;
            crate::fsutil::sync_dir(dir)?;
            Ok(writer)
        })();
        if result.is_err() {
            for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
                let _ = fs::remove_file(file_path(dir, base_offset, kind));
            }
        }
        result
    }

    fn assemble(
        dir: &Path,
        base_offset: u64,
        settings: &SegmentSettings,
        log: (File, u64),
        index: (File, u64),
        time_index: (File, u64),
    ) -> Result<SegmentWriter> {
        let log_capacity = settings.segment_bytes_max.max(log.1);
        let log_path = file_path(dir, base_offset, SegmentFile::Log);
        let index_path = file_path(dir, base_offset, SegmentFile::Index);
        let time_path = file_path(dir, base_offset, SegmentFile::TimeIndex);
        let faults = settings.faults.clone();
        let log = Mapping::open_writable(
            log.0,
            &log_path,
            log_capacity,
            log.1,
            settings.preallocate_bytes,
            faults.clone(),
        )?;
        let index = IndexWriter::new(Mapping::open_writable(
            index.0,
            &index_path,
            settings.index_capacity::<OffsetEntry>(log_capacity).max(index.1),
            index.1,
            INDEX_PREALLOCATE_BYTES,
            faults.clone(),
        )?);
        let time_index = IndexWriter::new(Mapping::open_writable(
            time_index.0,
            &time_path,
            settings
                .index_capacity::<TimeEntry>(log_capacity)
                .max(time_index.1),
            time_index.1,
            INDEX_PREALLOCATE_BYTES,
            faults,
        )?);
        let segment = Arc::new(Segment {
            base_offset,
            dir: dir.to_owned(),
            log: Arc::clone(log.mapping()),
            index: index.reader(),
            time_index: time_index.reader(),
            next_offset: AtomicU64::new(base_offset),
            max_timestamp_ms: AtomicI64::new(i64::MIN),
            synced_len: AtomicU64::new(log.pending_len()),
            sealed: AtomicBool::new(false),
        });
        Ok(SegmentWriter {
            segment,
            log,
            index,
            time_index,
            index_interval_bytes: settings.index_interval_bytes,
            bytes_since_index: None,
            running_max_timestamp_ms: i64::MIN,
            indexed_max_timestamp_ms: i64::MIN,
            last_batch_relative_offset: None,
            first_batch_ms: None,
        })
    }

    /// Opens an existing segment for writing, trusting everything before
    /// `start` and scanning the rest of the file: every batch's header,
    /// offset continuity and CRC are checked, index entries are rebuilt, and
    /// the file is cut at the first batch that fails, so that stale bytes
    /// can never line up with a later batch.
    ///
    /// `start.max_timestamp_ms` carries the largest timestamp of the trusted
    /// prefix, which the kept time-index entries may not show.
    ///
    /// With `mode` [`OpenMode::Rebuild`] the segment's bytes are trusted
    /// (it lies below the recovery point and only its indexes need
    /// rebuilding): nothing is cut, a damaged batch is reported and skipped,
    /// and the segment ends at the given offset.
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        start: ScanStart,
        settings: &SegmentSettings,
        mode: OpenMode,
    ) -> Result<(SegmentWriter, ScanReport)> {
        let log_path = file_path(dir, base_offset, SegmentFile::Log);
        let log_file = open_rw(&log_path, false)?;
        let file_len = log_file.metadata().ctx("stat", &log_path)?.len();
        let start = if start.position > file_len {
            tracing::warn!(path = %log_path.display(), position = start.position, file_len, "recovery point lies past the end of the segment; scanning it whole");
            ScanStart::segment_start(base_offset)
        } else {
            start
        };
        let (index_file, time_index_file) = keep_trusted_index_entries(dir, base_offset, start)?;

        // Scan through a temporary read-only mapping of the whole file.
        let scan_map = Mapping::open_read_only(&log_file, &log_path, file_len)?;
        let mut writer = Self::assemble(
            dir,
            base_offset,
            settings,
            (open_rw(&log_path, false)?, 0),
            index_file,
            time_index_file,
        )?;
        let indexed_max = writer
            .time_index
            .reader()
            .last()
            .map_or(i64::MIN, |e| e.timestamp_ms);
        writer.indexed_max_timestamp_ms = indexed_max;
        writer.running_max_timestamp_ms = indexed_max.max(start.max_timestamp_ms);
        let scan = scan(
            scan_map.slice(0..file_len).expect("whole file"),
            start,
            |header, position| writer.index_batch(header, position),
            mode,
        );
        drop(scan_map);

        let (valid_bytes, next_offset, cut_bytes) = match mode {
            OpenMode::Rebuild { next_offset } => (file_len, next_offset, 0),
            OpenMode::Recover => (scan.end, scan.next_offset, scan.trailing_bytes),
        };
        let log_file = open_rw(&log_path, false)?;
        if file_len != valid_bytes {
            log_file.set_len(valid_bytes).ctx("truncate", &log_path)?;
        }
        let log = Mapping::open_writable(
            log_file,
            &log_path,
            settings.segment_bytes_max.max(valid_bytes),
            valid_bytes,
            settings.preallocate_bytes,
            settings.faults.clone(),
        )?;
        if scan.end != start.position || file_len != valid_bytes {
            // Make the cut, and what the scan vouched for, durable.
            log.sync_all()?;
        }
        writer.segment = Arc::new(Segment {
            log: Arc::clone(log.mapping()),
            synced_len: AtomicU64::new(valid_bytes),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp_ms: AtomicI64::new(writer.running_max_timestamp_ms),
            base_offset,
            dir: dir.to_owned(),
            index: writer.index.reader(),
            time_index: writer.time_index.reader(),
            sealed: AtomicBool::new(false),
        });
        writer.log = log;
        let report = ScanReport {
            segment_base: base_offset,
            valid_bytes,
            next_offset,
            scanned_bytes: scan.end - start.position,
            cut_bytes,
            damage: scan.damage,
        };
        Ok((writer, report))
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// The recovery point at the end of what this writer has published.
    pub(crate) fn recovery_point(&self) -> crate::checkpoint::RecoveryPoint {
        crate::checkpoint::RecoveryPoint {
            segment_base: self.segment.base_offset,
            position: self.log.pending_len(),
            next_offset: self.segment.next_offset(),
            max_timestamp_ms: self.running_max_timestamp_ms,
        }
    }

    pub fn base_offset(&self) -> u64 {
        self.segment.base_offset
    }

    /// True if a batch of `len` bytes and `record_count` records starting at
    /// `base_offset` fits in this segment.
    pub(crate) fn has_room(&self, len: u64, base_offset: u64, record_count: u32) -> bool {
        let last_relative = base_offset + u64::from(record_count) - self.segment.base_offset;
        self.log.remaining() >= len
            && last_relative <= u64::from(u32::MAX)
            && self.index.has_room()
            && self.time_index.has_room()
    }

    pub(crate) fn first_batch_ms(&self) -> Option<i64> {
        self.first_batch_ms
    }

    /// Appends one batch of `len` bytes written by `encode`, publishes it
    /// and indexes it. If `encode` fails nothing is published.
    pub(crate) fn append(
        &mut self,
        len: u64,
        now_ms: i64,
        encode: impl FnOnce(&mut [u8]) -> Result<BatchHeader>,
    ) -> Result<BatchHeader> {
        let position = self.log.pending_len();
        let header = SCRATCH.with_borrow_mut(|buffer| {
            buffer.clear();
            buffer.resize(len as usize, 0);
            let header = encode(buffer)?;
            let written = self.log.write(buffer);
            if buffer.capacity() > SCRATCH_KEEP_BYTES {
                *buffer = Vec::new();
            }
            written.map(|()| header)
        });
        let header = match header {
            Ok(header) => header,
            Err(error) => {
                self.log.discard_pending();
                return Err(error);
            }
        };
        debug_assert_eq!(header.total_bytes() as u64, len);
        self.log.publish();
        self.index_batch(&header, position);
        self.first_batch_ms.get_or_insert(now_ms);
        Ok(header)
    }

    /// Adds index entries for a batch now in the log at `position` and
    /// publishes its end offset.
    fn index_batch(&mut self, header: &BatchHeader, position: u64) {
        let relative_offset = (header.base_offset - self.segment.base_offset) as u32;
        self.running_max_timestamp_ms = self.running_max_timestamp_ms.max(header.max_timestamp_ms);
        if self
            .bytes_since_index
            .is_none_or(|bytes| bytes >= self.index_interval_bytes)
        {
            // An index entry that cannot be written (index file full or disk
            // full) only makes lookups scan further: the index is sparse.
            let entry = OffsetEntry {
                relative_offset,
                position: position as u32,
            };
            if let Err(error) = self.index.append(entry) {
                tracing::warn!(%error, "skipping an offset index entry");
            } else {
                self.bytes_since_index = Some(0);
            }
            self.write_time_entry(relative_offset);
        }
        if let Some(bytes) = self.bytes_since_index.as_mut() {
            *bytes += header.total_bytes() as u64;
        }
        self.last_batch_relative_offset = Some(relative_offset);
        self.segment
            .max_timestamp_ms
            .fetch_max(header.max_timestamp_ms, Ordering::AcqRel);
        self.segment
            .next_offset
            .store(header.next_offset(), Ordering::Release);
    }

    fn write_time_entry(&mut self, relative_offset: u32) {
        if self.running_max_timestamp_ms > self.indexed_max_timestamp_ms {
            let entry = TimeEntry {
                timestamp_ms: self.running_max_timestamp_ms,
                relative_offset,
            };
            match self.time_index.append(entry) {
                Ok(()) => self.indexed_max_timestamp_ms = self.running_max_timestamp_ms,
                Err(error) => tracing::warn!(%error, "skipping a time index entry"),
            }
        }
    }

    /// Ends writing: records the final maximum timestamp and truncates all
    /// three files to their published lengths. The segment stays readable.
    pub(crate) fn seal(mut self) -> Result<Arc<Segment>> {
        if let Some(relative_offset) = self.last_batch_relative_offset {
            self.write_time_entry(relative_offset);
        }
        self.log.truncate_to_published()?;
        self.index.seal()?;
        self.time_index.seal()?;
        self.segment.sealed.store(true, Ordering::Release);
        Ok(self.segment)
    }
}

/// Number of bytes of `bytes` that form a run of well-formed entries whose
/// key (given by `key`, `None` to stop) strictly increases.
fn valid_prefix(bytes: &[u8], entry_bytes: u64, key: impl Fn(&[u8]) -> Option<u64>) -> u64 {
    let mut previous = None;
    let mut kept = 0;
    for entry in bytes.chunks_exact(entry_bytes as usize) {
        match key(entry) {
            Some(k) if previous.is_none_or(|p| k > p) => {
                previous = Some(k);
                kept += entry_bytes;
            }
            _ => break,
        }
    }
    kept
}
