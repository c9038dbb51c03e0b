//! What an operator asks of a cluster through any node: its status
//! (every node asked for what its replicas know, `DescribeReplicas`, and
//! the answers combined per group by [`combine`], a pure function), and a
//! leadership transfer (sent to the group's leader, which runs it:
//! `spool_raft::Replica::transfer_leadership`). `docs/cluster.md`,
//! "Operations", says what an operator sees.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use spool_proto::v1;
use spool_raft::{GroupId, TRANSFER_TIMEOUT};
use tonic::Status;

use super::Cluster;
use super::metadata::{MetadataCommand, MetadataState};

/// How long a node waits for another's description before reporting it
/// unreachable.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long, besides the transfer itself, a node keeps looking for the
/// group's leader to run a transfer (an election may be under way). A
/// loaded machine can take several election rounds: three seconds were
/// seen to run out with twelve nodes of four test clusters on two cores.
const FORWARD_PATIENCE: Duration = Duration::from_secs(10);

/// How long a membership change waits for this node's metadata to reach
/// the metadata leader's before deciding anything (the metadata group may
/// be electing a leader).
const METADATA_SYNC_WAIT: Duration = Duration::from_secs(10);

/// How long a node joining a group may take to catch up with its log (the
/// whole log: nothing is purged) before the change is given up, the node
/// left a learner.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Every partition of which node `node_id` holds a replica, as
/// `topic/partition`.
fn replicas_on(state: &MetadataState, node_id: u64) -> Vec<String> {
    state
        .topics()
        .flat_map(|(name, topic)| {
            topic
                .spec
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, nodes)| nodes.contains(&node_id))
                .map(move |(partition, _)| format!("{name}/{partition}"))
        })
        .collect()
}

/// The role reported for a replica whose node did not answer, or which
/// holds no open replica of the group.
pub const UNREACHABLE: &str = "unreachable";

impl Cluster {
    /// The cluster's status as this node can see it now: every node of the
    /// peer map (asked in parallel, each for at most a second) and every
    /// group of the metadata this node has applied.
    pub async fn status(&self) -> v1::ClusterStatusResponse {
        let peers = self.peers();
        let asked = peers
            .keys()
            .filter(|id| **id != self.node_id)
            .map(|&id| async move {
                (
                    id,
                    self.transport.describe_replicas(id, DESCRIBE_TIMEOUT).await.ok(),
                )
            });
        let mut answers: BTreeMap<u64, Option<v1::DescribeReplicasResponse>> =
            futures_util::future::join_all(asked).await.into_iter().collect();
        answers.insert(self.node_id, Some(self.service.describe_replicas()));
        combine(self.node_id, &peers, &self.state(), &answers)
    }

    /// Makes node `to` the leader of `group` (this node forwards to the
    /// leader when it is another). The group must exist in the metadata
    /// and `to` must be one of its replicas.
    pub async fn transfer_leader(
        &self,
        group: &GroupId,
        to: u64,
    ) -> Result<v1::TransferLeaderResponse, Status> {
        let replicas = self.group_replicas(group)?;
        if !replicas.contains(&to) {
            return Err(Status::invalid_argument(format!(
                "node {to} is not a replica of {group} (replicas: {replicas:?})"
            )));
        }
        self.on_leader(
            group,
            &replicas,
            TRANSFER_TIMEOUT + FORWARD_PATIENCE,
            "move the leadership of",
            |via| async move {
                if via == self.node_id {
                    self.service.transfer_leadership(group, to).await
                } else {
                    self.transport.transfer_leader(via, group, to).await
                }
            },
        )
        .await
    }

