//! Restarting a log at an offset (`Partition::restart_at`) under a real
//! `kill -9`.
//!
//! A child process (this same test binary, running the ignored test
//! `restart_child`) appends batches with `Durability::Fsync`, printing a
//! line for every acknowledged batch, and now and then restarts its log
//! at an offset at or past its end in a new term, as a Raft follower does
//! when it installs a snapshot, printing a line before and after. The
//! parent kills it with SIGKILL at a random moment, reopens the store and
//! checks the log against what the child reported: every record
//! acknowledged since the last restart that returned is there, at its
//! offset, with its value and term, and the log starts where that restart
//! put it; killed inside a restart, the log is either the old one whole or
//! the new one, empty at the new start in the new term, never a mix.
//! Rounds share one data directory, so each round also opens what the last
//! one left.
//!
//! `SPOOL_RESTART_CRASH_ROUNDS` sets the number of rounds (default 12).

mod common;
#[path = "common/terms_log.rs"]
mod terms_log;

use std::io::Write;
use std::path::Path;

use common::{XorShift, seed};
use terms_log::{Log, contents, open_partition, store_config, value};

use spool_log::{Durability, Record, Store};

const TOPIC: &str = "restart";

/// Runs in the child process only (it is ignored in normal runs).
#[test]
#[ignore = "run by kill_9_during_restarts_leaves_the_old_log_or_the_new_one in a child process"]
fn restart_child() {
    let dir = std::env::var("SPOOL_RESTART_CRASH_DIR").expect(
        "restart_child runs only as the child process of kill_9_during_restarts_leaves_the_old_log_or_the_new_one, which sets SPOOL_RESTART_CRASH_DIR",
    );
    let round: u64 = std::env::var("SPOOL_RESTART_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let (store, _) = Store::open(&dir, store_config()).unwrap();
    let partition = open_partition(&store, TOPIC);
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    let mut rng = XorShift(seed());
    let mut seq = 0;
    loop {
        if rng.next().is_multiple_of(8) {
            // A snapshot of entries this log never held: the new start may
            // be its end, or past it.
            let offset = partition.high_watermark() + rng.next() % 40;
            let term = partition.last_term() + 1;
            writeln!(out, "restarting {offset} {term}").unwrap();
            out.flush().unwrap();
            partition.restart_at(offset, term).unwrap();
            writeln!(out, "restarted {offset} {term}").unwrap();
            out.flush().unwrap();
            continue;
        }
        let term = partition.last_term().max(1);
        let count = 1 + rng.next() % 4;
        let values: Vec<_> = (seq..seq + count).map(|s| value(round, s)).collect();
        let records: Vec<_> = values.iter().map(|v| Record::value(v)).collect();
        let outcome = partition
            .append_in_term(&records, term, Durability::Fsync)
            .unwrap();
        writeln!(
            out,
            "ack {} {} {term} {seq}",
            outcome.base_offset, outcome.last_offset
        )
        .unwrap();
        out.flush().unwrap();
        seq += count;
    }
}

/// What the child reported, in order.
enum Line {
    Ack {
        base: u64,
        last: u64,
        term: u64,
        seq: u64,
    },
    Restarting {
        offset: u64,
        term: u64,
    },
    Restarted {
        offset: u64,
        term: u64,
    },
}

fn run_child(dir: &Path, round: u64, rng: &mut XorShift) -> Vec<Line> {
    let work_ms = 50 + rng.next() % 400;
    let printed = common::run_and_kill(
        "restart_child",
        &[("SPOOL_RESTART_CRASH_DIR", dir)],
        round,
        "SPOOL_RESTART_CRASH_ROUND",
        work_ms,
    );
    let mut lines = Vec::new();
    for line in printed {
        let fields: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| fields[i].parse::<u64>().unwrap();
        match fields[..] {
            ["ack", _, _, _, _] => lines.push(Line::Ack {
                base: n(1),
                last: n(2),
                term: n(3),
                seq: n(4),
            }),
            ["restarting", _, _] => lines.push(Line::Restarting {
                offset: n(1),
                term: n(2),
            }),
            ["restarted", _, _] => lines.push(Line::Restarted {
                offset: n(1),
                term: n(2),
            }),
            _ => {}
        }
    }
    lines
}

/// The log a test round expects: where it starts, its last term, and the
/// records it holds.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    start: u64,
    log: Log,
}

