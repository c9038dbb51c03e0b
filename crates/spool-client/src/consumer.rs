//! [`Consumer`]: a stream of records from one or all partitions of a topic.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use spool_proto::v1;
use tokio_stream::{Stream, StreamExt, StreamMap};

use crate::client::{Client, Durability, OffsetSpec};
use crate::error::{Error, Result};
use crate::record::{ConsumedRecord, decode_batches};

/// Where a consumer starts reading each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still kept (the log start offset).
    Earliest,
    /// Only records appended from now on (the high watermark).
    Latest,
    /// This offset in every partition read. Outside `[earliest, latest]`,
    /// building the consumer fails with [`Error::OffsetOutOfRange`].
    Offset(u64),
    /// The first record at or after this Unix epoch millisecond (ListOffsets
    /// by timestamp); the high watermark where no record is that recent.
    Timestamp(i64),
    /// The consumer's checkpoint (see [`ConsumerBuilder::name`]); partitions
    /// without one start at `fallback`. A checkpoint that retention has
    /// passed starts at the earliest offset instead.
    Checkpoint { fallback: CheckpointFallback },
}

/// Where a partition without a checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckpointFallback {
    #[default]
    Earliest,
    Latest,
}

/// Builds a [`Consumer`]; from [`Client::consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    client: Client,
    topic: String,
    partitions: Option<Vec<u32>>,
    start: StartPosition,
    name: Option<String>,
    follow: bool,
    chunk_bytes_max: u32,
    retries_max: u32,
    commit_durability: Durability,
}

impl ConsumerBuilder {
    pub(crate) fn new(client: Client, topic: &str) -> Self {
        ConsumerBuilder {
            client,
            topic: topic.to_owned(),
            partitions: None,
            start: StartPosition::Earliest,
            name: None,
            follow: true,
            chunk_bytes_max: 4 * 1024 * 1024,
            retries_max: 10,
            commit_durability: Durability::Fsync,
        }
    }

    /// Reads only this partition (default: every partition of the topic).
    pub fn partition(mut self, partition: u32) -> Self {
        self.partitions = Some(vec![partition]);
        self
    }

