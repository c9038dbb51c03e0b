//! The command line of `spool bench produce|fetch|consume|latency` (and the
//! `jobs` subcommand, whose arguments live with the other job commands in
//! `args/jobs.rs`).

use clap::{Args, Subcommand};

use super::DurabilityArg;
use super::jobs::{BENCH_JOBS_EXAMPLES, BenchJobsArgs};
use crate::units::{parse_bytes, parse_duration_ms};

/// Most records one request of `--records-per-request` may carry: far above
/// the small requests it is for, and small enough that the bench's
/// pre-built requests stay a few megabytes.
pub const RECORDS_PER_REQUEST_MAX: u32 = 100_000;

const BENCH_EXAMPLES: &str = "\
Examples:
  spool bench produce --duration 10s
  spool bench produce --producers 16 --partitions 16 --durability fsync --count 2000000
  spool bench produce --records-per-request 1 --in-flight 1 --durability fsync --duration 10s
  spool bench fetch --records-per-request 1 --count 50000
  spool bench consume --count 10000000
  spool bench latency --rate 10000 --duration 30s --json
  spool bench jobs --count 200000

The bench creates its own topic (--topic, or a generated name) and deletes it afterwards unless
--keep is given; a topic that already existed is used as it is and never deleted.
MB/s counts record values, with MB = 10^6 bytes.";