    /// Runs `call` on the leader of `group`, whose replicas are on
    /// `replicas`: first through the leader this node knows of (or a
    /// replica, which names it), then through each leader hint; a node
    /// that cannot tell is retried, the next replica in turn, for up to
    /// `patience` (the leader may be gone, killed or paused, with an
    /// election under way). `what` names the call in the error.
    async fn on_leader<T, F, Fut>(
        &self,
        group: &GroupId,
        replicas: &[u64],
        patience: Duration,
        what: &str,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        let mut hinted: Option<u64> = None;
        let mut turn = 0;
        loop {
            let known = self
                .replica(&group.topic, group.partition)
                .and_then(|r| r.leader_id());
            // Without a leader known here, any replica can name it.
            let via = hinted.or(known).unwrap_or(replicas[turn % replicas.len()]);
            let status = match call(via).await {
                Ok(done) => return Ok(done),
                Err(status) => status,
            };
            let hint = spool_raft::leader_hint(&status);
            match hint.as_ref().and_then(|hint| hint.leader_id) {
                Some(next) if Some(next) != hinted && next != via => {
                    hinted = Some(next);
                    continue;
                }
                _ => {}
            }
            // FAILED_PRECONDITION is "not the leader" only with a hint; without
            // one it is the leader's refusal.
            // A connection that broke under the call (its node died) is
            // tonic's UNKNOWN "transport error": the node is asked again,
            // or the next one.
            let broken = status.code() == tonic::Code::Unknown && status.message() == "transport error";
            let retry = (status.code() == tonic::Code::Unavailable
                || broken
                || (status.code() == tonic::Code::FailedPrecondition && hint.is_some()))
                && tokio::time::Instant::now() < deadline;
            if !retry {
                return Err(Status::new(
                    status.code(),
                    format!("node {via}, asked to {what} {group}: {}", status.message()),
                ));
            }
            hinted = None;
            turn += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes `voters` (node id to peer address) the voting members of
    /// `group`, whose replicas the metadata places on `replicas`: run on
    /// the group's leader (which, when it is not one of `voters`, first
    /// moves its leadership to one that is and names it).
    async fn change_group_voters(
        &self,
        group: &GroupId,
        replicas: &[u64],
        voters: &BTreeMap<u64, String>,
    ) -> Result<u64, Status> {
        let patience = CATCH_UP_TIMEOUT + FORWARD_PATIENCE;
        let done = self
            .on_leader(
                group,
                replicas,
                patience,
                "change the voters of",
                |via| async move {
                    if via == self.node_id {
                        self.service.change_voters(group, voters, CATCH_UP_TIMEOUT).await
                    } else {
                        self.transport
                            .change_voters(via, group, voters, CATCH_UP_TIMEOUT)
                            .await
                    }
                },
            )
            .await?;
        Ok(done.term)
    }

    /// Brings this node's metadata up to the metadata leader's, asking
    /// again while the group elects a leader, for up to
    /// [`METADATA_SYNC_WAIT`].
    async fn sync_metadata_patiently(&self) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + METADATA_SYNC_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.sync_metadata(left).await {
                Ok(()) => return Ok(()),
                Err(status) if tokio::time::Instant::now() + Duration::from_millis(200) < deadline => {
                    tracing::debug!(%status, "the metadata is not confirmed yet; asking again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// Adds node `node_id`, listening for peers on `peer_address` and
    /// started with `--join`, to the cluster: it becomes a voter of the
    /// metadata group and of the job layer's, once it holds their logs,
    /// and then a node new topics place replicas on. Running it again
    /// after a failure goes on where it stopped.
    pub async fn add_node(&self, node_id: u64, peer_address: &str) -> Result<v1::AddNodeResponse, Status> {
        self.sync_metadata_patiently().await?;
        let state = self.state();
        if state.is_removed(node_id) {
            return Err(Status::invalid_argument(format!(
                "node {node_id} was removed from the cluster; a node that joins takes a new id"
            )));
        }
        let mut peers = self.peers();
        match peers.get(&node_id) {
            Some(known) if known != peer_address => {
                return Err(Status::already_exists(format!(
                    "node {node_id} is already a node of the cluster, at {known}"
                )));
            }
            _ => {}
        }
        if peer_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "peer address {peer_address:?} is not host:port"
            )));
        }
        self.check_node_answers(node_id, peer_address).await?;
        peers.insert(node_id, peer_address.to_owned());
        let every_node: Vec<u64> = peers.keys().copied().collect();
        for group in [GroupId::metadata(), GroupId::jobs()] {
            self.change_group_voters(&group, &every_node, &peers).await?;
        }
        self.propose(&MetadataCommand::AddNode {
            node_id,
            peer_address: peer_address.to_owned(),
        })
        .await?;
        tracing::info!(node_id, peer_address, "a node joined the cluster");
        Ok(v1::AddNodeResponse { node_ids: every_node })
    }

    /// Makes sure that the node listening on `peer_address` is node
    /// `node_id`: a wrong pair would make another node count twice in
    /// every group it joins.
    async fn check_node_answers(&self, node_id: u64, peer_address: &str) -> Result<(), Status> {
        if node_id == self.node_id {
            return Err(Status::already_exists(format!("node {node_id} is this node")));
        }
        self.transport
            .add_peer(node_id, peer_address)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        match self.transport.describe_node(node_id).await {
            Ok(described) if described.node_id == node_id => Ok(()),
            Ok(described) => {
                self.transport.remove_peer(node_id);
                Err(Status::invalid_argument(format!(
                    "{peer_address} is node {}, not node {node_id}",
                    described.node_id
                )))
            }
            Err(_) => Err(Status::unavailable(format!(
                "node {node_id} does not answer at {peer_address}: start it first (spoold --node-id {node_id} --join ...)"
            ))),
        }
    }

    /// Removes node `node_id` from the cluster: it leaves the metadata
    /// group and the job layer's, and is never used again. Refused while
    /// it holds a partition's replica (move those first). Running it
    /// again after a failure goes on where it stopped.
    pub async fn remove_node(&self, node_id: u64) -> Result<v1::RemoveNodeResponse, Status> {
        self.sync_metadata_patiently().await?;
        let state = self.state();
        if !state.is_removed(node_id) {
            let peers = self.peers();
            if !peers.contains_key(&node_id) {
                return Err(Status::not_found(format!(
                    "node {node_id} is not a node of the cluster"
                )));
            }
            if peers.len() == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {node_id} is the cluster's last node"
                )));
            }
            let held = replicas_on(&state, node_id);
            if !held.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "node {node_id} still holds replicas of {}: move them first (spool cluster move-replica)",
                    held.join(", ")
                )));
            }
            self.propose(&MetadataCommand::RemoveNode { node_id }).await?;
        }
        let peers = self.peers();
        let mut every_node: Vec<u64> = peers.keys().copied().collect();
        every_node.push(node_id);
        for group in [GroupId::metadata(), GroupId::jobs()] {
            self.change_group_voters(&group, &every_node, &peers).await?;
        }
        tracing::info!(node_id, "a node left the cluster");
        Ok(v1::RemoveNodeResponse {
            node_ids: peers.into_keys().collect(),
        })
    }

    /// Moves partition `partition` of `topic`'s replica from node `from`
    /// to node `to`: the metadata first places it on both (`to` opens a
    /// replica, empty, that waits for the leader), the group's voters
    /// change (`to` catches up as a learner, then votes; `from` leaves),
    /// and the metadata then places it on the new set (`from` stops its
    /// replica). Running it again after a failure goes on where it
    /// stopped; asked once the move is done, it answers at once.
    pub async fn move_replica(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<v1::MoveReplicaResponse, Status> {
        let group = GroupId::new(topic, partition);
        if group.is_internal() {
            return Err(Status::invalid_argument(format!(
                "{group} is on every node; add and remove nodes instead"
            )));
        }
        // Decided on this node's metadata, which must be the cluster's: a
        // node behind it (it missed the end of an earlier move) would
        // change the group's voters to a set the metadata does not place
        // the partition on, and the new replica would never open.
        self.sync_metadata_patiently().await?;
        let current = self.group_replicas(&group)?;
        let peers = self.peers();
        if !peers.contains_key(&to) {
            return Err(Status::invalid_argument(format!(
                "node {to} is not a node of the cluster"
            )));
        }
        // `from` replaced by `to` in its place; run again after a failure,
        // `current` already holds both, and `to` stays where it is.
        let mut done: Vec<u64> = Vec::with_capacity(current.len());
        for id in current.iter().map(|&id| if id == from { to } else { id }) {
            if !done.contains(&id) {
                done.push(id);
            }
        }
        if current.contains(&to) && !current.contains(&from) {
            return Ok(v1::MoveReplicaResponse { replicas: current });
        }
        if !current.contains(&from) {
            return Err(Status::invalid_argument(format!(
                "node {from} holds no replica of {group} (replicas: {current:?})"
            )));
        }
        if from == to {
            return Err(Status::invalid_argument("a replica moves to another node"));
        }
        let mut both = current.clone();
        if !both.contains(&to) {
            both.push(to);
            self.propose(&MetadataCommand::SetReplicas {
                topic: topic.to_owned(),
                partition,
                replicas: both.clone(),
            })
            .await?;
        }
        let mut voters = BTreeMap::new();
        for id in &done {
            let address = peers.get(id).ok_or_else(|| {
                Status::failed_precondition(format!("node {id} is no longer a node of the cluster"))
            })?;
            voters.insert(*id, address.clone());
        }
        self.change_group_voters(&group, &both, &voters).await?;
        self.propose(&MetadataCommand::SetReplicas {
            topic: topic.to_owned(),
            partition,
            replicas: done.clone(),
        })
        .await?;
        tracing::info!(%group, from, to, "a replica moved");
        Ok(v1::MoveReplicaResponse { replicas: done })
    }

    /// The nodes holding a replica of `group`, from the metadata: every
    /// node for the metadata group.
    fn group_replicas(&self, group: &GroupId) -> Result<Vec<u64>, Status> {
        if group.is_internal() {
            return Ok(self.node_ids());
        }
        let topic = self
            .topic(&group.topic)
            .ok_or_else(|| Status::not_found(format!("topic {:?} does not exist", group.topic)))?;
        topic
            .spec
            .replicas
            .get(group.partition as usize)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "partition {} of topic {:?} does not exist ({} partitions)",
                    group.partition, group.topic, topic.spec.partitions
                ))
            })
    }
}

