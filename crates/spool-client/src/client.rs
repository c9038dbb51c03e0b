//! [`Client`]: one HTTP/2 connection to a server and a thin async method per
//! `spool.v1.Log` RPC.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool_proto::v1::{
    self, admin_client::AdminClient, cluster_client::ClusterClient, jobs_client::JobsClient,
    log_client::LogClient, metrics_client::MetricsClient,
};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status, Streaming};

use crate::consumer::ConsumerBuilder;
use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::producer::{Producer, ProducerConfig};
use crate::record::{ConsumedRecord, Record, decode_batches};

/// Largest gRPC message the client sends or accepts by default (tonic's own
/// default is 4 MiB, less than one full fetch at the server's limits).
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Largest gRPC message sent or received, in bytes.
    pub message_bytes_max: usize,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Deadline of unary calls other than Fetch (which gets its `max_wait_ms`
    /// on top). `None` waits forever. Subscribe streams never get one.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 receive window per stream, in bytes: how far the server may
    /// stream ahead of a consumer that reads slowly.
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window for the whole connection, in bytes.
    pub connection_window_bytes: u32,
    /// Bearer token sent with every call (`spool_<id>_<secret>`).
    pub token: Option<String>,
    /// PEM CA bundle the server's certificate must chain to; needed for
    /// `https://` URLs.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that ask for one
    /// (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The channel every generated client of a [`Client`] runs on: the
/// connection, with the bearer token added to each call.
pub type Transport = InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <token>` to each call, when there is a
/// token.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    header: Option<AsciiMetadataValue>,
}

impl Credentials {
    /// Credentials for `token`; `None` sends none.
    pub fn new(token: Option<&str>) -> Result<Self> {
        let header = match token {
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                    Error::Credentials {
                        what: "token",
                        path: String::new(),
                        reason: "a token is printable ASCII text (spool_<id>_<secret>)".into(),
                    }
                })?,
            ),
            None => None,
        };
        Ok(Credentials { header })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(60)),
            stream_window_bytes: 4 * 1024 * 1024,
            connection_window_bytes: 16 * 1024 * 1024,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Durability a write must reach before the server answers.
///
/// The default is [`Durability::Fsync`], as on the server: an acknowledged
/// record survives a power cut unless the writer asked for less.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// In the server's page cache: survives a crash of the server process,
    /// not of the machine. Faster; a power cut can lose acknowledged records.
    None,
    /// Fsynced to disk (group-committed with other writers).
    #[default]
    Fsync,
    /// Cluster mode: committed by the partition's Raft group, that is
    /// fsynced on a majority of its replicas. A cluster answers every
    /// produce at this level; a single-node server refuses it.
    Quorum,
}

impl Durability {
    pub(crate) fn to_proto(self) -> v1::Durability {
        match self {
            Durability::None => v1::Durability::None,
            Durability::Fsync => v1::Durability::Fsync,
            Durability::Quorum => v1::Durability::Quorum,
        }
    }

    pub(crate) fn from_proto(value: i32) -> Option<Self> {
        match v1::Durability::try_from(value).ok()? {
            v1::Durability::None => Some(Durability::None),
            v1::Durability::Fsync => Some(Durability::Fsync),
            v1::Durability::Quorum => Some(Durability::Quorum),
            v1::Durability::Unspecified => None,
        }
    }
}

/// Which offset [`Client::list_offsets`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset: the oldest record still kept.
    Earliest,
    /// The high watermark: where the next record will go.
    Latest,
    /// The first offset whose record timestamp is at or after this Unix
    /// epoch millisecond (the high watermark if none is).
    Timestamp(i64),
}

/// A topic to create. Zero fields take the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// Number of partitions; 0 = server default.
    pub partitions: u32,
    /// Time-based retention; 0 = server default, -1 = keep forever.
    pub retention_ms: i64,
    /// Size-based retention per partition; 0 = server default, -1 = no limit.
    pub retention_bytes: i64,
    /// Segment size; 0 = server default.
    pub segment_bytes: u64,
    /// Cluster mode: nodes holding each partition's replicas; 0 = the
    /// default, min(3, nodes). A single-node server accepts 0 and 1.
    pub replication_factor: u32,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            ..NewTopic::default()
        }
    }
}

/// A topic's configuration, with the server's defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    /// Partitions, numbered 0 to `partitions - 1`.
    pub partitions: u32,
    /// Closed segments whose newest record is older are deleted; `None`
    /// keeps them forever.
    pub retention: Option<Duration>,
    /// Per partition, the oldest closed segments are deleted while it holds
    /// more; `None` for no size limit.
    pub retention_bytes: Option<u64>,
    /// A partition's active segment is closed at this size.
    pub segment_bytes: u64,
    /// One of the server's own topics (names starting with `__`).
    pub internal: bool,
}

impl TopicConfig {
    fn from_proto(config: v1::TopicConfig) -> Self {
        TopicConfig {
            name: config.name,
            partitions: config.partitions,
            // The wire's -1 (or any negative value) is "no limit".
            retention: u64::try_from(config.retention_ms).ok().map(Duration::from_millis),
            retention_bytes: u64::try_from(config.retention_bytes).ok(),
            segment_bytes: config.segment_bytes,
            internal: config.internal,
        }
    }
}

/// The state of one partition when it was described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The first offset still kept.
    pub log_start_offset: u64,
    /// The offset the next record will get.
    pub high_watermark: u64,
    /// Bytes of the partition's segments (indexes excluded).
    pub size_bytes: u64,
    /// Segments, the active one included.
    pub segment_count: u32,
}

/// A topic's configuration and the state of each of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub config: TopicConfig,
    /// Sorted by partition number.
    pub partitions: Vec<PartitionInfo>,
}

/// An offset [`Client::list_offsets`] resolved in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    pub partition: u32,
    /// For a timestamp past every record, the high watermark.
    pub offset: u64,
    /// For [`OffsetSpec::Timestamp`], the timestamp of the record at
    /// `offset`, when there is one.
    pub timestamp_ms: Option<i64>,
}

/// What a server says about itself ([`Client::server_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's version, for example `0.1.0`.
    pub version: String,
    pub limits: ServerLimits,
    /// Durability of produce and checkpoint requests that leave it
    /// unspecified (the server's `default_durability`).
    pub default_durability: Durability,
}

