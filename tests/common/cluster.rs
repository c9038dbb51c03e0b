//! A cluster of real `spoold` processes on 127.0.0.1 (or each in a
//! network namespace of its own, for the network cuts) for the operations
//! and fault tests: start, `kill -9`, restart on the same addresses,
//! pause (SIGSTOP) and resume, cutting and healing the peer network, the
//! cluster's status as each node sees
//! it, a background producer at QUORUM that records every acknowledged
//! record, and the check that every acknowledged record is at its
//! acknowledged offset in every node's committed log, the logs being the
//! same on every node; and for the storage tests (dense offsets, the
//! stored commit, replica placement), a node's ListOffsets and data
//! directory, and a produce at QUORUM retried while a partition has no
//! leader.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_client::{Client, ClientOptions, ClusterStatus, Durability, Error, OffsetSpec, Record};

use super::Spoold;
use super::netns::{CLIENT_PORT, Network, PEER_PORT};

/// Time a step may take before the test fails: far above an election
/// (0.5 to 1 s of timeout) on a busy machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Every acknowledged record, by (topic, partition), offset to value.
pub type Acked = BTreeMap<(String, u32), BTreeMap<u64, String>>;

/// Free loopback ports for the peer listeners, which every node must know
/// before any starts. They are taken below the kernel's ephemeral range
/// (from 32768), where nothing else is handed out between this check and
/// the node's own bind: a port from `bind(0)`, once released, may become
/// the client port another node of a parallel test binds to `:0` (seen:
/// a node that exited before listening). A per-process start and a
/// process-wide cursor keep the tests of one run, and mostly those of
/// runs side by side, on different ports; the bind check skips any taken.
fn free_ports(count: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let step = CURSOR.fetch_add(1, Ordering::SeqCst);
        assert!(step < SPAN, "no free peer port left below the ephemeral range");
        let port = (FIRST + (start + step) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// The runtime the cluster tests drive their clients on: two worker
/// threads, as many as the machine's cores.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The number of rounds a campaign runs (`CHAOS_ROUNDS`, which
/// `scripts/cluster-chaos.sh` sets).
pub fn campaign_rounds() -> Result<u64> {
    std::env::var("CHAOS_ROUNDS")
        .context("CHAOS_ROUNDS names the number of rounds")?
        .parse()
        .context("CHAOS_ROUNDS is a number")
}

pub struct TestCluster {
    pub nodes: BTreeMap<u64, Spoold>,
    /// Data directories, kept across restarts.
    dirs: Vec<tempfile::TempDir>,
    pub acked: Arc<Mutex<Acked>>,
    /// The namespaces of a cluster started with
    /// [`start_in_namespaces`](Self::start_in_namespaces); declared after
    /// `nodes` so that it is dropped once their processes are gone.
    network: Option<Network>,
    /// The CA bundle clients check the nodes' certificates against, for a
    /// cluster whose nodes serve TLS ([`start_with`](Self::start_with)).
    tls_ca: Option<PathBuf>,
    /// Each node's peer address, node 1's first.
    peers: Vec<String>,
}

/// What [`TestCluster::start_with`] adds to a plain cluster.
#[derive(Default)]
pub struct Extra {
    /// Settings of node `id` besides the cluster's own (`KEY=VALUE`).
    pub settings: Option<Box<dyn Fn(u64) -> Vec<String>>>,
    /// Set when the nodes serve TLS to clients: the CA bundle that signed
    /// their certificates. Clients then connect over `https://`.
    pub tls_ca: Option<PathBuf>,
}

impl Extra {
    /// The same `settings` on every node.
    pub fn settings(settings: &'static [&'static str]) -> Extra {
        Extra {
            settings: Some(Box::new(move |_| {
                settings.iter().map(|s| (*s).to_owned()).collect()
            })),
            ..Extra::default()
        }
    }
}

impl TestCluster {
    /// Nodes 1..=count on 127.0.0.1, each with its own data directory.
    pub fn start(count: u64) -> TestCluster {
        let peers = free_ports(count as usize)
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        Self::launch(peers, None, Extra::default())
    }

    /// Nodes 1..=count on 127.0.0.1 with `extra`'s settings (certificates,
    /// say) and, when they serve TLS, clients that connect over it.
    pub fn start_with(count: u64, extra: Extra) -> TestCluster {
        let peers = free_ports(count as usize)
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        Self::launch(peers, None, extra)
    }

    /// Nodes 1..=count, each in a network namespace of its own
    /// ([`Network`]), so that [`cut`](Self::cut) can separate their peer
    /// traffic while clients reach every node. Needs root.
    pub fn start_in_namespaces(count: u64) -> TestCluster {
        let network = Network::create(count);
        let peers = (1..=count)
            .map(|id| format!("{}:{PEER_PORT}", network.peer_address(id)))
            .collect();
        Self::launch(peers, Some(network), Extra::default())
    }

    /// Starts node `i + 1` with peer address `peers[i]`, in its namespace
    /// of `network` if there is one, with `extra`'s settings.
    fn launch(peers: Vec<String>, network: Option<Network>, extra: Extra) -> TestCluster {
        let peer_map = peers
            .iter()
            .enumerate()
            .map(|(i, address)| format!("{}={address}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut dirs = Vec::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=peers.len() as u64 {
            let dir = tempfile::tempdir().expect("data directory");
            let node_id = format!("node_id={id}");
            let peers = format!("peers={peer_map}");
            // Small preallocations: several servers with five internal
            // topics each would otherwise reserve hundreds of MiB.
            let own = extra
                .settings
                .as_ref()
                .map(|settings| settings(id))
                .unwrap_or_default();
            // The dashboard is off unless the test's settings open it.
            let admin = if own.iter().any(|setting| setting.starts_with("admin_listen=")) {
                None
            } else {
                Some("admin_listen=off")
            };
            let mut settings = vec![&*node_id, &*peers, "preallocate_bytes=1MiB"];
            settings.extend(admin);
            settings.extend(own.iter().map(String::as_str));
            let server = match &network {
                None => Spoold::start(dir.path(), &settings),
                Some(network) => {
                    // The client address is not loopback; the network is
                    // the test's own.
                    settings.push("insecure=true");
                    let listen = format!("{}:{CLIENT_PORT}", network.client_address(id));
                    Spoold::start_in(&network.launcher(id), dir.path(), &listen, &settings)
                }
            };
            dirs.push(dir);
            nodes.insert(id, server);
        }
        let cluster = TestCluster {
            nodes,
            dirs,
            acked: Arc::default(),
            network,
            tls_ca: extra.tls_ca,
            peers,
        };
        cluster.wait_for_metadata_leader();
        cluster
    }

    /// Starts node `id` (the next id: one more than the highest) on
    /// 127.0.0.1 with `--join`: it knows the other nodes from its peer map
    /// and waits to be added (`spool cluster add-node`). Returns its peer
    /// address.
    pub fn start_joining(&mut self, id: u64) -> String {
        assert_eq!(
            id as usize,
            self.peers.len() + 1,
            "a joining node takes the next id"
        );
        assert!(self.network.is_none(), "joining nodes run on 127.0.0.1");
        let address = format!("127.0.0.1:{}", free_ports(1)[0]);
        self.peers.push(address.clone());
        let peer_map = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, address)| format!("{}={address}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir().expect("data directory");
        let node_id = format!("node_id={id}");
        let peers = format!("peers={peer_map}");
        let settings = [
            &*node_id,
            &*peers,
            "join=true",
            "preallocate_bytes=1MiB",
            "admin_listen=off",
        ];
        let server = Spoold::start(dir.path(), &settings);
        self.dirs.push(dir);
        self.nodes.insert(id, server);
        address
    }

    /// Blocks until every node names the same leader of the metadata group:
    /// the cluster then takes admin calls (topic creation) at once, without
    /// the first one waiting out the first elections under a short
    /// deadline.
    fn wait_for_metadata_leader(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime
            .block_on(self.agreed_leader(&self.ids(), "__cluster", 0))
            .expect("the metadata group elects a leader");
    }

    /// Cuts the peer traffic between the nodes of `side` and the others
    /// (clients still reach every node); replaces any earlier cut. Only
    /// for a cluster started with
    /// [`start_in_namespaces`](Self::start_in_namespaces).
    pub fn cut(&self, side: &[u64]) {
        self.network().cut(side);
    }

    /// Undoes [`cut`](Self::cut).
    pub fn heal(&self) {
        self.network().heal();
    }

    fn network(&self) -> &Network {
        self.network
            .as_ref()
            .expect("a cluster started with TestCluster::start_in_namespaces")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s peer address (`HOST:PORT` of its `spool.v1.Peer`).
    pub fn peer_address(&self, id: u64) -> &str {
        &self.peers[(id - 1) as usize]
    }

    pub fn url(&self, id: u64) -> String {
        let url = self.nodes[&id].url();
        match self.tls_ca {
            Some(_) => url.replacen("http://", "https://", 1),
            None => url,
        }
    }

    /// A client of node `id` whose calls give up after two seconds, so
    /// that a paused node cannot hold a caller forever.
    pub async fn client(&self, id: u64) -> Result<Client> {
        Ok(Client::connect_with(self.url(id), self.client_options()).await?)
    }

    /// A client of node `id` with the default deadline (a minute), for
    /// calls that may wait for an election, such as leadership transfers.
    pub async fn patient_client(&self, id: u64) -> Result<Client> {
        let options = ClientOptions {
            tls_ca: self.tls_ca.clone(),
            ..ClientOptions::default()
        };
        Ok(Client::connect_with(self.url(id), options).await?)
    }

    /// Options of a client whose calls give up after two seconds.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            request_timeout: Some(Duration::from_secs(2)),
            tls_ca: self.tls_ca.clone(),
            ..ClientOptions::default()
        }
    }

    pub fn kill9(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("a node").kill9();
    }

    /// SIGTERM: node `id` stops as an operator stops it, and this waits
    /// until it has exited.
    pub fn terminate(&mut self, id: u64) {
        let status = self.nodes.get_mut(&id).expect("a node").terminate();
        assert!(status.success(), "node {id} exited with {status}");
    }

    /// Starts node `id` again on its directory and addresses.
    pub fn restart(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("a node").restart_on_same_address();
    }

    /// SIGSTOP: the process stays, answers nothing, its timers stop.
    pub fn pause(&self, id: u64) {
        signal(self.nodes[&id].pid(), "-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self, id: u64) {
        signal(self.nodes[&id].pid(), "-CONT");
    }

    /// Node `id`'s status of the cluster. It waits up to a second for each
    /// other node, so it is asked with the patient client; never ask a
    /// paused node.
    pub async fn status(&self, id: u64) -> Result<ClusterStatus> {
        Ok(self.patient_client(id).await?.cluster_status().await?)
    }

    /// The leader of `topic`/`partition` once every node of `asked` names
    /// the same one in its status, and that one says it leads.
    pub async fn agreed_leader(&self, asked: &[u64], topic: &str, partition: u32) -> Result<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut named = Vec::new();
            for &id in asked {
                let leader = self.status(id).await.ok().and_then(|status| {
                    let group = status
                        .groups
                        .iter()
                        .find(|g| g.topic == topic && g.partition == partition)?;
                    let leader = group.leader_id?;
                    let role = &group.replicas.iter().find(|r| r.node_id == leader)?.role;
                    (role == "leader").then_some(leader)
                });
                named.push(leader);
            }
            if let Some(Some(leader)) = named.first()
                && named.iter().all(|l| *l == Some(*leader))
            {
                return Ok(*leader);
            }
            ensure!(
                Instant::now() < deadline,
                "nodes {asked:?} do not agree on a leader of {topic}/{partition}: {named:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates `topic` with `partitions` partitions through node 1 and
    /// waits until every node agrees on each partition's leader. Creation
    /// waits for the metadata group and the new groups' leaders: longer
    /// than the short deadline of [`client`](Self::client) on a loaded
    /// machine, so it goes through the patient client.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let created = self
            .patient_client(1)
            .await?
            .create_topic(spool_client::NewTopic::new(topic, partitions))
            .await
            .with_context(|| format!("creating {topic}"))?;
        ensure!(
            created.partitions == partitions,
            "{topic} has {} partitions",
            created.partitions
        );
        for partition in 0..partitions {
            self.agreed_leader(&self.ids(), topic, partition).await?;
        }
        Ok(())
    }

    /// Produces `count` one-record batches `PREFIX-i` at QUORUM to
    /// partition 0 of `topic` through node `via` (each retried while the
    /// partition has no leader) and records each acknowledgement for
    /// [`check`](Self::check).
    pub async fn produce_through(&self, via: u64, topic: &str, prefix: &str, count: usize) -> Result<()> {
        let client = self.client(via).await?;
        for i in 0..count {
            let value = format!("{prefix}-{i}");
            let offset = produce(&client, topic, 0, &value)
                .await
                .with_context(|| format!("through node {via}"))?;
            self.record_ack(topic, 0, offset, &value);
        }
        Ok(())
    }

    /// Produces one-record batches at QUORUM to `topic`/`partition`
    /// through the nodes of `via` in turn (the client follows leader
    /// hints), recording every acknowledged record, until the returned
    /// [`Load`] is stopped. A failed produce has an unknown outcome: it is
    /// not recorded, and the next one carries a new value.
    pub fn spawn_producer(&self, topic: &str, partition: u32, via: &[u64], prefix: &str) -> Load {
        let urls: Vec<String> = via.iter().map(|id| self.url(*id)).collect();
        let options = self.client_options();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::clone(&self.acked);
        let (topic, prefix) = (topic.to_owned(), prefix.to_owned());
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut clients: BTreeMap<usize, Client> = BTreeMap::new();
                let (mut sent, mut failed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let turn = (sent as usize) % urls.len();
                    let value = format!("{prefix}-{sent}");
                    sent += 1;
                    if let std::collections::btree_map::Entry::Vacant(slot) = clients.entry(turn) {
                        match Client::connect_with(urls[turn].clone(), options.clone()).await {
                            Ok(client) => {
                                slot.insert(client);
                            }
                            Err(_) => {
                                failed += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let records = vec![Record::new(value.clone())];
                    match clients[&turn]
                        .produce_records(&topic, Some(partition), records, Durability::Quorum)
                        .await
                    {
                        Ok(answer) => {
                            let offset = answer.results[0].base_offset;
                            let mut acked = acked.lock().expect("acks lock");
                            let log = acked.entry((topic.clone(), partition)).or_default();
                            if let Some(earlier) = log.insert(offset, value.clone()) {
                                panic!("offset {offset} acknowledged twice: {earlier:?} and {value:?}");
                            }
                        }
                        Err(error) => {
                            failed += 1;
                            // A dead node's connection is made again.
                            if matches!(error, Error::Connect { .. } | Error::Unavailable { .. }) {
                                clients.remove(&turn);
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                (sent, failed)
            })
        };
        Load { stop, task }
    }

    /// Records an acknowledgement the test received itself (not through
    /// [`spawn_producer`](Self::spawn_producer)), for [`check`](Self::check).
    pub fn record_ack(&self, topic: &str, partition: u32, offset: u64, value: &str) {
        let mut acked = self.acked.lock().expect("acks lock");
        acked
            .entry((topic.to_owned(), partition))
            .or_default()
            .insert(offset, value.to_owned());
    }

    /// How many records of `topic`/`partition` were acknowledged.
    pub fn acked_count(&self, topic: &str, partition: u32) -> usize {
        let acked = self.acked.lock().expect("acks lock");
        acked.get(&(topic.to_owned(), partition)).map_or(0, BTreeMap::len)
    }

    /// Waits until `count` more records of partition 0 of `topic` are
    /// acknowledged (by a [`spawn_producer`](Self::spawn_producer) load).
    pub async fn wait_for_progress(&self, topic: &str, count: usize) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let before = self.acked_count(topic, 0);
        while self.acked_count(topic, 0) < before + count {
            ensure!(
                Instant::now() < deadline,
                "no progress: {} acknowledged",
                self.acked_count(topic, 0)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Every acknowledged record is at its offset in the committed log of
    /// every node of `nodes`, the offsets below the last acknowledged one
    /// are dense (a record at each), and the nodes' logs there are the
    /// same.
    pub async fn check(&self, nodes: &[u64]) -> Result<()> {
        let acked = self.acked.lock().expect("acks lock").clone();
        for ((topic, partition), records) in &acked {
            let end = records.keys().next_back().map_or(0, |last| last + 1);
            let mut logs = Vec::new();
            for &id in nodes {
                let log = self.committed_log(id, topic, *partition, end).await?;
                ensure!(
                    log.keys().copied().eq(0..end),
                    "node {id}'s offsets of {topic}/{partition} below {end} have gaps"
                );
                for (offset, value) in records {
                    ensure!(
                        log.get(offset) == Some(value),
                        "node {id} holds {:?} at acknowledged offset {offset} of {topic}/{partition}, not {value:?}",
                        log.get(offset)
                    );
                }
                logs.push((id, log));
            }
            for (id, log) in &logs[1..] {
                ensure!(
                    *log == logs[0].1,
                    "node {id}'s committed log of {topic}/{partition} differs from node {}'s",
                    logs[0].0
                );
            }
        }
        Ok(())
    }

    /// Node `id`'s committed records of `topic`/`partition` below `end`,
    /// read through its Fetch (committed records only), waiting while the
    /// node is not open yet or has not committed `end`.
    pub async fn committed_log(
        &self,
        id: u64,
        topic: &str,
        partition: u32,
        end: u64,
    ) -> Result<BTreeMap<u64, String>> {
        let deadline = Instant::now() + WAIT;
        let mut log = BTreeMap::new();
        let mut offset = 0;
        while offset < end {
            ensure!(
                Instant::now() < deadline,
                "node {id} committed {topic}/{partition} only up to {offset} of {end}"
            );
            let fetched = match self.client(id).await {
                Ok(client) => client.fetch_records(topic, partition, offset, 1 << 20, 200).await,
                // The node is starting again.
                Err(_) => {
                    retry_pause().await;
                    continue;
                }
            };
            match fetched {
                Ok((records, response)) => {
                    for record in records.into_iter().filter(|r| r.offset < end) {
                        let value = String::from_utf8(record.value.unwrap_or_default().to_vec())?;
                        log.insert(record.offset, value);
                    }
                    offset = response.next_offset.max(offset);
                }
                // Right after a restart the replica may not be open yet, or
                // its commit may not have reached `offset`.
                Err(
                    Error::OutOfRange { .. } | Error::Unavailable { .. } | Error::DeadlineExceeded { .. },
                ) => {
                    retry_pause().await;
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

    /// Where node `id`'s copy of `topic`'s partition 0 starts on disk:
    /// the base offset of its first segment file (`None` without one).
    pub fn first_segment(&self, id: u64, topic: &str) -> Option<u64> {
        let dir = self.data_dir(id).join("topics").join(topic).join("0");
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log")?.parse::<u64>().ok()
            })
            .min()
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
/// the request, which the client reports as UNAVAILABLE). Its outcome is
/// unknown: it may have been committed.
pub fn retryable(error: &Error) -> bool {
    error.is_retryable()
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
    let answer = client
        .log_client()
        .produce(one_record_request(topic, value))
        .await
        .ok()?;
    answer.get_ref().results.first().map(|r| r.base_offset)
}

/// A Produce of one record with `value` to partition 0 of `topic` at
/// QUORUM, sent as it is (the caller's raw client follows no hint).
pub fn one_record_request(topic: &str, value: &str) -> spool_client::proto::ProduceRequest {
    use spool_client::proto as v1;
    v1::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        durability: v1::Durability::Quorum as i32,
        data: Some(v1::produce_request::Data::Records(v1::RecordList {
            records: vec![v1::Record {
                value: Some(value.to_owned().into()),
                ..Default::default()
            }],
        })),
    }
}

/// A running [`TestCluster::spawn_producer`].
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Load {
    /// Stops producing; returns how many produces were sent and failed.
    pub async fn stop(self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(tokio::time::timeout(WAIT, self.task).await??)
    }
}

async fn retry_pause() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which} {pid} failed");
}