/// The status of the cluster from each node's answer (`None`: it did not
/// answer). Groups: the metadata group, then every partition of every
/// topic in `metadata`, by name.
pub fn combine(
    node_id: u64,
    peers: &BTreeMap<u64, String>,
    metadata: &MetadataState,
    answers: &BTreeMap<u64, Option<v1::DescribeReplicasResponse>>,
) -> v1::ClusterStatusResponse {
    let answered = |id: &u64| answers.get(id).and_then(Option::as_ref);
    let nodes = peers
        .iter()
        .map(|(id, peer_address)| v1::NodeStatus {
            node_id: *id,
            peer_address: peer_address.clone(),
            client_address: answered(id).map(|a| a.client_address.clone()).unwrap_or_default(),
            reachable: answered(id).is_some(),
        })
        .collect();

    // Every reachable node's report of each group, by group.
    let mut reports: BTreeMap<GroupId, Vec<Report<'_>>> = BTreeMap::new();
    for (node, answer) in answers {
        for report in answer.iter().flat_map(|a| &a.replicas) {
            if let Some(group) = &report.group {
                reports
                    .entry(GroupId::new(group.topic.clone(), group.partition))
                    .or_default()
                    .push(Report { node: *node, report });
            }
        }
    }
    let no_reports = Vec::new();
    let every_node = peers.keys().copied().collect::<Vec<_>>();
    let mut groups: Vec<_> = [GroupId::metadata(), GroupId::jobs()]
        .iter()
        .filter(|group| *group == &GroupId::metadata() || reports.contains_key(group))
        .map(|group| group_status(group, &every_node, reports.get(group).unwrap_or(&no_reports)))
        .collect();
    for (name, topic) in metadata.topics() {
        for (partition, replicas) in topic.spec.replicas.iter().enumerate() {
            let group = GroupId::new(name.clone(), partition as u32);
            groups.push(group_status(
                &group,
                replicas,
                reports.get(&group).unwrap_or(&no_reports),
            ));
        }
    }
    v1::ClusterStatusResponse {
        node_id,
        nodes,
        groups,
    }
}

