//! Three replicas of one partition in one process, each with its own
//! store in a temporary directory and its own `spool.v1.Peer` server on
//! 127.0.0.1, talking through [`PeerTransport`] over real gRPC: the mirror
//! of `cluster.rs` (which uses the in-process network) for election,
//! commit, failover and catching up. A second group on the same servers
//! checks that requests are routed by group id.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Ack, committed_batches, encoded_batch, store_config};

use anyhow::{Context, Result, bail, ensure};
use spool_log::{Store, TopicConfig};
use spool_raft::{GroupConfig, GroupId, PeerService, PeerTransport, Replica, TransportConfig};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const WAIT: Duration = Duration::from_secs(15);

struct Node {
    store: Store,
    service: PeerService,
    transport: Arc<PeerTransport>,
    server: tokio::task::JoinHandle<()>,
}

struct Cluster {
    dir: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    peers: BTreeMap<u64, String>,
    acks: Vec<Ack>,
}

impl Cluster {
    /// Three nodes, each serving `spool.v1.Peer` on its own port, with a
    /// replica of every group in `groups`; every group is initialized on
    /// node 1.
    async fn start(groups: &[GroupId]) -> Result<Cluster> {
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            peers.insert(id, listener.local_addr()?.to_string());
            listeners.insert(id, listener);
        }
        let mut cluster = Cluster {
            dir: tempfile::tempdir()?,
            nodes: BTreeMap::new(),
            peers,
            acks: Vec::new(),
        };
        for (id, listener) in listeners {
            let (store, _) = Store::open(cluster.node_dir(id), store_config())?;
            let service = PeerService::new(id, format!("client-{id}"), 64 << 20);
            let server = tonic::transport::Server::builder()
                .add_service(service.clone().into_server())
                .serve_with_incoming(TcpListenerStream::new(listener));
            let server = tokio::spawn(async move {
                server.await.expect("peer server");
            });
            let transport = Arc::new(PeerTransport::new(
                id,
                &cluster.peers,
                TransportConfig::default(),
                None,
            )?);
            cluster.nodes.insert(
                id,
                Node {
                    store,
                    service,
                    transport,
                    server,
                },
            );
            for group in groups {
                cluster.open_replica(id, group).await?;
            }
        }
        for group in groups {
            cluster.replica(1, group)?.initialize(&cluster.peers).await?;
        }
        Ok(cluster)
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Opens node `id`'s replica of `group` (creating the partition the
    /// first time) and routes the group's peer requests to it.
    async fn open_replica(&mut self, id: u64, group: &GroupId) -> Result<()> {
        self.open_replica_of(id, group, 0).await
    }

    /// [`open_replica`](Self::open_replica) of creation `incarnation` of
    /// the group's topic.
    async fn open_replica_of(&mut self, id: u64, group: &GroupId, incarnation: u64) -> Result<()> {
        let node = &self.nodes[&id];
        let partition = match node.store.partition(&group.topic, group.partition) {
            Ok(partition) => partition,
            Err(_) => {
                let config = TopicConfig {
                    partitions: group.partition + 1,
                    segment_bytes_max: 8 * 1024,
                    retention_ms: None,
                    ..TopicConfig::default()
                };
                node.store.create_topic(&group.topic, config)?.partitions()[group.partition as usize].clone()
            }
        };
        let mut config = GroupConfig::new(id);
        config.election_timeout_min_ms = 300;
        config.election_timeout_max_ms = 600;
        let replica = Replica::open(
            &config,
            partition,
            node.transport.group(group.clone(), incarnation),
        )
        .await?;
        node.service.register(group.clone(), incarnation, replica);
        Ok(())
    }

    /// Stops node `id`'s replica of `group` as a crash would: the peer
    /// server answers NOT_FOUND for it from now on, and its engine stops.
    async fn crash_replica(&mut self, id: u64, group: &GroupId) -> Result<()> {
        let replica = self.nodes[&id].service.unregister(group).context("no replica")?;
        replica.shutdown().await?;
        Ok(())
    }

    /// Drops node `id`'s replica of `group` and its partition's data, as a
    /// node does for a deleted topic.
    async fn delete_replica(&mut self, id: u64, group: &GroupId) -> Result<()> {
        self.crash_replica(id, group).await?;
        self.nodes[&id].store.delete_topic(&group.topic)?;
        Ok(())
    }

