//! A fixed single-node append loop for instruction counts, so that a change
//! to the append path can be compared with the commit before it under
//! callgrind, which counts the same instructions however loaded the
//! machine is (`docs/performance.md`, "Storage primitives for
//! replication"):
//!
//! ```text
//! cargo build --release -p spool-log --example append_loop
//! valgrind --tool=callgrind --toggle-collect='*append_batches*' target/release/examples/append_loop
//! valgrind --tool=callgrind --toggle-collect='*append_singles*' target/release/examples/append_loop
//! ```
//!
//! It appends 2,000 batches of 100 records of 100 bytes, then 20,000
//! batches of one such record, all with `Durability::None` and through the
//! plain `Partition::append` that every single-node producer uses. The
//! second loop is dominated by the per-batch work, where a per-append check
//! would show most.

use std::hint::black_box;

use spool_log::{Durability, Partition, Record, Store, StoreConfig, TopicConfig};

const BATCHES: usize = 2_000;
const SINGLES: usize = 20_000;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = StoreConfig {
        checkpoint_interval_ms: 0,
        retention_check_interval_ms: 0,
        ..StoreConfig::default()
    };
    let (store, _) = Store::open(dir.path(), config).expect("open");
    let topic = store
        .create_topic(
            "loop",
            TopicConfig {
                partitions: 1,
                ..TopicConfig::default()
            },
        )
        .expect("create topic");
    let partition = topic.partitions()[0].clone();
    let values: Vec<Vec<u8>> = (0..100).map(|i| vec![b'a' + (i % 26) as u8; 100]).collect();
    let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v)).collect();
    append_batches(&partition, &records);
    append_singles(&partition, &records[..1]);
    println!("appended up to offset {}", partition.high_watermark());
    store.close().expect("close");
}

#[inline(never)]
fn append_batches(partition: &Partition, records: &[Record<'_>]) {
    for _ in 0..BATCHES {
        black_box(partition.append(records, Durability::None).expect("append"));
    }
}

#[inline(never)]
fn append_singles(partition: &Partition, records: &[Record<'_>]) {
    for _ in 0..SINGLES {
        black_box(partition.append(records, Durability::None).expect("append"));
    }
}
