//! The authorization check per request: a principal with a dozen grants,
//! allowed by its last grant, refused by all, and matched by a pattern
//! with a star in the middle. The budget is 1 µs per request.

use criterion::{Criterion, criterion_group, criterion_main};
use spool_auth::{Action, Grant, Principal};

fn principal() -> Principal {
    let mut grants: Vec<Grant> = (0..10)
        .map(|i| Grant::parse(&format!("topic:team{i}-*=produce,consume")).unwrap())
        .collect();
    grants.push(Grant::parse("queue:emails-*-eu=work").unwrap());
    grants.push(Grant::parse("topic:orders-*=produce").unwrap());
    Principal::new("service-a", grants)
}

fn bench(c: &mut Criterion) {
    let principal = principal();
    let mut group = c.benchmark_group("authorize");
    group.bench_function("allowed_by_the_last_of_12_grants", |b| {
        b.iter(|| {
            principal.authorize(
                std::hint::black_box(Action::PRODUCE),
                std::hint::black_box("orders-eu"),
            )
        })
    });
    group.bench_function("refused_by_12_grants", |b| {
        b.iter(|| {
            principal.authorize(
                std::hint::black_box(Action::CONSUME),
                std::hint::black_box("payments"),
            )
        })
    });
    group.bench_function("middle_star_pattern", |b| {
        b.iter(|| {
            principal.authorize(
                std::hint::black_box(Action::WORK),
                std::hint::black_box("emails-bulk-eu"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
