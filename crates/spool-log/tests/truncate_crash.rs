//! Suffix truncation under a real `kill -9`.
//!
//! A child process (this same test binary, running the ignored test
//! `truncate_child`) appends batches with `Durability::Fsync` in Raft terms
//! that now and then grow, and now and then truncates its log back a few
//! batches, printing a line for every acknowledged batch and before and
//! after every truncation. The parent kills it with SIGKILL at a random
//! moment, reopens the store, and checks the log against what the child
//! reported: every acknowledged record not truncated since is there with
//! its value and its term; a truncation that returned left nothing of the
//! removed suffix; a truncation in flight left the old log or a prefix of
//! it no shorter than the truncation point. Rounds share one data
//! directory, so each round also recovers what the last one left.
//!
//! `SPOOL_TRUNCATE_CRASH_ROUNDS` sets the number of rounds (default 12).

mod common;
#[path = "common/terms_log.rs"]
mod terms_log;

use std::io::Write;
use std::path::Path;

use common::{XorShift, seed};
use terms_log::{Log, contents, open_partition, store_config, value};

use spool_log::{Durability, Record, Store};

const TOPIC: &str = "truncate";

/// Runs in the child process only (it is ignored in normal runs).
#[test]
#[ignore = "run by kill_9_during_truncations_keeps_the_log_a_prefix in a child process"]
fn truncate_child() {
    let dir = std::env::var("SPOOL_TRUNCATE_CRASH_DIR").expect(
        "truncate_child runs only as the child process of kill_9_during_truncations_keeps_the_log_a_prefix, which sets SPOOL_TRUNCATE_CRASH_DIR",
    );
    let round: u64 = std::env::var("SPOOL_TRUNCATE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let (store, _) = Store::open(&dir, store_config()).unwrap();
    let partition = open_partition(&store, TOPIC);
    let (_, mut bases) = contents(&partition);
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    let mut rng = XorShift(seed());
    let mut term = partition.last_term().max(1);
    let mut seq = 0;
    loop {
        if rng.next().is_multiple_of(5) && bases.len() > 1 {
            // Back a few batches: the log grows on the whole.
            let back = 1 + (rng.next() % 4) as usize;
            let from = bases[bases.len().saturating_sub(back)];
            writeln!(out, "truncating {from}").unwrap();
            out.flush().unwrap();
            partition.truncate_suffix(from, 0).unwrap();
            bases.retain(|&b| b < from);
            writeln!(out, "truncated {from}").unwrap();
            out.flush().unwrap();
            continue;
        }
        if rng.next().is_multiple_of(6) {
            term += 1;
        }
        let count = 1 + rng.next() % 4;
        let values: Vec<_> = (seq..seq + count).map(|s| value(round, s)).collect();
        let records: Vec<_> = values.iter().map(|v| Record::value(v)).collect();
        let outcome = partition
            .append_in_term(&records, term, Durability::Fsync)
            .unwrap();
        bases.push(outcome.base_offset);
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
    Truncating(u64),
    Truncated(u64),
}

fn run_child(dir: &Path, round: u64, rng: &mut XorShift) -> Vec<Line> {
    let work_ms = 50 + rng.next() % 400;
    let printed = common::run_and_kill(
        "truncate_child",
        &[("SPOOL_TRUNCATE_CRASH_DIR", dir)],
        round,
        "SPOOL_TRUNCATE_CRASH_ROUND",
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
            ["truncating", _] => lines.push(Line::Truncating(n(1))),
            ["truncated", _] => lines.push(Line::Truncated(n(1))),
            _ => {}
        }
    }
    lines
}

#[test]
fn kill_9_during_truncations_keeps_the_log_a_prefix() {
    let rounds: u64 = std::env::var("SPOOL_TRUNCATE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(seed());
    // What the log must hold, offset -> (value, term): what the last
    // reopen found, with each round's reports applied.
    let mut model = Log::new();
    let (mut acks, mut truncations, mut killed_truncating) = (0, 0, 0);
    for round in 0..rounds {
        let lines = run_child(dir.path(), round, &mut rng);
        let mut in_flight = None;
        for line in lines {
            match line {
                Line::Ack {
                    base,
                    last,
                    term,
                    seq,
                } => {
                    assert_eq!(
                        base,
                        model.len() as u64,
                        "round {round}: an ack that leaves a gap"
                    );
                    for (i, offset) in (base..=last).enumerate() {
                        model.insert(offset, (value(round, seq + i as u64), term));
                    }
                    acks += 1;
                }
                Line::Truncating(from) => in_flight = Some(from),
                Line::Truncated(from) => {
                    model.retain(|&offset, _| offset < from);
                    in_flight = None;
                    truncations += 1;
                }
            }
        }

        let (store, report) = Store::open(dir.path(), store_config()).unwrap();
        assert!(!report.clean, "a killed process cannot have closed cleanly");
        let partition = open_partition(&store, TOPIC);
        let (found, _) = contents(&partition);
        let end = partition.high_watermark();
        assert_eq!(found.len() as u64, end, "round {round}: the log has a gap");
        let model_end = model.len() as u64;
        match in_flight {
            // Killed inside a truncation: the old log or a prefix of it no
            // shorter than the truncation point.
            Some(from) => {
                killed_truncating += 1;
                assert!(
                    (from..=model_end).contains(&end),
                    "round {round}: killed while truncating at {from}, recovered to {end} of {model_end}"
                );
                model.retain(|&offset, _| offset < end);
            }
            // Otherwise everything acknowledged is there; one batch more may
            // be, the append that was killed before its line was printed.
            None => assert!(
                (model_end..=model_end + 4).contains(&end),
                "round {round}: recovered to {end}, acknowledged up to {model_end}"
            ),
        }
        for (offset, expected) in &model {
            assert_eq!(
                found.get(offset),
                Some(expected),
                "round {round}: offset {offset}"
            );
        }
        // The unacknowledged batch, if any, becomes part of the model.
        model = found;
        if round.is_multiple_of(2) {
            store.close().unwrap();
        } else {
            store.simulate_crash();
        }
    }
    eprintln!(
        "{rounds} kill -9 rounds ({killed_truncating} inside a truncation), {acks} acknowledged batches, {truncations} truncations"
    );
    assert!(
        acks > 0 && truncations > 0,
        "the child neither appended nor truncated"
    );
}
