//! [`Producer`]: client-side batching, bounded in-flight requests, retries.

mod accumulator;
mod delivery;
mod idempotence;
mod limits;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spool_proto::partitioner::partition_for_key;
use spool_proto::v1;
use spool_telemetry::TRACEPARENT;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tonic::Code;
use tracing::Instrument as _;

use self::accumulator::{Accumulator, Next, PendingBatch};
pub use self::delivery::{BatchAck, DeliveryFuture, RecordAck};
use self::idempotence::Sequencer;
pub use self::limits::ProduceLimits;
use crate::client::{Client, Durability};
use crate::error::{Error, Result};
use crate::record::{Header, Record, encode_batch, now_ms};

/// How a [`Producer`] batches, sends and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// A partition's batch is sent once it holds about this many encoded
    /// bytes. Held to the server's limits and the topic's segment size
    /// (see [`Producer::limits`]), so a full batch is never refused.
    pub batch_bytes_max: usize,
    /// A batch that is not full is sent this long after its first record.
    /// 0 sends as soon as the partition has no request in flight, which
    /// still batches whatever arrives meanwhile.
    pub linger_ms: u64,
    /// Most Produce requests in flight at once, over all partitions. Each
    /// partition has at most one, so its records stay in order.
    pub in_flight_max: usize,
    /// Closed batches a partition may hold while its request is in flight;
    /// past that, `send` waits. Bounds memory at about
    /// `partitions * (queued_batches_max + 2) * batch_bytes_max`.
    pub queued_batches_max: usize,
    /// Durability every request asks for (default [`Durability::Fsync`]).
    pub durability: Durability,
    /// Retries of a request that failed with `UNAVAILABLE` or
    /// `RESOURCE_EXHAUSTED`, after the first attempt. 0 never retries.
    /// In a cluster, a request refused because the partition's leadership
    /// is moving (an answer with a leader hint) is retried every 200 ms at
    /// most, for up to 30 s, without counting here: it was not acted on.
    pub retries_max: u32,
    /// Wait before the first retry; doubled each retry, with jitter.
    pub retry_backoff_ms: u64,
    /// Longest wait between retries.
    pub retry_backoff_max_ms: u64,
    /// Number every batch with a producer id and sequence (from
    /// `Log.InitProducer`), so that a retry is stored once: see
    /// "Idempotence" on [`Producer`]. Off by default.
    pub idempotent: bool,
}

impl ProducerConfig {
    /// This configuration with idempotence on or off.
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_bytes_max: 256 * 1024,
            linger_ms: 5,
            in_flight_max: 16,
            queued_batches_max: 2,
            durability: Durability::Fsync,
            retries_max: 10,
            retry_backoff_ms: 50,
            retry_backoff_max_ms: 5_000,
            idempotent: false,
        }
    }
}

/// Where [`Producer::send_batch`] puts its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This partition.
    Partition(u32),
    /// The partition of this key (the server's key partitioner).
    Key(Bytes),
    /// A partition chosen by the producer, rotating from call to call.
    Any,
}

