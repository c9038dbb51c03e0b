//! A tour of the client against a running server, printing what each call
//! returns: `cargo run -p spool-client --example tour -- http://127.0.0.1:7070`.
//!
//! It creates a topic named `tour-<time>`, exercises every Log RPC, deletes
//! the topic at the end, and runs one job through the typed job client.

use std::time::{Duration, Instant};

use spool_client::jobs::{Claim, NewJob};
use spool_client::{
    Client, Durability, Error, NewTopic, OffsetSpec, ProducerConfig, Record, StartPosition, Target,
};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7070".into());
    let client = Client::connect(url).await?;
    let info = client.server_info().await?;
    println!("server {} with limits {:?}", info.version, info.limits);
    let topic = format!(
        "tour-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let config = client.create_topic(NewTopic::new(topic.clone(), 3)).await?;
    println!("created {config:?}");

    let producer = client
        .producer(
            &topic,
            ProducerConfig {
                durability: Durability::Fsync,
                ..ProducerConfig::default()
            },
        )
        .await?;
    let ack = producer.send(Record::new("hello").with_key("customer-1")).await?;
    println!("send: {ack:?} (customer-1 must be partition 0)");
    let mut deliveries = Vec::new();
    for i in 0..1000 {
        deliveries.push(producer.enqueue(Record::new(format!("event {i}"))).await?);
    }
    let mut partitions = std::collections::BTreeMap::new();
    for delivery in deliveries {
        *partitions.entry(delivery.await?.partition).or_insert(0) += 1;
    }
    println!("enqueue: records per partition {partitions:?}");
    let records: Vec<Record> = (0..100).map(|i| Record::new(format!("batch {i}"))).collect();
    let batch = producer.send_batch(Target::Partition(2), &records).await?;
    println!("send_batch: {batch:?}");
    producer.close().await?;

    let (fetched, response) = client.fetch_records(&topic, 0, 0, 0, 0).await?;
    println!(
        "fetch: {} records, next {}, high watermark {}",
        fetched.len(),
        response.next_offset,
        response.high_watermark
    );

    let high = response.high_watermark;
    let waiter = {
        let client = client.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client.fetch_records(&topic, 0, high, 0, 5_000).await;
            (started.elapsed(), result.map(|(records, _)| records.len()))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .produce_records(&topic, Some(0), vec![Record::new("wake up")], Durability::None)
        .await?;
    let (waited, woken) = waiter.await?;
    println!("long poll: woke after {waited:?} with {woken:?} records");

    match client.fetch_records(&topic, 0, 1_000_000, 0, 0).await {
        Err(Error::OutOfRange {
            earliest,
            latest,
            status,
        }) => println!(
            "out of range: earliest {earliest:?} latest {latest:?} ({})",
            status.message()
        ),
        other => println!(
            "expected OUT_OF_RANGE, got {:?}",
            other.map(|(records, _)| records.len())
        ),
    }

    let offsets = client
        .list_offsets(&topic, None, OffsetSpec::Timestamp(0))
        .await?;
    println!("offsets at timestamp 0: {offsets:?}");

    let mut consumer = client
        .consumer(&topic)
        .name("tour")
        .start(StartPosition::Checkpoint {
            fallback: Default::default(),
        })
        .follow(false)
        .build()
        .await?;
    let mut count = 0;
    while let Some(record) = consumer.next().await {
        record?;
        count += 1;
    }
    consumer.commit_all().await?;
    println!(
        "consumer: {count} records; checkpoint {:?}",
        client.get_checkpoint("tour", &topic).await?
    );

    client.delete_topic(&topic).await?;
    match client.describe_topic(&topic).await {
        Err(Error::NotFound { status }) => println!("deleted: {}", status.message()),
        other => println!("expected NOT_FOUND, got {other:?}"),
    }

    // Jobs: enqueue, claim and finish by hand, then look at what happened.
    let jobs = client.jobs();
    let queue = format!("{topic}-jobs");
    let enqueued = jobs.enqueue(NewJob::new(queue.clone(), "hello")).await?;
    println!("enqueued {enqueued:?}");
    let claim = Claim {
        queues: vec![queue.clone()],
        max_jobs: 10,
        lease: Duration::from_secs(30),
        max_wait: Duration::from_secs(1),
        worker_id: "tour".into(),
    };
    let claimed = jobs.claim(&claim).await?;
    let outcomes = claimed.iter().map(|job| job.complete("done")).collect();
    println!("finished: {:?}", jobs.finish(outcomes).await?);
    println!("job: {:?}", jobs.get(&enqueued.job_id).await?.state);
    let history = jobs.history(&enqueued.job_id, None, 0).await?;
    let kinds: Vec<&str> = history.items.iter().map(|event| event.kind.as_str()).collect();
    println!("history: {kinds:?}");
    println!("stats: {:?}", jobs.stats(&queue).await?);
    Ok(())
}
