//! Reading one job's history back from `__jobs`: its events (the History
//! call) and the job they fold into (GetJob for a job no longer in
//! memory).
//!
//! The history retention (`retention.rs`) deletes the oldest segments of
//! `__jobs`, so a job's first events may be gone. A read says so rather
//! than leave a silent gap: a page whose job's enqueue lies below the
//! log's start carries [`Trimmed`], and a job that cannot be rebuilt
//! because its enqueue is gone is [`LoggedJob::Trimmed`], never a job
//! folded from a partial history.

use std::ops::ControlFlow;

use spool_log::Partition;

use crate::apply::JobFromLog;
use crate::event::Event;
use crate::job::{JobId, id_time_ms};

/// Ids may be assigned up to about this far ahead of the clock (when many
/// are given out within one millisecond), so a job's enqueue record may
/// carry a timestamp this much earlier than its id says.
const ID_AHEAD_OF_CLOCK_MS: i64 = 1_000;

/// The history before `before_ms` was deleted by the history retention:
/// `before_ms` is the time of the oldest event the log still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    pub before_ms: i64,
}

/// A page of a job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The events, with their log offsets, oldest first.
    pub events: Vec<(u64, Event)>,
    /// The offset to continue from, if more may follow.
    pub next: Option<u64>,
    /// Set on a first page when the job's earlier events (its enqueue at
    /// least) were trimmed, or may have been: then `events` does not start
    /// at the job's beginning, and may be empty.
    pub trimmed: Option<Trimmed>,
}

/// What the log says about a job that is not in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedJob {
    /// Rebuilt from its whole history.
    Found(Box<JobFromLog>),
    /// Its enqueue, if it was ever enqueued, lies in history the retention
    /// deleted: the job cannot be rebuilt.
    Trimmed(Trimmed),
    /// The log holds no enqueue of the id, and the id is newer than the
    /// log's start: no job has it.
    Unknown,
}

/// Reads job histories from the `__jobs` partition.
pub(crate) struct HistoryReader<'a> {
    pub partition: &'a Partition,
    /// Events at or past this offset are not read: in a cluster, the
    /// committed offset, so a history never shows an event a failover
    /// could remove.
    pub end: u64,
}

impl HistoryReader<'_> {
    /// Up to `limit` events of job `id` from log offset `from` (0: from the
    /// job's enqueue). `in_table` says whether the job table holds the job;
    /// it is asked only when the job's start may have been trimmed, since
    /// a job known to exist is then searched for in the whole log.
    pub fn page(
        &self,
        id: JobId,
        from: u64,
        limit: usize,
        in_table: impl FnOnce() -> bool,
    ) -> spool_log::Result<HistoryPage> {
        let mut events = Vec::new();
        let mut next = None;
        let start = self.start(id, from)?;
        let whole_log = start.trimmed.is_some() && in_table();
        self.scan(id, start.offset, from > 0 || whole_log, |offset, event| {
            events.push((offset, event));
            if events.len() >= limit {
                next = Some(offset + 1);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if events.last().is_some_and(|(_, event)| event.is_terminal()) {
            next = None;
        }
        let begins_with_enqueue = matches!(events.first(), Some((_, Event::Enqueued { .. })));
        let trimmed = start.trimmed.filter(|_| !begins_with_enqueue);
        Ok(HistoryPage {
            events,
            next,
            trimmed,
        })
    }

    /// Job `id` rebuilt from its events: reads the log from the job's
    /// enqueue to its last event (the scan skips other jobs' records by
    /// their key, without decoding them).
    pub fn job(&self, id: JobId) -> spool_log::Result<LoggedJob> {
        let start = self.start(id, 0)?;
        let mut job: Option<JobFromLog> = None;
        let mut headless = false;
        self.scan(id, start.offset, false, |_, event| {
            match job.as_mut() {
                Some(job) => job.apply(&event),
                None => match JobFromLog::enqueued(&event) {
                    Some(enqueued) => job = Some(enqueued),
                    // Events of the job without its enqueue: its start was
                    // trimmed, and folding the rest would make up a job.
                    None => {
                        headless = true;
                        return ControlFlow::Break(());
                    }
                },
            }
            ControlFlow::Continue(())
        })?;
        Ok(match (job, start.trimmed) {
            (Some(job), _) => LoggedJob::Found(Box::new(job)),
            (None, Some(trimmed)) => LoggedJob::Trimmed(trimmed),
            (None, None) if headless => {
                // Only a log that lost its start holds events of a job
                // without its enqueue; say so with the time it starts at.
                LoggedJob::Trimmed(Trimmed {
                    before_ms: self.first_time_ms()?.unwrap_or(0),
                })
            }
            (None, None) => LoggedJob::Unknown,
        })
    }

    /// Where a read of job `id` from `from` starts, and whether the job's
    /// enqueue may lie below the log's start.
    fn start(&self, id: JobId, from: u64) -> spool_log::Result<Start> {
        let partition = self.partition;
        if from > 0 {
            return Ok(Start {
                offset: from,
                trimmed: None,
            });
        }
        // The enqueue's record carries the enqueue time, which the id
        // encodes (with a margin for ids assigned ahead of the clock). An id
        // from the future finds nothing to read.
        let offset = partition
            .offset_for_timestamp(id_time_ms(id).saturating_sub(ID_AHEAD_OF_CLOCK_MS))?
            .unwrap_or(partition.high_watermark());
        let log_start = partition.log_start_offset();
        // Reading would start at the log's start, with earlier records
        // deleted: the enqueue may have been among them.
        let trimmed = if log_start > 0 && offset <= log_start {
            self.first_time_ms()?.map(|before_ms| Trimmed { before_ms })
        } else {
            None
        };
        Ok(Start { offset, trimmed })
    }

    /// The time of the oldest record the log holds.
    fn first_time_ms(&self) -> spool_log::Result<Option<i64>> {
        let mut first = None;
        self.partition
            .scan(self.partition.log_start_offset(), |_, record| {
                first = Some(record.timestamp_ms);
                ControlFlow::Break(())
            })?;
        Ok(first)
    }

    /// Hands `each` the events of job `id` in log order from `offset`,
    /// until its terminal event or until `each` breaks. Unless `whole_log`,
    /// the scan gives up at the first record of a later job met before any
    /// of this job's: ids are assigned in the order their enqueues are
    /// appended, so the enqueue is not in the log from there on, and an
    /// unknown id costs a short read, not a scan to the end of the log.
    fn scan(
        &self,
        id: JobId,
        offset: u64,
        whole_log: bool,
        mut each: impl FnMut(u64, Event) -> ControlFlow<()>,
    ) -> spool_log::Result<()> {
        let key = id.to_be_bytes();
        let mut found = whole_log;
        let end = self.end;
        self.partition.scan(offset, |batch, record| {
            if record.offset >= end {
                return ControlFlow::Break(());
            }
            if record.key != Some(&key[..]) {
                let later = record
                    .key
                    .and_then(|k| <[u8; 8]>::try_from(k).ok())
                    .is_some_and(|k| JobId::from_be_bytes(k) > id);
                return if !found && later {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                };
            }
            let Some(event) = record
                .value
                .and_then(|value| Event::decode(batch.slice_ref(value)))
            else {
                return ControlFlow::Continue(());
            };
            found = true;
            let terminal = event.is_terminal();
            if each(record.offset, event).is_break() || terminal {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        Ok(())
    }
}

struct Start {
    offset: u64,
    trimmed: Option<Trimmed>,
}