    /// Reads only these partitions.
    pub fn partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        self.partitions = Some(partitions.into_iter().collect());
        self
    }

    /// Where to start (default [`StartPosition::Earliest`]).
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// The consumer's name, under which [`Consumer::commit`] stores
    /// checkpoints and [`StartPosition::Checkpoint`] reads them.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `true` (the default) follows the tail forever; `false` ends the
    /// stream once every partition reaches the high watermark it had when
    /// the consumer was built.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Byte budget of one streamed chunk (`SubscribeRequest.max_bytes`; the
    /// server caps it). Keep it under the client's message size limit.
    pub fn chunk_bytes_max(mut self, bytes: u32) -> Self {
        self.chunk_bytes_max = bytes;
        self
    }

    /// Resubscriptions in a row after `UNAVAILABLE` (a server restart, a
    /// broken connection) before the stream yields the error.
    pub fn retries_max(mut self, retries: u32) -> Self {
        self.retries_max = retries;
        self
    }

    /// Durability of checkpoint commits (default FSYNC).
    pub fn commit_durability(mut self, durability: Durability) -> Self {
        self.commit_durability = durability;
        self
    }

    /// Resolves the start (and, without `follow`, end) offsets and starts
    /// one subscription per partition. Must be called inside a tokio
    /// runtime.
    pub async fn build(self) -> Result<Consumer> {
        let client = &self.client;
        let topic = &self.topic;
        let latest = offsets_map(client.list_offsets(topic, None, OffsetSpec::Latest).await?);
        let partition_count = latest.len() as u32;
        let partitions = match &self.partitions {
            Some(partitions) => {
                for &partition in partitions {
                    if !latest.contains_key(&partition) {
                        return Err(Error::UnknownPartition {
                            topic: topic.clone(),
                            partition,
                            partitions: partition_count,
                        });
                    }
                }
                let mut partitions = partitions.clone();
                partitions.sort_unstable();
                partitions.dedup();
                partitions
            }
            None => latest.keys().copied().collect(),
        };
        let start = match &self.start {
            StartPosition::Earliest => {
                offsets_map(client.list_offsets(topic, None, OffsetSpec::Earliest).await?)
            }
            StartPosition::Latest => latest.clone(),
            StartPosition::Offset(offset) => {
                let earliest = offsets_map(client.list_offsets(topic, None, OffsetSpec::Earliest).await?);
                for &partition in &partitions {
                    let (low, high) = (earliest[&partition], latest[&partition]);
                    if *offset < low || *offset > high {
                        return Err(Error::OffsetOutOfRange {
                            topic: topic.clone(),
                            partition,
                            offset: *offset,
                            earliest: low,
                            latest: high,
                        });
                    }
                }
                partitions.iter().map(|&p| (p, *offset)).collect()
            }
            StartPosition::Timestamp(timestamp_ms) => offsets_map(
                client
                    .list_offsets(topic, None, OffsetSpec::Timestamp(*timestamp_ms))
                    .await?,
            ),
            StartPosition::Checkpoint { fallback } => {
                let name = self.name.as_deref().ok_or(Error::NoConsumerName)?;
                let stored = client.get_checkpoint(name, topic).await?;
                let earliest = offsets_map(client.list_offsets(topic, None, OffsetSpec::Earliest).await?);
                resolve_checkpoints(&partitions, &stored_map(&stored), &earliest, &latest, *fallback)
            }
        };
        let mut starts = Vec::with_capacity(partitions.len());
        for &partition in &partitions {
            let offset = *start
                .get(&partition)
                .ok_or_else(|| Error::protocol(format!("ListOffsets left out partition {partition}")))?;
            let end = (!self.follow).then(|| latest[&partition]);
            starts.push((partition, offset, end));
        }

        let mut subscriptions = Vec::with_capacity(starts.len());
        for &(partition, offset, end) in &starts {
            subscriptions.push(Subscription {
                client: client.clone(),
                topic: topic.clone(),
                partition,
                next_offset: offset,
                end_offset: end,
                chunk_bytes_max: self.chunk_bytes_max,
                retries_max: self.retries_max,
                stream: None,
                failures: 0,
                backoff: Subscription::BACKOFF_START,
                finished: false,
            });
        }
        // Open the calls now, all at once, so the server follows every
        // partition from here on even before the first poll. A call that
        // fails is opened again (or its error given) when polled.
        futures_util::future::join_all(subscriptions.iter_mut().map(Subscription::open)).await;
        let subscriptions = subscriptions
            .into_iter()
            .map(|subscription| (subscription.partition, subscription.into_stream()))
            .collect();
        let mut positions = vec![None; partition_count as usize];
        for &(partition, offset, _) in &starts {
            positions[partition as usize] = Some(offset);
        }
        Ok(Consumer {
            client: self.client,
            topic: self.topic,
            name: self.name,
            commit_durability: self.commit_durability,
            start_offsets: starts.iter().map(|&(p, offset, _)| (p, offset)).collect(),
            end_offsets: starts
                .iter()
                .filter_map(|&(p, _, end)| end.map(|end| (p, end)))
                .collect(),
            follow: self.follow,
            positions,
            subscriptions: Subscriptions(subscriptions),
            current: Vec::new().into_iter(),
        })
    }
}