/// The server's size limits, in bytes, each named after the `spoold`
/// configuration key that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest request message the server decodes.
    pub request_bytes_max: u64,
    /// Largest record as stored (see [`Record::stored_bytes`]).
    pub record_bytes_max: u64,
    /// Largest batch, header included.
    pub batch_bytes_max: u64,
    /// Largest fetch or subscribe chunk (one whole batch is returned even
    /// when larger).
    pub fetch_bytes_max: u64,
    /// Largest job payload or result.
    pub job_payload_bytes_max: u64,
}

/// A consumer position stored on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub partition: u32,
    /// The next offset to read: one past the last record processed.
    pub offset: u64,
    /// When the server stored it, in Unix epoch milliseconds (0 if unknown).
    pub commit_time_ms: i64,
}

/// A connection to a Spool server.
///
/// Cheap to clone: clones share one HTTP/2 connection (tonic multiplexes
/// calls over it and reconnects on the next call after it breaks). For
/// several busy producers, separate clients spread the work over several
/// connections.
///
/// ```no_run
/// # async fn example() -> spool_client::Result<()> {
/// use spool_client::{Client, NewTopic};
///
/// let client = Client::connect("http://127.0.0.1:7070").await?;
/// client.create_topic(NewTopic::new("orders", 3)).await?;
/// for topic in client.list_topics(false).await? {
///     println!("{} ({} partitions)", topic.name, topic.partitions);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: LogClient<Transport>,
    jobs: JobsClient<Transport>,
    metrics: MetricsClient<Transport>,
    admin: AdminClient<Transport>,
    cluster: ClusterClient<Transport>,
    url: String,
    request_timeout: Option<Duration>,
    message_bytes_max: usize,
    /// How this client connected, for connections to the leaders that
    /// cluster nodes name in their answers.
    options: Arc<ClientOptions>,
    /// Cluster mode: the connection to each partition's leader this client
    /// was sent to, by (topic, partition), shared by clones.
    leaders: Arc<Mutex<HashMap<(String, u32), Client>>>,
    /// Cluster mode: the leader of the job layer this client was sent to
    /// (`jobs/route.rs`), shared by clones.
    jobs_leader: Arc<Mutex<Option<Client>>>,
}

