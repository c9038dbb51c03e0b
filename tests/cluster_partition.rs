//! Network cuts in cluster mode: real `spoold` processes, each in a
//! network namespace of its own (`common::netns`), whose peer (Raft)
//! traffic is cut between two sides while clients still reach every node.
//!
//! - A partition's leader cut off from the two other nodes of three: it
//!   acknowledges nothing sent to it during the cut (not even once the cut
//!   heals and it learns it lost leadership), the two others elect a
//!   leader and acknowledge, and a consumer of either side sees only
//!   records that stay.
//! - The leader and one follower cut off from the other three of five: the
//!   three elect and acknowledge, the two acknowledge nothing.
//! - The metadata group's leader cut off: a topic is created through the
//!   two others, and the cut-off node creates nothing while cut.
//!
//! Each heals the cut, waits until the old leader follows, and checks that
//! every acknowledged record is at its acknowledged offset in every node's
//! committed log, the offsets dense and the logs the same
//! (`TestCluster::check`). Setting up the namespaces needs root: CI runs
//! as root, and a run without it fails saying so.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::cluster::{TestCluster, WAIT, one_record_request, runtime};
use spool_client::{Client, Code, NewTopic};
use tokio::task::JoinHandle;

const TOPIC: &str = "cut";

/// Creates `topic` (one partition, `replication_factor` replicas, 0 for
/// the default) through node `via` and waits until every node agrees on
/// its leader, which it returns.
async fn create_topic(cluster: &TestCluster, via: u64, topic: &str, replication_factor: u32) -> Result<u64> {
    let new = NewTopic {
        replication_factor,
        ..NewTopic::new(topic, 1)
    };
    cluster
        .patient_client(via)
        .await?
        .create_topic(new)
        .await
        .with_context(|| format!("creating {topic} through node {via}"))?;
    cluster.agreed_leader(&cluster.ids(), topic, 0).await
}

/// Produces `count` records at QUORUM through each node of `via` in turn
/// (retried while the partition has no leader) and records each
/// acknowledgement for the final check.
async fn produce_through(
    cluster: &TestCluster,
    via: &[u64],
    topic: &str,
    prefix: &str,
    count: usize,
) -> Result<()> {
    for &id in via {
        cluster
            .produce_through(id, topic, &format!("{prefix}-{id}"), count)
            .await?;
    }
    Ok(())
}

/// A produce of one record sent to node `id` only: it does not follow a
/// leader hint, and waits as long as the node takes to answer (up to the
/// client's default deadline, a minute). The connection is made before
/// it returns, so a node that clients cannot reach fails the test.
async fn send_unforwarded(cluster: &TestCluster, id: u64, topic: &str, value: String) -> Result<Unforwarded> {
    let client = cluster
        .patient_client(id)
        .await
        .with_context(|| format!("node {id} must stay reachable by clients"))?;
    let request = one_record_request(topic, &value);
    let outcome = Arc::new(OnceLock::new());
    let task = {
        let outcome = Arc::clone(&outcome);
        tokio::spawn(async move {
            let answer = match client.log_client().produce(request).await {
                Ok(answer) => match answer.into_inner().results.first() {
                    Some(result) => Ok(result.base_offset),
                    None => Err("an answer without a result".to_owned()),
                },
                Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
            };
            let _ = outcome.set(answer);
        })
    };
    Ok(Unforwarded {
        id,
        value,
        outcome,
        task,
    })
}

/// A produce sent to the cut-off side with [`send_unforwarded`].
struct Unforwarded {
    id: u64,
    value: String,
    /// The node's answer once it came: the offset, or the error.
    outcome: Arc<OnceLock<Result<u64, String>>>,
    task: JoinHandle<()>,
}

impl Unforwarded {
    /// Fails if the produce was acknowledged by now.
    fn not_acknowledged_yet(&self) -> Result<()> {
        if let Some(Ok(offset)) = self.outcome.get() {
            bail!(
                "node {} acknowledged {:?} at offset {offset} while cut off from a majority",
                self.id,
                self.value
            );
        }
        Ok(())
    }

    /// Waits for the node's answer, which must be an error: the record was
    /// never on a majority. Returns the error.
    async fn answer(self) -> Result<String> {
        tokio::time::timeout(WAIT, self.task)
            .await
            .with_context(|| format!("node {} never answered the produce of {:?}", self.id, self.value))??;
        match self.outcome.get().context("an answer")? {
            Ok(offset) => bail!(
                "node {} acknowledged {:?} at offset {offset}, sent while it was cut off from a majority",
                self.id,
                self.value
            ),
            Err(error) => Ok(error.clone()),
        }
    }
}

/// Reads `topic`/0 from offset 0 on, through the nodes of `via` in turn,
/// remembering every record it is served, until stopped. Serving the same
/// offset twice with different values is an error at once.
struct Reader {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<BTreeMap<u64, String>>>,
}