/// A batching producer for one topic.
///
/// Records are grouped per partition into batches, each sent as one Produce
/// request carrying the batch already encoded in the storage format (the
/// server appends it without re-encoding any record), with an explicit
/// partition:
/// - a record with a key goes to `spool_proto::partitioner::partition_for_key`,
///   the server's own function (Kafka's murmur2), over the partition count
///   read when the producer was created;
/// - records without a key stick to one partition until its batch closes,
///   then move to the next (sticky spreading: full batches, even spread).
///
/// A batch is sent when it reaches [`ProducerConfig::batch_bytes_max`], when
/// its first record is [`ProducerConfig::linger_ms`] old, or on
/// [`flush`](Producer::flush). Each partition has at most one request in
/// flight, so a partition's records are appended in the order they were
/// sent; at most [`ProducerConfig::in_flight_max`] requests are in flight in
/// all. When a partition's queue is full, [`send`](Producer::send) and
/// [`enqueue`](Producer::enqueue) wait: backpressure reaches the caller
/// instead of memory growing.
///
/// **Retries may duplicate.** A request that fails with `UNAVAILABLE` or
/// `RESOURCE_EXHAUSTED` is retried with exponential backoff (tonic reconnects
/// the channel on the next call). `RESOURCE_EXHAUSTED` means nothing was
/// appended, but `UNAVAILABLE` can come after the server appended the batch
/// (the connection broke before the answer): the retry then appends the
/// records a second time. Delivery is at least once; consumers that cannot
/// tolerate duplicates must deduplicate (for example by a unique id in a
/// header). Set [`ProducerConfig::retries_max`] to 0 to handle failures
/// yourself.
///
/// **Idempotence** ([`ProducerConfig::idempotent`]) removes those
/// duplicates. The producer asks the server for a producer id
/// (`Log.InitProducer`) and numbers each partition's batches with
/// sequences, in the batch header; a retry resends the same bytes, and
/// the server stores a batch it already holds only once, answering with
/// the original offsets ([`BatchAck::duplicate`]). Retries then also cover
/// `DEADLINE_EXCEEDED` and a cluster node that names another leader, all
/// safe to repeat. Each partition sends one batch at a time, including
/// [`send_batch`](Producer::send_batch) calls, since the server refuses a
/// sequence that does not follow the last one stored. A batch that fails
/// for good (retries exhausted) has an unknown outcome, as without
/// idempotence; the partition's next batch then starts under a new
/// producer id. `docs/api.md` ("Idempotent producers") says exactly what
/// is guaranteed. Off by default: a server older than `InitProducer`
/// refuses numbered batches, and a producer that wants the most requests in
/// flight per partition may prefer to deduplicate downstream.
///
/// Records without a timestamp get the time their batch is encoded.
///
/// **Traces.** A record sent with [`send`](Producer::send) or
/// [`enqueue`](Producer::enqueue) from inside an OpenTelemetry span, and
/// without a `traceparent` header of its own, gets the span's
/// `traceparent` header, so consumers continue the producer's trace. Each
/// batch is sent in a `send {topic}` span: a child of its records' context
/// when they share one, else linked to up to [`TRACE_LINKS_MAX`] of them.
/// [`send_batch`](Producer::send_batch) stores no header (the records are
/// the caller's; [`crate::telemetry::current_traceparent`] gives the value);
/// its span is a child of the caller's. Without a context nothing is added.
///
/// Cheap to clone; clones share the batches. Dropping the last clone sends
/// what is buffered in the background; [`close`](Producer::close) does the
/// same and waits for it.
///
/// ```no_run
/// # async fn example() -> spool_client::Result<()> {
/// use spool_client::{Client, ProducerConfig, Record};
///
/// let client = Client::connect("http://127.0.0.1:7070").await?;
/// let producer = client.producer("orders", ProducerConfig::default()).await?;
///
/// // One record, waiting for its acknowledgement.
/// let ack = producer.send(Record::new("created").with_key("order-1")).await?;
/// println!("partition {} offset {}", ack.partition, ack.offset);
///
/// // Many records: enqueue them all, then collect the acknowledgements.
/// let mut deliveries = Vec::new();
/// for i in 0..10_000 {
///     deliveries.push(producer.enqueue(Record::new(format!("event {i}"))).await?);
/// }
/// for delivery in deliveries {
///     delivery.await?;
/// }
/// producer.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    core: Arc<Core>,
    senders: Arc<Senders>,
}

#[derive(Debug)]
struct Core {
    client: Client,
    topic: String,
    partitions: u32,
    config: ProducerConfig,
    limits: ProduceLimits,
    accumulator: Mutex<Accumulator>,
    /// Per partition: wakes its sender (new batch, full batch, closing).
    wake: Vec<Notify>,
    /// Per partition: its sender took a closed batch, making room.
    space: Vec<Notify>,
    in_flight: Semaphore,
    closing: AtomicBool,
    /// Rotation for `Target::Any`.
    next_any_partition: AtomicU32,
    /// Each partition's producer id and next sequence, for an idempotent
    /// producer.
    sequencer: Option<Sequencer>,
}

