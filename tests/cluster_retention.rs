//! Retention on a replicated topic, with three real `spoold` processes: a
//! topic created with `retention_bytes` and small segments says so in
//! DescribeTopic; as records arrive every node compacts its replica (its
//! earliest offset moves past 0) and keeps every acknowledged record from
//! its earliest offset on, the same on every node; a fetch below it is
//! OUT_OF_RANGE. A node killed while the others compact past everything
//! it holds comes back, restarts its log from the leader's snapshot and
//! then holds the leader's records from there.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::cluster::{Extra, TestCluster, runtime};
use spool_client::{Error, NewTopic, OffsetSpec};

const TOPIC: &str = "short";
const WAIT: Duration = Duration::from_secs(30);

fn cluster() -> TestCluster {
    TestCluster::start_with(
        3,
        Extra {
            settings: Some(Box::new(|_| vec!["retention_check_interval_ms=200ms".to_owned()])),
            ..Extra::default()
        },
    )
}

/// Node `id`'s earliest and latest offsets of partition 0.
async fn offsets(nodes: &TestCluster, id: u64) -> Result<(u64, u64)> {
    let client = nodes.client(id).await?;
    let earliest = client.list_offsets(TOPIC, Some(0), OffsetSpec::Earliest).await?;
    let latest = client.list_offsets(TOPIC, Some(0), OffsetSpec::Latest).await?;
    Ok((
        earliest.first().context("an offset")?.offset,
        latest.first().context("an offset")?.offset,
    ))
}

/// Waits until `check` holds of node `id`'s (earliest, latest).
async fn wait_offsets(
    nodes: &TestCluster,
    id: u64,
    what: &str,
    check: impl Fn(u64, u64) -> bool,
) -> Result<(u64, u64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((earliest, latest)) = offsets(nodes, id).await
            && check(earliest, latest)
        {
            return Ok((earliest, latest));
        }
        ensure!(tokio::time::Instant::now() < deadline, "node {id}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node `id`'s committed records of partition 0 from `from` to `end`.
async fn records(nodes: &TestCluster, id: u64, from: u64, end: u64) -> Result<BTreeMap<u64, String>> {
    let client = nodes.client(id).await?;
    let mut log = BTreeMap::new();
    let mut offset = from;
    while offset < end {
        let (records, response) = client.fetch_records(TOPIC, 0, offset, 1 << 20, 200).await?;
        for record in records.into_iter().filter(|r| r.offset >= from && r.offset < end) {
            log.insert(
                record.offset,
                String::from_utf8(record.value.unwrap_or_default().to_vec())?,
            );
        }
        ensure!(
            response.next_offset > offset,
            "node {id}: no progress at {offset}"
        );
        offset = response.next_offset;
    }
    Ok(log)
}

/// Every node of `ids` holds every acknowledged record from its earliest
/// offset to `end`, densely, and the nodes agree from the latest earliest
/// offset on; a fetch below a node's earliest offset is OUT_OF_RANGE.
async fn check(nodes: &TestCluster, ids: &[u64], end: u64) -> Result<()> {
    let acked: BTreeMap<u64, String> = nodes
        .acked
        .lock()
        .expect("acks lock")
        .get(&(TOPIC.to_owned(), 0))
        .cloned()
        .unwrap_or_default();
    let mut logs = Vec::new();
    for &id in ids {
        // A retention pass may move the earliest offset during the read:
        // read again from the new one.
        let deadline = tokio::time::Instant::now() + WAIT;
        let (earliest, log) = loop {
            let (earliest, _) =
                wait_offsets(nodes, id, "commits the last record", |_, latest| latest >= end).await?;
            match records(nodes, id, earliest, end).await {
                Ok(log) => break (earliest, log),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    eprintln!("node {id}: reading again from the earliest offset after {error}");
                }
                Err(error) => return Err(error),
            }
        };
        ensure!(
            log.keys().copied().eq(earliest..end),
            "node {id}: gaps between {earliest} and {end}"
        );
        for (offset, value) in acked.range(earliest..end) {
            ensure!(
                log.get(offset) == Some(value),
                "node {id} lost {value:?} at {offset}"
            );
        }
        if earliest > 0 {
            let client = nodes.client(id).await?;
            let below = client.fetch_records(TOPIC, 0, earliest - 1, 1024, 0).await;
            ensure!(
                matches!(below, Err(Error::OutOfRange { .. })),
                "node {id} below {earliest}: {below:?}"
            );
        }
        logs.push((earliest, log));
    }
    let common = logs.iter().map(|(earliest, _)| *earliest).max().unwrap_or(0);
    let first: Vec<_> = logs[0].1.range(common..).collect();
    for (_, log) in &logs[1..] {
        ensure!(
            log.range(common..).collect::<Vec<_>>() == first,
            "the nodes' logs differ from {common}"
        );
    }
    Ok(())
}

#[test]
fn a_replicated_topic_with_retention_compacts_every_replica_and_a_lagging_one_catches_up() -> Result<()> {
    let runtime = runtime()?;
    let mut nodes = cluster();
    runtime.block_on(async {
        let client = nodes.patient_client(1).await?;
        let created = client
            .create_topic(NewTopic {
                retention_bytes: 16 * 1024,
                segment_bytes: 4096,
                ..NewTopic::new(TOPIC, 1)
            })
            .await?;
        ensure!(created.retention_bytes == Some(16 * 1024), "{created:?}");
        for id in nodes.ids() {
            nodes.agreed_leader(&nodes.ids(), TOPIC, 0).await?;
            let described = nodes.client(id).await?.describe_topic(TOPIC).await?;
            ensure!(
                described.config.retention_bytes == Some(16 * 1024),
                "node {id}: {described:?}"
            );
        }
        nodes.produce_through(1, TOPIC, "first", 600).await?;
        let end = nodes.acked_count(TOPIC, 0) as u64;
        for id in nodes.ids() {
            wait_offsets(&nodes, id, "compacts its replica", |earliest, _| earliest > 0).await?;
        }
        check(&nodes, &nodes.ids(), end).await?;
        Ok::<_, anyhow::Error>(())
    })?;

    // Node 3 misses records that the others then compact away.
    nodes.kill9(3);
    let held = runtime.block_on(async {
        nodes.produce_through(1, TOPIC, "missed", 600).await?;
        let end = nodes.acked_count(TOPIC, 0) as u64;
        let held = end - 600;
        for id in [1, 2] {
            wait_offsets(&nodes, id, "compacts past node 3's log", |earliest, _| {
                earliest > held
            })
            .await?;
        }
        Ok::<_, anyhow::Error>(held)
    })?;
    nodes.restart(3);
    runtime.block_on(async {
        nodes.produce_through(1, TOPIC, "after", 50).await?;
        let end = nodes.acked_count(TOPIC, 0) as u64;
        wait_offsets(
            &nodes,
            3,
            "restarts its log from a snapshot",
            |earliest, latest| earliest > held && latest >= end,
        )
        .await?;
        check(&nodes, &nodes.ids(), end).await?;
        Ok::<_, anyhow::Error>(())
    })
}
