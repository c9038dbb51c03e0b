//! Model-based property test: random sequences of appends (in Raft terms,
//! or in term 0 as a single node appends), reads, rolls (small segments),
//! retention, checkpoints, suffix truncations, commits and committed reads,
//! restarts of the log at an offset, clean reopens and crashes are run against the engine and against a
//! plain `Vec` of (record, term).
//!
//! A crash stops the store without flushing, then damages the active
//! segment's log file past the durable point the way lost page-cache writes
//! would: it cuts the file at a random byte and may flip bits in what is
//! left. After reopening, the log must be a prefix of the model that still
//! holds every record acknowledged as durable, and every read must match
//! the model exactly.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use spool_log::{Durability, Partition, Record, Store, StoreConfig, TopicConfig, batch::BatchHeader};

#[derive(Debug, Clone)]
enum Op {
    Append {
        values: Vec<Vec<u8>>,
        keyed: bool,
        fsync: bool,
        /// How much newer than the last batch's term this batch's is.
        term_step: u8,
    },
    /// Truncate at a batch boundary picked by `at` (at or above the
    /// committed offset and the log start).
    Truncate {
        at: u16,
    },
    /// Commit up to a batch boundary picked by `at`, at most the durable
    /// offset.
    Commit {
        at: u16,
    },
    ReadCommitted {
        at: u16,
    },
    Read {
        at: u16,
        max_bytes: u16,
    },
    /// Restart the log, empty, at an offset picked by `at` between the
    /// committed offset and a little past the end, in a term `term_step`
    /// newer than the last one.
    Restart {
        at: u16,
        term_step: u8,
    },
    Checkpoint,
    Retention,
    Reopen,
    Crash {
        cut: u16,
        flips: Vec<(u16, u8)>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![6 => Just(0u8), 1 => 1..3u8],
        )
            .prop_map(|(values, keyed, fsync, term_step)| Op::Append { values, keyed, fsync, term_step }),
        2 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::Commit { at }),
        1 => any::<u16>().prop_map(|at| Op::ReadCommitted { at }),
        4 => (any::<u16>(), 1..4096u16).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (any::<u16>(), 0..3u8).prop_map(|(at, term_step)| Op::Restart { at, term_step }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Retention),
        1 => Just(Op::Reopen),
        2 => (any::<u16>(), prop::collection::vec((any::<u16>(), 0..8u8), 0..3))
            .prop_map(|(cut, flips)| Op::Crash { cut, flips }),
    ]
}

fn config() -> StoreConfig {
    StoreConfig {
        preallocate_bytes: 4096,
        index_interval_bytes: 128,
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        flush_threads: 1,
        ..StoreConfig::default()
    }
}

fn topic() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        segment_bytes_max: 4096,
        retention_ms: None,
        retention_bytes: Some(3 * 4096),
        ..TopicConfig::default()
    }
}

fn key_of(offset_hint: usize) -> Vec<u8> {
    format!("key-{offset_hint}").into_bytes()
}

/// The model: every record ever acknowledged and not truncated, in offset
/// order, with the term of its batch.
#[derive(Debug, Default)]
struct Model {
    records: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    terms: Vec<u64>,
    /// Base offsets of the batches, in order.
    batches: Vec<u64>,
    /// Records below this offset are durable.
    durable: u64,
    log_start: u64,
    committed: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.terms.last().copied().unwrap_or(0)
    }

    /// Cuts everything at and after `end`, which is a batch boundary.
    fn truncate(&mut self, end: u64) {
        self.records.truncate(end as usize);
        self.terms.truncate(end as usize);
        self.batches.retain(|&b| b < end);
        self.durable = self.durable.min(end);
    }

    /// The batch boundary picked by `at` among those in `low..=end`
    /// (the end itself counts).
    fn boundary(&self, at: u16, low: u64) -> u64 {
        let mut choices: Vec<u64> = self.batches.iter().copied().filter(|&b| b >= low).collect();
        choices.push(self.end());
        choices[usize::from(at) % choices.len()]
    }
}