/// A replica's report with the node it came from.
#[derive(Debug, Clone, Copy)]
struct Report<'a> {
    node: u64,
    report: &'a v1::ReplicaReport,
}

/// One group from its replicas' reports. The leader is the replica that
/// says it leads in the highest term; its progress map gives each
/// member's matched index and lag.
fn group_status(group: &GroupId, replicas: &[u64], reports: &[Report<'_>]) -> v1::GroupStatus {
    let term = reports.iter().map(|r| r.report.term).max().unwrap_or(0);
    let leading = reports
        .iter()
        .filter(|r| r.report.role == spool_raft::Role::Leader.name())
        .max_by_key(|r| r.report.term)
        .copied();
    let leader_id = match leading {
        Some(leader) => Some(leader.node),
        None => reports
            .iter()
            .filter(|r| r.report.term == term)
            .find_map(|r| r.report.leader_id),
    };
    let leader_last = leading.and_then(|l| l.report.last_log_index);
    let replicas = replicas
        .iter()
        .map(|&id| {
            let own = reports.iter().find(|r| r.node == id).map(|r| r.report);
            let matched_index = match leading {
                Some(leader) if leader.node == id => leader_last,
                Some(leader) => leader
                    .report
                    .matched
                    .iter()
                    .find(|m| m.node_id == id)
                    .and_then(|m| m.index),
                None => None,
            };
            let lag_entries = match (leader_last, matched_index) {
                (Some(last), Some(matched)) => Some(last.saturating_sub(matched)),
                // The leader has not heard from it yet: it may hold
                // nothing.
                (Some(last), None) => Some(last + 1),
                (None, _) => None,
            };
            v1::ReplicaProgress {
                node_id: id,
                role: own.map_or(UNREACHABLE.to_owned(), |r| r.role.clone()),
                matched_index,
                lag_entries,
                last_log_index: own.and_then(|r| r.last_log_index),
                applied_index: own.and_then(|r| r.applied_index),
            }
        })
        .collect();
    v1::GroupStatus {
        topic: group.topic.clone(),
        partition: group.partition,
        leader_id,
        term,
        committed_index: leading.and_then(|l| l.report.applied_index),
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::{MetadataCommand, TopicSpec};

    fn report(topic: &str, role: &str, term: u64, leader: Option<u64>, last: u64) -> v1::ReplicaReport {
        v1::ReplicaReport {
            group: Some(v1::RaftGroup {
                topic: topic.to_owned(),
                partition: 0,
                incarnation: 0,
            }),
            role: role.to_owned(),
            term,
            leader_id: leader,
            last_log_index: Some(last),
            applied_index: Some(last),
            voters: vec![1, 2, 3],
            learners: Vec::new(),
            matched: Vec::new(),
        }
    }

    fn answer(node_id: u64, replicas: Vec<v1::ReplicaReport>) -> Option<v1::DescribeReplicasResponse> {
        Some(v1::DescribeReplicasResponse {
            node_id,
            client_address: format!("127.0.0.1:707{node_id}"),
            replicas,
        })
    }

    #[test]
    fn the_leaders_view_gives_progress_and_a_silent_node_is_unreachable() {
        let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("127.0.0.1:708{id}"))).collect();
        let mut metadata = MetadataState::default();
        metadata.apply(
            5,
            MetadataCommand::CreateTopic {
                name: "orders".into(),
                spec: TopicSpec {
                    partitions: 1,
                    replication_factor: 3,
                    segment_bytes_max: 1 << 20,
                    replicas: vec![vec![2, 3, 1]],
                    retention_ms: None,
                    retention_bytes: None,
                },
            },
        );
        let mut leading = report("orders", "leader", 4, Some(1), 10);
        leading.matched = vec![
            v1::MatchedIndex {
                node_id: 2,
                index: Some(10),
            },
            v1::MatchedIndex {
                node_id: 3,
                index: Some(4),
            },
        ];
        let answers = BTreeMap::from([
            (
                1,
                answer(1, vec![report("__cluster", "follower", 2, Some(2), 7), leading]),
            ),
            (
                2,
                answer(
                    2,
                    vec![
                        report("__cluster", "leader", 2, Some(2), 7),
                        report("orders", "follower", 4, Some(1), 10),
                    ],
                ),
            ),
            (3, None),
        ]);
        let status = combine(2, &peers, &metadata, &answers);

        assert_eq!(status.node_id, 2);
        let reachable: Vec<bool> = status.nodes.iter().map(|n| n.reachable).collect();
        assert_eq!(reachable, [true, true, false]);
        assert_eq!(status.nodes[0].client_address, "127.0.0.1:7071");
        assert_eq!(status.nodes[2].client_address, "");

        assert_eq!(status.groups.len(), 2);
        let meta = &status.groups[0];
        assert_eq!(
            (meta.topic.as_str(), meta.leader_id, meta.term),
            ("__cluster", Some(2), 2)
        );
        // The metadata leader answered without progress for the others:
        // they count as behind by everything.
        assert_eq!(meta.replicas[0].matched_index, None);
        assert_eq!(meta.replicas[1].matched_index, Some(7));
        assert_eq!(meta.replicas[1].lag_entries, Some(0));

        let orders = &status.groups[1];
        assert_eq!(orders.leader_id, Some(1));
        assert_eq!(orders.committed_index, Some(10));
        // In the order the metadata assigned them.
        let ids: Vec<u64> = orders.replicas.iter().map(|r| r.node_id).collect();
        assert_eq!(ids, [2, 3, 1]);
        let by_id = |id: u64| orders.replicas.iter().find(|r| r.node_id == id).unwrap();
        assert_eq!(by_id(1).role, "leader");
        assert_eq!(by_id(1).lag_entries, Some(0));
        assert_eq!(by_id(2).role, "follower");
        assert_eq!(by_id(2).lag_entries, Some(0));
        // The silent node: unreachable, with the leader's last word on it.
        assert_eq!(by_id(3).role, UNREACHABLE);
        assert_eq!(by_id(3).matched_index, Some(4));
        assert_eq!(by_id(3).lag_entries, Some(6));
        assert_eq!(by_id(3).last_log_index, None);
    }

    #[test]
    fn without_a_leader_the_highest_term_names_the_one_known() {
        let peers: BTreeMap<u64, String> = (1..=2).map(|id| (id, String::new())).collect();
        let answers = BTreeMap::from([
            (1, answer(1, vec![report("__cluster", "candidate", 6, None, 3)])),
            (2, answer(2, vec![report("__cluster", "follower", 5, Some(1), 3)])),
        ]);
        let status = combine(1, &peers, &MetadataState::default(), &answers);
        let meta = &status.groups[0];
        assert_eq!(meta.term, 6);
        assert_eq!(meta.leader_id, None);
        assert_eq!(meta.committed_index, None);
        assert!(meta.replicas.iter().all(|r| r.lag_entries.is_none()));
    }
}
