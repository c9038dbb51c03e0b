//! `spool.v1.Log`: topic admin, produce, fetch, subscribe, offsets and
//! checkpoints over the storage engine.
//!
//! File operations (appends, reads of mapped segments that may fault pages
//! in from disk, topic creation) run on tokio's blocking pool, except the
//! small ones whose thread hand-offs would cost more than the work: appends
//! of at most 256 KiB and small reads of the active segment run on the
//! calling task (`INLINE_APPEND_BYTES_MAX`, `reads_inline`). Waiting for a
//! flush or for new data is a future that holds no thread.
//!
//! The per-call spans that name the topic and partition are at `debug`:
//! at the default `info` they are never created, which on a one-record
//! produce saves the span registry's work (about 8% of the server's CPU
//! per call in a profile).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use spool_auth::Action;
use spool_log::{Durability, Partition, Record, Store, is_internal_topic, validate_topic_name};
use spool_proto::partitioner::partition_for_key;
use spool_proto::v1::{self, log_server::Log, produce_request};
use spool_telemetry::TARGET;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::access::{Access, caller};
use crate::admission::Admitted;
use crate::audit::Audit;
use crate::checkpoints::Checkpoints;
use crate::config::Config;
use crate::convert::{self, Chunk};
use crate::inflight::InflightLimiter;
use crate::status::{join_error, out_of_range, shutting_down, status};