impl Reader {
    fn spawn(cluster: &TestCluster, via: &[u64], topic: &str) -> Reader {
        let urls: Vec<String> = via.iter().map(|id| cluster.url(*id)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_owned();
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen = BTreeMap::new();
                let mut next = 0;
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let url = urls[turn % urls.len()].clone();
                    let options = spool_client::ClientOptions {
                        request_timeout: Some(Duration::from_secs(2)),
                        ..Default::default()
                    };
                    let fetched = match Client::connect_with(url, options).await {
                        Ok(client) => client.fetch_records(&topic, 0, next, 1 << 20, 200).await,
                        Err(error) => Err(error),
                    };
                    let Ok((records, _)) = fetched else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    for record in records {
                        let value = String::from_utf8(record.value.unwrap_or_default().to_vec())?;
                        if let Some(earlier) = seen.insert(record.offset, value.clone()) {
                            ensure!(
                                earlier == value,
                                "offset {} was served as {earlier:?} and later as {value:?}",
                                record.offset
                            );
                        }
                        next = next.max(record.offset + 1);
                    }
                }
                Ok(seen)
            })
        };
        Reader { stop, task }
    }

    /// Stops reading; returns every record served, by offset.
    async fn stop(self) -> Result<BTreeMap<u64, String>> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(WAIT, self.task).await??
    }
}

/// Every record a reader was served is in node `id`'s final committed log
/// at the same offset; returns how many there were.
async fn all_kept(
    cluster: &TestCluster,
    id: u64,
    topic: &str,
    seen: &BTreeMap<u64, String>,
) -> Result<usize> {
    let end = seen.keys().next_back().map_or(0, |last| last + 1);
    let log = cluster.committed_log(id, topic, 0, end).await?;
    for (offset, value) in seen {
        ensure!(
            log.get(offset) == Some(value),
            "a consumer was served {value:?} at offset {offset} of {topic}/0, which node {id} holds as {:?}",
            log.get(offset)
        );
    }
    Ok(seen.len())
}