/// A stream of the records of one or more partitions of a topic.
///
/// Each partition is read by its own `Subscribe` stream, asking for stored
/// batches (`return_encoded_batches`) that are decoded here with the storage
/// codec: records come out as slices of the received buffers, and the server
/// never re-encodes them. The streams are polled by whoever polls the
/// consumer, with no task in between: a chunk that arrives wakes the
/// consumer's task directly.
///
/// Why Subscribe rather than Fetch long polling: a subscription is one call
/// per partition for its whole life, and the server sends a chunk as soon as
/// records arrive, so following the tail costs no request round trip per
/// chunk (lower latency, less CPU on both sides), while HTTP/2 flow control
/// stops the server when this consumer falls behind, which bounds the memory
/// on both ends. After `UNAVAILABLE` or a stream that ends, the partition is
/// resubscribed from the next offset with backoff.
///
/// Records of one partition come in offset order; partitions interleave.
/// The stream ends (without [`ConsumerBuilder::follow`]) once every partition
/// reached the high watermark it had at start, and yields an error (then
/// stops reading that partition) on anything that is not retried, such as
/// [`Error::OutOfRange`] when retention passed the records not read yet.
///
/// ```no_run
/// # async fn example() -> spool_client::Result<()> {
/// use spool_client::{Client, StartPosition};
/// use tokio_stream::StreamExt;
///
/// let client = Client::connect("http://127.0.0.1:7070").await?;
/// let mut consumer = client
///     .consumer("orders")
///     .name("billing")
///     .start(StartPosition::Checkpoint { fallback: Default::default() })
///     .build()
///     .await?;
/// while let Some(record) = consumer.next().await {
///     let record = record?;
///     println!("{}:{} {:?}", record.partition, record.offset, record.value);
///     consumer.commit(record.partition, record.offset + 1).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    topic: String,
    name: Option<String>,
    commit_durability: Durability,
    start_offsets: Vec<(u32, u64)>,
    end_offsets: Vec<(u32, u64)>,
    follow: bool,
    /// Per partition number: the next offset to hand out, for the
    /// partitions read.
    positions: Vec<Option<u64>>,
    subscriptions: Subscriptions,
    current: std::vec::IntoIter<ConsumedRecord>,
}

