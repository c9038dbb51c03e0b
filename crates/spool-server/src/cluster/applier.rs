//! Applies the committed metadata on this node: reads the metadata
//! group's committed log (`__cluster`), folds each command into the
//! [`MetadataState`](super::MetadataState), then makes the node match it
//! for every topic a command touched: the local topic exists with the
//! spec's partitions, and this node's replicas of them run (a new group's
//! replicas each make its first membership; a replica moved here waits
//! for the group's leader), a replica moved away stops — or, for a
//! deleted topic, its replicas stop and its local data goes. Nodes added
//! and removed change whom the transport can reach.
//!
//! After a restart the log is applied again from its start, or from the
//! metadata state this node stored last (`metadata_snapshot.rs`), which
//! the log may have been compacted below: at once up
//! to the commit the metadata replica stored (`raft-commit`), the rest
//! once the metadata leader says how far it is committed; applying is
//! idempotent (opening a running replica or
//! deleting a missing topic does nothing), and the commands of one read
//! are folded before the node acts, so a topic deleted and created again
//! in that stretch is reopened, not deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use spool_log::{Partition, TopicConfig};
use spool_raft::{GroupId, Replica};
use tokio::sync::watch;

use super::metadata::{MetadataCommand, MetadataState, TopicSpec};
use super::{Cluster, initialize_group};

/// Bytes of the metadata log read at once.
const READ_BYTES: u64 = 1 << 20;

pub(super) async fn run(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let partition = cluster.metadata.partition().clone();
    let mut offset = partition.log_start_offset();
    let mut removed_reported = false;
    // After a compaction, or a snapshot installed from the leader, the
    // log starts past commands the state needs: the state this node
    // stored last is where it goes on from.
    match cluster.metadata_snapshots.stored() {
        Some(snapshot) => {
            restore(&cluster, snapshot, &mut offset, &mut removed_reported, false).await;
        }
        None if offset > 0 => tracing::error!(
            log_start_offset = offset,
            "the metadata log starts past 0 and no snapshot carries the state before it; the metadata applied here lacks what came before"
        ),
        None => {}
    }
    loop {
        if let Some(snapshot) = cluster.metadata_snapshots.take_installed()
            && snapshot.next_offset > offset
        {
            restore(&cluster, snapshot, &mut offset, &mut removed_reported, true).await;
        }
        tokio::select! {
            result = partition.wait_committed(offset) => {
                if let Err(error) = result {
                    tracing::error!(%error, "the metadata log stopped; metadata is no longer applied");
                    return;
                }
            }
            _ = cluster.metadata_snapshots.wake.notified() => continue,
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        let reading = partition.clone();
        let read = tokio::task::spawn_blocking(move || read_commands(&reading, offset)).await;
        let (commands, next_offset) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                // Below the log start: the log restarted from the leader's
                // snapshot, and the next turn takes its state up.
                if matches!(error, spool_log::Error::OffsetOutOfRange { .. }) {
                    tracing::debug!(%error, offset, "the metadata log starts past what is applied here; waiting for the snapshot's state");
                } else {
                    tracing::warn!(%error, offset, "cannot read the metadata log");
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = cluster.metadata_snapshots.wake.notified() => {}
                }
                continue;
            }
            Err(join) => {
                tracing::error!(%join, "reading the metadata log panicked");
                return;
            }
        };
        // Most commands are checkpoint commits: the nodes are looked at
        // again only when one was added or removed.
        let nodes_changed = commands.iter().any(|(_, command)| command.changes_nodes());
        let touched: BTreeSet<String> = {
            let mut state = cluster.state.write().expect("metadata lock");
            let touched = commands
                .into_iter()
                .filter_map(|(at, command)| state.apply(at, command))
                .collect();
            state.set_applied_through(next_offset);
            touched
        };
        if nodes_changed {
            follow_nodes(&cluster, &mut removed_reported);
        }
        for topic in touched {
            reconcile(&cluster, &topic).await;
        }
        offset = next_offset;
        cluster.applied.send_replace(offset);
    }
}