fn read_range(partition: &Partition, from: u64, max_bytes: u64) -> Vec<(u64, Option<Vec<u8>>, Vec<u8>)> {
    let result = partition.read(from, max_bytes).unwrap();
    let mut out = Vec::new();
    for batch in &result.batches {
        for record in batch.records() {
            let record = record.unwrap();
            if record.offset >= from {
                out.push((
                    record.offset,
                    record.key.map(<[u8]>::to_vec),
                    record.value.unwrap().to_vec(),
                ));
            }
        }
    }
    out
}

fn check_all(partition: &Partition, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(partition.high_watermark(), model.records.len() as u64);
    prop_assert_eq!(partition.log_start_offset(), model.log_start);
    prop_assert_eq!(partition.committed_offset(), model.committed);
    for offset in model.log_start..model.end() {
        prop_assert_eq!(
            partition.term_at(offset),
            Some(model.terms[offset as usize]),
            "term of {}",
            offset
        );
    }
    prop_assert_eq!(partition.term_at(model.end()), None);
    if model.end() > model.log_start {
        prop_assert_eq!(partition.last_term(), model.last_term());
    }
    let mut offset = model.log_start;
    while offset < model.records.len() as u64 {
        let records = read_range(partition, offset, 1024);
        prop_assert!(!records.is_empty());
        for (o, key, value) in records {
            prop_assert_eq!(o, offset);
            let (k, v) = &model.records[o as usize];
            prop_assert_eq!(&key, k);
            prop_assert_eq!(&value, v);
            offset += 1;
        }
    }
    Ok(())
}

