//! `spool.v1.Log` on a cluster node. Topic creation and deletion are
//! proposed to the metadata group; a produce is replicated by the
//! partition's Raft group and answered once committed (durability
//! `QUORUM`); fetch, subscribe and list-offsets serve only committed
//! records (the segments hold client records only: Raft's own entries are
//! kept outside the offset space, so offsets are dense). A node that does not
//! lead (or does not hold) the partition a produce names answers with a
//! leader hint (`spool_raft::not_leader`). Listing and describing topics,
//! checkpoints and server info are the single-node service's, over this
//! node's local store.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spool_auth::Action;
use spool_format::batch::{self, Header, Record};
use spool_log::{Partition, validate_topic_name};
use spool_proto::v1::{self, log_server::Log, produce_request};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Cluster;
use super::metadata::{MetadataCommand, TopicSpec, assign_replicas, replication_factor};
use crate::access::caller;
use crate::admission::Admitted;
use crate::convert::{self, Chunk};
use crate::log_service::{
    LogService, ServerState, client_topic_name, fetch_bytes, group_by_partition, offset_spec, stopping,
};
use crate::status::{join_error, out_of_range, shutting_down, status};

/// How long a new topic's creation waits for its partitions' leaders.
const LEADERS_WAIT: Duration = Duration::from_secs(10);
/// How long a request naming a topic this node does not know waits for
/// its metadata to catch up with the leader's before it is UNAVAILABLE.
const METADATA_SYNC_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ClusterLogService {
    state: Arc<ServerState>,
    cluster: Arc<Cluster>,
    /// The single-node service, for the calls that read only local state.
    local: LogService,
    /// Spreads unkeyed records without an explicit partition.
    next_partition: Arc<AtomicU32>,
}

impl ClusterLogService {
    pub fn new(state: Arc<ServerState>, cluster: Arc<Cluster>) -> ClusterLogService {
        ClusterLogService {
            local: LogService::new(Arc::clone(&state)),
            state,
            cluster,
            next_partition: Arc::default(),
        }
    }

    /// The topic's spec. A topic this node does not know may have been
    /// created while it was down or just now: it is NOT_FOUND only once
    /// this node has caught up with the metadata leader
    /// (`Cluster::sync_metadata`), else UNAVAILABLE.
    /// A replicated topic's retention is the metadata's, not the local
    /// topic's: the local copy keeps everything, so that only compaction
    /// (`retention.rs`) ever deletes a replica's segments.
    fn show_retention(&self, topic: &mut v1::TopicConfig) {
        if let Some(entry) = self.cluster.topic(&topic.name) {
            let limit = |value: Option<u64>| value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
            topic.retention_ms = limit(entry.spec.retention_ms);
            topic.retention_bytes = limit(entry.spec.retention_bytes);
        }
    }

    async fn spec(&self, topic: &str) -> Result<TopicSpec, Status> {
        validate_topic_name(topic).map_err(status)?;
        if let Some(entry) = self.cluster.topic(topic) {
            return Ok(entry.spec);
        }
        self.cluster.sync_metadata(METADATA_SYNC_WAIT).await?;
        match self.cluster.topic(topic) {
            Some(entry) => Ok(entry.spec),
            None => Err(Status::not_found(format!("topic {topic:?} does not exist"))),
        }
    }

    /// This node's replica of a partition, or the answer that sends the
    /// client to one that holds it.
    async fn replica(&self, topic: &str, partition: u32) -> Result<spool_raft::Replica, Status> {
        let spec = self.spec(topic).await?;
        let Some(nodes) = spec.replicas.get(partition as usize) else {
            return Err(Status::not_found(format!(
                "partition {partition} of topic {topic:?} does not exist ({} partitions)",
                spec.partitions
            )));
        };
        match self.cluster.replica(topic, partition) {
            Some(replica) => Ok(replica),
            // A node that holds no replica sends the client to one that
            // does, which knows the leader.
            None if !nodes.contains(&self.cluster.node_id()) => {
                Err(self.cluster.not_leader(nodes.first().copied()).await)
            }
            None => Err(Status::unavailable(format!(
                "this node's replica of {topic}/{partition} is not open yet"
            ))),
        }
    }

