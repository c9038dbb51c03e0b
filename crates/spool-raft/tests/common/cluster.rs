//! The in-process cluster of the replication tests: three replicas of one
//! partition, each with its own store in a temporary directory, talking
//! over the in-process network, and the checks every test ends with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use spool_format::batch::{self, Batch, Record};
use spool_log::{Partition, Store, TopicConfig};
use spool_raft::{AppState, GroupConfig, InProcessNetwork, Network, Replica};

use super::{Ack, committed_batches, encoded_batch, limits, store_config};

pub const TOPIC: &str = "replicated";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Node {
    pub store: Store,
    pub replica: Replica,
}

pub struct Cluster {
    /// Every replica's shortest and longest election timeout.
    pub election_timeout_ms: (u64, u64),
    pub dir: tempfile::TempDir,
    pub network: InProcessNetwork,
    pub nodes: BTreeMap<u64, Node>,
    pub acks: Vec<Ack>,
    /// The owner's state a node's replica opens with, if any
    /// (`Replica::open_with_state`).
    pub apps: BTreeMap<u64, Arc<dyn AppState>>,
}

impl Cluster {
    /// Starts replicas 1, 2 and 3 and initializes the group on replica 1.
    pub async fn start() -> Result<Cluster> {
        Cluster::start_with_election_timeout(300, 600).await
    }

    /// [`Cluster::start`] with every replica's election timeout drawn
    /// between `min_ms` and `max_ms`.
    pub async fn start_with_election_timeout(min_ms: u64, max_ms: u64) -> Result<Cluster> {
        let mut cluster = Cluster {
            election_timeout_ms: (min_ms, max_ms),
            dir: tempfile::tempdir()?,
            network: InProcessNetwork::new(),
            nodes: BTreeMap::new(),
            acks: Vec::new(),
            apps: BTreeMap::new(),
        };
        for id in 1..=3 {
            cluster.start_node(id).await?;
        }
        let members = (1..=3).map(|id| (id, format!("node-{id}"))).collect();
        cluster.nodes[&1].replica.initialize(&members).await?;
        Ok(cluster)
    }

    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Opens node `id`'s store (creating the partition the first time) and
    /// starts its replica.
    pub async fn start_node(&mut self, id: u64) -> Result<()> {
        let (store, _) = Store::open(self.node_dir(id), store_config())?;
        let partition = match store.partition(TOPIC, 0) {
            Ok(partition) => partition,
            Err(_) => {
                let config = TopicConfig {
                    partitions: 1,
                    segment_bytes_max: 8 * 1024,
                    retention_ms: None,
                    ..TopicConfig::default()
                };
                store.create_topic(TOPIC, config)?.partitions()[0].clone()
            }
        };
        let mut config = GroupConfig::new(id);
        config.heartbeat_interval_ms = 50;
        (config.election_timeout_min_ms, config.election_timeout_max_ms) = self.election_timeout_ms;
        let network: Arc<dyn Network> = Arc::new(self.network.clone());
        let app = self.apps.get(&id).cloned();
        let replica = Replica::open_with_state(&config, partition, network, app).await?;
        self.network.register(id, replica.clone());
        self.nodes.insert(id, Node { store, replica });
        Ok(())
    }

    /// Stops node `id` as a clean process stop would: unreachable, engine
    /// down, store closed (its files stay for a restart).
    pub async fn stop_node(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.remove(&id).context("node not running")?;
        self.network.unregister(id);
        node.replica.shutdown().await?;
        node.store.close()?;
        Ok(())
    }

    /// Stops node `id` as a crash would: the store is dropped without a
    /// flush, a seal or a clean-shutdown marker, so a restart recovers.
    pub async fn crash_node(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.remove(&id).context("node not running")?;
        self.network.unregister(id);
        node.store.simulate_crash();
        node.replica.shutdown().await?;
        Ok(())
    }

    pub fn replica(&self, id: u64) -> &Replica {
        &self.nodes[&id].replica
    }