/// The partitions' subscriptions as one stream of chunks. Dropping it
/// cancels the calls.
struct Subscriptions(StreamMap<u32, ChunkStream>);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Vec<ConsumedRecord>>> + Send>>;

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Consumer {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Where each partition read started, sorted by partition.
    pub fn start_offsets(&self) -> &[(u32, u64)] {
        &self.start_offsets
    }

    /// Without `follow`: where each partition stops (its high watermark at
    /// start), sorted by partition. Empty when following.
    pub fn end_offsets(&self) -> &[(u32, u64)] {
        &self.end_offsets
    }

    /// Records left before the end (without `follow`), counted from the
    /// positions handed out so far. `None` when following.
    pub fn remaining(&self) -> Option<u64> {
        if self.follow {
            return None;
        }
        Some(
            self.end_offsets
                .iter()
                .map(|&(partition, end)| {
                    end.saturating_sub(self.positions[partition as usize].unwrap_or(end))
                })
                .sum(),
        )
    }

    /// The next offset to read in each partition read (one past the last
    /// record handed out), sorted by partition: what
    /// [`commit_all`](Self::commit_all) stores.
    pub fn positions(&self) -> Vec<(u32, u64)> {
        self.positions
            .iter()
            .enumerate()
            .filter_map(|(partition, offset)| offset.map(|offset| (partition as u32, offset)))
            .collect()
    }

    /// Waits for the next records, as they arrived from one partition:
    /// cheaper per record than the [`Stream`] interface. `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<ConsumedRecord>>> {
        let records: Vec<ConsumedRecord> = if self.current.len() > 0 {
            std::mem::take(&mut self.current).collect()
        } else {
            match self.subscriptions.0.next().await? {
                (_, Ok(records)) => records,
                (_, Err(error)) => return Some(Err(error)),
            }
        };
        if let Some(last) = records.last() {
            self.positions[last.partition as usize] = Some(last.offset + 1);
        }
        Some(Ok(records))
    }

    /// Stores `offset` (the next offset to read: one past the last record
    /// processed) as this consumer's checkpoint in `partition`.
    pub async fn commit(&self, partition: u32, offset: u64) -> Result<()> {
        let name = self.name.as_deref().ok_or(Error::NoConsumerName)?;
        self.client
            .commit_checkpoint(name, &self.topic, &[(partition, offset)], self.commit_durability)
            .await?;
        Ok(())
    }

    /// Stores [`positions`](Self::positions) as this consumer's checkpoints.
    pub async fn commit_all(&self) -> Result<()> {
        let name = self.name.as_deref().ok_or(Error::NoConsumerName)?;
        let positions = self.positions();
        if positions.is_empty() {
            return Ok(());
        }
        self.client
            .commit_checkpoint(name, &self.topic, &positions, self.commit_durability)
            .await?;
        Ok(())
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumedRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(record) = this.current.next() {
                this.positions[record.partition as usize] = Some(record.offset + 1);
                return Poll::Ready(Some(Ok(record)));
            }
            match Pin::new(&mut this.subscriptions.0).poll_next(cx) {
                Poll::Ready(Some((_, Ok(records)))) => this.current = records.into_iter(),
                Poll::Ready(Some((_, Err(error)))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One partition's subscription, resubscribing after failures that are
/// worth retrying.
struct Subscription {
    client: Client,
    topic: String,
    partition: u32,
    next_offset: u64,
    end_offset: Option<u64>,
    chunk_bytes_max: u32,
    retries_max: u32,
    /// The current call, once subscribed.
    stream: Option<tonic::Streaming<v1::SubscribeResponse>>,
    /// Failures since the last chunk.
    failures: u32,
    backoff: Duration,
    /// Set after an error that is not retried: the stream ends with it.
    finished: bool,
}

impl Subscription {
    const BACKOFF_START: Duration = Duration::from_millis(50);
    const BACKOFF_MAX: Duration = Duration::from_secs(5);

    fn reached_end(&self) -> bool {
        self.end_offset.is_some_and(|end| self.next_offset >= end)
    }

    fn request(&self) -> v1::SubscribeRequest {
        v1::SubscribeRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.next_offset,
            max_bytes: self.chunk_bytes_max,
            return_encoded_batches: true,
        }
    }

    /// Opens the call ahead of the first poll; a failure is left for
    /// [`next_chunk`](Self::next_chunk) to retry or report.
    async fn open(&mut self) {
        if self.stream.is_none() && !self.reached_end() {
            self.stream = self.client.subscribe(self.request()).await.ok();
        }
    }

    fn into_stream(self) -> ChunkStream {
        Box::pin(futures_util::stream::unfold(
            self,
            |mut subscription| async move {
                let chunk = subscription.next_chunk().await?;
                Some((chunk, subscription))
            },
        ))
    }

    /// The next non-empty chunk; `None` once the end offset is reached or
    /// after an error that was not retried.
    async fn next_chunk(&mut self) -> Option<Result<Vec<ConsumedRecord>>> {
        loop {
            if self.finished || self.reached_end() {
                return None;
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => match self.client.subscribe(self.request()).await {
                    Ok(stream) => self.stream.insert(stream),
                    Err(error) => {
                        if let Err(error) = self.retry(Some(error)).await {
                            return Some(Err(error));
                        }
                        continue;
                    }
                },
            };
            let failure = match stream.message().await {
                Ok(Some(response)) => {
                    self.failures = 0;
                    self.backoff = Self::BACKOFF_START;
                    match self.decode(response) {
                        Ok(records) if records.is_empty() => continue,
                        Ok(records) => return Some(Ok(records)),
                        Err(error) => {
                            self.finished = true;
                            return Some(Err(error));
                        }
                    }
                }
                // A stream that ends without a status is resubscribed too.
                Ok(None) => None,
                Err(status) => Some(Error::from(status)),
            };
            self.stream = None;
            if let Err(error) = self.retry(failure).await {
                return Some(Err(error));
            }
        }
    }

    /// Waits out the backoff before resubscribing, or gives the error back
    /// when it is not worth retrying (the subscription then ends with it).
    async fn retry(&mut self, error: Option<Error>) -> Result<()> {
        let retryable = error.as_ref().is_none_or(Error::is_retryable);
        if !retryable || self.failures >= self.retries_max {
            self.finished = true;
            return Err(error.unwrap_or_else(|| Error::protocol("the subscription ended")));
        }
        self.failures += 1;
        tracing::debug!(
            topic = %self.topic, partition = self.partition, offset = self.next_offset,
            failures = self.failures, error = ?error, "resubscribing"
        );
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Self::BACKOFF_MAX);
        Ok(())
    }

    fn decode(&mut self, mut response: v1::SubscribeResponse) -> Result<Vec<ConsumedRecord>> {
        let mut records = Vec::new();
        decode_batches(
            self.partition,
            std::mem::take(&mut response.encoded_batches),
            self.next_offset,
            self.end_offset,
            &mut records,
        )?;
        // A server may answer with plain records even when asked for
        // batches; take them as they are.
        let end = self.end_offset.unwrap_or(u64::MAX);
        records.extend(
            std::mem::take(&mut response.records)
                .into_iter()
                .filter(|record| record.offset >= self.next_offset && record.offset < end)
                .map(|record| ConsumedRecord::from_proto(self.partition, record)),
        );
        self.next_offset = match records.last() {
            Some(last) if self.end_offset.is_some_and(|end| last.offset + 1 >= end) => last.offset + 1,
            _ => response.next_offset.max(self.next_offset),
        };
        Ok(records)
    }
}

fn offsets_map(offsets: Vec<crate::client::PartitionOffset>) -> BTreeMap<u32, u64> {
    offsets
        .into_iter()
        .map(|offset| (offset.partition, offset.offset))
        .collect()
}

fn stored_map(checkpoints: &[crate::client::Checkpoint]) -> BTreeMap<u32, u64> {
    checkpoints
        .iter()
        .map(|checkpoint| (checkpoint.partition, checkpoint.offset))
        .collect()
}

/// Start offsets from stored checkpoints: the fallback where there is none,
/// clamped into `[earliest, latest]` where retention or a recreated topic
/// left a checkpoint outside the log.
fn resolve_checkpoints(
    partitions: &[u32],
    stored: &BTreeMap<u32, u64>,
    earliest: &BTreeMap<u32, u64>,
    latest: &BTreeMap<u32, u64>,
    fallback: CheckpointFallback,
) -> BTreeMap<u32, u64> {
    partitions
        .iter()
        .filter_map(|&partition| {
            let low = *earliest.get(&partition)?;
            let high = *latest.get(&partition)?;
            let offset = match (stored.get(&partition), fallback) {
                (Some(&offset), _) => {
                    if offset < low || offset > high {
                        tracing::warn!(
                            partition,
                            checkpoint = offset,
                            earliest = low,
                            latest = high,
                            "checkpoint outside the log; clamping"
                        );
                    }
                    offset.clamp(low, high.max(low))
                }
                (None, CheckpointFallback::Earliest) => low,
                (None, CheckpointFallback::Latest) => high,
            };
            Some((partition, offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_fall_back_and_are_clamped_into_the_log() {
        let earliest = BTreeMap::from([(0, 10), (1, 0), (2, 5), (3, 0)]);
        let latest = BTreeMap::from([(0, 100), (1, 50), (2, 5), (3, 7)]);
        let stored = BTreeMap::from([(0, 3), (1, 20), (3, 9)]);
        let resolved = resolve_checkpoints(
            &[0, 1, 2, 3],
            &stored,
            &earliest,
            &latest,
            CheckpointFallback::Latest,
        );
        // Below the log start: earliest. Inside: as stored. None: fallback.
        // Past the end (topic recreated): latest.
        assert_eq!(resolved, BTreeMap::from([(0, 10), (1, 20), (2, 5), (3, 7)]));
        let resolved = resolve_checkpoints(&[2], &stored, &earliest, &latest, CheckpointFallback::Earliest);
        assert_eq!(resolved, BTreeMap::from([(2, 5)]));
    }
}
