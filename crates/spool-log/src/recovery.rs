//! Recovery of one partition's segments at open: which segments to trust,
//! which to rebuild the indexes of, which to scan and cut, and which to
//! drop. `docs/storage-format.md` (section 9) is the specification; the
//! scan itself is `SegmentWriter::open` in `segment.rs`.

use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::RecoveryPoint;
use crate::error::{Error, IoContext, Result};
use crate::names::{SegmentFile, parse_segment_file_name};
use crate::segment::{OpenMode, ScanReport, ScanStart, Segment, SegmentSettings, SegmentWriter, file_path};

/// What opening a partition had to repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecovery {
    pub topic: String,
    pub partition: u32,
    /// Segments scanned, with what each scan found.
    pub scans: Vec<ScanReport>,
    /// Segments deleted because an earlier one was cut.
    pub segments_dropped: Vec<u64>,
    /// Index files rebuilt from the log.
    pub indexes_rebuilt: Vec<u64>,
}

impl PartitionRecovery {
    /// True if any bytes were cut or any segment dropped.
    pub fn lost_data(&self) -> bool {
        !self.segments_dropped.is_empty() || self.scans.iter().any(|s| s.damage.is_some())
    }

    /// True if opening did anything worth reporting.
    pub(crate) fn is_eventful(&self) -> bool {
        !self.scans.is_empty() || !self.segments_dropped.is_empty() || !self.indexes_rebuilt.is_empty()
    }
}

/// A partition's log as recovery leaves it.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Every segment, oldest first; the last is the active one.
    pub segments: Vec<Arc<Segment>>,
    /// The active segment's writer.
    pub writer: SegmentWriter,
    /// The recovery point still valid for what was recovered, if any.
    pub point: Option<RecoveryPoint>,
    pub report: PartitionRecovery,
}

/// Recovers the partition `topic`/`id` in `dir`, which must exist: `clean`
/// says the store was shut down cleanly, so files are trusted up to the
/// recovery point without a scan.
pub(crate) fn recover(
    topic: &str,
    id: u32,
    dir: &Path,
    settings: &SegmentSettings,
    clean: bool,
) -> Result<Recovered> {
    let mut report = PartitionRecovery {
        topic: topic.to_owned(),
        partition: id,
        scans: Vec::new(),
        segments_dropped: Vec::new(),
        indexes_rebuilt: Vec::new(),
    };
    let bases = list_segments(dir)?;
    let point = RecoveryPoint::load(dir)?;
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut writer = None;

    if bases.is_empty() {
        writer = Some(SegmentWriter::create(dir, 0, settings)?);
    }
    let mut i = 0;
    while i < bases.len() {
        let base = bases[i];
        let next_base = bases.get(i + 1).copied();
        let trusted = match point {
            Some(p) => base < p.segment_base,
            None => clean,
        };
        if let (true, Some(next_base)) = (trusted, next_base) {
            if let Some(segment) = Segment::open_sealed(dir, base, next_base)? {
                segments.push(segment);
                i += 1;
                continue;
            }
            // Flushed bytes with a missing or damaged index: rebuild the
            // index without cutting anything.
            let start = ScanStart::segment_start(base);
            let mode = OpenMode::Rebuild {
                next_offset: next_base,
            };
            let (rebuilt, scan) = SegmentWriter::open(dir, base, start, settings, mode)?;
            if let Some(damage) = &scan.damage {
                tracing::warn!(
                    topic,
                    partition = id,
                    segment = base,
                    damage,
                    "damaged batch below the recovery point; it will not be served"
                );
            }
            let segment = rebuilt.seal()?;
            segment.sync_indexes(settings.faults.as_deref())?;
            report.indexes_rebuilt.push(base);
            if scan.damage.is_some() {
                report.scans.push(scan);
            }
            segments.push(segment);
            i += 1;
            continue;
        }
        let start = match point {
            Some(p) if p.segment_base == base => ScanStart {
                position: p.position,
                offset: p.next_offset,
                max_timestamp_ms: p.max_timestamp_ms,
            },
            _ => ScanStart::segment_start(base),
        };
        let (segment_writer, scan) = SegmentWriter::open(dir, base, start, settings, OpenMode::Recover)?;
        if scan.scanned_bytes > 0 || scan.damage.is_some() {
            if let Some(damage) = &scan.damage {
                tracing::warn!(
                    topic,
                    partition = id,
                    segment = base,
                    valid_bytes = scan.valid_bytes,
                    next_offset = scan.next_offset,
                    cut_bytes = scan.cut_bytes,
                    damage,
                    "recovery cut a damaged log tail"
                );
            }
            report.scans.push(scan.clone());
        }
        let cut_short = next_base.is_some_and(|next| scan.next_offset != next);
        if next_base.is_none() || cut_short {
            for &later in &bases[i + 1..] {
                tracing::warn!(
                    topic,
                    partition = id,
                    segment = later,
                    "dropping a segment after a cut one"
                );
                delete_segment_files(dir, later)?;
                report.segments_dropped.push(later);
            }
            writer = Some(segment_writer);
            break;
        }
        segments.push(segment_writer.seal()?);
        i += 1;
    }
    let writer = writer.expect("an active segment");
    segments.push(Arc::clone(writer.segment()));
    let mut point = point;
    if point.is_some_and(|p| p.next_offset > writer.segment().next_offset()) {
        // The recovery point is ahead of the data: files were lost or
        // cut. Forget it so the next checkpoint is written fresh.
        RecoveryPoint::remove(dir)?;
        point = None;
    }
    Ok(Recovered {
        segments,
        writer,
        point,
        report,
    })
}

/// Base offsets of the segments in `dir`, sorted. Index files without a log
/// file, and temporary files of an interrupted atomic write, are removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_file_name(name) {
            Some(Ok((base, SegmentFile::Log))) => logs.push(base),
            Some(Ok((base, _))) => indexes.push((base, entry.path())),
            Some(Err(reason)) => {
                return Err(Error::BadFile {
                    path: entry.path(),
                    reason,
                });
            }
            None if name.ends_with(".tmp") => {
                std::fs::remove_file(entry.path()).ctx("remove", &entry.path())?;
            }
            None => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            std::fs::remove_file(&path).ctx("remove", &path)?;
        }
    }
    Ok(logs)
}

fn delete_segment_files(dir: &Path, base: u64) -> Result<()> {
    for kind in [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex] {
        let path = file_path(dir, base, kind);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", path, e)),
            _ => {}
        }
    }
    Ok(())
}