/// The partition sender tasks; dropping the last producer clone tells them
/// to send what is left and stop.
#[derive(Debug)]
struct Senders {
    core: Arc<Core>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.core.start_closing();
    }
}

impl Producer {
    /// Creates a producer for `topic`, reading its partition count and
    /// segment size with DescribeTopic and the server's size limits with
    /// GetServerInfo (a server without that call leaves them to the
    /// server). Must be called inside a tokio runtime: it spawns one sender
    /// task per partition.
    pub async fn new(client: Client, topic: &str, config: ProducerConfig) -> Result<Self> {
        let (description, info) = tokio::join!(client.describe_topic(topic), client.server_info());
        let description = description?;
        let server = match info {
            Ok(info) => Some(info.limits),
            Err(error) if error.code() == Some(Code::Unimplemented) => None,
            Err(error) => return Err(error),
        };
        let partitions = description.config.partitions;
        if partitions == 0 {
            return Err(Error::protocol(format!("topic {topic:?} has no partitions")));
        }
        let limits = ProduceLimits {
            server,
            // 0 would be a server that does not say: no limit known.
            segment_bytes: match description.config.segment_bytes {
                0 => u64::MAX,
                bytes => bytes,
            },
            client_message_bytes_max: client.message_bytes_max() as u64,
            topic_bytes: topic.len() as u64,
        };
        // Asked once here, so that a server without the call fails the
        // creation rather than the first send.
        let sequencer = match config.idempotent {
            true => Some(Sequencer::new(partitions, client.init_producer(topic).await?)),
            false => None,
        };
        let batch_bytes_max = config
            .batch_bytes_max
            .min(usize::try_from(limits.batch_bytes_max()).unwrap_or(usize::MAX));
        let core = Arc::new(Core {
            client,
            topic: topic.to_owned(),
            partitions,
            limits,
            accumulator: Mutex::new(Accumulator::new(
                partitions,
                batch_bytes_max,
                Duration::from_millis(config.linger_ms),
                config.queued_batches_max,
            )),
            wake: (0..partitions).map(|_| Notify::new()).collect(),
            space: (0..partitions).map(|_| Notify::new()).collect(),
            in_flight: Semaphore::new(config.in_flight_max.max(1)),
            closing: AtomicBool::new(false),
            next_any_partition: AtomicU32::new(0),
            sequencer,
            config,
        });
        let tasks = (0..partitions)
            .map(|partition| tokio::spawn(run_sender(core.clone(), partition)))
            .collect();
        Ok(Producer {
            senders: Arc::new(Senders {
                core: core.clone(),
                tasks: Mutex::new(tasks),
            }),
            core,
        })
    }

    pub fn topic(&self) -> &str {
        &self.core.topic
    }

    /// The topic's partition count, as read at creation.
    pub fn partitions(&self) -> u32 {
        self.core.partitions
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.core.config
    }

    /// The size limits every record is checked against before it is
    /// batched.
    pub fn limits(&self) -> &ProduceLimits {
        &self.core.limits
    }

