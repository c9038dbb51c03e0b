//! The producer's batching decisions, with no network and no clock of its
//! own: every method takes `now`, so tests drive time by hand.
//!
//! Per partition there is at most one *open* batch (accepting records), a
//! bounded queue of *closed* batches (full, or closed by a flush) waiting for
//! the partition's sender, and at most one batch *in flight*. The sender
//! takes a closed batch first, else the open one once it is full or has
//! lingered long enough. While a request is in flight, records keep
//! collecting in the open batch: under load batches fill up by themselves,
//! even with a linger of zero.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spool_format::batch::HEADER_BYTES;

use super::delivery::{BatchDelivery, CompleteOnDrop};
use crate::record::Record;

/// A batch being filled or waiting to be sent.
#[derive(Debug)]
pub(crate) struct PendingBatch {
    pub(crate) partition: u32,
    pub(crate) records: Vec<Record>,
    /// Estimated encoded size, header included.
    pub(crate) bytes: usize,
    pub(crate) created: Instant,
    pub(crate) delivery: CompleteOnDrop,
}

impl PendingBatch {
    fn new(partition: u32, now: Instant) -> Self {
        PendingBatch {
            partition,
            records: Vec::new(),
            bytes: HEADER_BYTES,
            created: now,
            delivery: CompleteOnDrop(Arc::new(BatchDelivery::default())),
        }
    }
}

/// What a partition's sender should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Send this batch now.
    Send(PendingBatch),
    /// Nothing is due before this instant (the open batch's linger end).
    WaitUntil(Instant),
    /// Nothing to send.
    Idle,
}

/// A record was accepted into a batch.
#[derive(Debug)]
pub(crate) struct Appended {
    pub(crate) partition: u32,
    pub(crate) delivery: Arc<BatchDelivery>,
    pub(crate) index: u32,
    /// `partition`'s sender has something new to consider (a new batch
    /// whose linger starts, or a full one).
    pub(crate) wake_sender: bool,
    /// Batches were closed in these partitions to make room: wake their
    /// senders. Empty most of the time (no allocation then).
    pub(crate) closed_in: Vec<u32>,
}

/// The partition's closed-batch queue is full: wait until its sender takes
/// one, then try again with the record handed back.
#[derive(Debug)]
pub(crate) struct QueueFull {
    pub(crate) partition: u32,
    pub(crate) record: Record,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<PendingBatch>,
    closed: VecDeque<PendingBatch>,
    in_flight: Option<Arc<BatchDelivery>>,
}

/// Batches records per partition by size and linger time.
#[derive(Debug)]
pub(crate) struct Accumulator {
    partitions: Vec<PartitionQueue>,
    /// Partition that receives records without a key; it moves on each time
    /// one of its batches closes (Kafka's sticky partitioner).
    sticky: u32,
    batch_bytes_max: usize,
    linger: Duration,
    queued_batches_max: usize,
}

impl Accumulator {
    pub(crate) fn new(
        partitions: u32,
        batch_bytes_max: usize,
        linger: Duration,
        queued_batches_max: usize,
    ) -> Self {
        assert!(partitions > 0, "a topic has at least one partition");
        Accumulator {
            partitions: (0..partitions).map(|_| PartitionQueue::default()).collect(),
            sticky: 0,
            batch_bytes_max: batch_bytes_max.max(HEADER_BYTES + 1),
            linger,
            queued_batches_max: queued_batches_max.max(1),
        }
    }

    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The partition that records without a key go to right now.
    #[cfg(test)]
    pub(crate) fn sticky_partition(&self) -> u32 {
        self.sticky
    }