#[derive(Debug, Subcommand)]
#[command(after_help = BENCH_EXAMPLES)]
pub enum BenchCommand {
    /// Producer throughput, and acknowledgement latency sampled per record;
    /// with --records-per-request, requests of exactly that many records.
    #[command(after_help = BENCH_EXAMPLES)]
    Produce(BenchProduceArgs),
    /// One Fetch call after the other, each answering --records-per-request
    /// records, over a backlog preloaded (untimed) in batches of that size.
    #[command(after_help = BENCH_EXAMPLES)]
    Fetch(BenchFetchArgs),
    /// Consumer throughput reading a backlog (produced first if needed).
    #[command(after_help = BENCH_EXAMPLES)]
    Consume(BenchConsumeArgs),
    /// End-to-end latency at a steady produce rate.
    #[command(after_help = BENCH_EXAMPLES)]
    Latency(BenchLatencyArgs),
    /// No-op jobs: enqueue, claim and completion together, enqueue alone, or
    /// workers draining a preloaded backlog.
    #[command(after_help = BENCH_JOBS_EXAMPLES)]
    Jobs(BenchJobsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchCommon {
    /// Topic to use; created if missing. Default: a new bench-<time> topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of a topic the bench creates.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Size of each record's value.
    #[arg(long, default_value = "100", value_parser = parse_bytes, value_name = "SIZE")]
    pub record_bytes: u64,
    /// Keep the topic the bench created instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON line instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchProducerOptions {
    /// Producer batch size.
    #[arg(long, default_value = "256KiB", value_parser = parse_bytes, value_name = "SIZE")]
    pub batch_bytes: u64,
    /// Producer linger time [default: 5 for `bench produce`, 0 for `bench latency`].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// Produce requests in flight per producer (at most one per partition,
    /// except with --records-per-request, where every request in flight may
    /// go to the same partition).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Durability of every produce. Unlike `spool produce`, the bench
    /// defaults to none: it measures the server's pipeline on a topic it
    /// deletes afterwards, and says which durability it measured.
    #[arg(long, value_enum, default_value_t = DurabilityArg::None)]
    pub durability: DurabilityArg,
}

#[derive(Debug, Clone, Args)]
pub struct BenchProduceArgs {
    #[command(flatten)]
    pub common: BenchCommon,
    #[command(flatten)]
    pub producer: BenchProducerOptions,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// How long to produce (ignored with --count).
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub duration: u64,
    /// Produce exactly this many records instead of for a duration (with
    /// --records-per-request, rounded up to whole requests).
    #[arg(long)]
    pub count: Option<u64>,
    /// Send requests of exactly this many records each, bypassing the
    /// producer's linger batching: each of --in-flight tasks per producer
    /// sends one request and waits for its answer before the next. The
    /// shape of a service that appends one event per call (1 to 100000;
    /// --batch-bytes and --linger-ms do not apply).
    #[arg(long, value_parser = parse_records_per_request, value_name = "N")]
    pub records_per_request: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchFetchArgs {
    #[command(flatten)]
    pub common: BenchCommon,
    /// Records each Fetch answers: the backlog is preloaded in batches of
    /// this many records and every Fetch asks for one batch (1 to 100000).
    #[arg(long, default_value = "1", value_parser = parse_records_per_request, value_name = "N")]
    pub records_per_request: u32,
    /// Records to read (rounded up to whole requests); the topic is
    /// preloaded first (untimed) if it holds fewer.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
}

#[derive(Debug, Clone, Args)]
pub struct BenchConsumeArgs {
    #[command(flatten)]
    pub common: BenchCommon,
    /// Records to read; produced first if the topic holds fewer.
    #[arg(long, default_value_t = 5_000_000)]
    pub count: u64,
}

#[derive(Debug, Clone, Args)]
pub struct BenchLatencyArgs {
    #[command(flatten)]
    pub common: BenchCommon,
    #[command(flatten)]
    pub producer: BenchProducerOptions,
    /// Records per second, produced at a steady pace.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How long to produce (ignored with --count).
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub duration: u64,
    /// Produce exactly this many records instead of for a duration.
    #[arg(long)]
    pub count: Option<u64>,
}

fn parse_records_per_request(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("a request carries at least one record: give 1 or more".into()),
        Ok(records) if records > u64::from(RECORDS_PER_REQUEST_MAX) => Err(format!(
            "{records} records in one request is more than the bench's limit of {RECORDS_PER_REQUEST_MAX}"
        )),
        Ok(records) => Ok(records as u32),
        Err(_) => Err(format!(
            "{text:?} is not a number of records (1 to {RECORDS_PER_REQUEST_MAX})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("spool").chain(args.iter().copied()))
    }

    #[test]
    fn records_per_request_is_between_one_and_the_limit() {
        assert_eq!(parse_records_per_request("1"), Ok(1));
        assert_eq!(parse_records_per_request("100000"), Ok(100_000));
        assert!(
            parse_records_per_request("0")
                .unwrap_err()
                .contains("at least one record")
        );
        assert!(
            parse_records_per_request("100001")
                .unwrap_err()
                .contains("limit of 100000")
        );
        assert!(
            parse_records_per_request("-1")
                .unwrap_err()
                .contains("not a number of records")
        );
        assert!(parse_records_per_request("one").is_err());
    }

    #[test]
    fn produce_takes_records_per_request() {
        let cli = parse(&[
            "bench",
            "produce",
            "--records-per-request",
            "1",
            "--in-flight",
            "1",
            "--durability",
            "fsync",
        ])
        .unwrap();
        let Command::Bench(BenchCommand::Produce(args)) = cli.command else {
            panic!("not a bench produce");
        };
        assert_eq!(args.records_per_request, Some(1));
        assert_eq!(args.producer.in_flight, 1);
        assert_eq!(args.producer.durability, DurabilityArg::Fsync);
        let Command::Bench(BenchCommand::Produce(args)) = parse(&["bench", "produce"]).unwrap().command
        else {
            panic!("not a bench produce");
        };
        assert_eq!(
            args.records_per_request, None,
            "linger batching stays the default"
        );
    }

    #[test]
    fn fetch_reads_one_record_per_request_by_default() {
        let Command::Bench(BenchCommand::Fetch(args)) = parse(&["bench", "fetch"]).unwrap().command else {
            panic!("not a bench fetch");
        };
        assert_eq!(args.records_per_request, 1);
        assert_eq!(args.count, 50_000);
    }

    #[test]
    fn zero_records_per_request_is_a_usage_error_that_says_why() {
        for bad in [
            &["bench", "produce", "--records-per-request", "0"][..],
            &["bench", "fetch", "--records-per-request", "0"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
            assert!(error.to_string().contains("at least one record"), "{error}");
        }
        let error = parse(&["bench", "fetch", "--count", "0"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
