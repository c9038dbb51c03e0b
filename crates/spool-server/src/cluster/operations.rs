//! What an operator asks of a cluster through any node: its status
//! (every node asked for what its replicas know, `DescribeReplicas`, and
//! the answers combined per group by [`combine`], a pure function), and a
//! leadership transfer (sent to the group's leader, which runs it:
//! `spool_raft::Replica::transfer_leadership`). `docs/cluster.md`,
//! "Operations", says what an operator sees.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_proto::v1;
use spool_raft::{GroupId, TRANSFER_TIMEOUT};
use tonic::Status;

use super::Cluster;
use super::metadata::MetadataState;

/// How long a node waits for another's description before reporting it
/// unreachable.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long, besides the transfer itself, a node keeps looking for the
/// group's leader to run a transfer (an election may be under way). A
/// loaded machine can take several election rounds: three seconds were
/// seen to run out with twelve nodes of four test clusters on two cores.
const FORWARD_PATIENCE: Duration = Duration::from_secs(10);

/// The role reported for a replica whose node did not answer, or which
/// holds no open replica of the group.
pub const UNREACHABLE: &str = "unreachable";

impl Cluster {
    /// The cluster's status as this node can see it now: every node of the
    /// peer map (asked in parallel, each for at most a second) and every
    /// group of the metadata this node has applied.
    pub async fn status(&self) -> v1::ClusterStatusResponse {
        let asked = self
            .peers
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
        combine(self.node_id, &self.peers, &self.state(), &answers)
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
        // The leader may be gone (killed, paused) with an election under
        // way: then the next leader is asked, until this deadline.
        let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT + FORWARD_PATIENCE;
        let mut hinted: Option<u64> = None;
        loop {
            let known = self
                .replica(&group.topic, group.partition)
                .and_then(|r| r.leader_id());
            // Without a leader known here, any replica can name it.
            let via = hinted.or(known).unwrap_or(replicas[0]);
            let answer = if via == self.node_id {
                self.service.transfer_leadership(group, to).await
            } else {
                self.transport.transfer_leader(via, group, to).await
            };
            let status = match answer {
                Ok(done) => return Ok(done),
                Err(status) => status,
            };
            match spool_raft::leader_hint(&status).and_then(|hint| hint.leader_id) {
                Some(next) if Some(next) != hinted && next != via => {
                    hinted = Some(next);
                    continue;
                }
                _ => {}
            }
            let retry = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::FailedPrecondition
            ) && tokio::time::Instant::now() < deadline;
            if !retry {
                return Err(Status::new(
                    status.code(),
                    format!(
                        "node {via}, asked to move the leadership of {group}: {}",
                        status.message()
                    ),
                ));
            }
            hinted = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