impl Client {
    /// Connects to `url` (for example `http://127.0.0.1:7070`) with
    /// [`ClientOptions::default`].
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects to `url` with the given options.
    pub async fn connect_with(url: impl Into<String>, options: ClientOptions) -> Result<Self> {
        let url = url.into();
        let endpoint = endpoint(&url, &options)?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            url: url.clone(),
            source: source.into(),
        })?;
        Self::with_credentials(channel, url, &options)
    }

    /// Connects to `url`, trying again every 20 ms while the server is not
    /// listening yet, for up to `wait`: for tests and scripts that have just
    /// started `spoold`. Returns the last connection error after `wait`.
    pub async fn connect_retrying(url: impl Into<String>, wait: Duration) -> Result<Self> {
        let url = url.into();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Self::connect(url.clone()).await {
                Err(Error::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return result,
            }
        }
    }

    /// A client that connects on its first call instead of now. Must be
    /// called inside a tokio runtime.
    pub fn connect_lazy(url: impl Into<String>, options: ClientOptions) -> Result<Self> {
        let url = url.into();
        let channel = endpoint(&url, &options)?.connect_lazy();
        Self::with_credentials(channel, url, &options)
    }

    fn with_credentials(channel: Channel, url: String, options: &ClientOptions) -> Result<Self> {
        let credentials = Credentials::new(options.token.as_deref())?;
        Ok(Self::from_transport(
            InterceptedService::new(channel, credentials),
            url,
            options,
        ))
    }

    /// Wraps an existing tonic channel; the options' token is not used
    /// (see [`from_transport`](Self::from_transport)).
    pub fn from_channel(channel: Channel, url: impl Into<String>, options: &ClientOptions) -> Self {
        Self::from_transport(
            InterceptedService::new(channel, Credentials::default()),
            url,
            options,
        )
    }

    /// Wraps an existing tonic channel with credentials.
    pub fn from_transport(channel: Transport, url: impl Into<String>, options: &ClientOptions) -> Self {
        let admin = AdminClient::new(channel.clone());
        let cluster = ClusterClient::new(channel.clone());
        let jobs = JobsClient::new(channel.clone())
            .max_decoding_message_size(options.message_bytes_max)
            .max_encoding_message_size(options.message_bytes_max);
        let metrics =
            MetricsClient::new(channel.clone()).max_decoding_message_size(options.message_bytes_max);
        let inner = LogClient::new(channel)
            .max_decoding_message_size(options.message_bytes_max)
            .max_encoding_message_size(options.message_bytes_max);
        Client {
            inner,
            jobs,
            metrics,
            admin,
            cluster,
            url: url.into(),
            request_timeout: options.request_timeout,
            message_bytes_max: options.message_bytes_max,
            options: Arc::new(options.clone()),
            leaders: Arc::default(),
            jobs_leader: Arc::default(),
        }
    }

    /// The address this client was connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Largest gRPC message this client sends or accepts
    /// ([`ClientOptions::message_bytes_max`]).
    pub fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }

    /// The generated tonic client, for calls this type does not wrap.
    pub fn log_client(&self) -> LogClient<Transport> {
        self.inner.clone()
    }

    /// The generated client of the `spool.v1.Admin` service (tokens and
    /// the audit trail), on the same connection.
    pub fn admin_client(&self) -> AdminClient<Transport> {
        self.admin.clone()
    }

    /// The generated client of the `spool.v1.Cluster` service (a
    /// cluster's status, leadership transfers), on the same connection.
    pub fn cluster_client(&self) -> ClusterClient<Transport> {
        self.cluster.clone()
    }

    /// The typed client of the `spool.v1.Jobs` service, on the same
    /// connection (see [`Jobs`]).
    ///
    /// In cluster mode its requests go to the node that leads the job
    /// layer: a node that does not answers with the leader's address, and
    /// the request is sent there (`docs/cluster.md`, "The job layer").
    pub fn jobs(&self) -> Jobs {
        Jobs::new(self.jobs_route(), self.request_timeout)
    }

    /// Where this client's job requests go (cluster mode: the job layer's
    /// leader once a node has named it).
    pub(crate) fn jobs_route(&self) -> crate::jobs::JobsRoute {
        crate::jobs::JobsRoute::new(self, Arc::clone(&self.jobs_leader))
    }

    /// The generated tonic client of the `spool.v1.Jobs` service, on the
    /// same connection, for calls [`Jobs`] does not wrap.
    pub fn jobs_client(&self) -> JobsClient<Transport> {
        self.jobs.clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = self.request_timeout {
            request.set_timeout(timeout);
        }
        crate::trace::inject(&mut request);
        request
    }

    /// Creates a topic; returns its configuration with defaults resolved.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicConfig> {
        let request = v1::CreateTopicRequest {
            name: topic.name,
            partitions: topic.partitions,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            segment_bytes: topic.segment_bytes,
            replication_factor: topic.replication_factor,
        };
        let response = self.inner.clone().create_topic(self.request(request)).await?;
        response
            .into_inner()
            .topic
            .map(TopicConfig::from_proto)
            .ok_or_else(|| Error::protocol("CreateTopic answered without a topic"))
    }

    /// Deletes a topic and all of its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = v1::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.inner.clone().delete_topic(self.request(request)).await?;
        Ok(())
    }

    /// Lists topics sorted by name, internal ones too if asked.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<TopicConfig>> {
        let request = v1::ListTopicsRequest { include_internal };
        let response = self.inner.clone().list_topics(self.request(request)).await?;
        Ok(response
            .into_inner()
            .topics
            .into_iter()
            .map(TopicConfig::from_proto)
            .collect())
    }

    /// Describes a topic: configuration and per-partition state.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = v1::DescribeTopicRequest {
            name: name.to_owned(),
        };
        let response = self.inner.clone().describe_topic(self.request(request)).await?;
        let response = response.into_inner();
        let config = response
            .topic
            .ok_or_else(|| Error::protocol("DescribeTopic answered without a topic"))?;
        Ok(TopicDescription {
            config: TopicConfig::from_proto(config),
            partitions: response
                .partitions
                .into_iter()
                .map(|partition| PartitionInfo {
                    partition: partition.partition,
                    log_start_offset: partition.log_start_offset,
                    high_watermark: partition.high_watermark,
                    size_bytes: partition.size_bytes,
                    segment_count: partition.segment_count,
                })
                .collect(),
        })
    }

    /// Sends one raw Produce request. [`Producer`] batches for you; this is
    /// for callers that build requests themselves.
    ///
    /// In cluster mode a node that does not lead the partition answers
    /// with the leader's address ([`Error::leader_address`]): the request
    /// is then sent once more, to that leader, and later requests for the
    /// same partition go straight to it until it fails.
    pub async fn produce(&self, request: v1::ProduceRequest) -> Result<v1::ProduceResponse> {
        let route = request.partition.map(|p| (request.topic.clone(), p));
        let target = route
            .as_ref()
            .and_then(|key| self.leaders.lock().expect("leaders lock").get(key).cloned());
        let error = match target
            .as_ref()
            .unwrap_or(self)
            .produce_here(request.clone())
            .await
        {
            Err(error) => error,
            answer => return answer,
        };
        if target.is_some()
            && let Some(key) = &route
        {
            // The leader this client was sent to no longer takes the
            // partition's writes (or is gone): the next call starts again
            // from the node this client connected to.
            self.leaders.lock().expect("leaders lock").remove(key);
        }
        let Some(address) = error.leader_address() else {
            return Err(error);
        };
        let leader = self.to_node(&address)?;
        tracing::debug!(topic = %request.topic, partition = ?request.partition, leader = %leader.url, "following a leader hint");
        if let Some(key) = &route {
            self.leaders
                .lock()
                .expect("leaders lock")
                .insert(key.clone(), leader.clone());
        }
        match leader.produce_here(request).await {
            // The leader named cannot be reached (it died and the node
            // asked has not noticed yet): the answer is that node's, "the
            // leadership is moving", which a producer retries soon, and
            // the next call starts from the node connected to again.
            Err(unreachable)
                if matches!(unreachable, Error::Connect { .. })
                    || matches!(unreachable, Error::Unavailable { .. })
                        && unreachable.leader_hint().is_none() =>
            {
                if let Some(key) = &route {
                    self.leaders.lock().expect("leaders lock").remove(key);
                }
                tracing::debug!(error = %unreachable, "the leader named cannot be reached");
                Err(error)
            }
            answer => answer,
        }
    }

    async fn produce_here(&self, request: v1::ProduceRequest) -> Result<v1::ProduceResponse> {
        let response = self.inner.clone().produce(self.request(request)).await?;
        Ok(response.into_inner())
    }

    /// A client of another node of the same cluster, at `address`
    /// (host:port), with this client's options and scheme; it connects on
    /// its first call.
    pub(crate) fn to_node(&self, address: &str) -> Result<Client> {
        let scheme = if self.url.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        Client::connect_lazy(format!("{scheme}://{address}"), (*self.options).clone())
    }

    /// Produces plain records in one request, without client-side batching:
    /// to `partition` if given, else by key and sticky spreading on the
    /// server.
    pub async fn produce_records(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<Record>,
        durability: Durability,
    ) -> Result<v1::ProduceResponse> {
        self.produce(v1::ProduceRequest {
            topic: topic.to_owned(),
            partition,
            durability: durability.to_proto() as i32,
            data: Some(v1::produce_request::Data::Records(v1::RecordList {
                records: records.into_iter().map(Record::into_proto).collect(),
            })),
        })
        .await
    }

    /// Sends one raw Fetch request (long poll up to `max_wait_ms`).
    pub async fn fetch(&self, request: v1::FetchRequest) -> Result<v1::FetchResponse> {
        let wait = Duration::from_millis(u64::from(request.max_wait_ms));
        let mut request = self.request(request);
        if let Some(timeout) = self.request_timeout {
            request.set_timeout(timeout + wait);
        }
        let response = self.inner.clone().fetch(request).await?;
        Ok(response.into_inner())
    }

    /// Fetches from one partition and decodes the records, skipping any below
    /// `offset`. Returns the records and the response (for `next_offset`,
    /// `high_watermark` and `log_start_offset`; its record fields are emptied).
    pub async fn fetch_records(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<(Vec<ConsumedRecord>, v1::FetchResponse)> {
        let mut records = Vec::new();
        let response = self
            .fetch_records_into(topic, partition, offset, max_bytes, max_wait_ms, &mut records)
            .await?;
        Ok((records, response))
    }

    /// [`Client::fetch_records`] into a vector the caller keeps: `records`
    /// is cleared, then holds the records fetched. A loop that passes the
    /// same vector every time keeps its memory from one call to the next;
    /// a fresh vector of a thousand records (about 100 KiB) per call is
    /// new memory each time (glibc's malloc gives freed memory at the top
    /// of the heap back to the kernel), and faulting its pages in cost
    /// about a fifth of a batched reader's time in `docs/performance.md`.
    pub async fn fetch_records_into(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
        records: &mut Vec<ConsumedRecord>,
    ) -> Result<v1::FetchResponse> {
        records.clear();
        let mut response = self
            .fetch(v1::FetchRequest {
                topic: topic.to_owned(),
                partition,
                offset,
                max_bytes,
                max_wait_ms,
                return_encoded_batches: true,
            })
            .await?;
        decode_batches(
            partition,
            std::mem::take(&mut response.encoded_batches),
            offset,
            None,
            records,
        )?;
        records.extend(
            std::mem::take(&mut response.records)
                .into_iter()
                .filter(|record| record.offset >= offset)
                .map(|record| ConsumedRecord::from_proto(partition, record)),
        );
        Ok(response)
    }

    /// Opens a raw Subscribe stream. [`crate::Consumer`] wraps this with
    /// decoding, several partitions and resubscription.
    pub async fn subscribe(&self, request: v1::SubscribeRequest) -> Result<Streaming<v1::SubscribeResponse>> {
        let mut request = Request::new(request);
        crate::trace::inject(&mut request);
        let response = self.inner.clone().subscribe(request).await?;
        Ok(response.into_inner())
    }

    /// Resolves an offset in one partition, or in all when `partition` is
    /// `None`. Sorted by partition.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: Option<u32>,
        spec: OffsetSpec,
    ) -> Result<Vec<PartitionOffset>> {
        let (spec, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (v1::OffsetSpec::Earliest, None),
            OffsetSpec::Latest => (v1::OffsetSpec::Latest, None),
            OffsetSpec::Timestamp(timestamp_ms) => (v1::OffsetSpec::Timestamp, Some(timestamp_ms)),
        };
        let request = v1::ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec: spec as i32,
            timestamp_ms,
        };
        let response = self.inner.clone().list_offsets(self.request(request)).await?;
        Ok(response
            .into_inner()
            .offsets
            .into_iter()
            .map(|offset| PartitionOffset {
                partition: offset.partition,
                offset: offset.offset,
                timestamp_ms: offset.timestamp_ms,
            })
            .collect())
    }

    /// Stores a named consumer's positions (`(partition, next offset)`) in a
    /// topic; returns the durability reached.
    pub async fn commit_checkpoint(
        &self,
        consumer: &str,
        topic: &str,
        positions: &[(u32, u64)],
        durability: Durability,
    ) -> Result<Durability> {
        let request = v1::CommitCheckpointRequest {
            consumer: consumer.to_owned(),
            topic: topic.to_owned(),
            partitions: positions
                .iter()
                .map(|&(partition, offset)| v1::PartitionCheckpoint {
                    partition,
                    offset,
                    commit_time_ms: 0,
                })
                .collect(),
            durability: durability.to_proto() as i32,
        };
        let response = self
            .inner
            .clone()
            .commit_checkpoint(self.request(request))
            .await?;
        Durability::from_proto(response.into_inner().durability)
            .ok_or_else(|| Error::protocol("CommitCheckpoint answered without a durability"))
    }

    /// Reads back a named consumer's stored positions in a topic, sorted by
    /// partition; partitions never committed are left out.
    pub async fn get_checkpoint(&self, consumer: &str, topic: &str) -> Result<Vec<Checkpoint>> {
        let request = v1::GetCheckpointRequest {
            consumer: consumer.to_owned(),
            topic: topic.to_owned(),
        };
        let response = self.inner.clone().get_checkpoint(self.request(request)).await?;
        Ok(response
            .into_inner()
            .partitions
            .into_iter()
            .map(|checkpoint| Checkpoint {
                partition: checkpoint.partition,
                offset: checkpoint.offset,
                commit_time_ms: checkpoint.commit_time_ms,
            })
            .collect())
    }

    /// A fresh producer id and its epoch (0), for an idempotent producer
    /// writing to `topic` (the call needs `produce` on it). A server older
    /// than this call answers [`Error::Other`] with
    /// [`Code::Unimplemented`](tonic::Code::Unimplemented).
    pub async fn init_producer(&self, topic: &str) -> Result<(i64, i16)> {
        let request = v1::InitProducerRequest {
            topic: topic.to_owned(),
        };
        let response = self
            .inner
            .clone()
            .init_producer(self.request(request))
            .await?
            .into_inner();
        let epoch = i16::try_from(response.producer_epoch).map_err(|_| {
            Error::protocol(format!(
                "producer epoch {} is out of range",
                response.producer_epoch
            ))
        })?;
        if response.producer_id < 0 || epoch < 0 {
            return Err(Error::protocol(format!(
                "InitProducer answered producer id {} and epoch {epoch}",
                response.producer_id
            )));
        }
        Ok((response.producer_id, epoch))
    }

    /// The server's version, size limits and default durability. A server
    /// older than this call answers [`Error::Other`] with
    /// [`Code::Unimplemented`](tonic::Code::Unimplemented).
    pub async fn server_info(&self) -> Result<ServerInfo> {
        let request = v1::GetServerInfoRequest {};
        let response = self
            .inner
            .clone()
            .get_server_info(self.request(request))
            .await?
            .into_inner();
        Ok(ServerInfo {
            version: response.version,
            limits: ServerLimits {
                request_bytes_max: response.request_bytes_max,
                record_bytes_max: response.record_bytes_max,
                batch_bytes_max: response.batch_bytes_max,
                fetch_bytes_max: response.fetch_bytes_max,
                job_payload_bytes_max: response.job_payload_bytes_max,
            },
            default_durability: Durability::from_proto(response.default_durability)
                .ok_or_else(|| Error::protocol("GetServerInfo answered without a default durability"))?,
        })
    }

    /// Points of the server's metrics history (`spool.v1.Metrics`): one
    /// result per expression of `query`, in order.
    pub async fn metrics_history(&self, query: HistoryQuery) -> Result<History> {
        let request = v1::GetMetricsHistoryRequest {
            series: query.series,
            from_time_ms: query.from_time_ms,
            to_time_ms: query.to_time_ms,
            step_ms: query.step_ms,
        };
        let response = self
            .metrics
            .clone()
            .get_metrics_history(self.request(request))
            .await?
            .into_inner();
        let results = response
            .results
            .into_iter()
            .map(|result| HistoryResult {
                expression: result.expression,
                series: result
                    .series
                    .into_iter()
                    .map(|series| HistorySeries {
                        labels: series.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                        points: series.points.into_iter().map(|p| (p.time_ms, p.value)).collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(History {
            results,
            step_ms: response.step_ms,
            interval_ms: response.interval_ms,
            oldest_sample_time_ms: response.oldest_sample_time_ms,
            from_time_ms: response.from_time_ms,
            to_time_ms: response.to_time_ms,
        })
    }

    /// A batching producer for `topic` (see [`Producer`]).
    pub async fn producer(&self, topic: &str, config: ProducerConfig) -> Result<Producer> {
        Producer::new(self.clone(), topic, config).await
    }

    /// A builder for a consumer of `topic` (see [`crate::Consumer`]).
    pub fn consumer(&self, topic: &str) -> ConsumerBuilder {
        ConsumerBuilder::new(self.clone(), topic)
    }
}

fn read_pem(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| Error::Credentials {
        what,
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// The TLS settings of an `https://` URL.
fn tls_config(url: &str, options: &ClientOptions) -> Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new();
    match &options.tls_ca {
        Some(path) => config = config.ca_certificate(Certificate::from_pem(read_pem("TLS CA bundle", path)?)),
        None => {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                reason: "an https:// server needs the CA bundle that signed its certificate (--tls-ca, SPOOL_TLS_CA)"
                    .into(),
            });
        }
    }
    match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read_pem("TLS client certificate", cert)?,
                read_pem("TLS client key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Credentials {
                what: "TLS client certificate",
                path: String::new(),
                reason: "--tls-cert and --tls-key go together".into(),
            });
        }
    }
    Ok(config)
}