    /// A partition to read committed records from: this node's replica,
    /// once the node has confirmed its metadata since it started (or a
    /// short while has passed: [`Cluster::wait_for_start_sync`]).
    async fn readable(&self, topic: &str, partition: u32) -> Result<Partition, Status> {
        self.cluster.wait_for_start_sync().await;
        Ok(self.replica(topic, partition).await?.partition().clone())
    }

    fn fetch_bytes(&self, requested: u32) -> u64 {
        fetch_bytes(&self.state.config, requested)
    }

    /// Replicates `encoded` through this node's replica of the partition.
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        encoded: Bytes,
    ) -> Result<spool_raft::Appended, Status> {
        let replica = self.replica(topic, partition).await?;
        match replica.append(encoded).await {
            Ok(appended) => Ok(appended),
            Err(spool_raft::Error::NotLeader { leader_id }) => Err(self.cluster.not_leader(leader_id).await),
            Err(spool_raft::Error::ProducerRefused { source }) => Err(status(source)),
            Err(error @ spool_raft::Error::InvalidBatch { .. }) => {
                Err(Status::invalid_argument(error.to_string()))
            }
            // Leadership lost while the entry was in flight, or the engine
            // stopped: whether it was committed is unknown to this node.
            Err(error) => Err(Status::unavailable(format!(
                "the write's outcome is unknown: {error}"
            ))),
        }
    }
}

/// The committed offset range of `partition` must hold `offset`.
fn check_offset(partition: &Partition, offset: u64) -> Result<(), Status> {
    let (start, end) = (partition.log_start_offset(), partition.committed_offset());
    if offset < start || offset > end {
        return Err(out_of_range(
            format!(
                "offset {offset} is out of range: the partition's committed records are [{start}, {end})"
            ),
            start,
            end,
        ));
    }
    Ok(())
}

/// Reads committed records on the blocking pool.
async fn read_committed(
    partition: Partition,
    offset: u64,
    max_bytes: u64,
    encoded: bool,
) -> Result<Chunk, Status> {
    tokio::task::spawn_blocking(move || {
        let read = partition.read_committed(offset, max_bytes).map_err(status)?;
        let chunk = convert::chunk(&partition, read, offset, encoded)?;
        partition.count_fetched(chunk.record_count, chunk.batch_bytes);
        Ok(chunk)
    })
    .await
    .map_err(join_error)?
}