    fn replica(&self, id: u64, group: &GroupId) -> Result<Replica> {
        self.nodes[&id].service.replica(group).context("no replica")
    }

    fn running(&self, group: &GroupId) -> Vec<(u64, Replica)> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| node.service.replica(group).map(|r| (*id, r)))
            .collect()
    }

    async fn wait_for_leader(&self, group: &GroupId, after_term: u64) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let running = self.running(group);
            let leaders: Vec<Option<u64>> = running.iter().map(|(_, r)| r.leader_id()).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && running.iter().any(|(id, _)| id == leader)
                && running.iter().all(|(_, r)| r.term() > after_term)
            {
                return Ok(*leader);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{group}: no agreed leader after term {after_term}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn write(&mut self, group: &GroupId, leader: u64, prefix: &str, count: usize) -> Result<()> {
        let replica = self.replica(leader, group)?;
        for i in 0..count {
            let tag = format!("{prefix}-{i}");
            let records = 1 + i % 5;
            let appended = replica.append(encoded_batch(&tag, records)).await?;
            self.acks.push(Ack {
                tag,
                count: records,
                appended,
            });
        }
        Ok(())
    }

    /// Every acknowledged write of `group` is committed on every running
    /// replica at its acknowledged offsets, and their committed logs are
    /// the same bytes.
    async fn check_acknowledged_writes(&self, group: &GroupId) -> Result<()> {
        let end = self
            .acks
            .iter()
            .map(|a| a.appended.next_offset)
            .max()
            .unwrap_or(0);
        let mut logs = Vec::new();
        for (id, replica) in self.running(group) {
            let partition = replica.partition().clone();
            tokio::time::timeout(WAIT, partition.wait_committed(end.saturating_sub(1)))
                .await
                .with_context(|| format!("node {id} did not commit offset {end}"))??;
            let log = committed_batches(&partition, end)?;
            for ack in &self.acks {
                let batch = log
                    .iter()
                    .find(|b| b.base_offset() == ack.appended.base_offset)
                    .with_context(|| format!("node {id} lost the acknowledged write {}", ack.tag))?;
                ensure!(batch.last_offset() + 1 == ack.appended.next_offset);
                let values: Vec<String> = partition
                    .records(batch)
                    .map(|r| Ok(String::from_utf8(r?.value.unwrap_or_default().to_vec())?))
                    .collect::<Result<_>>()?;
                let expected: Vec<String> = (0..ack.count).map(|i| format!("{}/{i}", ack.tag)).collect();
                ensure!(values == expected, "node {id} holds other records at {}", ack.tag);
            }
            logs.push((id, log));
        }
        let (first_id, first) = &logs[0];
        for (id, log) in &logs[1..] {
            let same = log.len() == first.len() && log.iter().zip(first).all(|(a, b)| a.bytes() == b.bytes());
            ensure!(same, "node {id}'s committed log differs from node {first_id}'s");
        }
        Ok(())
    }

    async fn stop(self) -> Result<()> {
        for (_, node) in self.nodes {
            for (_, replica) in node.service.replicas() {
                replica.shutdown().await?;
            }
            node.server.abort();
            node.store.close()?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_over_grpc_elect_a_leader_and_commit_writes_on_every_replica() -> Result<()> {
    let group = GroupId::new("replicated", 0);
    let mut cluster = Cluster::start(std::slice::from_ref(&group)).await?;
    let leader = cluster.wait_for_leader(&group, 0).await?;
    cluster.write(&group, leader, "first", 20).await?;
    for pair in cluster.acks.windows(2) {
        assert_eq!(pair[1].appended.index, pair[0].appended.index + 1);
    }
    cluster.check_acknowledged_writes(&group).await?;
    // A node says who it is, for leader hints.
    let described = cluster.nodes[&1].transport.describe_node(2).await?;
    assert_eq!(
        (described.node_id, described.client_address.as_str()),
        (2, "client-2")
    );
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_a_crashed_leader_is_replaced_and_catches_up_when_it_returns() -> Result<()> {
    let group = GroupId::new("replicated", 0);
    let mut cluster = Cluster::start(std::slice::from_ref(&group)).await?;
    let old = cluster.wait_for_leader(&group, 0).await?;
    cluster.write(&group, old, "before", 8).await?;
    let old_term = cluster.replica(old, &group)?.term();

    cluster.crash_replica(old, &group).await?;
    let new = cluster.wait_for_leader(&group, old_term).await?;
    assert_ne!(new, old);
    cluster.write(&group, new, "after", 8).await?;
    cluster.check_acknowledged_writes(&group).await?;

    cluster.open_replica(old, &group).await?;
    cluster.write(&group, new, "rejoined", 4).await?;
    cluster.check_acknowledged_writes(&group).await?;
    assert_eq!(cluster.replica(old, &group)?.leader_id(), Some(new));
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_by_group_between_groups_on_the_same_servers() -> Result<()> {
    let orders = GroupId::new("orders", 1);
    let metadata = GroupId::metadata();
    let mut cluster = Cluster::start(&[orders.clone(), metadata.clone()]).await?;
    let orders_leader = cluster.wait_for_leader(&orders, 0).await?;
    let metadata_leader = cluster.wait_for_leader(&metadata, 0).await?;
    cluster.write(&orders, orders_leader, "order", 6).await?;
    cluster.check_acknowledged_writes(&orders).await?;
    // The metadata group's log holds only its own entries: no batch of
    // the orders group crossed over.
    let meta_log = cluster.replica(metadata_leader, &metadata)?.partition().clone();
    for batch in committed_batches(&meta_log, meta_log.committed_offset())? {
        ensure!(
            batch.record_count() == 1,
            "a client batch reached the metadata group"
        );
    }
    cluster.stop().await
}

/// A node that still runs a replica of a deleted topic (it has not heard
/// yet that the topic was deleted and created again) takes no part in the
/// new topic's group, although the two logs start with the same indexes
/// and terms: every Raft message names the creation its sender belongs
/// to, and a node refuses those of another. Once the node opens a replica
/// of the new creation, that one joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_an_earlier_creation_of_the_topic_takes_no_part_in_the_new_group() -> Result<()> {
    let group = GroupId::new("reborn", 0);
    let mut cluster = Cluster::start(&[]).await?;
    for id in 1..=3 {
        cluster.open_replica_of(id, &group, 6).await?;
    }
    cluster.replica(1, &group)?.initialize(&cluster.peers).await?;
    let leader = cluster.wait_for_leader(&group, 0).await?;
    cluster.write(&group, leader, "old", 10).await?;
    cluster.check_acknowledged_writes(&group).await?;
    let old = cluster.replica(3, &group)?;
    let old_log = committed_batches(old.partition(), old.partition().committed_offset())?;

    // Deleted and created again (incarnation 7) on nodes 1 and 2 only.
    cluster.acks.clear();
    for id in [1, 2] {
        cluster.delete_replica(id, &group).await?;
        cluster.open_replica_of(id, &group, 7).await?;
    }
    cluster.replica(1, &group)?.initialize(&cluster.peers).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let leader = loop {
        let leaders: Vec<Option<u64>> = [1, 2]
            .iter()
            .map(|id| cluster.replica(*id, &group).map(|r| r.leader_id()))
            .collect::<Result<_>>()?;
        if let [Some(a), Some(b)] = leaders[..]
            && a == b
            && a != 3
        {
            break a;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no leader among nodes 1 and 2: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.write(&group, leader, "new", 6).await?;
    // Let the old replica time out and call elections of its own.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let status = cluster.replica(leader, &group)?.status();
    ensure!(
        status.matched.get(&3).copied().flatten().is_none(),
        "the new leader matched node 3's old log: {:?}",
        status.matched
    );
    ensure!(
        old.partition().committed_offset() == old_log.iter().map(|b| b.last_offset() + 1).max().unwrap_or(0),
        "the old replica committed something new"
    );
    ensure!(
        committed_batches(old.partition(), old.partition().committed_offset())?.len() == old_log.len(),
        "the old replica's log changed"
    );
    ensure!(
        cluster.replica(leader, &group)?.leader_id() == Some(leader),
        "the old replica's elections disturbed the new group"
    );

    // Node 3 learns of the new creation.
    cluster.delete_replica(3, &group).await?;
    cluster.open_replica_of(3, &group, 7).await?;
    cluster.write(&group, leader, "joined", 3).await?;
    cluster.check_acknowledged_writes(&group).await?;
    cluster.stop().await
}
