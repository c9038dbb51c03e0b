//! Opens (or creates) `./spool-data`, appends a few records durably to the
//! topic `demo`, reads the whole topic back and prints it. Run it twice to
//! see the log survive a restart.
//!
//! cargo run -p spool-log --example demo [DATA_DIR]

use spool_log::{Durability, Record, Store, StoreConfig, TopicConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "spool-data".to_owned());
    let (store, report) = Store::open(&dir, StoreConfig::default())?;
    println!(
        "opened {dir} ({} shutdown, {} partitions repaired)",
        if report.clean { "clean" } else { "unclean or first" },
        report.partitions.len()
    );
    let topic = match store.topic("demo") {
        Ok(topic) => topic,
        Err(_) => store.create_topic("demo", TopicConfig::default())?,
    };
    let partition = &topic.partitions()[0];
    let line = format!("hello from pid {}", std::process::id());
    let outcome = partition.append(&[Record::value(line.as_bytes())], Durability::Fsync)?;
    println!(
        "appended offset {} ({:?})",
        outcome.base_offset, outcome.durability
    );

    let mut offset = partition.log_start_offset();
    while offset < partition.high_watermark() {
        let read = partition.read(offset, 1 << 20)?;
        for batch in &read.batches {
            for record in batch.records() {
                let record = record?;
                let value = String::from_utf8_lossy(record.value.unwrap_or_default());
                println!("{:>6}  {}  {value}", record.offset, record.timestamp_ms);
            }
        }
        offset = read.next_offset;
    }
    store.close()?;
    Ok(())
}
