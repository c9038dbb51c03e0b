//! A cluster of real `spoold` processes on 127.0.0.1 for end-to-end
//! tests of cluster mode: starting the nodes with one peer map, killing
//! and restarting them, producing at QUORUM with retries while a partition
//! has no leader, reading a node's committed log through its Fetch and
//! its ListOffsets, and finding a partition's files in a node's data
//! directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_client::{Client, Durability, Error, OffsetSpec, Record};

use super::Spoold;

/// Time a step may take before a test fails: a new leader is elected
/// within about a second and a half of the old one's death (0.5-1 s
/// election timeouts), far below this.
pub const WAIT: Duration = Duration::from_secs(20);

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

/// Nodes 1 to n, each with its own data directory, kept across restarts.
pub struct TestCluster {
    pub nodes: BTreeMap<u64, Spoold>,
    /// Node `id`'s data directory is `dirs[id - 1]`.
    dirs: Vec<tempfile::TempDir>,
}

impl TestCluster {
    /// Nodes 1..=count, each with its own data directory.
    pub fn start(count: u64) -> TestCluster {
        let ports = free_ports(count as usize);
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut dirs = Vec::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=count {
            let dir = tempfile::tempdir().expect("data directory");
            let node_id = format!("node_id={id}");
            let peers = format!("peers={peers}");
            // Small preallocations: several servers with five internal
            // topics each would otherwise reserve hundreds of MiB.
            let server = Spoold::start(
                dir.path(),
                &[&node_id, &peers, "admin_listen=off", "preallocate_bytes=1MiB"],
            );
            dirs.push(dir);
            nodes.insert(id, server);
        }
        TestCluster { nodes, dirs }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].url()
    }

    pub async fn client(&self, id: u64) -> Result<Client> {
        Ok(Client::connect(self.url(id)).await?)
    }

    pub fn kill9(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("a node").kill9();
    }

    /// Starts node `id` again on its directory and addresses.
    pub fn restart(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("a node").restart_on_same_address();
    }

    /// Node `id`'s committed records of `topic`/`partition` below `end`:
    /// offset to value, read through its Fetch (committed records only),
    /// waiting while the node is not open yet or has not committed `end`.
    pub async fn committed_log(
        &self,
        id: u64,
        topic: &str,
        partition: u32,
        end: u64,
    ) -> Result<BTreeMap<u64, String>> {
        let client = self.client(id).await?;
        let mut log = BTreeMap::new();
        let mut offset = 0;
        let deadline = Instant::now() + WAIT;
        while offset < end {
            ensure!(
                Instant::now() < deadline,
                "node {id} committed only up to {offset} of {end}"
            );
            match client.fetch_records(topic, partition, offset, 1 << 20, 200).await {
                Ok((records, response)) => {
                    for record in records.into_iter().filter(|r| r.offset < end) {
                        let value = String::from_utf8(record.value.unwrap_or_default().to_vec())?;
                        log.insert(record.offset, value);
                    }
                    offset = response.next_offset.max(offset);
                }
                Err(
                    Error::OutOfRange { .. }
                    | Error::Unavailable { .. }
                    | Error::Connect { .. }
                    | Error::DeadlineExceeded { .. },
                ) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error).context(format!("fetching from node {id}")),
            }
        }
        Ok(log)
    }
}

/// What the storage tests (dense offsets, the stored commit, replica
/// placement) read besides the committed log.
impl TestCluster {
    /// Node `id`'s data directory, to look for a partition's files.
    pub fn data_dir(&self, id: u64) -> &std::path::Path {
        self.dirs[id as usize - 1].path()
    }

    /// Node `id`'s ListOffsets LATEST of `topic`/`partition` (its
    /// committed offset).
    pub async fn latest(&self, id: u64, topic: &str, partition: u32) -> Result<u64> {
        let client = self.client(id).await?;
        let offsets = client
            .list_offsets(topic, Some(partition), OffsetSpec::Latest)
            .await?;
        Ok(offsets.first().context("the partition's offset")?.offset)
    }
}

/// Whether a failed produce may be sent again: no leader yet, or the one
/// named is gone (refused connections, or a connection that broke under
/// the request, which tonic reports as UNKNOWN "transport error"). Its
/// outcome is unknown: it may have been committed.
pub fn retryable(error: &Error) -> bool {
    let broken = matches!(error, Error::Other(status)
        if status.code() == spool_client::Code::Unknown && status.message().contains("transport error"));
    broken
        || error.is_retryable()
        || error.leader_hint().is_some()
        || matches!(error, Error::Connect { .. } | Error::DeadlineExceeded { .. })
}

/// Produces one record at QUORUM to `partition` through `client` (which
/// follows leader hints), sending it again while the partition has no
/// leader; returns its acknowledged offset.
pub async fn produce(client: &Client, topic: &str, partition: u32, value: &str) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let records = vec![Record::new(value.to_owned())];
        match client
            .produce_records(topic, Some(partition), records, Durability::Quorum)
            .await
        {
            Ok(answer) => {
                let result = answer.results.first().context("a produce result")?;
                ensure!(result.durability == spool_client::proto::Durability::Quorum as i32);
                ensure!(result.base_offset == result.last_offset);
                return Ok(result.base_offset);
            }
            Err(error) if Instant::now() < deadline && retryable(&error) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error).context(format!("producing {value}")),
        }
    }
}

/// Whether node `client` leads partition 0 of `topic`: it takes a produce
/// without following a hint. Returns the probe's offset if so.
pub async fn probe_leader(client: &Client, topic: &str, value: &str) -> Option<u64> {
    use spool_client::proto as v1;
    let request = v1::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        durability: v1::Durability::Quorum as i32,
        data: Some(v1::produce_request::Data::Records(v1::RecordList {
            records: vec![v1::Record {
                value: Some(value.to_owned().into()),
                ..Default::default()
            }],
        })),
    };
    let answer = client.log_client().produce(request).await.ok()?;
    answer.get_ref().results.first().map(|r| r.base_offset)
}