fn active_log(data: &Path) -> PathBuf {
    let dir = data.join("topics/m/0");
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Byte position in `log` of the first batch at or after `offset`.
fn position_of(log: &[u8], offset: u64) -> usize {
    let mut at = 0;
    while let Ok(header) = BatchHeader::parse(&log[at.min(log.len())..]) {
        if header.base_offset >= offset {
            break;
        }
        at += header.total_bytes();
    }
    at
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    let mut partition = store.create_topic("m", topic()).unwrap().partitions()[0].clone();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append {
                values,
                keyed,
                fsync,
                term_step,
            } => {
                let term = model.last_term() + u64::from(term_step);
                let base = model.records.len();
                let keys: Vec<_> = (0..values.len()).map(|i| key_of(base + i)).collect();
                let records: Vec<_> = values
                    .iter()
                    .zip(&keys)
                    .map(|(v, k)| Record {
                        key: keyed.then_some(&k[..]),
                        ..Record::value(v)
                    })
                    .collect();
                let durability = if fsync {
                    Durability::Fsync
                } else {
                    Durability::None
                };
                let outcome = if term == 0 {
                    partition.append(&records, durability).unwrap()
                } else {
                    partition.append_in_term(&records, term, durability).unwrap()
                };
                prop_assert_eq!(outcome.base_offset, base as u64);
                prop_assert_eq!(outcome.last_offset, (base + values.len() - 1) as u64);
                model.batches.push(base as u64);
                for (v, k) in values.into_iter().zip(keys) {
                    model.records.push((keyed.then_some(k), v));
                    model.terms.push(term);
                }
                if fsync {
                    model.durable = model.records.len() as u64;
                }
            }
            Op::Read { at, max_bytes } => {
                let span = model.records.len() as u64 - model.log_start + 1;
                let from = model.log_start + u64::from(at) % span;
                let records = read_range(&partition, from, u64::from(max_bytes));
                if from < model.records.len() as u64 {
                    prop_assert!(!records.is_empty(), "a read below the watermark returns data");
                }
                for (i, (o, key, value)) in records.into_iter().enumerate() {
                    prop_assert_eq!(o, from + i as u64);
                    prop_assert_eq!(&(key, value), &model.records[o as usize]);
                }
                let below = model.log_start.checked_sub(1);
                if let Some(below) = below {
                    prop_assert!(partition.read(below, 100).is_err());
                }
                prop_assert!(partition.read(model.records.len() as u64 + 1, 100).is_err());
            }
            Op::Truncate { at } => {
                let from = model.boundary(at, model.committed.max(model.log_start));
                partition.truncate_suffix(from, 0).unwrap();
                model.truncate(from);
                // Truncation flushes what it keeps.
                model.durable = from;
                if let Some(below) = model.committed.checked_sub(1).filter(|&b| b >= model.log_start) {
                    let refused = matches!(
                        partition.truncate_suffix(below, 0),
                        Err(spool_log::Error::TruncateBelowCommitted { .. })
                    );
                    prop_assert!(refused, "a truncation below the committed offset");
                }
            }
            Op::Commit { at } => {
                let durable = partition.durable_offset();
                let offset = model.boundary(at, model.committed).min(durable);
                partition.set_committed(offset).unwrap();
                model.committed = model.committed.max(offset);
                if durable < model.end() {
                    prop_assert!(partition.set_committed(durable + 1).is_err());
                }
            }
            Op::ReadCommitted { at } => {
                let span = model.committed.saturating_sub(model.log_start) + 1;
                let from = model.log_start + u64::from(at) % span;
                let read = partition.read_committed(from, 1 << 20).unwrap();
                prop_assert_eq!(read.high_watermark, model.committed);
                for batch in &read.batches {
                    prop_assert!(batch.last_offset() < model.committed);
                    for record in batch.records() {
                        let record = record.unwrap();
                        let (key, value) = &model.records[record.offset as usize];
                        prop_assert_eq!(record.key.map(<[u8]>::to_vec), key.clone());
                        prop_assert_eq!(record.value.unwrap(), &value[..]);
                    }
                }
            }
            Op::Restart { at, term_step } => {
                let span = model.end() - model.committed + 40;
                let start = model.committed + u64::from(at) % span;
                let term = model.last_term() + u64::from(term_step);
                partition.restart_at(start, term).unwrap();
                // Offsets below the new start are never read again: the
                // model keeps them as placeholders so that it stays indexed
                // by offset.
                model.truncate(start.min(model.end()));
                while model.end() < start {
                    model.records.push((None, Vec::new()));
                    model.terms.push(term);
                }
                if let Some(last) = model.terms.last_mut() {
                    *last = term;
                }
                model.batches.clear();
                model.log_start = start;
                model.durable = start;
                model.committed = start;
                if start > 0 {
                    prop_assert!(partition.read(start - 1, 100).is_err());
                }
                if start > 0 && term > 0 {
                    let older = partition.append_in_term(&[Record::value(b"x")], term - 1, Durability::None);
                    prop_assert!(older.is_err(), "an append in a term older than the restart's");
                }
            }
            Op::Checkpoint => {
                store.checkpoint().unwrap();
                model.durable = model.records.len() as u64;
            }
            Op::Retention => {
                store.enforce_retention(i64::MAX / 4).unwrap();
                let start = partition.log_start_offset();
                prop_assert!(start >= model.log_start && start <= model.records.len() as u64);
                model.log_start = start;
            }
            Op::Reopen => {
                store.close().unwrap();
                let (s, report) = Store::open(dir.path(), config()).unwrap();
                prop_assert!(report.clean && report.partitions.iter().all(|p| !p.lost_data()));
                store = s;
                partition = store.partition("m", 0).unwrap();
                model.durable = model.records.len() as u64;
                model.committed = model.log_start;
            }
            Op::Crash { cut, flips } => {
                let durable = partition.durable_offset().max(model.durable);
                store.simulate_crash();
                let log = active_log(dir.path());
                let mut bytes = fs::read(&log).unwrap();
                let safe = position_of(&bytes, durable);
                let end = safe + usize::from(cut) % (bytes.len() - safe + 1);
                bytes.truncate(end);
                for (at, bit) in flips {
                    if end > safe {
                        let i = safe + usize::from(at) % (end - safe);
                        bytes[i] ^= 1 << bit;
                    }
                }
                fs::write(&log, &bytes).unwrap();
                let (s, _) = Store::open(dir.path(), config()).unwrap();
                store = s;
                partition = store.partition("m", 0).unwrap();
                let hw = partition.high_watermark();
                prop_assert!(hw >= durable, "lost durable records: {} < {}", hw, durable);
                prop_assert!(hw <= model.records.len() as u64);
                model.truncate(hw);
                model.durable = hw;
                model.committed = model.log_start;
            }
        }
        check_all(&partition, &model)?;
    }
    store.close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