/// Shared by every request.
#[derive(Debug)]
pub struct ServerState {
    pub store: Arc<Store>,
    pub config: Config,
    pub checkpoints: Checkpoints,
    pub inflight: Arc<InflightLimiter>,
    /// Turns true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Who may do what; open (no authentication) unless `main` sets a
    /// token file's.
    pub access: Arc<Access>,
    /// Where administrative actions are recorded.
    pub audit: Audit,
    /// Spreads unkeyed records without an explicit partition.
    next_partition: AtomicU32,
    /// Cluster mode: this node's part, set once it has started. What reads
    /// named checkpoints outside the Log service (the dashboard, the
    /// consumer-lag metrics) reads the cluster's through it.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

impl ServerState {
    pub fn new(
        store: Arc<Store>,
        config: Config,
        shutdown: watch::Receiver<bool>,
    ) -> spool_log::Result<Self> {
        let checkpoints = Checkpoints::open(&store)?;
        let audit = Audit::open(&store)?;
        let inflight = Arc::new(InflightLimiter::new(
            config.inflight_bytes_max,
            config.connection_inflight_bytes_max,
            Duration::from_millis(config.inflight_wait_ms),
        ));
        Ok(ServerState {
            store,
            config,
            checkpoints,
            inflight,
            shutdown,
            access: Arc::new(Access::open()),
            audit,
            next_partition: AtomicU32::new(0),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Every named checkpoint: the metadata group's in a cluster, this
    /// node's store otherwise.
    pub fn all_checkpoints(
        &self,
    ) -> Vec<(
        String,
        String,
        std::collections::BTreeMap<u32, crate::checkpoints::Position>,
    )> {
        match self.cluster.get() {
            Some(cluster) => cluster.state().all_checkpoints(),
            None => self.checkpoints.all(),
        }
    }
}

/// What reading a topic's configuration and offsets takes: any permission
/// on it (a refusal names `consume`).
const TOPIC_ANY: &[Action] = &[Action::CONSUME, Action::PRODUCE, Action::TOPIC_ADMIN];

#[derive(Debug, Clone)]
pub struct LogService {
    state: Arc<ServerState>,
}

impl LogService {
    pub fn new(state: Arc<ServerState>) -> Self {
        LogService { state }
    }

    /// A topic a client may write to or administer: valid, not internal.
    fn partition(&self, topic: &str, partition: u32) -> Result<Partition, Status> {
        validate_topic_name(topic).map_err(status)?;
        self.state.store.partition(topic, partition).map_err(status)
    }

    fn fetch_bytes(&self, requested: u32) -> u64 {
        fetch_bytes(&self.state.config, requested)
    }
}

/// What a ListOffsets request asks for: its spec, and the timestamp a
/// TIMESTAMP spec needs.
pub(crate) fn offset_spec(request: &v1::ListOffsetsRequest) -> Result<(v1::OffsetSpec, Option<i64>), Status> {
    let spec = v1::OffsetSpec::try_from(request.spec)
        .map_err(|_| Status::invalid_argument(format!("unknown offset spec {}", request.spec)))?;
    let timestamp = match spec {
        v1::OffsetSpec::Unspecified => {
            return Err(Status::invalid_argument(
                "spec must be EARLIEST, LATEST or TIMESTAMP",
            ));
        }
        v1::OffsetSpec::Timestamp => Some(
            request
                .timestamp_ms
                .ok_or_else(|| Status::invalid_argument("spec TIMESTAMP needs timestamp_ms"))?,
        ),
        _ => None,
    };
    Ok((spec, timestamp))
}

/// A topic name a client may use: valid, and not one of the server's
/// internal topics.
pub(crate) fn client_topic_name(name: &str) -> Result<(), Status> {
    validate_topic_name(name).map_err(status)?;
    if is_internal_topic(name) {
        return Err(Status::invalid_argument(format!(
            "topic {name:?} is internal (names starting with \"__\" belong to the server)"
        )));
    }
    Ok(())
}

/// The byte budget of a read: the request's, capped at `fetch_bytes_max`,
/// or `fetch_bytes_default` when it asks for none.
pub(crate) fn fetch_bytes(config: &Config, requested: u32) -> u64 {
    match u64::from(requested) {
        0 => config.fetch_bytes_default,
        n => n.min(config.fetch_bytes_max),
    }
}

/// Reads and converts a chunk on the blocking pool.
async fn read_chunk(
    partition: Partition,
    offset: u64,
    max_bytes: u64,
    encoded: bool,
) -> Result<Chunk, Status> {
    tokio::task::spawn_blocking(move || read_chunk_now(&partition, offset, max_bytes, encoded))
        .await
        .map_err(join_error)?
}

/// A fetch reads on the calling task, sparing two thread hand-offs, when
/// the read is small and recent: within the active segment (pages this
/// process wrote or recovered, so in memory) and either at most
/// [`INLINE_READ_BYTES_MAX`] bytes or at most [`INLINE_READ_RECORDS_MAX`]
/// records from the tail. A consumer that fetches one record at a time, or
/// keeps up with the tail, never waits for the blocking pool; a large read
/// of a backlog still goes there.
fn reads_inline(partition: &Partition, offset: u64, max_bytes: u64) -> bool {
    partition.in_active_segment(offset)
        && (max_bytes <= INLINE_READ_BYTES_MAX
            || partition.high_watermark().saturating_sub(offset) <= INLINE_READ_RECORDS_MAX)
}

/// See [`reads_inline`].
const INLINE_READ_BYTES_MAX: u64 = 64 * 1024;
const INLINE_READ_RECORDS_MAX: u64 = 256;

/// Reads a chunk on the calling thread: only for batches just written
/// (still in memory), see `subscribe` and [`reads_inline`]. Every read for a consumer comes
/// through here, so this is where fetched records are counted.
fn read_chunk_now(
    partition: &Partition,
    offset: u64,
    max_bytes: u64,
    encoded: bool,
) -> Result<Chunk, Status> {
    let read = partition.read(offset, max_bytes).map_err(status)?;
    let chunk = convert::chunk(partition, read, offset, encoded)?;
    partition.count_fetched(chunk.record_count, chunk.batch_bytes);
    Ok(chunk)
}

fn check_offset(partition: &Partition, offset: u64) -> Result<(), Status> {
    let (start, end) = (partition.log_start_offset(), partition.high_watermark());
    if offset < start || offset > end {
        return Err(out_of_range(
            format!("offset {offset} is out of range: the partition holds [{start}, {end})"),
            start,
            end,
        ));
    }
    Ok(())
}

/// Resolves once the server starts shutting down. (The guard `wait_for`
/// returns is not `Send`, so it must not live across the caller's awaits.)
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// One subscription's position, read by the response stream as HTTP/2 asks
/// for more.
struct Follower {
    partition: Partition,
    id: u32,
    offset: u64,
    max_bytes: u64,
    encoded: bool,
    shutdown: watch::Receiver<bool>,
    /// While catching up: the next chunk, already being read on the blocking
    /// pool while the one before is encoded and sent.
    read_ahead: Option<tokio::task::JoinHandle<Result<Chunk, Status>>>,
    /// Set after an error was sent: the stream ends with it.
    failed: bool,
}

impl Follower {
    async fn next(&mut self) -> Result<v1::SubscribeResponse, Status> {
        let chunk = match self.read_ahead.take() {
            Some(reading) => reading.await.map_err(join_error)??,
            None => self.read_next().await?,
        };
        self.offset = chunk.next_offset;
        if self.offset < chunk.high_watermark {
            let (partition, offset, max_bytes, encoded) =
                (self.partition.clone(), self.offset, self.max_bytes, self.encoded);
            self.read_ahead = Some(tokio::task::spawn_blocking(move || {
                read_chunk_now(&partition, offset, max_bytes, encoded)
            }));
        }
        Ok(chunk.into_subscribe_response(self.id))
    }

    /// The chunk at `offset`, waiting at the tail for it when needed.
    ///
    /// Catching up reads on the blocking pool. A read right after waiting at
    /// the tail is done here, on the runtime worker: those batches were
    /// just written, so the read touches only pages in memory (two thread
    /// hops fewer for every batch a following subscriber sees).
    async fn read_next(&mut self) -> Result<Chunk, Status> {
        if self.offset < self.partition.high_watermark() {
            return read_chunk(self.partition.clone(), self.offset, self.max_bytes, self.encoded).await;
        }
        tokio::select! {
            result = self.partition.wait_readable(self.offset) => { result.map_err(status)?; }
            _ = stopping(&mut self.shutdown) => {
                return Err(Status::unavailable("the server is shutting down"));
            }
        }
        read_chunk_now(&self.partition, self.offset, self.max_bytes, self.encoded)
    }
}

/// What a produce request's data counts against the in-flight limit when it
/// was not admitted before being read: an encoded batch's length, or each
/// record's key, value and header bytes plus 16.
fn data_size(data: &produce_request::Data) -> u64 {
    match data {
        produce_request::Data::Records(list) => list
            .records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + r.headers
                        .iter()
                        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                        .sum::<usize>()
                    + 16
            })
            .sum::<usize>() as u64,
        produce_request::Data::EncodedBatch(batch) => batch.len() as u64,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Requests whose record data is at most this many bytes are appended on
/// the calling task instead of the blocking pool (see `produce`).
const INLINE_APPEND_BYTES_MAX: u64 = 256 * 1024;

/// A produced partition: the outcome of its append and, for a request
/// without an explicit partition, which of the request's records went to it.
type Appended = (Partition, spool_log::AppendOutcome, Vec<u32>);

/// Appends a produce request's data to `topic`: an encoded batch to its
/// explicit partition, records grouped by partition (explicit, by key, or
/// sticky round robin from `sticky`).
fn append_request(
    topic: &spool_log::Topic,
    data: produce_request::Data,
    explicit: Option<u32>,
    sticky: u32,
) -> Result<Vec<Appended>, Status> {
    match data {
        produce_request::Data::EncodedBatch(batch) => {
            let id = explicit.expect("checked by produce");
            let partition = topic.partition(id).map_err(status)?;
            let outcome = partition
                .append_encoded(&batch, Durability::None)
                .map_err(status)?;
            Ok(vec![(partition.clone(), outcome, Vec::new())])
        }
        produce_request::Data::Records(list) => {
            let groups = group_by_partition(&list.records, explicit, topic.partition_count(), sticky);
            let mut appended = Vec::with_capacity(groups.len());
            for (id, members) in groups {
                let partition = topic.partition(id).map_err(status)?;
                let outcome = append_group(partition, &list.records, &members).map_err(status)?;
                let indexes = if explicit.is_some() {
                    Vec::new()
                } else {
                    members.iter().map(|&i| i as u32).collect()
                };
                appended.push((partition.clone(), outcome, indexes));
            }
            Ok(appended)
        }
    }
}

/// Records grouped by the partition they go to (the explicit one, else by
/// key, else the sticky partition), with their positions in the request.
pub(crate) fn group_by_partition(
    records: &[v1::Record],
    explicit: Option<u32>,
    partitions: u32,
    sticky: u32,
) -> Vec<(u32, Vec<usize>)> {
    if let Some(partition) = explicit {
        return vec![(partition, (0..records.len()).collect())];
    }
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let partition = match &record.key {
            Some(key) => partition_for_key(key, partitions),
            None => sticky % partitions,
        };
        match groups.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, members)) => members.push(i),
            None => groups.push((partition, vec![i])),
        }
    }
    groups.sort_by_key(|(p, _)| *p);
    groups
}