/// Takes up the state `snapshot` carries: it replaces this node's, the
/// node then matches it for every topic it names, and the log is read on
/// from the snapshot's offset.
///
/// With `installed` (a snapshot received from the leader, past all this
/// node has applied) the local topics of replicated topics (those with
/// an incarnation) it does not name go too: they were deleted in commands
/// this node never read. At a start they stay: the
/// node may have applied commands past its own last snapshot, and a
/// topic created in them is in its log, not in the snapshot.
async fn restore(
    cluster: &Arc<Cluster>,
    snapshot: spool_raft::AppSnapshot,
    offset: &mut u64,
    removed_reported: &mut bool,
    installed: bool,
) {
    let state = match MetadataState::decode(&snapshot.data) {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(%error, next_offset = snapshot.next_offset, "a metadata snapshot cannot be read; the metadata applied here lacks what came before it");
            return;
        }
    };
    let mut topics: BTreeSet<String> = state.topics().map(|(name, _)| name.clone()).collect();
    if installed {
        topics.extend(
            cluster
                .store
                .topics()
                .iter()
                .filter(|topic| topic.config().incarnation.is_some())
                .map(|topic| topic.name().to_owned()),
        );
    }
    *cluster.state.write().expect("metadata lock") = state;
    tracing::info!(
        next_offset = snapshot.next_offset,
        topics = topics.len(),
        "took up the cluster's metadata from a snapshot"
    );
    follow_nodes(cluster, removed_reported);
    for topic in topics {
        reconcile(cluster, &topic).await;
    }
    *offset = snapshot.next_offset;
    cluster.applied.send_replace(*offset);
}

/// Makes the transport reach the cluster's nodes as the metadata now
/// names them: a node added is reachable at its peer address. A removed
/// node stays reachable (it may still lead a group whose voters are being
/// changed to leave it out; once out, nothing calls it). A node that
/// finds itself removed says so once.
fn follow_nodes(cluster: &Cluster, removed_reported: &mut bool) {
    for (id, address) in &cluster.peers() {
        if let Err(error) = cluster.transport.add_peer(*id, address) {
            tracing::error!(node_id = id, address, %error, "cannot reach an added node at its peer address");
        }
    }
    if !*removed_reported
        && cluster
            .state
            .read()
            .expect("metadata lock")
            .is_removed(cluster.node_id)
    {
        *removed_reported = true;
        tracing::warn!(
            node_id = cluster.node_id,
            "this node was removed from the cluster: it holds no replica and takes part in no group; stop it"
        );
    }
}

/// The commands of the committed metadata log from `offset` on, each with
/// the offset of its batch, and the offset after the last batch read.
/// A record that is not a command is logged and skipped (it cannot be applied, and stopping would stop
/// every later change too).
fn read_commands(
    partition: &Partition,
    offset: u64,
) -> spool_log::Result<(Vec<(u64, MetadataCommand)>, u64)> {
    let mut commands = Vec::new();
    let mut next = offset;
    while next < partition.committed_offset() {
        let read = partition.read_committed(next, READ_BYTES)?;
        if read.next_offset <= next {
            break;
        }
        for batch in &read.batches {
            for record in partition.records(batch) {
                let record = record?;
                let value = record.value.unwrap_or_default();
                match serde_json::from_slice::<MetadataCommand>(value) {
                    Ok(command) => commands.push((batch.base_offset(), command)),
                    Err(error) => {
                        tracing::error!(offset = record.offset, %error, "skipping a metadata record that is not a command");
                    }
                }
            }
        }
        next = read.next_offset;
    }
    Ok((commands, next))
}

/// Makes this node match the state for `topic`.
async fn reconcile(cluster: &Arc<Cluster>, topic: &str) {
    match cluster.topic(topic) {
        Some(entry) => {
            let spec = entry.spec.clone();
            let incarnation = incarnation(entry.created_offset);
            let partitions = match ensure_local_topic(cluster, topic, &spec, incarnation).await {
                Ok(partitions) => partitions,
                Err(error) => {
                    tracing::error!(topic, %error, "cannot create the local topic of a replicated topic");
                    return;
                }
            };
            for (id, nodes) in spec.replicas.iter().enumerate() {
                let group = GroupId::new(topic, id as u32);
                let running = cluster.service.replica(&group);
                if !nodes.contains(&cluster.node_id) {
                    // Moved away: the group's voters no longer include this
                    // node. The files stay (a move back resumes from them,
                    // as a follower that was down).
                    if let Some(replica) = running {
                        cluster.service.unregister(&group);
                        let _ = replica.shutdown().await;
                        tracing::info!(%group, "this node's replica moved away; stopped it");
                    }
                    continue;
                }
                if running.is_some() {
                    continue;
                }
                let Some(partition) = partitions.get(id).cloned() else {
                    tracing::error!(%group, "the local topic has fewer partitions than the metadata says");
                    continue;
                };
                // A moved partition's group has a membership already; a
                // replica with an empty log waits for its leader.
                let founders = (!entry.moved.contains(&(id as u32))).then_some(nodes.as_slice());
                if let Err(error) =
                    open_replica(cluster, group.clone(), incarnation, partition, founders).await
                {
                    tracing::error!(%group, %error, "cannot open this node's replica");
                }
            }
        }
        None => {
            if let Err(error) = delete_local_topic(cluster, topic).await {
                tracing::error!(topic, %error, "cannot delete the local data of a deleted topic");
            }
        }
    }
}