    /// Waits until every running replica except `excluded` knows the same
    /// leader, in a term after `after_term`, and returns it.
    pub async fn wait_for_leader(&self, after_term: u64, excluded: &[u64]) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let replicas: Vec<&Replica> = self
                .nodes
                .iter()
                .filter(|(id, _)| !excluded.contains(id))
                .map(|(_, node)| &node.replica)
                .collect();
            let leaders: Vec<Option<u64>> = replicas.iter().map(|r| r.leader_id()).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && !excluded.contains(leader)
                && self.nodes.contains_key(leader)
                && replicas.iter().all(|r| r.term() > after_term)
            {
                return Ok(*leader);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no agreed leader after term {after_term}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `count` batches through `leader` and records the acks.
    pub async fn write(&mut self, leader: u64, prefix: &str, count: usize) -> Result<()> {
        for i in 0..count {
            let tag = format!("{prefix}-{i}");
            let records = 1 + i % 7;
            let appended = self.replica(leader).append(encoded_batch(&tag, records)).await?;
            ensure!(
                appended.next_offset - appended.base_offset == records as u64,
                "an entry holds exactly its batch's records"
            );
            self.acks.push(Ack {
                tag,
                count: records,
                appended,
            });
        }
        Ok(())
    }

    /// Waits until the replicas other than `crashed` agree on a leader in
    /// a term after `term`; returns it and the time that took.
    pub async fn time_failover(&self, round: usize, term: u64, crashed: u64) -> Result<(u64, Duration)> {
        let started = tokio::time::Instant::now();
        let leader = self.wait_for_leader(term, &[crashed]).await?;
        let took = started.elapsed();
        eprintln!("round {round}: node {leader} leads {took:?} after node {crashed} crashed");
        Ok((leader, took))
    }

    /// Starts node `crashed` again and waits until every replica follows
    /// one leader and holds one more batch: every log is then the same,
    /// and the next election is between equals. Returns the leader.
    pub async fn rejoin(&mut self, round: usize, crashed: u64) -> Result<u64> {
        self.start_node(crashed).await?;
        let leader = self.wait_for_leader(0, &[]).await?;
        self.write(leader, &format!("caught-up-{round}"), 1).await?;
        let end = self.acks.last().context("writes")?.appended.next_offset;
        self.wait_committed_everywhere(end).await?;
        Ok(leader)
    }

    /// Ends a test of repeated failovers: every acknowledged write is
    /// there, and the slowest failover took under 3 s.
    pub async fn check_failovers(&self, slowest: Duration) -> Result<()> {
        self.check_acknowledged_writes().await?;
        ensure!(
            slowest < Duration::from_millis(3_000),
            "a new leader took {slowest:?}"
        );
        eprintln!("slowest failover: {slowest:?}");
        Ok(())
    }

    /// Waits until every running replica has committed `offset`.
    pub async fn wait_committed_everywhere(&self, offset: u64) -> Result<()> {
        for (id, node) in &self.nodes {
            let partition = node.replica.partition();
            tokio::time::timeout(WAIT, partition.wait_committed(offset.saturating_sub(1)))
                .await
                .with_context(|| {
                    format!(
                        "node {id} did not commit offset {offset} (committed {})",
                        partition.committed_offset()
                    )
                })??;
        }
        Ok(())
    }

    /// The last acknowledged offset is committed on every running replica,
    /// their committed logs are identical, and every acknowledged write is
    /// in them at its acknowledged offsets. Offsets are dense: the
    /// acknowledged writes, in offset order, start at 0 and each starts
    /// where the one before it ends (every test's committed log holds
    /// acknowledged writes only). A replica whose log was compacted holds
    /// the writes from its log start; the logs are compared from the
    /// latest start.
    pub async fn check_acknowledged_writes(&self) -> Result<()> {
        let mut acks: Vec<&Ack> = self.acks.iter().collect();
        acks.sort_by_key(|a| a.appended.base_offset);
        let mut end = 0;
        for ack in acks {
            ensure!(
                ack.appended.base_offset == end,
                "write {} is at offset {}, not {end}: offsets have a gap",
                ack.tag,
                ack.appended.base_offset
            );
            end = ack.appended.next_offset;
        }
        self.wait_committed_everywhere(end).await?;
        let mut logs = Vec::new();
        for (id, node) in &self.nodes {
            let partition = node.replica.partition();
            let start = partition.log_start_offset();
            let log = committed_batches(partition, end)?;
            for ack in self.acks.iter().filter(|ack| ack.appended.base_offset >= start) {
                let batch = log
                    .iter()
                    .find(|b| b.base_offset() == ack.appended.base_offset)
                    .with_context(|| format!("node {id} lost the acknowledged write {}", ack.tag))?;
                ensure!(batch.last_offset() + 1 == ack.appended.next_offset);
                let values = values(partition, batch)?;
                let expected: Vec<String> = (0..ack.count).map(|i| format!("{}/{i}", ack.tag)).collect();
                ensure!(values == expected, "node {id} holds other records at {}", ack.tag);
            }
            let records: u64 = log.iter().map(|b| u64::from(b.record_count())).sum();
            ensure!(
                records == end.saturating_sub(start),
                "node {id}'s committed log holds {records} records from {start} to {end}"
            );
            logs.push((*id, log));
        }
        let common_start = self
            .nodes
            .values()
            .map(|node| node.replica.partition().log_start_offset())
            .max()
            .unwrap_or(0);
        let from_common_start = |log: &[Batch]| -> Vec<Batch> {
            log.iter()
                .filter(|b| b.base_offset() >= common_start)
                .cloned()
                .collect()
        };
        let (first_id, first) = &logs[0];
        let first = from_common_start(first);
        for (id, log) in &logs[1..] {
            let log = from_common_start(log);
            let same =
                log.len() == first.len() && log.iter().zip(&first).all(|(a, b)| a.bytes() == b.bytes());
            ensure!(same, "node {id}'s committed log differs from node {first_id}'s");
        }
        Ok(())
    }
}

/// Every committed batch below `end`, read in the committed mode.
pub fn values(partition: &Partition, batch: &Batch) -> Result<Vec<String>> {
    partition
        .records(batch)
        .map(|r| Ok(String::from_utf8(r?.value.unwrap_or_default().to_vec())?))
        .collect()
}

/// An idempotent producer's batch: `count` records named by `tag`, from
/// producer `producer_id` (epoch 0) numbered from `base_sequence`.
pub fn producer_batch(tag: &str, count: usize, producer_id: i64, base_sequence: i32) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count).map(|i| format!("{tag}/{i}").into_bytes()).collect();
    let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v)).collect();
    // The producer table forgets producers by their batches' timestamps:
    // these must be recent.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let mut bytes = batch::encode_to_vec(&records, now_ms, limits()).expect("a small batch encodes");
    batch::stamp_producer(
        &mut bytes,
        batch::ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        },
    );
    Bytes::from(bytes)
}
