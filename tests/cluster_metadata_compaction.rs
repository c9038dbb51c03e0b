//! The metadata log compacted, with three real `spoold` processes and
//! small internal segments: checkpoint commits fill the metadata log,
//! every node compacts it below what it has applied (its first segments
//! go), a node killed before all of it comes back, receives the leader's
//! snapshot with the metadata state in it and then knows the topics and
//! checkpoints it never read the commands of (a topic deleted meanwhile
//! is gone from its disk too), every node killed and restarted at once
//! starts from its own snapshot with the same state, and a node added
//! afterwards learns the metadata from the leader's snapshot.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::cluster::{Extra, TestCluster, runtime};
use spool_client::{Durability, Error, NewTopic};

const KEPT: &str = "kept";
const DROPPED: &str = "dropped";
const LATER: &str = "later";
const CONSUMERS: usize = 12;
const COMMITS: usize = 720;
const RECORDS: usize = 100;
const WAIT: Duration = Duration::from_secs(45);

fn cluster() -> TestCluster {
    TestCluster::start_with(
        3,
        Extra::settings(&[
            "retention_check_interval_ms=200ms",
            "record_bytes_max=16KiB",
            "batch_bytes_max=16KiB",
            "internal_segment_bytes=16KiB",
        ]),
    )
}

/// Where node `id`'s metadata log starts on disk.
fn first_segment(nodes: &TestCluster, id: u64) -> Result<u64> {
    nodes
        .first_segment(id, "__cluster")
        .with_context(|| format!("node {id} holds no segment of the metadata log"))
}

/// Waits until node `id`'s metadata log starts past 0.
async fn wait_compacted(nodes: &TestCluster, id: u64) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let start = first_segment(nodes, id)?;
        if start > 0 {
            return Ok(start);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "node {id} never compacted its metadata log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that node `id` knows the metadata as `expected` has it: `kept`
/// and `later` exist, `dropped` does not, and every consumer's
/// checkpoint is its last commit. Retries until `WAIT` runs out (a
/// restarted node takes a moment to catch up).
async fn wait_metadata(nodes: &TestCluster, id: u64, expected: &BTreeMap<String, u64>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let outcome = metadata_matches(nodes, id, expected).await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error.context(format!("node {id}'s metadata")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn metadata_matches(nodes: &TestCluster, id: u64, expected: &BTreeMap<String, u64>) -> Result<()> {
    let client = nodes.client(id).await?;
    client.describe_topic(KEPT).await.context(KEPT)?;
    client.describe_topic(LATER).await.context(LATER)?;
    match client.describe_topic(DROPPED).await {
        Err(Error::NotFound { .. }) => {}
        other => bail!("{DROPPED} is still known: {other:?}"),
    }
    for (consumer, offset) in expected {
        let stored = client.get_checkpoint(consumer, KEPT).await?;
        ensure!(
            stored.len() == 1 && stored[0].offset == *offset,
            "{consumer}: {stored:?}, expected offset {offset}"
        );
    }
    Ok(())
}

#[test]
fn the_metadata_log_is_compacted_and_nodes_come_back_from_its_snapshot() -> Result<()> {
    let runtime = runtime()?;
    let mut nodes = cluster();
    runtime.block_on(async {
        nodes.create_topic(KEPT, 1).await?;
        nodes.create_topic(DROPPED, 1).await?;
        nodes.agreed_leader(&nodes.ids(), KEPT, 0).await?;
        nodes.produce_through(1, KEPT, "before", RECORDS).await?;
        ensure!(
            nodes.data_dir(3).join("topics").join(DROPPED).is_dir(),
            "node 3 holds {DROPPED}"
        );
        Ok::<_, anyhow::Error>(())
    })?;

    // Node 3 misses every command from here on, and the others compact
    // them away.
    nodes.kill9(3);
    let expected = runtime.block_on(async {
        let client = nodes.patient_client(1).await?;
        let mut expected = BTreeMap::new();
        for i in 0..COMMITS {
            let consumer = format!("consumer-{}", i % CONSUMERS);
            let offset = (i * 7 % RECORDS) as u64;
            client
                .commit_checkpoint(&consumer, KEPT, &[(0, offset)], Durability::Fsync)
                .await
                .with_context(|| format!("commit {i}"))?;
            expected.insert(consumer, offset);
        }
        client.delete_topic(DROPPED).await?;
        client.create_topic(NewTopic::new(LATER, 1)).await?;
        nodes.agreed_leader(&[1, 2], LATER, 0).await?;
        for id in [1, 2] {
            let start = wait_compacted(&nodes, id).await?;
            eprintln!("node {id}: the metadata log starts at {start}");
            ensure!(
                nodes.data_dir(id).join("cluster/metadata.snapshot").is_file(),
                "node {id} stored its metadata state before compacting"
            );
            wait_metadata(&nodes, id, &expected).await?;
        }
        Ok::<_, anyhow::Error>(expected)
    })?;

    nodes.restart(3);
    runtime.block_on(async {
        wait_metadata(&nodes, 3, &expected).await?;
        ensure!(
            first_segment(&nodes, 3)? > 0,
            "node 3's metadata log restarted from the snapshot"
        );
        ensure!(
            nodes.data_dir(3).join("cluster/metadata.snapshot").is_file(),
            "node 3 stored the state the snapshot carried"
        );
        ensure!(
            !nodes.data_dir(3).join("topics").join(DROPPED).exists(),
            "node 3 deleted the local data of {DROPPED}, deleted while it was down"
        );
        nodes.produce_through(3, LATER, "on-three", 20).await?;
        nodes.produce_through(3, KEPT, "after", 20).await?;
        nodes.check(&nodes.ids()).await?;
        Ok::<_, anyhow::Error>(())
    })?;

    // Every node at once: each starts from its own snapshot.
    for id in nodes.ids() {
        nodes.kill9(id);
    }
    for id in nodes.ids() {
        nodes.restart(id);
    }
    runtime.block_on(async {
        for id in nodes.ids() {
            wait_metadata(&nodes, id, &expected).await?;
        }
        nodes.produce_through(2, KEPT, "restarted", 20).await?;
        nodes.check(&nodes.ids()).await?;
        Ok::<_, anyhow::Error>(())
    })?;

    // A node that joins now can read none of the early commands: it
    // learns the metadata from the leader's snapshot.
    let address = nodes.start_joining(4);
    runtime.block_on(async {
        nodes.patient_client(1).await?.add_node(4, &address).await?;
        wait_metadata(&nodes, 4, &expected).await?;
        ensure!(
            first_segment(&nodes, 4)? > 0,
            "node 4's metadata log starts at the snapshot"
        );
        Ok::<_, anyhow::Error>(())
    })
}