    /// The partition a record with this key goes to.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        partition_for_key(key, self.core.partitions)
    }

    /// Sends one record and waits for its acknowledgement: first for room in
    /// its partition's queue, then for the batch it joins to be acknowledged
    /// (up to `linger_ms` later plus a round trip).
    ///
    /// Awaiting each `send` in turn sends one small batch per record; to
    /// produce many records, [`enqueue`](Self::enqueue) them and await the
    /// acknowledgements afterwards, or use [`send_batch`](Self::send_batch).
    pub async fn send(&self, record: Record) -> Result<RecordAck> {
        self.enqueue(record).await?.await
    }

    /// Adds one record to its partition's batch, waiting only while that
    /// partition's queue is full, and returns a future of its
    /// acknowledgement. The record is sent whether or not the future is
    /// awaited.
    ///
    /// A record over a size limit (see [`limits`](Self::limits)) is refused
    /// at once with [`Error::RecordTooLarge`], and nothing is sent.
    pub async fn enqueue(&self, record: Record) -> Result<DeliveryFuture> {
        let partition = route(record.key.as_deref(), self.core.partitions);
        self.enqueue_inner(partition, record).await
    }

    /// As [`enqueue`](Self::enqueue), to an explicit partition.
    pub async fn enqueue_to(&self, partition: u32, record: Record) -> Result<DeliveryFuture> {
        self.check_partition(partition)?;
        self.enqueue_inner(Some(partition), record).await
    }

    async fn enqueue_inner(&self, partition: Option<u32>, mut record: Record) -> Result<DeliveryFuture> {
        let core = &self.core;
        store_current_context(&mut record);
        core.limits.check(record.stored_bytes())?;
        loop {
            if core.closing.load(Ordering::Acquire) {
                return Err(Error::ProducerClosed);
            }
            let mut space = {
                let mut accumulator = core.lock_accumulator();
                match accumulator.append(partition, record, Instant::now) {
                    Ok(appended) => {
                        drop(accumulator);
                        if appended.wake_sender {
                            core.wake[appended.partition as usize].notify_one();
                        }
                        for closed in appended.closed_in {
                            core.wake[closed as usize].notify_one();
                        }
                        return Ok(DeliveryFuture {
                            delivery: appended.delivery,
                            index: appended.index,
                        });
                    }
                    Err(full) => {
                        record = full.record;
                        // Registered under the lock, so the sender's
                        // notification after it takes a batch is not missed.
                        let mut space = Box::pin(core.space[full.partition as usize].notified());
                        space.as_mut().enable();
                        space
                    }
                }
            };
            tokio::select! {
                () = &mut space => {}
                // A closing producer wakes every sender, not the waiters:
                // look again from time to time.
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Encodes `records` into one batch and sends it at once as one request,
    /// bypassing the linger queue (it shares the in-flight limit and the
    /// retries). The fastest path for callers that batch themselves; keep a
    /// batch under the server's batch size limit.
    ///
    /// Ordering against records sent with [`send`](Self::send) to the same
    /// partition is not defined.
    pub async fn send_batch(&self, target: Target, records: &[Record]) -> Result<BatchAck> {
        if records.is_empty() {
            return Err(Error::Encode {
                reason: "a batch needs at least one record".into(),
            });
        }
        for record in records {
            self.core.limits.check(record.stored_bytes())?;
        }
        let partition = match target {
            Target::Partition(partition) => {
                self.check_partition(partition)?;
                partition
            }
            Target::Key(key) => self.partition_for_key(&key),
            Target::Any => {
                self.core.next_any_partition.fetch_add(1, Ordering::Relaxed) % self.core.partitions
            }
        };
        let count = records.len() as u64;
        // The span covers the encoding as well as the request.
        let span = crate::trace::send_batch_span(&self.core.topic, partition, count);
        let encoded = span.in_scope(|| encode_batch(records, now_ms()))?;
        let batch_bytes_max = self.core.limits.batch_bytes_max();
        if encoded.len() as u64 > batch_bytes_max {
            return Err(Error::Encode {
                reason: format!(
                    "the batch is {} bytes, more than the {batch_bytes_max} bytes the server and the topic take \
                     in one batch; send fewer records at once",
                    encoded.len()
                ),
            });
        }
        self.core
            .send_encoded(partition, encoded, count)
            .instrument(span)
            .await
    }

    /// Sends every buffered record now, without waiting for the linger, and
    /// waits until all records enqueued before the call are acknowledged.
    /// Returns the first error among them (also of records whose
    /// [`DeliveryFuture`] was dropped).
    pub async fn flush(&self) -> Result<()> {
        let pending = {
            let mut accumulator = self.core.lock_accumulator();
            let pending = accumulator.close_open_batches();
            for partition in accumulator.partitions_with_closed_batches() {
                self.core.wake[partition as usize].notify_one();
            }
            pending
        };
        let mut first_error = None;
        for delivery in pending {
            if let Err(error) = delivery.wait().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes, then stops the sender tasks of this producer and all its
    /// clones; later sends fail with [`Error::ProducerClosed`].
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        self.core.start_closing();
        let tasks = std::mem::take(&mut *self.senders.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        flushed
    }

    fn check_partition(&self, partition: u32) -> Result<()> {
        if partition < self.core.partitions {
            Ok(())
        } else {
            Err(Error::UnknownPartition {
                topic: self.core.topic.clone(),
                partition,
                partitions: self.core.partitions,
            })
        }
    }
}

impl Core {
    fn lock_accumulator(&self) -> MutexGuard<'_, Accumulator> {
        // The accumulator's invariants hold between statements: a panic
        // elsewhere while it was locked leaves it usable.
        self.accumulator.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
        for wake in &self.wake {
            wake.notify_one();
        }
    }

    /// Encodes and sends one batch taken from the accumulator, then records
    /// the outcome for its records.
    async fn send_pending(&self, mut batch: PendingBatch) {
        let records = std::mem::take(&mut batch.records);
        let count = records.len() as u64;
        let span = crate::trace::send_batch_span(&self.topic, batch.partition, count);
        if !span.is_disabled() {
            follow_records(&span, &records);
        }
        let outcome = match span.in_scope(|| encode_batch(&records, now_ms())) {
            Ok(encoded) => {
                drop(records);
                self.send_encoded(batch.partition, encoded, count)
                    .instrument(span)
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &outcome {
            // The error reaches the caller through every record's
            // acknowledgement and `flush`: logging it louder would say it
            // twice.
            tracing::debug!(topic = %self.topic, partition = batch.partition, %error, "produce failed");
        }
        batch.delivery.0.complete(outcome);
    }

    /// Sends one encoded batch with retries, holding an in-flight permit;
    /// numbered first when the producer is idempotent.
    async fn send_encoded(&self, partition: u32, encoded: Bytes, record_count: u64) -> Result<BatchAck> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        match &self.sequencer {
            None => {
                self.send_with_retries(partition, encoded, record_count, Error::is_retryable)
                    .await
            }
            Some(sequencer) => {
                let send = |numbered| {
                    self.send_with_retries(
                        partition,
                        numbered,
                        record_count,
                        Error::is_retryable_when_idempotent,
                    )
                };
                sequencer
                    .send(&self.client, &self.topic, partition, encoded, record_count, send)
                    .await
            }
        }
    }

    /// Sends one encoded batch, retrying the errors `retryable` accepts.
    async fn send_with_retries(
        &self,
        partition: u32,
        encoded: Bytes,
        record_count: u64,
        retryable: fn(&Error) -> bool,
    ) -> Result<BatchAck> {
        let mut backoff_ms = self.config.retry_backoff_ms.max(1);
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            let request = v1::ProduceRequest {
                topic: self.topic.clone(),
                partition: Some(partition),
                durability: self.config.durability.to_proto() as i32,
                data: Some(v1::produce_request::Data::EncodedBatch(encoded.clone())),
            };
            match self.client.produce(request).await {
                Ok(response) => return batch_ack(response, partition, record_count),
                // Cluster mode: the leadership is moving (an election, a
                // transfer). The request was not acted on, so it is sent
                // again, soon and without counting against `retries_max`,
                // for as long as a failover takes.
                Err(error)
                    if self.config.retries_max > 0
                        && error.leader_hint().is_some()
                        && started.elapsed() < LEADER_CHANGE_PATIENCE =>
                {
                    let wait = jittered(backoff_ms.min(LEADER_CHANGE_BACKOFF_MS));
                    tracing::debug!(
                        topic = %self.topic, partition, wait_ms = wait.as_millis() as u64, %error,
                        "the partition's leadership is moving; retrying produce"
                    );
                    tokio::time::sleep(wait).await;
                    backoff_ms = (backoff_ms * 2).min(self.config.retry_backoff_max_ms.max(1));
                }
                Err(error) if retryable(&error) && attempt < self.config.retries_max => {
                    attempt += 1;
                    let wait = jittered(backoff_ms);
                    tracing::debug!(
                        topic = %self.topic, partition, attempt, wait_ms = wait.as_millis() as u64, %error,
                        "retrying produce"
                    );
                    tokio::time::sleep(wait).await;
                    backoff_ms = (backoff_ms * 2).min(self.config.retry_backoff_max_ms.max(1));
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Longest wait between retries while a partition's leadership moves: an
/// election takes about a second, and a longer wait only adds to it.
const LEADER_CHANGE_BACKOFF_MS: u64 = 200;

/// How long a producer keeps retrying a batch while nodes answer that the
/// partition's leadership is moving, before the answer is an error.
const LEADER_CHANGE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Most links a batch's `send` span keeps to the contexts of its records.
pub const TRACE_LINKS_MAX: usize = 32;

/// Gives a record the current OpenTelemetry context as its `traceparent`
/// header, unless it has one or there is none.
fn store_current_context(record: &mut Record) {
    if record.headers.iter().any(|header| header.key == TRACEPARENT) {
        return;
    }
    if let Some(traceparent) = spool_telemetry::current_traceparent() {
        record.headers.push(Header::new(TRACEPARENT, traceparent));
    }
}

/// Ties a batch's `send` span to its records' traces: the child of their
/// context when they all share one, else linked to the first
/// [`TRACE_LINKS_MAX`] distinct ones.
fn follow_records(span: &tracing::Span, records: &[Record]) {
    let mut contexts: Vec<&str> = Vec::new();
    for record in records {
        let traceparent = record
            .headers
            .iter()
            .find(|header| header.key == TRACEPARENT)
            .and_then(|header| header.value.as_deref())
            .and_then(|value| std::str::from_utf8(value).ok());
        if let Some(traceparent) = traceparent
            && !contexts.contains(&traceparent)
        {
            contexts.push(traceparent);
            if contexts.len() > TRACE_LINKS_MAX {
                break;
            }
        }
    }
    match contexts.as_slice() {
        [] => {}
        [only] => {
            spool_telemetry::set_remote_parent(span, only, None);
        }
        many => {
            for traceparent in many.iter().take(TRACE_LINKS_MAX) {
                spool_telemetry::add_link(span, traceparent);
            }
        }
    }
}

/// A partition's sender: sends its batches one at a time, in order.
async fn run_sender(core: Arc<Core>, partition: u32) {
    let index = partition as usize;
    loop {
        // `notify_one` stores a permit when nobody waits, so a wake between
        // the check below and the await is not lost.
        let wake = core.wake[index].notified();
        let closing = core.closing.load(Ordering::Acquire);
        let next = core
            .lock_accumulator()
            .next_to_send(partition, Instant::now(), closing);
        match next {
            Next::Send(batch) => {
                core.space[index].notify_waiters();
                core.send_pending(batch).await;
                core.lock_accumulator().sent(partition);
            }
            Next::WaitUntil(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = wake => {}
                }
            }
            Next::Idle if closing => return,
            Next::Idle => wake.await,
        }
    }
}

/// The partition of a record: its key's, or `None` (the sticky partition)
/// for a record without a key. An empty key is a key.
fn route(key: Option<&[u8]>, partitions: u32) -> Option<u32> {
    key.map(|key| partition_for_key(key, partitions))
}

/// Reads the acknowledgement of a single-partition encoded produce.
fn batch_ack(response: v1::ProduceResponse, partition: u32, record_count: u64) -> Result<BatchAck> {
    let result = response
        .results
        .into_iter()
        .find(|result| result.partition == partition)
        .ok_or_else(|| Error::protocol(format!("Produce answered without partition {partition}")))?;
    let appended = result
        .last_offset
        .wrapping_sub(result.base_offset)
        .wrapping_add(1);
    if appended != record_count {
        return Err(Error::protocol(format!(
            "Produce of {record_count} records answered offsets {}..={}",
            result.base_offset, result.last_offset
        )));
    }
    Ok(BatchAck {
        partition,
        base_offset: result.base_offset,
        last_offset: result.last_offset,
        durability: Durability::from_proto(result.durability)
            .ok_or_else(|| Error::protocol("Produce answered without a durability"))?,
        log_append_time_ms: result.log_append_time_ms,
        duplicate: result.duplicate,
    })
}

/// Between half and all of `backoff_ms`, so that producers retrying at once
/// spread out.
fn jittered(backoff_ms: u64) -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    let half = backoff_ms.div_ceil(2);
    Duration::from_millis(half + random % (backoff_ms - half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` under a subscriber whose OpenTelemetry layer records the
    /// caller's spans, except those of the target `logs_only` (no
    /// exporter).
    fn with_tracing<T>(f: impl FnOnce() -> T) -> T {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target() != "logs_only"
                })),
        );
        tracing::subscriber::with_default(subscriber, f)
    }

    fn traceparent(record: &Record) -> Option<String> {
        record
            .headers
            .iter()
            .find(|header| header.key == TRACEPARENT)
            .map(|header| String::from_utf8(header.value.clone().unwrap().to_vec()).unwrap())
    }

    #[test]
    fn a_record_sent_inside_a_traced_span_carries_its_context() {
        with_tracing(|| {
            let mut outside = Record::new("x");
            store_current_context(&mut outside);
            assert_eq!(traceparent(&outside), None, "no span, no context invented");

            let span = tracing::info_span!("checkout");
            let expected = spool_telemetry::traceparent_of(&span).unwrap();
            let _entered = span.enter();
            // A log-only span nested inside does not hide the context.
            let _inner = tracing::info_span!(target: "logs_only", "inner").entered();
            let mut record = Record::new("x");
            store_current_context(&mut record);
            assert_eq!(traceparent(&record), Some(expected));

            let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let mut own = Record::new("x").with_header(TRACEPARENT, given);
            store_current_context(&mut own);
            assert_eq!(own.headers.len(), 1, "a record's own context is kept");
        });
    }

    #[test]
    fn a_batch_span_is_the_child_of_its_records_shared_context() {
        with_tracing(|| {
            let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let records = vec![
                Record::new("a").with_header(TRACEPARENT, given),
                Record::new("b").with_header(TRACEPARENT, given),
            ];
            let span = crate::trace::send_batch_span("orders", 0, 2);
            follow_records(&span, &records);
            let own = spool_telemetry::traceparent_of(&span).unwrap();
            assert!(own.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{own}");
            assert!(!own.contains("00f067aa0ba902b7"), "a span of its own: {own}");
        });
    }

    #[test]
    fn records_are_fsynced_unless_asked_otherwise() {
        assert_eq!(ProducerConfig::default().durability, Durability::Fsync);
        assert_eq!(Durability::default(), Durability::Fsync);
    }

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        for _ in 0..1000 {
            let wait = jittered(100).as_millis();
            assert!((50..=100).contains(&wait), "{wait}");
        }
        assert_eq!(jittered(1).as_millis(), 1);
    }

    #[test]
    fn acks_must_cover_exactly_the_records_sent() {
        let response = |base, last| v1::ProduceResponse {
            results: vec![v1::ProducePartitionResult {
                partition: 1,
                base_offset: base,
                last_offset: last,
                durability: v1::Durability::Fsync as i32,
                log_append_time_ms: 5,
                record_indexes: Vec::new(),
                duplicate: false,
            }],
        };
        let ack = batch_ack(response(10, 19), 1, 10).unwrap();
        assert_eq!(
            (ack.base_offset, ack.record_count(), ack.durability),
            (10, 10, Durability::Fsync)
        );
        assert!(matches!(
            batch_ack(response(10, 18), 1, 10),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            batch_ack(response(10, 19), 2, 10),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn keys_go_where_the_server_puts_them() {
        // Kafka's murmur2 test vectors through the documented formula
        // `(murmur2(key) & 0x7fffffff) % partitions`, computed by hand here
        // so that a change of the shared function cannot go unnoticed.
        let vectors: [(&[u8], i32); 5] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"customer-1", 1_939_597_761),
            (b"", 275_646_681),
        ];
        for partitions in [1u32, 2, 3, 7, 64, 1000] {
            for (key, hash) in vectors {
                let expected = (hash & 0x7fff_ffff) as u32 % partitions;
                assert_eq!(
                    route(Some(key), partitions),
                    Some(expected),
                    "{key:?} over {partitions}"
                );
            }
        }
        assert_eq!(
            route(Some(b"customer-1"), 3),
            Some(0),
            "the example of docs/api.md"
        );
        assert_eq!(route(None, 3), None, "no key: the sticky partition");
    }
}
