//! Cluster mode with three real `spoold` processes on 127.0.0.1: a
//! replicated topic, produces at QUORUM through the Rust client (which
//! follows leader hints), `kill -9` of the partition's leader, a new
//! leader serving, the killed node restarted and catching up. Afterwards
//! every acknowledged record is at its acknowledged offset in every
//! node's committed log, offsets are dense, and the three logs are the
//! same.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::Spoold;
use spool_client::{Client, Durability, Error, Record};
use spool_proto::v1;

const TOPIC: &str = "replicated";
/// Time a step may take before the test fails: a new leader is elected
/// within about a second and a half of the old one's death (cluster mode
/// uses 0.5-1 s election timeouts), far below this.
const WAIT: Duration = Duration::from_secs(20);

/// Free loopback ports for the peer listeners, which every node must know
/// before any starts.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address").port())
        .collect()
}

struct Cluster {
    nodes: BTreeMap<u64, Spoold>,
    /// Data directories, kept across restarts.
    _dirs: Vec<tempfile::TempDir>,
    /// Every acknowledged record: offset to value.
    acked: BTreeMap<u64, String>,
}

impl Cluster {
    fn start() -> Cluster {
        let ports = free_ports(3);
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut dirs = Vec::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            let dir = tempfile::tempdir().expect("data directory");
            let node_id = format!("node_id={id}");
            let peers = format!("peers={peers}");
            // Small preallocations: three servers with five internal
            // topics each would otherwise reserve hundreds of MiB.
            let server = Spoold::start(
                dir.path(),
                &[&node_id, &peers, "admin_listen=off", "preallocate_bytes=1MiB"],
            );
            dirs.push(dir);
            nodes.insert(id, server);
        }
        Cluster {
            nodes,
            _dirs: dirs,
            acked: BTreeMap::new(),
        }
    }

    async fn client(&self, id: u64) -> Result<Client> {
        Ok(Client::connect(self.nodes[&id].url()).await?)
    }

    /// The node leading partition 0, as the nodes' answers say: the one
    /// that takes a raw produce (no hint following), or the one the
    /// others name.
    async fn leader(&mut self, alive: &[u64]) -> Result<u64> {
        let deadline = Instant::now() + WAIT;
        let mut last_errors = Vec::new();
        loop {
            last_errors.clear();
            for &id in alive {
                let client = self.client(id).await?;
                let request = v1::ProduceRequest {
                    topic: TOPIC.into(),
                    partition: Some(0),
                    durability: v1::Durability::Quorum as i32,
                    data: Some(v1::produce_request::Data::Records(v1::RecordList {
                        records: vec![v1::Record {
                            value: Some(format!("probe-{id}").into()),
                            ..Default::default()
                        }],
                    })),
                };
                match client.log_client().produce(request).await {
                    Ok(answer) => {
                        let result = &answer.get_ref().results[0];
                        self.acked.insert(result.base_offset, format!("probe-{id}"));
                        return Ok(id);
                    }
                    Err(status) => {
                        last_errors.push((id, Error::from(status)));
                    }
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no node of {alive:?} leads the partition: {last_errors:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Produces `count` one-record batches at QUORUM through node `via`,
    /// retrying while the partition has no leader; records what was
    /// acknowledged.
    async fn produce(&mut self, via: u64, prefix: &str, count: usize) -> Result<()> {
        let client = self.client(via).await?;
        for i in 0..count {
            let value = format!("{prefix}-{i}");
            let deadline = Instant::now() + WAIT;
            let answer = loop {
                let records = vec![Record::new(value.clone())];
                match client
                    .produce_records(TOPIC, Some(0), records, Durability::Quorum)
                    .await
                {
                    Ok(answer) => break answer,
                    // No leader yet, or the one named is gone: the
                    // outcome of this attempt is unknown, so it is not
                    // counted, and the record is sent again.
                    Err(error) if Instant::now() < deadline && retryable(&error) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => return Err(error).context(format!("producing {value} through node {via}")),
                }
            };
            let result = &answer.results[0];
            ensure!(result.durability == v1::Durability::Quorum as i32);
            ensure!(result.base_offset == result.last_offset);
            self.acked.insert(result.base_offset, value);
        }
        Ok(())
    }

    /// Node `id`'s committed log of partition 0 up to `end`: offset to
    /// value, read through its Fetch (which serves committed records only).
    async fn committed_log(&self, id: u64, end: u64) -> Result<BTreeMap<u64, String>> {
        let client = self.client(id).await?;
        let mut log = BTreeMap::new();
        let mut offset = 0;
        let deadline = Instant::now() + WAIT;
        while offset < end {
            ensure!(
                Instant::now() < deadline,
                "node {id} committed only up to {offset} of {end}"
            );
            match client.fetch_records(TOPIC, 0, offset, 1 << 20, 200).await {
                Ok((records, response)) => {
                    for record in records {
                        let value = String::from_utf8(record.value.unwrap_or_default().to_vec())?;
                        log.insert(record.offset, value);
                    }
                    offset = response.next_offset.max(offset);
                }
                // Right after a restart the replica may not be open yet, or
                // its commit may not have reached `offset`.
                Err(Error::OutOfRange { .. } | Error::Unavailable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error).context(format!("fetching from node {id}")),
            }
        }
        Ok(log)
    }

    /// Every acknowledged record is at its offset in every node's
    /// committed log, the offsets are dense (a record at every offset
    /// below the last acknowledged one), and the logs agree.
    async fn check(&self) -> Result<()> {
        let end = self.acked.keys().next_back().map_or(0, |last| last + 1);
        let mut logs = Vec::new();
        for &id in self.nodes.keys() {
            let log = self.committed_log(id, end).await?;
            ensure!(
                log.range(..end).map(|(offset, _)| *offset).eq(0..end),
                "node {id}'s offsets below {end} have gaps"
            );
            for (offset, value) in &self.acked {
                ensure!(
                    log.get(offset) == Some(value),
                    "node {id} holds {:?} at acknowledged offset {offset}, not {value:?}",
                    log.get(offset)
                );
            }
            logs.push((id, log));
        }
        for (id, log) in &logs[1..] {
            let first = &logs[0];
            let below_end = |log: &BTreeMap<u64, String>| {
                log.range(..end).map(|(o, v)| (*o, v.clone())).collect::<Vec<_>>()
            };
            ensure!(
                below_end(log) == below_end(&first.1),
                "node {id}'s committed log differs from node {}'s",
                first.0
            );
        }
        Ok(())
    }
}

fn retryable(error: &Error) -> bool {
    error.is_retryable() || error.leader_hint().is_some() || matches!(error, Error::Connect { .. })
}

#[test]
fn a_killed_partition_leader_is_replaced_and_every_acknowledged_record_survives() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cluster = Cluster::start();
    runtime.block_on(async {
        let admin = cluster.client(2).await?;
        let created = admin
            .create_topic(spool_client::NewTopic::new(TOPIC, 1))
            .await
            .context("creating the topic through node 2")?;
        ensure!(created.partitions == 1);
        // Every node knows the topic, whichever node created it.
        for &id in cluster.nodes.keys() {
            let topics = cluster.client(id).await?.list_topics(false).await?;
            ensure!(
                topics.iter().any(|t| t.name == TOPIC),
                "node {id} lacks the topic"
            );
        }

        // Through every node: the followers send the client to the leader.
        for id in [1, 2, 3] {
            cluster.produce(id, &format!("before-{id}"), 5).await?;
        }
        let old = cluster.leader(&[1, 2, 3]).await?;
        cluster.check().await?;

        cluster.nodes.get_mut(&old).context("leader")?.kill9();
        let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
        let new = cluster.leader(&alive).await?;
        ensure!(new != old);
        cluster.produce(alive[0], "during", 10).await?;
        cluster.produce(alive[1], "during-other", 5).await?;

        cluster
            .nodes
            .get_mut(&old)
            .context("old leader")?
            .restart_on_same_address();
        cluster.produce(old, "after", 5).await?;
        cluster.check().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

#[test]
fn quorum_durability_is_refused_by_a_single_node_server() -> Result<()> {
    let server = Spoold::start_temp(&[]);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = Client::connect(server.url()).await?;
        client
            .create_topic(spool_client::NewTopic::new("plain", 1))
            .await?;
        let refused = client
            .produce_records("plain", Some(0), vec![Record::new("x")], Durability::Quorum)
            .await;
        match refused {
            Err(Error::InvalidArgument { status }) if status.message().contains("cluster mode") => Ok(()),
            other => bail!("QUORUM on a single node answered {other:?}"),
        }
    })
}
