//! Cluster storage with three real `spoold` processes: offsets stay dense
//! (Raft's own entries take none) through `kill -9` of leaders at random
//! moments of a produce stream and of followers while they catch up, and
//! a node restarted while the rest of the cluster is down serves its
//! committed records from its stored commit.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::cluster::{TestCluster, WAIT, probe_leader, produce, runtime};

const TOPIC: &str = "dense";

/// A small deterministic generator for kill delays, seeded per run and
/// printed, so a failing schedule can be told apart from another.
struct Delays(u64);

impl Delays {
    fn new() -> Delays {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        println!("delay seed {seed}");
        Delays(seed)
    }

    fn next_ms(&mut self, max_ms: u64) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % (max_ms + 1))
    }
}

/// The node of `alive` that leads partition 0, found by a probe record
/// each, which goes into `acked`.
async fn leader(nodes: &TestCluster, alive: &[u64], acked: &mut BTreeMap<u64, String>) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        for &id in alive {
            let value = format!("probe-{id}-{}", acked.len());
            if let Some(offset) = probe_leader(&nodes.client(id).await?, TOPIC, &value).await {
                acked.insert(offset, value);
                return Ok(id);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no node of {alive:?} leads the partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every node's committed log is dense (a record at every offset below
/// its ListOffsets LATEST), holds every acknowledged record at its
/// acknowledged offset, and agrees with the others.
async fn check_dense(nodes: &TestCluster, acked: &BTreeMap<u64, String>) -> Result<()> {
    let end = acked.keys().next_back().map_or(0, |last| last + 1);
    let mut logs = Vec::new();
    for id in nodes.ids() {
        // Wait until the node has committed every acknowledged record.
        nodes.committed_log(id, TOPIC, 0, end).await?;
        let latest = nodes.latest(id, TOPIC, 0).await?;
        let log = nodes.committed_log(id, TOPIC, 0, latest).await?;
        ensure!(
            log.keys().copied().eq(0..latest),
            "node {id}'s offsets below {latest} have gaps: {} records",
            log.len()
        );
        for (offset, value) in acked {
            ensure!(
                log.get(offset) == Some(value),
                "node {id} holds {:?} at acknowledged offset {offset}, not {value:?}",
                log.get(offset)
            );
        }
        logs.push((id, log));
    }
    let (first_id, first) = &logs[0];
    for (id, log) in &logs[1..] {
        let shared = log.len().min(first.len());
        ensure!(
            log.iter().take(shared).eq(first.iter().take(shared)),
            "node {id}'s committed log differs from node {first_id}'s"
        );
    }
    Ok(())
}

#[test]
fn offsets_stay_dense_through_kill9_of_leaders_and_of_catching_up_followers() -> Result<()> {
    let runtime = runtime()?;
    let mut nodes = TestCluster::start(3);
    runtime.block_on(async {
        nodes.create_topic(TOPIC, 1).await?;
        let mut acked = BTreeMap::new();
        let mut delays = Delays::new();
        for round in 0..3 {
            let old = leader(&nodes, &nodes.ids(), &mut acked).await?;
            let via = nodes
                .ids()
                .into_iter()
                .find(|id| *id != old)
                .context("a follower")?;
            // A stream of produces through a follower, cut by the
            // leader's death at a random moment.
            let client = nodes.client(via).await?;
            let stream = tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..30 {
                    let value = format!("round-{round}-{i}");
                    acks.push((produce(&client, TOPIC, 0, &value).await?, value));
                }
                Ok::<_, anyhow::Error>(acks)
            });
            tokio::time::sleep(delays.next_ms(300)).await;
            nodes.kill9(old);
            acked.extend(stream.await??);

            // Back as a follower, it catches up (the new leader's blank
            // entry and the batches since) and dies again part way.
            nodes.restart(old);
            tokio::time::sleep(delays.next_ms(500)).await;
            nodes.kill9(old);
            nodes.restart(old);
        }
        for id in nodes.ids() {
            let value = format!("last-{id}");
            acked.insert(produce(&nodes.client(id).await?, TOPIC, 0, &value).await?, value);
        }
        check_dense(&nodes, &acked).await
    })
}

#[test]
fn a_node_restarted_while_the_others_are_down_serves_its_committed_records() -> Result<()> {
    let runtime = runtime()?;
    let mut nodes = TestCluster::start(3);
    runtime.block_on(async {
        nodes.create_topic(TOPIC, 1).await?;
        let client = nodes.client(2).await?;
        let mut acked = BTreeMap::new();
        for i in 0..20 {
            let value = format!("record-{i}");
            acked.insert(produce(&client, TOPIC, 0, &value).await?, value);
        }
        check_dense(&nodes, &acked).await?;
        let end = acked.len() as u64;

        for id in nodes.ids() {
            nodes.kill9(id);
        }
        // Alone, node 3 has no leader to learn the commit from: it serves
        // what it had committed from its own files.
        nodes.restart(3);
        let log = nodes.committed_log(3, TOPIC, 0, end).await?;
        ensure!(log.len() as u64 == end && log.values().eq(acked.values()));
        ensure!(nodes.latest(3, TOPIC, 0).await? == end);
        // And it acknowledges nothing: refused, or (if it led before and
        // still thinks so) never answered.
        match tokio::time::timeout(Duration::from_secs(5), produce_once(&nodes, 3)).await {
            Ok(Ok(offset)) => bail!("a lone node acknowledged a write at {offset}"),
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    })
}

/// One produce through node `id`, not retried.
async fn produce_once(nodes: &TestCluster, id: u64) -> Result<u64> {
    let answer = nodes
        .client(id)
        .await?
        .produce_records(
            TOPIC,
            Some(0),
            vec![spool_client::Record::new("alone")],
            spool_client::Durability::Quorum,
        )
        .await?;
    Ok(answer.results.first().context("a result")?.base_offset)
}