impl Model {
    fn end(&self) -> u64 {
        self.log.keys().next_back().map_or(self.start, |last| last + 1)
    }
}

#[test]
fn kill_9_during_restarts_leaves_the_old_log_or_the_new_one() {
    let rounds: u64 = std::env::var("SPOOL_RESTART_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(seed());
    let mut model = Model {
        start: 0,
        log: Log::new(),
    };
    let (mut acks, mut restarts) = (0, 0);
    // Rounds killed inside a restart that found the new log, and the old.
    let (mut killed_new, mut killed_old) = (0, 0);
    for round in 0..rounds {
        let lines = run_child(dir.path(), round, &mut rng);
        // The restart the child was killed inside, if any.
        let mut in_flight = None;
        for line in lines {
            match line {
                Line::Ack {
                    base,
                    last,
                    term,
                    seq,
                } => {
                    assert_eq!(base, model.end(), "round {round}: an ack that leaves a gap");
                    for (i, offset) in (base..=last).enumerate() {
                        model.log.insert(offset, (value(round, seq + i as u64), term));
                    }
                    acks += 1;
                }
                Line::Restarting { offset, term } => in_flight = Some((offset, term)),
                Line::Restarted { offset, term } => {
                    assert_eq!(in_flight, Some((offset, term)), "round {round}");
                    model = Model {
                        start: offset,
                        log: Log::new(),
                    };
                    in_flight = None;
                    restarts += 1;
                }
            }
        }

        let (store, report) = Store::open(dir.path(), store_config()).unwrap();
        assert!(!report.clean, "a killed process cannot have closed cleanly");
        let partition = open_partition(&store, TOPIC);
        let found = Model {
            start: partition.log_start_offset(),
            log: contents(&partition).0,
        };
        let end = partition.high_watermark();
        assert_eq!(
            found.log.len() as u64,
            end - found.start,
            "round {round}: the log has a gap"
        );
        match in_flight {
            // Killed inside a restart: the new log, empty, in the new
            // term ...
            // (An old log that was already empty at that offset looks the
            // same but for its term.)
            Some((offset, term))
                if found.start == offset && (model != found || partition.last_term() == term) =>
            {
                killed_new += 1;
                assert!(
                    found.log.is_empty() && end == offset,
                    "round {round}: killed restarting at {offset}, the new log holds [{}, {end})",
                    found.start
                );
                assert_eq!(partition.last_term(), term, "round {round}: the new log's term");
                model = found;
                restarts += 1;
            }
            // ... or the old one, whole (one batch more may be there: the
            // append killed before its line was printed is never in flight
            // with a restart, which follows a printed line).
            Some((offset, _)) => {
                killed_old += 1;
                assert_eq!(
                    found, model,
                    "round {round}: killed restarting at {offset}: neither the new log nor the old one"
                );
            }
            None => {
                assert_eq!(found.start, model.start, "round {round}: the log start");
                let model_end = model.end();
                assert!(
                    (model_end..=model_end + 4).contains(&end),
                    "round {round}: recovered to {end}, acknowledged up to {model_end}"
                );
                for (offset, expected) in &model.log {
                    assert_eq!(
                        found.log.get(offset),
                        Some(expected),
                        "round {round}: offset {offset}"
                    );
                }
                // The unacknowledged batch, if any, becomes part of the model.
                model = found;
            }
        }
        if round.is_multiple_of(2) {
            store.close().unwrap();
        } else {
            store.simulate_crash();
        }
    }
    eprintln!(
        "{rounds} kill -9 rounds ({} inside a restart: {killed_new} found the new log, {killed_old} the old one), {acks} acknowledged batches, {restarts} restarts",
        killed_new + killed_old
    );
    assert!(
        acks > 0 && restarts > 0,
        "the child neither appended nor restarted"
    );
}