    fn rotate_if_sticky(&mut self, partition: u32) {
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % self.partition_count();
        }
    }

    /// Adds `record` to `partition`'s open batch, or to the sticky
    /// partition's when `partition` is `None`. `now` is asked only when a
    /// batch opens (reading the clock per record shows in profiles).
    pub(crate) fn append(
        &mut self,
        partition: Option<u32>,
        record: Record,
        now: impl Fn() -> Instant,
    ) -> Result<Appended, QueueFull> {
        let size = record.encoded_bytes_estimate();
        let mut closed_in = Vec::new();
        // Unkeyed records follow the sticky partition, which moves on when
        // its open batch is full; a full lap means every queue is full.
        for _ in 0..=self.partitions.len() {
            let target = partition.unwrap_or(self.sticky);
            let queue = &mut self.partitions[target as usize];
            let overflows = queue
                .open
                .as_ref()
                .is_some_and(|open| !open.records.is_empty() && open.bytes + size > self.batch_bytes_max);
            if overflows {
                if queue.closed.len() >= self.queued_batches_max {
                    return Err(QueueFull {
                        partition: target,
                        record,
                    });
                }
                let full = queue.open.take().expect("checked above");
                queue.closed.push_back(full);
                closed_in.push(target);
                self.rotate_if_sticky(target);
                if partition.is_none() {
                    // The record belongs to the next sticky partition.
                    continue;
                }
            }
            let queue = &mut self.partitions[target as usize];
            let mut wake_sender = false;
            let open = queue.open.get_or_insert_with(|| {
                wake_sender = true;
                PendingBatch::new(target, now())
            });
            let index = open.records.len() as u32;
            open.bytes += size;
            open.records.push(record);
            if open.bytes >= self.batch_bytes_max {
                wake_sender = true;
            }
            return Ok(Appended {
                partition: target,
                delivery: open.delivery.0.clone(),
                index,
                wake_sender,
                closed_in,
            });
        }
        Err(QueueFull {
            partition: self.sticky,
            record,
        })
    }

    /// Partitions with closed batches waiting: their senders must be woken.
    pub(crate) fn partitions_with_closed_batches(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions
            .iter()
            .enumerate()
            .filter(|(_, queue)| !queue.closed.is_empty())
            .map(|(partition, _)| partition as u32)
    }

    /// The next batch `partition`'s sender should send. With `force` (the
    /// producer is closing) an open batch goes at once, linger or not.
    pub(crate) fn next_to_send(&mut self, partition: u32, now: Instant, force: bool) -> Next {
        let queue = &mut self.partitions[partition as usize];
        if queue.in_flight.is_some() {
            return Next::Idle;
        }
        if let Some(batch) = queue.closed.pop_front() {
            queue.in_flight = Some(batch.delivery.0.clone());
            return Next::Send(batch);
        }
        let Some(open) = &queue.open else {
            return Next::Idle;
        };
        let due = open.created + self.linger;
        if force || open.bytes >= self.batch_bytes_max || now >= due {
            let batch = queue.open.take().expect("checked above");
            queue.in_flight = Some(batch.delivery.0.clone());
            self.rotate_if_sticky(partition);
            Next::Send(batch)
        } else {
            Next::WaitUntil(due)
        }
    }

    /// `partition`'s in-flight batch has its outcome.
    pub(crate) fn sent(&mut self, partition: u32) {
        self.partitions[partition as usize].in_flight = None;
    }

    /// For a flush: closes every open batch (past the queue bound if need
    /// be) and returns the deliveries of everything not yet acknowledged.
    pub(crate) fn close_open_batches(&mut self) -> Vec<Arc<BatchDelivery>> {
        let mut pending = Vec::new();
        for partition in 0..self.partition_count() {
            let queue = &mut self.partitions[partition as usize];
            if let Some(open) = queue.open.take() {
                queue.closed.push_back(open);
                self.rotate_if_sticky(partition);
            }
            let queue = &self.partitions[partition as usize];
            pending.extend(queue.in_flight.iter().cloned());
            pending.extend(queue.closed.iter().map(|batch| batch.delivery.0.clone()));
        }
        pending
    }

    /// True when `partition` holds no record that is not acknowledged.
    #[cfg(test)]
    pub(crate) fn is_drained(&self, partition: u32) -> bool {
        let queue = &self.partitions[partition as usize];
        queue.open.is_none() && queue.closed.is_empty() && queue.in_flight.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn record(value_bytes: usize) -> Record {
        Record::new(vec![b'x'; value_bytes])
    }

    fn sent_records(next: Next) -> Vec<Record> {
        match next {
            Next::Send(batch) => batch.records,
            other => panic!("expected a batch to send, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_waits_for_its_linger_time() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(1, 64 * 1024, 5 * MS, 2);
        let first = accumulator.append(Some(0), record(100), || start).unwrap();
        assert!(
            first.wake_sender,
            "a new batch must start the sender's linger timer"
        );
        let second = accumulator.append(Some(0), record(100), || start + MS).unwrap();
        assert!(!second.wake_sender);
        assert_eq!((first.index, second.index), (0, 1));
        assert!(Arc::ptr_eq(&first.delivery, &second.delivery));

        match accumulator.next_to_send(0, start + 4 * MS, false) {
            Next::WaitUntil(due) => assert_eq!(due, start + 5 * MS),
            other => panic!("sent before the linger ended: {other:?}"),
        }
        assert_eq!(
            sent_records(accumulator.next_to_send(0, start + 5 * MS, false)).len(),
            2
        );
        // One request in flight per partition keeps records in order.
        accumulator
            .append(Some(0), record(100), || start + 6 * MS)
            .unwrap();
        assert!(matches!(
            accumulator.next_to_send(0, start + 60 * MS, false),
            Next::Idle
        ));
        accumulator.sent(0);
        assert_eq!(
            sent_records(accumulator.next_to_send(0, start + 60 * MS, false)).len(),
            1
        );
        accumulator.sent(0);
        assert!(accumulator.is_drained(0));
    }

    #[test]
    fn a_full_batch_goes_without_waiting_and_the_queue_is_bounded() {
        let start = Instant::now();
        // Room for three 100-byte records per batch.
        let per_record = record(100).encoded_bytes_estimate();
        let mut accumulator = Accumulator::new(1, HEADER_BYTES + 3 * per_record, 1000 * MS, 1);
        for _ in 0..3 {
            accumulator.append(Some(0), record(100), || start).unwrap();
        }
        // The fourth record closes the first batch and opens a second.
        let fourth = accumulator.append(Some(0), record(100), || start).unwrap();
        assert_eq!(fourth.closed_in, [0]);
        assert_eq!(fourth.index, 0);
        for _ in 0..2 {
            accumulator.append(Some(0), record(100), || start).unwrap();
        }
        // The second batch is full and the closed queue (1) too: wait.
        let full = accumulator.append(Some(0), record(100), || start).unwrap_err();
        assert_eq!(full.partition, 0);

        // The sender takes the closed batch at once, then the full open one.
        assert_eq!(sent_records(accumulator.next_to_send(0, start, false)).len(), 3);
        accumulator.sent(0);
        assert_eq!(sent_records(accumulator.next_to_send(0, start, false)).len(), 3);
        accumulator.append(Some(0), full.record, || start).unwrap();
    }

    #[test]
    fn a_record_larger_than_a_batch_travels_alone() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(1, 1024, 1000 * MS, 2);
        accumulator.append(Some(0), record(10), || start).unwrap();
        let big = accumulator.append(Some(0), record(5000), || start).unwrap();
        assert_eq!(big.index, 0, "the big record starts its own batch");
        assert_eq!(sent_records(accumulator.next_to_send(0, start, false)).len(), 1);
        accumulator.sent(0);
        let sent = sent_records(accumulator.next_to_send(0, start, false));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].value.as_ref().unwrap().len(), 5000);
    }

    #[test]
    fn unkeyed_records_stick_to_a_partition_per_batch_and_rotate() {
        let start = Instant::now();
        let per_record = record(100).encoded_bytes_estimate();
        let mut accumulator = Accumulator::new(3, HEADER_BYTES + 2 * per_record, 1000 * MS, 4);
        let partitions: Vec<u32> = (0..7)
            .map(|_| accumulator.append(None, record(100), || start).unwrap().partition)
            .collect();
        assert_eq!(partitions, [0, 0, 1, 1, 2, 2, 0]);

        // A batch sent on linger expiry also moves the sticky partition on.
        let mut accumulator = Accumulator::new(3, 64 * 1024, 5 * MS, 4);
        assert_eq!(
            accumulator.append(None, record(1), || start).unwrap().partition,
            0
        );
        sent_records(accumulator.next_to_send(0, start + 5 * MS, false));
        assert_eq!(accumulator.sticky_partition(), 1);
        assert_eq!(
            accumulator.append(None, record(1), || start).unwrap().partition,
            1
        );
    }

    #[test]
    fn keyed_records_do_not_move_the_sticky_partition_unless_they_close_its_batch() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(4, 64 * 1024, 5 * MS, 4);
        accumulator.append(Some(2), record(1), || start).unwrap();
        sent_records(accumulator.next_to_send(2, start + 5 * MS, false));
        assert_eq!(accumulator.sticky_partition(), 0);
    }

    #[test]
    fn flush_closes_open_batches_and_lists_everything_pending() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(2, 64 * 1024, 1000 * MS, 1);
        accumulator.append(Some(0), record(1), || start).unwrap();
        accumulator.append(Some(1), record(1), || start).unwrap();
        sent_records(accumulator.next_to_send(0, start, true));
        accumulator.append(Some(0), record(1), || start).unwrap();

        let pending = accumulator.close_open_batches();
        assert_eq!(pending.len(), 3, "one in flight and two closed");
        let woken: Vec<u32> = accumulator.partitions_with_closed_batches().collect();
        assert_eq!(woken, [0, 1]);
        // Closed by the flush, they go without waiting for the linger.
        assert_eq!(sent_records(accumulator.next_to_send(1, start, false)).len(), 1);
    }

    #[test]
    fn zero_linger_sends_whatever_collected_while_the_last_request_was_in_flight() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(1, 64 * 1024, Duration::ZERO, 2);
        accumulator.append(Some(0), record(1), || start).unwrap();
        assert_eq!(sent_records(accumulator.next_to_send(0, start, false)).len(), 1);
        for _ in 0..50 {
            accumulator.append(Some(0), record(1), || start).unwrap();
        }
        accumulator.sent(0);
        assert_eq!(sent_records(accumulator.next_to_send(0, start, false)).len(), 50);
    }
}