/// Which creation of its name a topic created by the metadata command at
/// `created_offset` is: one more than that offset, so that 0 (the
/// metadata group's, and what a message without one carries) names no
/// topic.
fn incarnation(created_offset: u64) -> u64 {
    created_offset + 1
}

/// Stops this node's replicas of `topic` and deletes its local data, if
/// any.
async fn delete_local_topic(cluster: &Arc<Cluster>, topic: &str) -> spool_log::Result<()> {
    for (group, replica) in cluster.service.replicas() {
        if group.topic == topic {
            cluster.service.unregister(&group);
            let _ = replica.shutdown().await;
        }
    }
    let store = Arc::clone(&cluster.store);
    let name = topic.to_owned();
    tokio::task::spawn_blocking(move || match store.topic(&name) {
        Ok(_) => store.delete_topic(&name),
        Err(_) => Ok(()),
    })
    .await
    .expect("deleting a topic does not panic")
}

/// The local topic's partitions, creating it first if needed. The local
/// topic has no retention of its own even when the replicated topic has
/// one: the store deleting a replica's segments by itself would remove
/// entries the Raft log has not purged. The topic's retention is applied
/// by compacting each replica (`retention.rs`).
///
/// A local topic of an earlier creation of the name (`incarnation`; this
/// node was down, or applied the deletion and the new creation in one
/// read) is deleted first: its log is not the new topic's, and joining
/// the new group with it would offer old records as the new group's
/// entries. A local topic without an incarnation predates it and is kept.
async fn ensure_local_topic(
    cluster: &Arc<Cluster>,
    topic: &str,
    spec: &TopicSpec,
    incarnation: u64,
) -> spool_log::Result<Vec<Partition>> {
    let local = match cluster.store.topic(topic) {
        Ok(local) => Some(local.config().incarnation),
        Err(spool_log::Error::UnknownTopic { .. }) => None,
        Err(other) => return Err(other),
    };
    if let Some(Some(old)) = local
        && old != incarnation
    {
        tracing::warn!(
            topic,
            old,
            new = incarnation,
            "this node holds an earlier creation of the topic; deleting its local data"
        );
        delete_local_topic(cluster, topic).await?;
    }
    let store = Arc::clone(&cluster.store);
    let name = topic.to_owned();
    let config = TopicConfig {
        partitions: spec.partitions,
        segment_bytes_max: spec.segment_bytes_max,
        retention_ms: None,
        retention_bytes: None,
        incarnation: Some(incarnation),
        ..store.config().topic_defaults.clone()
    };
    tokio::task::spawn_blocking(move || {
        let local = match store.topic(&name) {
            Ok(topic) => topic,
            Err(spool_log::Error::UnknownTopic { .. }) => store.create_topic(&name, config)?,
            Err(other) => return Err(other),
        };
        Ok(local.partitions().to_vec())
    })
    .await
    .expect("opening a topic does not panic")
}

/// Opens and registers this node's replica of `group`, of creation
/// `incarnation` of its topic; with an empty log, it makes the group's
/// first membership of `founders` when given (`initialize`).
async fn open_replica(
    cluster: &Arc<Cluster>,
    group: GroupId,
    incarnation: u64,
    partition: Partition,
    founders: Option<&[u64]>,
) -> spool_raft::Result<()> {
    let fresh = partition.high_watermark() == 0;
    let network = cluster.transport.group(group.clone(), incarnation);
    let replica = Replica::open(&cluster.group_config, partition, network).await?;
    cluster
        .service
        .register(group.clone(), incarnation, replica.clone());
    if fresh && let Some(nodes) = founders {
        initialize(&replica, cluster, nodes);
    }
    tracing::info!(%group, fresh, "opened this node's replica");
    Ok(())
}

/// Asks for the group's first membership, its replicas on `nodes`
/// (`initialize_group`).
fn initialize(replica: &Replica, cluster: &Cluster, nodes: &[u64]) {
    let peers = cluster.peers();
    let members: BTreeMap<u64, String> = nodes
        .iter()
        .filter_map(|id| peers.get(id).map(|address| (*id, address.clone())))
        .collect();
    initialize_group(replica, &cluster.group_config, members);
}