/// Waits until node `id`, asked itself, follows another node's lead of
/// `topic`/0 and has no lag.
async fn wait_until_following(cluster: &TestCluster, id: u64, topic: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = cluster.status(id).await;
        let follows = status.as_ref().ok().and_then(|status| {
            let group = status
                .groups
                .iter()
                .find(|g| g.topic == topic && g.partition == 0)?;
            let own = group.replicas.iter().find(|r| r.node_id == id)?;
            Some(
                group.leader_id.is_some_and(|l| l != id)
                    && own.role == "follower"
                    && own.lag_entries == Some(0),
            )
        });
        if follows == Some(true) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "node {id} does not follow in {topic}/0 after the cut healed: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the load's producer has `count` more acknowledgements.
async fn wait_for_progress(cluster: &TestCluster, topic: &str, count: usize, what: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let before = cluster.acked_count(topic, 0);
    while cluster.acked_count(topic, 0) < before + count {
        ensure!(Instant::now() < deadline, "no progress {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Cuts `side` (which holds the leader of `TOPIC`/0) off from the other
/// nodes under a produce load through every node, and checks what each
/// side acknowledges, what consumers of each side see, and the logs once
/// healed.
async fn cut_the_leader_with(cluster: &TestCluster, side: &[u64]) -> Result<()> {
    let old = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
    ensure!(side.contains(&old));
    let majority: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| !side.contains(id))
        .collect();
    let load = cluster.spawn_producer(TOPIC, 0, &cluster.ids(), "load");
    let majority_reader = Reader::spawn(cluster, &majority, TOPIC);
    let minority_reader = Reader::spawn(cluster, side, TOPIC);
    wait_for_progress(cluster, TOPIC, 20, "before the cut").await?;

    cluster.cut(side);
    let cut_at = Instant::now();
    let mut unforwarded = Vec::new();
    for (i, &id) in side.iter().enumerate() {
        unforwarded.push(send_unforwarded(cluster, id, TOPIC, format!("cut-off-{id}-{i}")).await?);
    }
    let new = cluster.agreed_leader(&majority, TOPIC, 0).await?;
    ensure!(!side.contains(&new), "node {new} of the cut-off side leads");
    // Includes the status rounds, which wait a second for the cut-off side.
    let agreed_after = cut_at.elapsed();
    produce_through(cluster, &majority, TOPIC, "majority", 5).await?;
    wait_for_progress(cluster, TOPIC, 5, "on the majority side during the cut").await?;
    // More sent to the cut-off side once the majority has moved on.
    for &id in side {
        unforwarded.push(send_unforwarded(cluster, id, TOPIC, format!("late-{id}")).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for produce in &unforwarded {
        produce.not_acknowledged_yet()?;
    }

    cluster.heal();
    let healed = Instant::now();
    let mut refusals = Vec::new();
    for produce in unforwarded {
        refusals.push(produce.answer().await?);
    }
    let refused_after = healed.elapsed();
    for &id in side {
        wait_until_following(cluster, id, TOPIC).await?;
    }
    wait_for_progress(cluster, TOPIC, 5, "after the cut healed").await?;
    let (sent, failed) = load.stop().await?;
    let majority_seen = majority_reader.stop().await?;
    let minority_seen = minority_reader.stop().await?;

    cluster.check(&cluster.ids()).await?;
    let read_majority = all_kept(cluster, new, TOPIC, &majority_seen).await?;
    let read_minority = all_kept(cluster, new, TOPIC, &minority_seen).await?;
    let end = cluster.latest(new, TOPIC, 0).await?;
    let log = cluster.committed_log(new, TOPIC, 0, end).await?;
    for value in log.values() {
        ensure!(
            !value.starts_with("cut-off-") && !value.starts_with("late-"),
            "{value:?}, refused by the cut-off side, was committed"
        );
    }
    eprintln!(
        "cut of {side:?} (leader {old}): the others agreed on node {new} after {} ms; {sent} produces, {failed} failed, {} \
         acknowledged; consumers read {read_majority} records on the majority side, {read_minority} on the cut-off \
         side; the cut-off side answered {} ms after the heal: {refusals:?}",
        agreed_after.as_millis(),
        cluster.acked_count(TOPIC, 0),
        refused_after.as_millis()
    );
    Ok(())
}

#[test]
fn a_leader_cut_off_from_its_peers_acknowledges_nothing_and_the_others_go_on() -> Result<()> {
    let cluster = TestCluster::start_in_namespaces(3);
    runtime()?.block_on(async {
        let old = create_topic(&cluster, 1, TOPIC, 0).await?;
        cut_the_leader_with(&cluster, &[old]).await
    })
}

#[test]
fn a_leader_and_a_follower_cut_off_from_three_of_five_acknowledge_nothing() -> Result<()> {
    let cluster = TestCluster::start_in_namespaces(5);
    runtime()?.block_on(async {
        // Every node holds a replica, so three are a majority of the group.
        let old = create_topic(&cluster, 1, TOPIC, 5).await?;
        let follower = cluster
            .ids()
            .into_iter()
            .find(|id| *id != old)
            .context("a follower")?;
        cut_the_leader_with(&cluster, &[old, follower]).await
    })
}

#[test]
fn a_topic_is_created_while_the_metadata_leader_is_cut_off() -> Result<()> {
    let cluster = TestCluster::start_in_namespaces(3);
    runtime()?.block_on(async {
        let old = cluster.agreed_leader(&cluster.ids(), "__cluster", 0).await?;
        let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();

        cluster.cut(&[old]);
        // Through the cut-off node: it cannot commit the creation, so the
        // call must not succeed.
        let through_cut_off = {
            let client = cluster.patient_client(old).await?;
            tokio::spawn(async move { client.create_topic(NewTopic::new("cut-off", 1)).await })
        };
        let new = cluster.agreed_leader(&majority, "__cluster", 0).await?;
        ensure!(new != old, "the cut-off node still leads the metadata group");
        let client = cluster.patient_client(majority[0]).await?;
        client
            .create_topic(NewTopic::new(TOPIC, 1))
            .await
            .context("creating a topic through the majority during the cut")?;
        cluster.agreed_leader(&majority, TOPIC, 0).await?;
        produce_through(&cluster, &majority, TOPIC, "during", 5).await?;
        // It gives up within its 10 s deadline, while the cut lasts: an
        // unknown outcome, never a success.
        let cut_off_answer = tokio::time::timeout(Duration::from_secs(15), through_cut_off)
            .await
            .context("the creation through the cut-off node did not give up within 15 s")??;
        match &cut_off_answer {
            Err(error) if error.code() == Some(Code::DeadlineExceeded) => {}
            other => bail!("the cut-off metadata leader answered a creation while cut off with {other:?}"),
        }

        cluster.heal();
        // The node that was cut off learns the topic and serves it.
        wait_until_listed(&cluster, TOPIC).await?;
        cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        wait_until_following(&cluster, old, "__cluster").await?;
        produce_through(&cluster, &cluster.ids(), TOPIC, "after", 3).await?;
        cluster.check(&cluster.ids()).await?;
        eprintln!(
            "metadata leader {old} cut off: node {new} led; the cut-off node's creation: {cut_off_answer:?}"
        );
        Ok(())
    })
}

/// Every node lists `topic`, waiting while one has not applied it yet.
async fn wait_until_listed(cluster: &TestCluster, topic: &str) -> Result<()> {
    for id in cluster.ids() {
        let deadline = Instant::now() + WAIT;
        loop {
            let topics = cluster.client(id).await?.list_topics(false).await?;
            if topics.iter().any(|t| t.name == topic) {
                break;
            }
            ensure!(Instant::now() < deadline, "node {id} does not list {topic}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
