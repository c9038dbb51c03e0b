//! The metadata group's state machine: which nodes the cluster has
//! besides those it started with, which topics exist, with how many
//! partitions, which nodes hold each partition's replicas, and the named
//! consumer checkpoints of the cluster's topics. A command
//! is one record (JSON in its value) of a batch in the metadata group's
//! log (`__cluster`, partition 0); every node folds the committed
//! commands in log order into the same [`MetadataState`]. Pure: reading
//! the log and acting on the state is `applier.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::checkpoints::Position;

/// A change to the cluster's metadata, proposed to the metadata group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetadataCommand {
    CreateTopic {
        name: String,
        spec: TopicSpec,
    },
    DeleteTopic {
        name: String,
    },
    /// A consumer's positions in a topic (`Log.CommitCheckpoint`), each
    /// partition with its offset; partitions not listed keep theirs.
    CommitCheckpoint {
        consumer: String,
        topic: String,
        positions: Vec<(u32, u64)>,
        commit_time_ms: i64,
    },
    /// A node joins the cluster (`spool cluster add-node`): its peer
    /// address, for every node to reach it.
    AddNode {
        node_id: u64,
        peer_address: String,
    },
    /// A node leaves the cluster (`spool cluster remove-node`); its id is
    /// never used again.
    RemoveNode {
        node_id: u64,
    },
    /// The nodes holding a partition's replicas change (`spool cluster
    /// move-replica`): first to the old and the new together while the
    /// new replica catches up and the Raft group's voters change, then to
    /// the new ones.
    SetReplicas {
        topic: String,
        partition: u32,
        replicas: Vec<u64>,
    },
}

impl MetadataCommand {
    /// Whether the command adds or removes a node.
    pub fn changes_nodes(&self) -> bool {
        matches!(
            self,
            MetadataCommand::AddNode { .. } | MetadataCommand::RemoveNode { .. }
        )
    }
}

/// A replicated topic as the metadata group knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub partitions: u32,
    pub replication_factor: u32,
    pub segment_bytes_max: u64,
    /// `replicas[p]`: the nodes holding partition `p`'s replicas, in the
    /// order the assignment picked them.
    pub replicas: Vec<Vec<u64>>,
    /// Retention by time: every replica compacts its log below the first
    /// segment this keeps (`retention.rs`). `None` keeps every record
    /// (and is what a topic created before retention existed has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Retention by size, per partition, as `retention_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
}

/// A topic in the state: its spec and the metadata offset of the command
/// that created it, which tells one creation of a name from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicEntry {
    pub spec: TopicSpec,
    pub created_offset: u64,
    /// Partitions whose replicas have changed since the creation: their
    /// groups have a membership, and a replica that starts with an empty
    /// log must wait for the leader rather than make a first one.
    pub moved: BTreeSet<u32>,
}

/// Every node's view of the committed metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    /// Nodes added since the cluster's first start, with their peer
    /// addresses (the first ones are the `--peers` map).
    added: BTreeMap<u64, String>,
    removed: BTreeSet<u64>,
    topics: BTreeMap<String, TopicEntry>,
    /// By (consumer, topic), each partition's position.
    checkpoints: BTreeMap<(String, String), BTreeMap<u32, Position>>,
    /// The metadata offset every command below has been applied through
    /// ([`applied_through`](Self::applied_through)).
    next_offset: u64,
}