/// Encodes the records at `members` of a request as one batch.
fn encode_records(
    records: &[v1::Record],
    members: &[usize],
    limits: batch::BatchLimits,
) -> Result<Bytes, Status> {
    let headers: Vec<Vec<Header<'_>>> = members
        .iter()
        .map(|&i| {
            records[i]
                .headers
                .iter()
                .map(|h| Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                })
                .collect()
        })
        .collect();
    let batch: Vec<Record<'_>> = members
        .iter()
        .zip(&headers)
        .map(|(&i, headers)| Record {
            key: records[i].key.as_deref(),
            value: records[i].value.as_deref(),
            headers,
            timestamp_ms: records[i].timestamp_ms,
        })
        .collect();
    batch::encode_to_vec(&batch, now_ms(), limits)
        .map(Bytes::from)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl Log for ClusterLogService {
    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let caller = caller(&request).cloned();
        self.state
            .access
            .check(caller.as_ref(), Action::CLUSTER_ADMIN, "")?;
        let request = request.into_inner();
        client_topic_name(&request.name)?;
        // 0 keeps every record in cluster mode, as before retention
        // existed for replicated topics: the store's default retention is
        // for single-node topics.
        let retention_ms = convert::retention(request.retention_ms, None, "retention_ms")?;
        let retention_bytes = convert::retention(request.retention_bytes, None, "retention_bytes")?;
        if self.cluster.topic(&request.name).is_some() {
            return Err(Status::already_exists(format!(
                "topic {:?} already exists",
                request.name
            )));
        }
        let partitions = match request.partitions {
            0 => self.state.config.default_partitions,
            n => n,
        };
        let partitions_max = self.state.config.store.partitions_max;
        if partitions == 0 || partitions > partitions_max {
            return Err(Status::invalid_argument(format!(
                "a topic has 1 to {partitions_max} partitions, not {partitions}"
            )));
        }
        let factor = replication_factor(request.replication_factor, self.cluster.node_ids().len())
            .map_err(Status::invalid_argument)?;
        let spec = TopicSpec {
            partitions,
            replication_factor: factor,
            segment_bytes_max: match request.segment_bytes {
                0 => self.cluster.segment_bytes_max(),
                n => n,
            },
            replicas: assign_replicas(&self.cluster.node_ids(), partitions, factor),
            retention_ms,
            retention_bytes,
        };
        let command = MetadataCommand::CreateTopic {
            name: request.name.clone(),
            spec: spec.clone(),
        };
        let offset = self.cluster.propose(&command).await?;
        // Two nodes may have proposed the same name at once; the first
        // committed is the one that exists. A proposal retried after a
        // lost answer may have been committed twice: the same spec is
        // this request's topic.
        let entry = self
            .cluster
            .topic(&request.name)
            .filter(|entry| entry.created_offset == offset || entry.spec == spec)
            .ok_or_else(|| Status::already_exists(format!("topic {:?} already exists", request.name)))?;
        self.cluster.wait_for_leaders(&request.name, LEADERS_WAIT).await;
        self.state
            .audit
            .record_call(
                caller.as_ref(),
                "create_topic",
                serde_json::json!({ "topic": request.name, "partitions": entry.spec.partitions }),
                1,
            )
            .await?;
        let config = spool_log::TopicConfig {
            partitions: entry.spec.partitions,
            segment_bytes_max: entry.spec.segment_bytes_max,
            retention_ms: entry.spec.retention_ms,
            retention_bytes: entry.spec.retention_bytes,
            ..self.state.config.store.topic_defaults.clone()
        };
        Ok(Response::new(v1::CreateTopicResponse {
            topic: Some(convert::topic_config(&request.name, &config)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let caller = caller(&request).cloned();
        self.state
            .access
            .check(caller.as_ref(), Action::CLUSTER_ADMIN, "")?;
        let name = request.into_inner().name;
        client_topic_name(&name)?;
        self.spec(&name).await?;
        self.cluster
            .propose(&MetadataCommand::DeleteTopic { name: name.clone() })
            .await?;
        self.state
            .audit
            .record_call(
                caller.as_ref(),
                "delete_topic",
                serde_json::json!({ "topic": name }),
                1,
            )
            .await?;
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let mut response = self.local.list_topics(request).await?;
        for topic in &mut response.get_mut().topics {
            self.show_retention(topic);
        }
        Ok(response)
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        let mut response = self.local.describe_topic(request).await?;
        if let Some(topic) = response.get_mut().topic.as_mut() {
            self.show_retention(topic);
        }
        Ok(response)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = ?request.get_ref().partition))]
    async fn produce(
        &self,
        mut request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::PRODUCE, &request.get_ref().topic)?;
        // Held until the answer: the request's bytes count as in flight.
        let _admitted = request.extensions_mut().remove::<Admitted>();
        let request = request.into_inner();
        client_topic_name(&request.topic)?;
        if v1::Durability::try_from(request.durability).is_err() {
            return Err(Status::invalid_argument(format!(
                "unknown durability {}",
                request.durability
            )));
        }
        let spec = self.spec(&request.topic).await?;
        if let Some(partition) = request.partition
            && partition >= spec.partitions
        {
            return Err(Status::not_found(format!(
                "partition {partition} of topic {:?} does not exist ({} partitions)",
                request.topic, spec.partitions
            )));
        }
        if *self.state.shutdown.borrow() {
            return Err(shutting_down());
        }
        let data = request.data.ok_or_else(|| {
            Status::invalid_argument("a produce request needs `records` or `encoded_batch`")
        })?;
        // Every level is answered at QUORUM: a replicated write is only
        // acknowledged once committed, which is at least what NONE and
        // FSYNC promise.
        let quorum = v1::Durability::Quorum as i32;
        let mut results = Vec::new();
        match data {
            produce_request::Data::EncodedBatch(encoded) => {
                let partition = request.partition.ok_or_else(|| {
                    Status::invalid_argument("an `encoded_batch` needs an explicit `partition`")
                })?;
                let appended = self.append(&request.topic, partition, encoded).await?;
                results.push(v1::ProducePartitionResult {
                    partition,
                    base_offset: appended.base_offset,
                    last_offset: appended.next_offset - 1,
                    durability: quorum,
                    log_append_time_ms: now_ms(),
                    record_indexes: Vec::new(),
                    duplicate: appended.duplicate,
                });
            }
            produce_request::Data::Records(list) => {
                if list.records.is_empty() {
                    return Err(Status::invalid_argument(
                        "a produce request needs at least one record",
                    ));
                }
                let sticky = self.next_partition.fetch_add(1, Ordering::Relaxed);
                let groups = group_by_partition(&list.records, request.partition, spec.partitions, sticky);
                for (partition, members) in groups {
                    let limits = self.readable(&request.topic, partition).await?.batch_limits();
                    let encoded = encode_records(&list.records, &members, limits)?;
                    let appended = self.append(&request.topic, partition, encoded).await?;
                    let record_indexes = match request.partition {
                        Some(_) => Vec::new(),
                        None => members.iter().map(|&i| i as u32).collect(),
                    };
                    results.push(v1::ProducePartitionResult {
                        partition,
                        base_offset: appended.base_offset,
                        last_offset: appended.next_offset - 1,
                        durability: quorum,
                        log_append_time_ms: now_ms(),
                        record_indexes,
                        duplicate: appended.duplicate,
                    });
                }
            }
        }
        Ok(Response::new(v1::ProduceResponse { results }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn fetch(&self, request: Request<v1::FetchRequest>) -> Result<Response<v1::FetchResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        let partition = self.readable(&request.topic, request.partition).await?;
        check_offset(&partition, request.offset)?;
        let max_wait =
            Duration::from_millis(u64::from(request.max_wait_ms).min(self.state.config.fetch_wait_ms_max));
        if !max_wait.is_zero() && request.offset >= partition.committed_offset() {
            let mut shutdown = self.state.shutdown.clone();
            tokio::select! {
                _ = partition.wait_committed(request.offset) => {}
                _ = tokio::time::sleep(max_wait) => {}
                _ = stopping(&mut shutdown) => {}
            }
        }
        let max_bytes = self.fetch_bytes(request.max_bytes);
        let chunk = read_committed(
            partition,
            request.offset,
            max_bytes,
            request.return_encoded_batches,
        )
        .await?;
        Ok(Response::new(chunk.into_fetch_response(request.partition)))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>>;

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        let partition = self.readable(&request.topic, request.partition).await?;
        check_offset(&partition, request.offset)?;
        let max_bytes = self
            .fetch_bytes(request.max_bytes)
            .min(self.state.config.subscribe_bytes_max);
        let follower = CommittedFollower {
            partition,
            id: request.partition,
            offset: request.offset,
            max_bytes,
            encoded: request.return_encoded_batches,
            shutdown: self.state.shutdown.clone(),
            failed: false,
        };
        let stream = futures_util::stream::unfold(follower, |mut follower| async move {
            if follower.failed {
                return None;
            }
            let item = follower.next().await;
            follower.failed = item.is_err();
            Some((item, follower))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        self.state.access.check_any(
            caller(&request),
            &[Action::CONSUME, Action::PRODUCE, Action::TOPIC_ADMIN],
            &request.get_ref().topic,
        )?;
        let request = request.into_inner();
        let spec = self.spec(&request.topic).await?;
        let ids: Vec<u32> = match request.partition {
            Some(id) => vec![id],
            None => (0..spec.partitions).collect(),
        };
        let mut partitions = Vec::with_capacity(ids.len());
        for id in ids {
            partitions.push(self.readable(&request.topic, id).await?);
        }
        let (spec_kind, timestamp) = offset_spec(&request)?;
        let offsets = tokio::task::spawn_blocking(move || -> Result<Vec<v1::PartitionOffset>, Status> {
            partitions
                .iter()
                .map(|partition| {
                    let committed = partition.committed_offset();
                    let (offset, timestamp_ms) = match (spec_kind, timestamp) {
                        (v1::OffsetSpec::Earliest, _) => (partition.log_start_offset(), None),
                        (_, Some(ts)) => match partition.offset_for_timestamp(ts).map_err(status)? {
                            Some(offset) if offset < committed => {
                                (offset, crate::log_service::record_timestamp(partition, offset))
                            }
                            _ => (committed, None),
                        },
                        _ => (committed, None),
                    };
                    Ok(v1::PartitionOffset {
                        partition: partition.id(),
                        offset,
                        timestamp_ms,
                    })
                })
                .collect()
        })
        .await
        .map_err(join_error)??;
        Ok(Response::new(v1::ListOffsetsResponse { offsets }))
    }

    /// Stores the positions through the metadata group, so that every node
    /// answers the same: committed there (durability QUORUM) and applied
    /// on this node before the answer.
    async fn commit_checkpoint(
        &self,
        request: Request<v1::CommitCheckpointRequest>,
    ) -> Result<Response<v1::CommitCheckpointResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        crate::log_service::check_consumer_name(&request.consumer)?;
        let spec = self.spec(&request.topic).await?;
        if request.partitions.is_empty() {
            return Err(Status::invalid_argument(
                "a checkpoint needs at least one partition",
            ));
        }
        let mut positions = Vec::with_capacity(request.partitions.len());
        for checkpoint in &request.partitions {
            if checkpoint.partition >= spec.partitions {
                return Err(Status::not_found(format!(
                    "partition {} of topic {:?} does not exist ({} partitions)",
                    checkpoint.partition, request.topic, spec.partitions
                )));
            }
            // The node asked may trail the partition's leader, so it can
            // only refuse what is past what it knows to be committed when
            // it leads the partition.
            if let Some(replica) = self.cluster.replica(&request.topic, checkpoint.partition)
                && replica.leader_id() == Some(self.cluster.node_id())
            {
                let end = replica.partition().committed_offset();
                if checkpoint.offset > end {
                    return Err(out_of_range(
                        format!(
                            "checkpoint offset {} of partition {} is past the committed offset {end}",
                            checkpoint.offset, checkpoint.partition
                        ),
                        replica.partition().log_start_offset(),
                        end,
                    ));
                }
            }
            positions.push((checkpoint.partition, checkpoint.offset));
        }
        let command = MetadataCommand::CommitCheckpoint {
            consumer: request.consumer,
            topic: request.topic,
            positions,
            commit_time_ms: now_ms(),
        };
        self.cluster.propose(&command).await?;
        Ok(Response::new(v1::CommitCheckpointResponse {
            durability: v1::Durability::Quorum as i32,
        }))
    }

    /// The positions as the metadata group has them: this node first
    /// catches up with the metadata leader's commit, so a checkpoint
    /// committed through any node is seen.
    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        validate_topic_name(&request.topic).map_err(status)?;
        self.cluster.sync_metadata(METADATA_SYNC_WAIT).await?;
        let positions = self.cluster.state().checkpoint(&request.consumer, &request.topic);
        let partitions = convert::checkpoints(positions);
        Ok(Response::new(v1::GetCheckpointResponse { partitions }))
    }

    async fn init_producer(
        &self,
        request: Request<v1::InitProducerRequest>,
    ) -> Result<Response<v1::InitProducerResponse>, Status> {
        // Ids are random, so any node hands them out alone.
        self.local.init_producer(request).await
    }

    async fn get_server_info(
        &self,
        request: Request<v1::GetServerInfoRequest>,
    ) -> Result<Response<v1::GetServerInfoResponse>, Status> {
        let mut info = self.local.get_server_info(request).await?.into_inner();
        info.default_durability = v1::Durability::Quorum as i32;
        Ok(Response::new(info))
    }
}

/// One subscription to a replicated partition: reads committed records,
/// and at the committed end waits for the commit to move.
struct CommittedFollower {
    partition: Partition,
    id: u32,
    offset: u64,
    max_bytes: u64,
    encoded: bool,
    shutdown: watch::Receiver<bool>,
    failed: bool,
}

impl CommittedFollower {
    async fn next(&mut self) -> Result<v1::SubscribeResponse, Status> {
        if self.offset >= self.partition.committed_offset() {
            tokio::select! {
                result = self.partition.wait_committed(self.offset) => { result.map_err(status)?; }
                _ = stopping(&mut self.shutdown) => {
                    return Err(Status::unavailable("the server is shutting down"));
                }
            }
        }
        let chunk = read_committed(self.partition.clone(), self.offset, self.max_bytes, self.encoded).await?;
        self.offset = chunk.next_offset;
        Ok(chunk.into_subscribe_response(self.id))
    }
}
