//! Criterion benchmark of job search (`JobsCore::search`, what the
//! dashboard's search box and `SearchJobs` run) over a table of 1,000,000
//! jobs in memory: payload text (a rare order number, a customer shared by
//! 100 jobs, a word inside a word), an idempotency key, a header, and error
//! text among 10,000 failed jobs. The bar is 100 ms a search.
//!
//! Run with `cargo bench -p spool-jobs --bench search`. Building the table
//! takes a few seconds before the first measurement; the resident memory
//! with the table and its indexes, and the time of the first payload
//! search (which computes every job's signature), are printed on stderr. Under `cargo test
//! --benches` (criterion's test mode) it runs with 10,000 jobs, once.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use spool_jobs::{Event, JobsConfig, JobsCore, SearchField, SearchQuery};

const T0: i64 = 1_800_000_000_000;
const FAILED_EVERY: u64 = 100;

fn jobs_wanted() -> u64 {
    if let Some(count) = std::env::var("SEARCH_BENCH_JOBS")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        return count;
    }
    // criterion's test mode passes --test (or --bench absent under
    // `cargo test`): a small table keeps that run short.
    if std::env::args().any(|arg| arg == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// A table of `count` jobs; every hundredth failed once with an error.
fn table(count: u64) -> JobsCore {
    let config = JobsConfig {
        jobs_in_memory_max: 2 * count as usize,
        ..JobsConfig::default()
    };
    let mut core = JobsCore::new(config, 7);
    for i in 0..count {
        let id = (T0 as u64) << 16 | i;
        let payload = format!(
            "{{\"order\":\"ORD-{i:07}\",\"customer\":\"cust-{}\",\"sku\":\"sku-{}\",\"note\":\"gift wrap please\"}}",
            i % 10_000,
            i % 500
        );
        core.apply(&Event::Enqueued {
            id,
            at_ms: T0,
            queue: format!("queue-{}", i % 100),
            payload: Bytes::from(payload),
            content_type: "application/json".into(),
            headers: vec![("tenant".into(), format!("t{}", i % 1_000))],
            priority: 0,
            attempts_max: 25,
            timeout_ms: 0,
            run_at_ms: T0,
            idempotency_key: Some(format!("order-{i}")),
            dedup_until_ms: Some(T0 + 86_400_000),
        });
        if i % FAILED_EVERY == 0 {
            core.apply(&Event::Claimed {
                id,
                at_ms: T0,
                attempt: 1,
                token: i,
                lease_until_ms: T0 + 30_000,
                worker: "w".into(),
            });
            core.apply(&Event::Failed {
                id,
                at_ms: T0,
                attempt: 1,
                error: format!("SMTP 550: mailbox user{i}@example.com unavailable"),
                retry_at_ms: Some(T0 + 60_000),
                lease_expired: false,
            });
        }
    }
    core
}

fn query(text: &str, field: SearchField) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        field,
        queue: None,
        limit: 50,
    }
}

fn search(c: &mut Criterion) {
    let count = jobs_wanted();
    let started = std::time::Instant::now();
    let core = table(count);
    eprintln!(
        "search bench: {count} jobs built in {:.1} s, resident {} MiB",
        started.elapsed().as_secs_f64(),
        resident_mib()
    );
    let rare = format!("ORD-{:07}", count / 2 + 7);
    // Signatures are computed by the first payload search after jobs
    // arrive: this one signs the whole table.
    let first = std::time::Instant::now();
    let found = core.search(&query(&rare, SearchField::Payload)).jobs.len();
    eprintln!(
        "search bench: the first payload search (signing {count} jobs) took {:.0} ms, found {found}",
        first.elapsed().as_secs_f64() * 1000.0
    );
    let cases = [
        ("payload_order_number", query(&rare, SearchField::Payload), 1),
        (
            "payload_customer_100_jobs",
            query("cust-4242", SearchField::Payload),
            50,
        ),
        ("payload_inside_a_word", query("00777", SearchField::Payload), 10),
        (
            "payload_common_word_limit_50",
            query("gift wrap", SearchField::Payload),
            50,
        ),
        (
            "idempotency_key",
            query("order-31337", SearchField::IdempotencyKey),
            1,
        ),
        ("header", query("tenant=t7", SearchField::Header), 50),
        ("error_text", query("user4200@", SearchField::Error), 1),
        ("any_field", query(&rare, SearchField::Any), 1),
    ];
    let mut group = c.benchmark_group(format!("search_{count}_jobs"));
    for (name, query, at_least) in &cases {
        let found = core.search(query).jobs.len();
        assert!(found >= (*at_least).min(1), "{name}: found {found}");
        group.bench_function(*name, |b| b.iter(|| core.search(query).jobs.len()));
    }
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