/// [`MetadataState`] as a snapshot stores it (JSON): what a node whose
/// metadata log was compacted, or restarted from the leader's snapshot,
/// starts from (`docs/cluster.md`, "Snapshots").
#[derive(Debug, Serialize, Deserialize)]
struct StoredState {
    next_offset: u64,
    added: Vec<(u64, String)>,
    removed: Vec<u64>,
    topics: Vec<StoredTopic>,
    checkpoints: Vec<StoredCheckpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredTopic {
    name: String,
    spec: TopicSpec,
    created_offset: u64,
    moved: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredCheckpoint {
    consumer: String,
    topic: String,
    /// (partition, offset, commit time in ms).
    positions: Vec<(u32, u64, i64)>,
}

impl MetadataState {
    /// Applies the command stored at metadata offset `offset`. Creating a
    /// name that exists and deleting one that does not change nothing: two
    /// nodes may propose the same name at once, and the first committed
    /// wins. Deleting a topic drops its checkpoints (a topic created again
    /// under the name has other records at those offsets); a checkpoint of
    /// a topic that does not exist (deleted while the commit was on its
    /// way) is dropped. Returns the topic whose replicas the command
    /// changes, if any.
    pub fn apply(&mut self, offset: u64, command: MetadataCommand) -> Option<String> {
        match command {
            MetadataCommand::CreateTopic { name, spec } => {
                self.topics.entry(name.clone()).or_insert(TopicEntry {
                    spec,
                    created_offset: offset,
                    moved: BTreeSet::new(),
                });
                Some(name)
            }
            MetadataCommand::DeleteTopic { name } => {
                self.topics.remove(&name);
                self.checkpoints.retain(|(_, topic), _| *topic != name);
                Some(name)
            }
            MetadataCommand::CommitCheckpoint {
                consumer,
                topic,
                positions,
                commit_time_ms,
            } => {
                if self.topics.contains_key(&topic) {
                    let stored = self.checkpoints.entry((consumer, topic)).or_default();
                    for (partition, offset) in positions {
                        stored.insert(
                            partition,
                            Position {
                                offset,
                                commit_time_ms,
                            },
                        );
                    }
                }
                None
            }
            MetadataCommand::AddNode {
                node_id,
                peer_address,
            } => {
                if !self.removed.contains(&node_id) {
                    self.added.insert(node_id, peer_address);
                }
                None
            }
            MetadataCommand::RemoveNode { node_id } => {
                self.added.remove(&node_id);
                self.removed.insert(node_id);
                None
            }
            MetadataCommand::SetReplicas {
                topic,
                partition,
                replicas,
            } => {
                let entry = self.topics.get_mut(&topic)?;
                let slot = entry.spec.replicas.get_mut(partition as usize)?;
                *slot = replicas;
                entry.moved.insert(partition);
                Some(topic)
            }
        }
    }

    /// The cluster's nodes now, with their peer addresses: `bootstrap`
    /// (the `--peers` map the cluster started with) and the nodes added
    /// since, less those removed.
    pub fn nodes(&self, bootstrap: &BTreeMap<u64, String>) -> BTreeMap<u64, String> {
        let mut nodes = bootstrap.clone();
        nodes.extend(self.added.iter().map(|(id, address)| (*id, address.clone())));
        nodes.retain(|id, _| !self.removed.contains(id));
        nodes
    }

    /// Whether node `node_id` was removed from the cluster.
    pub fn is_removed(&self, node_id: u64) -> bool {
        self.removed.contains(&node_id)
    }

    /// Every stored checkpoint: consumer, topic and positions, sorted.
    pub fn all_checkpoints(&self) -> Vec<(String, String, BTreeMap<u32, Position>)> {
        self.checkpoints
            .iter()
            .map(|((consumer, topic), positions)| (consumer.clone(), topic.clone(), positions.clone()))
            .collect()
    }

    /// `consumer`'s positions in `topic`, by partition (empty when none).
    pub fn checkpoint(&self, consumer: &str, topic: &str) -> BTreeMap<u32, Position> {
        self.checkpoints
            .get(&(consumer.to_owned(), topic.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicEntry> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = (&String, &TopicEntry)> {
        self.topics.iter()
    }

    /// The metadata offset the state has applied every command below:
    /// where reading the log goes on.
    pub fn applied_through(&self) -> u64 {
        self.next_offset
    }

    /// Records that every command below `next_offset` is applied.
    pub fn set_applied_through(&mut self, next_offset: u64) {
        self.next_offset = self.next_offset.max(next_offset);
    }

    /// The state encoded for a snapshot ([`decode`](Self::decode) reads it).
    pub fn encode(&self) -> Vec<u8> {
        let stored = StoredState {
            next_offset: self.next_offset,
            added: self
                .added
                .iter()
                .map(|(id, address)| (*id, address.clone()))
                .collect(),
            removed: self.removed.iter().copied().collect(),
            topics: self
                .topics
                .iter()
                .map(|(name, entry)| StoredTopic {
                    name: name.clone(),
                    spec: entry.spec.clone(),
                    created_offset: entry.created_offset,
                    moved: entry.moved.iter().copied().collect(),
                })
                .collect(),
            checkpoints: self
                .checkpoints
                .iter()
                .map(|((consumer, topic), positions)| StoredCheckpoint {
                    consumer: consumer.clone(),
                    topic: topic.clone(),
                    positions: positions
                        .iter()
                        .map(|(partition, at)| (*partition, at.offset, at.commit_time_ms))
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_vec(&stored).expect("metadata state encodes as JSON")
    }

    /// A state [`encode`](Self::encode) made.
    pub fn decode(bytes: &[u8]) -> Result<MetadataState, serde_json::Error> {
        let stored: StoredState = serde_json::from_slice(bytes)?;
        Ok(MetadataState {
            added: stored.added.into_iter().collect(),
            removed: stored.removed.into_iter().collect(),
            topics: stored
                .topics
                .into_iter()
                .map(|topic| {
                    let entry = TopicEntry {
                        spec: topic.spec,
                        created_offset: topic.created_offset,
                        moved: topic.moved.into_iter().collect(),
                    };
                    (topic.name, entry)
                })
                .collect(),
            checkpoints: stored
                .checkpoints
                .into_iter()
                .map(|checkpoint| {
                    let positions = checkpoint
                        .positions
                        .into_iter()
                        .map(|(partition, offset, commit_time_ms)| {
                            (
                                partition,
                                Position {
                                    offset,
                                    commit_time_ms,
                                },
                            )
                        })
                        .collect();
                    ((checkpoint.consumer, checkpoint.topic), positions)
                })
                .collect(),
            next_offset: stored.next_offset,
        })
    }
}

/// The replication factor of a new topic: `requested`, or for 0 the
/// default (min(3, `nodes`)); refused (with the reason) when it is more
/// than the cluster's `nodes`, which could never hold that many copies.
pub fn replication_factor(requested: u32, nodes: usize) -> Result<u32, String> {
    let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
    match requested {
        0 => Ok(nodes.min(3)),
        n if n > nodes => Err(format!(
            "replication_factor {n} is more than the cluster's {nodes} nodes"
        )),
        n => Ok(n),
    }
}

/// Picks `replication_factor` nodes for each of `partitions` partitions
/// from `nodes` (sorted ids): partition `p` starts at the `p`-th node and
/// takes the next ones round the ring, so the first replica (the one a
/// fresh group's election most often picks) moves from node to node.
pub fn assign_replicas(nodes: &[u64], partitions: u32, replication_factor: u32) -> Vec<Vec<u64>> {
    let count = nodes.len();
    let factor = (replication_factor as usize).min(count);
    (0..partitions as usize)
        .map(|p| (0..factor).map(|i| nodes[(p + i) % count]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(partitions: u32) -> TopicSpec {
        TopicSpec {
            partitions,
            replication_factor: 3,
            segment_bytes_max: 1 << 20,
            replicas: assign_replicas(&[1, 2, 3], partitions, 3),
            retention_ms: None,
            retention_bytes: None,
        }
    }

    #[test]
    fn a_spec_stored_before_retention_reads_as_keeping_everything() {
        let old =
            r#"{"partitions":1,"replication_factor":3,"segment_bytes_max":1048576,"replicas":[[1,2,3]]}"#;
        let spec: TopicSpec = serde_json::from_str(old).unwrap();
        assert_eq!((spec.retention_ms, spec.retention_bytes), (None, None));
        // And one without retention is stored as before.
        assert_eq!(serde_json::to_string(&spec).unwrap(), old);
        let kept = TopicSpec {
            retention_bytes: Some(4096),
            ..spec
        };
        let json = serde_json::to_string(&kept).unwrap();
        assert_eq!(serde_json::from_str::<TopicSpec>(&json).unwrap(), kept);
    }

    #[test]
    fn the_replication_factor_defaults_to_three_and_never_exceeds_the_nodes() {
        assert_eq!(replication_factor(0, 5), Ok(3));
        assert_eq!(replication_factor(0, 2), Ok(2));
        assert_eq!(replication_factor(1, 3), Ok(1));
        assert_eq!(replication_factor(5, 5), Ok(5));
        assert!(replication_factor(4, 3).is_err());
        assert_eq!(
            assign_replicas(&[1, 2, 3], 3, 2),
            [vec![1, 2], vec![2, 3], vec![3, 1]]
        );
    }

    #[test]
    fn the_first_creation_of_a_name_wins_and_deletion_frees_it() {
        let mut state = MetadataState::default();
        let create = |partitions| MetadataCommand::CreateTopic {
            name: "orders".into(),
            spec: spec(partitions),
        };
        assert_eq!(state.apply(10, create(2)).as_deref(), Some("orders"));
        state.apply(20, create(5));
        let entry = state.topic("orders").unwrap();
        assert_eq!((entry.spec.partitions, entry.created_offset), (2, 10));

        state.apply(
            30,
            MetadataCommand::DeleteTopic {
                name: "orders".into(),
            },
        );
        assert!(state.topic("orders").is_none());
        state.apply(
            40,
            MetadataCommand::DeleteTopic {
                name: "orders".into(),
            },
        );
        state.apply(50, create(5));
        assert_eq!(state.topic("orders").unwrap().created_offset, 50);
    }

    #[test]
    fn checkpoints_keep_the_latest_position_per_partition_and_go_with_their_topic() {
        let mut state = MetadataState::default();
        let commit = |topic: &str, positions: Vec<(u32, u64)>, at| MetadataCommand::CommitCheckpoint {
            consumer: "billing".into(),
            topic: topic.into(),
            positions,
            commit_time_ms: at,
        };
        // No topic yet: nothing is stored.
        assert_eq!(state.apply(1, commit("orders", vec![(0, 5)], 100)), None);
        assert!(state.checkpoint("billing", "orders").is_empty());

        state.apply(
            2,
            MetadataCommand::CreateTopic {
                name: "orders".into(),
                spec: spec(2),
            },
        );
        state.apply(3, commit("orders", vec![(0, 5), (1, 7)], 100));
        state.apply(4, commit("orders", vec![(1, 9)], 200));
        let stored = state.checkpoint("billing", "orders");
        assert_eq!(
            stored[&0],
            Position {
                offset: 5,
                commit_time_ms: 100
            }
        );
        assert_eq!(
            stored[&1],
            Position {
                offset: 9,
                commit_time_ms: 200
            }
        );
        assert!(state.checkpoint("other", "orders").is_empty());

        state.apply(
            5,
            MetadataCommand::DeleteTopic {
                name: "orders".into(),
            },
        );
        assert!(state.checkpoint("billing", "orders").is_empty());
    }

    #[test]
    fn nodes_join_and_leave_and_a_removed_id_stays_removed() {
        let bootstrap: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("10.0.0.{id}:7080"))).collect();
        let mut state = MetadataState::default();
        assert_eq!(state.nodes(&bootstrap), bootstrap);
        state.apply(
            1,
            MetadataCommand::AddNode {
                node_id: 4,
                peer_address: "10.0.0.4:7080".into(),
            },
        );
        state.apply(2, MetadataCommand::RemoveNode { node_id: 2 });
        let ids: Vec<u64> = state.nodes(&bootstrap).into_keys().collect();
        assert_eq!(ids, [1, 3, 4]);
        assert!(state.is_removed(2) && !state.is_removed(4));
        state.apply(
            3,
            MetadataCommand::AddNode {
                node_id: 2,
                peer_address: "10.0.0.9:7080".into(),
            },
        );
        assert!(!state.nodes(&bootstrap).contains_key(&2));
    }

    #[test]
    fn a_partitions_replicas_change_and_the_partition_is_marked_moved() {
        let mut state = MetadataState::default();
        state.apply(
            1,
            MetadataCommand::CreateTopic {
                name: "orders".into(),
                spec: spec(2),
            },
        );
        let set = |partition, replicas: Vec<u64>| MetadataCommand::SetReplicas {
            topic: "orders".into(),
            partition,
            replicas,
        };
        assert_eq!(
            state.apply(2, set(1, vec![2, 3, 1, 4])).as_deref(),
            Some("orders")
        );
        assert_eq!(state.apply(3, set(1, vec![2, 3, 4])).as_deref(), Some("orders"));
        let entry = state.topic("orders").unwrap();
        assert_eq!(entry.spec.replicas[1], [2, 3, 4]);
        assert_eq!(entry.spec.replicas[0], [1, 2, 3]);
        assert_eq!(entry.moved, BTreeSet::from([1]));
        // A partition or topic that does not exist: nothing changes.
        assert_eq!(state.apply(4, set(7, vec![1])), None);
        let other = MetadataCommand::SetReplicas {
            topic: "other".into(),
            partition: 0,
            replicas: vec![1],
        };
        assert_eq!(state.apply(5, other), None);
    }

    #[test]
    fn a_state_round_trips_through_its_snapshot_encoding() {
        let mut state = MetadataState::default();
        let commands = [
            MetadataCommand::CreateTopic {
                name: "orders".to_owned(),
                spec: TopicSpec {
                    retention_ms: Some(60_000),
                    ..spec(2)
                },
            },
            MetadataCommand::CreateTopic {
                name: "gone".to_owned(),
                spec: spec(1),
            },
            MetadataCommand::AddNode {
                node_id: 4,
                peer_address: "127.0.0.4:7080".to_owned(),
            },
            MetadataCommand::RemoveNode { node_id: 2 },
            MetadataCommand::SetReplicas {
                topic: "orders".to_owned(),
                partition: 1,
                replicas: vec![1, 3, 4],
            },
            MetadataCommand::CommitCheckpoint {
                consumer: "billing".to_owned(),
                topic: "orders".to_owned(),
                positions: vec![(0, 17), (1, 4)],
                commit_time_ms: 1_700_000_000_000,
            },
            MetadataCommand::DeleteTopic {
                name: "gone".to_owned(),
            },
        ];
        for (at, command) in commands.into_iter().enumerate() {
            state.apply(at as u64, command);
            state.set_applied_through(at as u64 + 1);
        }
        let decoded = MetadataState::decode(&state.encode()).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.applied_through(), 7);
        assert!(decoded.topic("gone").is_none());
        assert_eq!(decoded.topic("orders").unwrap().moved, BTreeSet::from([1]));
        assert_eq!(decoded.checkpoint("billing", "orders")[&1].offset, 4);
        assert!(decoded.is_removed(2));
        assert!(MetadataState::decode(b"{\"next_offset\": 3}").is_err());
    }

    #[test]
    fn commands_round_trip_as_json() {
        let command = MetadataCommand::CreateTopic {
            name: "orders".into(),
            spec: spec(1),
        };
        let json = serde_json::to_string(&command).unwrap();
        assert!(json.starts_with(r#"{"op":"create_topic""#), "{json}");
        assert_eq!(serde_json::from_str::<MetadataCommand>(&json).unwrap(), command);
    }

    #[test]
    fn replicas_spread_over_the_ring_and_never_exceed_the_nodes() {
        assert_eq!(
            assign_replicas(&[1, 2, 3], 4, 3),
            vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]
        );
        assert_eq!(assign_replicas(&[4, 7], 2, 3), vec![vec![4, 7], vec![7, 4]]);
        assert_eq!(assign_replicas(&[1, 2, 3, 4, 5], 1, 3), vec![vec![1, 2, 3]]);
    }
}