fn endpoint(url: &str, options: &ClientOptions) -> Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|error| Error::InvalidUrl {
        url: url.to_owned(),
        reason: error.to_string(),
    })?;
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(url, options)?)
            .map_err(|error| Error::InvalidUrl {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
    } else if options.tls_ca.is_some() || options.tls_cert.is_some() {
        return Err(Error::InvalidUrl {
            url: url.to_owned(),
            reason: "TLS options were given for a plaintext URL: write https://".into(),
        });
    }
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(options.stream_window_bytes)
        .initial_connection_window_size(options.connection_window_bytes)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20)))
}

/// A read of the metrics history ([`Client::metrics_history`]). Times are
/// Unix epoch milliseconds; 0 and negative values mean what
/// `GetMetricsHistoryRequest` says (0: now, or an hour before `to`;
/// negative: that long before now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Series expressions, such as `rate(spool_jobs_completed_total{queue="emails"})`.
    pub series: Vec<String>,
    pub from_time_ms: i64,
    pub to_time_ms: i64,
    /// 0: about 300 points over the range.
    pub step_ms: u64,
}

/// The answer to a [`HistoryQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub results: Vec<HistoryResult>,
    pub step_ms: u64,
    pub interval_ms: u64,
    /// 0 when the history holds no sample yet.
    pub oldest_sample_time_ms: i64,
    pub from_time_ms: i64,
    pub to_time_ms: i64,
}

/// The series one expression yielded.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryResult {
    pub expression: String,
    pub series: Vec<HistorySeries>,
}

/// One series: its labels (sorted by name) and `(time_ms, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}