/// Appends one group of request records as one batch.
fn append_group(
    partition: &Partition,
    records: &[v1::Record],
    members: &[usize],
) -> spool_log::Result<spool_log::AppendOutcome> {
    let headers: Vec<Vec<spool_log::Header<'_>>> = members
        .iter()
        .map(|&i| {
            records[i]
                .headers
                .iter()
                .map(|h| spool_log::Header {
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
    partition.append(&batch, Durability::None)
}

#[tonic::async_trait]
impl Log for LogService {
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
        if request.replication_factor > 1 {
            return Err(Status::invalid_argument(format!(
                "replication_factor {} needs cluster mode: a single-node server holds one copy",
                request.replication_factor
            )));
        }
        let defaults = &self.state.config.store.topic_defaults;
        let config = spool_log::TopicConfig {
            partitions: match request.partitions {
                0 => self.state.config.default_partitions,
                n => n,
            },
            segment_bytes_max: match request.segment_bytes {
                0 => defaults.segment_bytes_max,
                n => n,
            },
            segment_ms_max: defaults.segment_ms_max,
            retention_ms: convert::retention(request.retention_ms, defaults.retention_ms, "retention_ms")?,
            retention_bytes: convert::retention(
                request.retention_bytes,
                defaults.retention_bytes,
                "retention_bytes",
            )?,
            incarnation: None,
        };
        let store = Arc::clone(&self.state.store);
        let name = request.name.clone();
        let topic = tokio::task::spawn_blocking(move || store.create_topic(&name, config))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        let target = serde_json::json!({ "topic": topic.name(), "partitions": topic.partition_count() });
        self.state
            .audit
            .record_call(caller.as_ref(), "create_topic", target, 1)
            .await?;
        Ok(Response::new(v1::CreateTopicResponse {
            topic: Some(convert::topic_config(topic.name(), topic.config())),
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
        let store = Arc::clone(&self.state.store);
        let deleted = name.clone();
        tokio::task::spawn_blocking(move || store.delete_topic(&deleted))
            .await
            .map_err(join_error)?
            .map_err(status)?;
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
        let caller = caller(&request);
        let access = &self.state.access;
        let include_internal = request.get_ref().include_internal;
        // Internal topics are listed to cluster admins only; other topics
        // to whoever has a permission on them.
        let internal_listed = include_internal && access.check(caller, Action::CLUSTER_ADMIN, "").is_ok();
        let topics = self
            .state
            .store
            .topics()
            .iter()
            .filter(|t| match is_internal_topic(t.name()) {
                true => internal_listed,
                false => access.sees(caller, TOPIC_ANY, t.name()),
            })
            .map(|t| convert::topic_config(t.name(), t.config()))
            .collect();
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        self.state
            .access
            .check_any(caller(&request), TOPIC_ANY, &request.get_ref().name)?;
        let name = request.into_inner().name;
        validate_topic_name(&name).map_err(status)?;
        let topic = self.state.store.topic(&name).map_err(status)?;
        let partitions = topic
            .partitions()
            .iter()
            .map(|p| {
                let info = p.info();
                v1::PartitionInfo {
                    partition: p.id(),
                    log_start_offset: info.log_start_offset,
                    high_watermark: info.high_watermark,
                    size_bytes: info.size_bytes,
                    segment_count: info.segment_count as u32,
                }
            })
            .collect();
        Ok(Response::new(v1::DescribeTopicResponse {
            topic: Some(convert::topic_config(topic.name(), topic.config())),
            partitions,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = ?request.get_ref().partition))]
    async fn produce(
        &self,
        mut request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::PRODUCE, &request.get_ref().topic)?;
        let peer = request.remote_addr();
        let admitted = request.extensions_mut().remove::<Admitted>();
        let request = request.into_inner();
        client_topic_name(&request.topic)?;
        let durability =
            convert::durability_from_proto(request.durability, self.state.config.default_durability)?;
        let topic = self.state.store.topic(&request.topic).map_err(status)?;
        if let Some(partition) = request.partition {
            topic.partition(partition).map_err(status)?;
        }
        let data = request.data.ok_or_else(|| {
            Status::invalid_argument("a produce request needs `records` or `encoded_batch`")
        })?;
        match &data {
            produce_request::Data::Records(list) if list.records.is_empty() => {
                return Err(Status::invalid_argument(
                    "a produce request needs at least one record",
                ));
            }
            produce_request::Data::EncodedBatch(_) if request.partition.is_none() => {
                return Err(Status::invalid_argument(
                    "an `encoded_batch` needs an explicit `partition`",
                ));
            }
            _ => {}
        }
        // Normally taken before tonic read the request (admission.rs); a
        // request that came without one is sized here.
        let _permit = match admitted {
            Some(Admitted(permit)) => permit,
            None => Arc::new(self.state.inflight.acquire(peer, data_size(&data)).await?),
        };
        if *self.state.shutdown.borrow() {
            return Err(shutting_down());
        }

        let sticky = self.state.next_partition.fetch_add(1, Ordering::Relaxed);
        let explicit = request.partition;
        let topic_for_task = Arc::clone(&topic);
        // Trace spans of the call's two stages (disabled without export):
        // the append (checks of the batch, the copy into the segment) on
        // the blocking pool, then the wait for the group commit's fsync.
        let append_span = tracing::info_span!(
            target: TARGET,
            "append",
            otel.name = format_args!("append {}", request.topic),
            messaging.destination.name = request.topic.as_str(),
        );
        // A small request is appended on this task: a copy of a few
        // kilobytes into the page cache costs less than the two thread
        // hand-offs of the blocking pool, which are most of a one-record
        // produce's server time. A large one goes to the blocking pool so
        // that a worker thread never spends long on a copy.
        let appended = if data_size(&data) <= INLINE_APPEND_BYTES_MAX {
            append_span.in_scope(|| append_request(&topic_for_task, data, explicit, sticky))?
        } else {
            tokio::task::spawn_blocking(move || {
                append_span.in_scope(|| append_request(&topic_for_task, data, explicit, sticky))
            })
            .await
            .map_err(join_error)??
        };

        let mut results = Vec::with_capacity(appended.len());
        for (partition, outcome, record_indexes) in appended {
            if durability == Durability::Fsync {
                partition
                    .wait_durable(outcome.last_offset + 1)
                    .instrument(tracing::info_span!(
                        target: TARGET,
                        "fsync wait",
                        messaging.destination.partition.id = partition.id(),
                    ))
                    .await
                    .map_err(status)?;
            }
            results.push(v1::ProducePartitionResult {
                partition: partition.id(),
                base_offset: outcome.base_offset,
                last_offset: outcome.last_offset,
                durability: convert::durability_to_proto(durability),
                log_append_time_ms: outcome.append_time_ms,
                record_indexes,
                duplicate: outcome.duplicate,
            });
        }
        Ok(Response::new(v1::ProduceResponse { results }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn fetch(&self, request: Request<v1::FetchRequest>) -> Result<Response<v1::FetchResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        let partition = self.partition(&request.topic, request.partition)?;
        check_offset(&partition, request.offset)?;
        let max_wait =
            Duration::from_millis(u64::from(request.max_wait_ms).min(self.state.config.fetch_wait_ms_max));
        if !max_wait.is_zero() && request.offset >= partition.high_watermark() {
            let mut shutdown = self.state.shutdown.clone();
            tokio::select! {
                _ = partition.wait_readable(request.offset) => {}
                _ = tokio::time::sleep(max_wait) => {}
                _ = stopping(&mut shutdown) => {}
            }
        }
        let max_bytes = self.fetch_bytes(request.max_bytes);
        // A small read of recent batches is done on this task (see
        // `reads_inline`); anything else on the blocking pool.
        let chunk = if reads_inline(&partition, request.offset, max_bytes) {
            read_chunk_now(
                &partition,
                request.offset,
                max_bytes,
                request.return_encoded_batches,
            )?
        } else {
            read_chunk(
                partition,
                request.offset,
                max_bytes,
                request.return_encoded_batches,
            )
            .await?
        };
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
        let partition = self.partition(&request.topic, request.partition)?;
        check_offset(&partition, request.offset)?;
        let max_bytes = self
            .fetch_bytes(request.max_bytes)
            .min(self.state.config.subscribe_bytes_max);
        let follower = Follower {
            partition,
            id: request.partition,
            offset: request.offset,
            max_bytes,
            encoded: request.return_encoded_batches,
            shutdown: self.state.shutdown.clone(),
            read_ahead: None,
            failed: false,
        };
        // The response stream is the subscription itself: tonic polls it
        // when HTTP/2 flow control lets it send, so a client that stops
        // reading stops the reads, and no task or channel sits between an
        // append and the response body.
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
        self.state
            .access
            .check_any(caller(&request), TOPIC_ANY, &request.get_ref().topic)?;
        let request = request.into_inner();
        validate_topic_name(&request.topic).map_err(status)?;
        let topic = self.state.store.topic(&request.topic).map_err(status)?;
        let partitions: Vec<Partition> = match request.partition {
            Some(id) => vec![topic.partition(id).map_err(status)?.clone()],
            None => topic.partitions().to_vec(),
        };
        let (spec, timestamp) = offset_spec(&request)?;
        let offsets = tokio::task::spawn_blocking(move || -> Result<Vec<v1::PartitionOffset>, Status> {
            partitions
                .iter()
                .map(|partition| {
                    let (offset, timestamp_ms) = match (spec, timestamp) {
                        (v1::OffsetSpec::Earliest, _) => (partition.log_start_offset(), None),
                        (_, Some(ts)) => match partition.offset_for_timestamp(ts).map_err(status)? {
                            Some(offset) => (offset, record_timestamp(partition, offset)),
                            None => (partition.high_watermark(), None),
                        },
                        _ => (partition.high_watermark(), None),
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

    async fn commit_checkpoint(
        &self,
        request: Request<v1::CommitCheckpointRequest>,
    ) -> Result<Response<v1::CommitCheckpointResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        check_consumer_name(&request.consumer)?;
        validate_topic_name(&request.topic).map_err(status)?;
        let topic = self.state.store.topic(&request.topic).map_err(status)?;
        if request.partitions.is_empty() {
            return Err(Status::invalid_argument(
                "a checkpoint needs at least one partition",
            ));
        }
        let mut entries = Vec::with_capacity(request.partitions.len());
        for checkpoint in &request.partitions {
            let partition = topic.partition(checkpoint.partition).map_err(status)?;
            // A position may be anywhere up to the end; below the log start
            // is allowed too (the consumer then resumes at the earliest).
            let end = partition.high_watermark();
            if checkpoint.offset > end {
                return Err(out_of_range(
                    format!(
                        "checkpoint offset {} of partition {} is past the high watermark {end}",
                        checkpoint.offset, checkpoint.partition
                    ),
                    partition.log_start_offset(),
                    end,
                ));
            }
            entries.push((checkpoint.partition, checkpoint.offset));
        }
        let durability =
            convert::durability_from_proto(request.durability, self.state.config.default_durability)?;
        let state = Arc::clone(&self.state);
        let end = tokio::task::spawn_blocking(move || {
            state
                .checkpoints
                .commit(&request.consumer, &request.topic, &entries, now_ms())
        })
        .await
        .map_err(join_error)?
        .map_err(status)?;
        if durability == Durability::Fsync {
            self.state
                .checkpoints
                .partition()
                .wait_durable(end)
                .await
                .map_err(status)?;
        }
        let achieved = durability;
        Ok(Response::new(v1::CommitCheckpointResponse {
            durability: convert::durability_to_proto(achieved),
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::CONSUME, &request.get_ref().topic)?;
        let request = request.into_inner();
        validate_topic_name(&request.topic).map_err(status)?;
        let positions = self.state.checkpoints.get(&request.consumer, &request.topic);
        let partitions = convert::checkpoints(positions);
        Ok(Response::new(v1::GetCheckpointResponse { partitions }))
    }

    async fn init_producer(
        &self,
        request: Request<v1::InitProducerRequest>,
    ) -> Result<Response<v1::InitProducerResponse>, Status> {
        self.state
            .access
            .check(caller(&request), Action::PRODUCE, &request.get_ref().topic)?;
        client_topic_name(&request.get_ref().topic)?;
        Ok(Response::new(v1::InitProducerResponse {
            producer_id: crate::producer_ids::allocate()?,
            producer_epoch: 0,
        }))
    }

    async fn get_server_info(
        &self,
        _request: Request<v1::GetServerInfoRequest>,
    ) -> Result<Response<v1::GetServerInfoResponse>, Status> {
        let config = &self.state.config;
        Ok(Response::new(v1::GetServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            request_bytes_max: config.request_bytes_max,
            record_bytes_max: config.store.record_bytes_max,
            batch_bytes_max: config.store.batch_bytes_max,
            fetch_bytes_max: config.fetch_bytes_max,
            job_payload_bytes_max: config.effective_jobs().payload_bytes_max,
            default_durability: convert::durability_to_proto(config.default_durability),
        }))
    }
}

/// Timestamp of the record at `offset`, if it can be read.
pub(crate) fn record_timestamp(partition: &Partition, offset: u64) -> Option<i64> {
    let read = partition.read(offset, 1).ok()?;
    let batch = read.batches.first()?;
    batch
        .records()
        .filter_map(Result::ok)
        .find(|r| r.offset == offset)
        .map(|r| r.timestamp_ms)
}

/// A checkpoint's consumer name follows the topic names' rules, without
/// the reserved `__` prefix.
pub(crate) fn check_consumer_name(consumer: &str) -> Result<(), Status> {
    if is_internal_topic(consumer) {
        return Err(Status::invalid_argument(
            "consumer names starting with \"__\" are reserved",
        ));
    }
    validate_topic_name(consumer).map_err(|_| {
        Status::invalid_argument(format!(
            "consumer name {consumer:?} must be 1 to 249 characters of A-Z a-z 0-9 . _ -"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(key: Option<&'static str>) -> v1::Record {
        v1::Record {
            key: key.map(|k| Bytes::from_static(k.as_bytes())),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    #[test]
    fn keyed_records_follow_the_partitioner_and_unkeyed_ones_stick_together() {
        let records = vec![
            record(Some("customer-1")),
            record(None),
            record(Some("21")),
            record(None),
        ];
        let groups = group_by_partition(&records, None, 3, 7);
        let mut seen = vec![0; records.len()];
        for (partition, members) in &groups {
            for &i in members {
                seen[i] += 1;
                let expected = match &records[i].key {
                    Some(key) => partition_for_key(key, 3),
                    None => 7 % 3,
                };
                assert_eq!(*partition, expected);
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert_eq!(
            group_by_partition(&records, Some(2), 3, 0),
            vec![(2, vec![0, 1, 2, 3])]
        );
    }
}
