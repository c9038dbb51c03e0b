//! Acknowledgements: one shared outcome per batch, one small future per
//! record.
//!
//! A batch's records all succeed or fail together, so the outcome is stored
//! once ([`BatchDelivery`]) and each record's [`DeliveryFuture`] holds an
//! `Arc` to it plus its index. That costs one reference-count increment per
//! record instead of a channel per record.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::client::Durability;
use crate::error::{Error, Result};

/// Where a record was appended, and how durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordAck {
    pub partition: u32,
    pub offset: u64,
    /// Durability the server reached for the record's batch.
    pub durability: Durability,
}

/// Where a batch was appended: its records hold every offset from
/// `base_offset` to `last_offset`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
    /// Durability the server reached.
    pub durability: Durability,
    /// Server time of the append, Unix epoch milliseconds.
    pub log_append_time_ms: i64,
    /// An idempotent producer's retry of a batch the server had stored:
    /// the offsets are the original's (the first attempt's answer was
    /// lost).
    pub duplicate: bool,
}

impl BatchAck {
    /// Number of records in the batch.
    pub fn record_count(&self) -> u64 {
        self.last_offset - self.base_offset + 1
    }
}

/// The outcome of one batch, shared by the acknowledgements of its records.
#[derive(Debug, Default)]
pub(crate) struct BatchDelivery {
    outcome: OnceLock<Result<BatchAck>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchDelivery {
    /// Records the outcome (the first one wins) and wakes every waiter.
    pub(crate) fn complete(&self, outcome: Result<BatchAck>) {
        let _ = self.outcome.set(outcome);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.outcome.get().is_some()
    }

    /// Ready once [`complete`](Self::complete) has run.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<&Result<BatchAck>> {
        if let Some(outcome) = self.outcome.get() {
            return Poll::Ready(outcome);
        }
        let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        // `complete` sets the outcome before it takes the wakers under this
        // lock: either it is visible now or our waker will be taken.
        if let Some(outcome) = self.outcome.get() {
            return Poll::Ready(outcome);
        }
        if !wakers.last().is_some_and(|last| last.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits for the outcome.
    pub(crate) async fn wait(&self) -> Result<BatchAck> {
        std::future::poll_fn(|cx| self.poll_outcome(cx)).await.clone()
    }
}

/// Resolves to one record's [`RecordAck`] once its batch is acknowledged, or
/// to the batch's error.
///
/// Dropping it does not cancel the record: it is sent anyway, and a failure
/// is then only reported by [`Producer::flush`](crate::Producer::flush).
#[derive(Debug)]
#[must_use = "a DeliveryFuture does nothing unless awaited; drop it to ignore the acknowledgement"]
pub struct DeliveryFuture {
    pub(crate) delivery: Arc<BatchDelivery>,
    pub(crate) index: u32,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordAck>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        self.delivery.poll_outcome(cx).map(|outcome| match outcome {
            Ok(ack) => Ok(RecordAck {
                partition: ack.partition,
                offset: ack.base_offset + u64::from(index),
                durability: ack.durability,
            }),
            Err(error) => Err(error.clone()),
        })
    }
}

/// Completes a batch with [`Error::ProducerClosed`] if it is dropped before
/// being sent, so that no acknowledgement waits forever.
#[derive(Debug)]
pub(crate) struct CompleteOnDrop(pub(crate) Arc<BatchDelivery>);

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        if !self.0.is_complete() {
            self.0.complete(Err(Error::ProducerClosed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_of_a_batch_gets_its_own_offset() {
        let delivery = Arc::new(BatchDelivery::default());
        let futures: Vec<DeliveryFuture> = (0..3)
            .map(|index| DeliveryFuture {
                delivery: delivery.clone(),
                index,
            })
            .collect();
        let waiter = tokio::spawn(async move {
            let mut acks = Vec::new();
            for future in futures {
                acks.push(future.await.unwrap());
            }
            acks
        });
        tokio::task::yield_now().await;
        delivery.complete(Ok(BatchAck {
            partition: 2,
            base_offset: 10,
            last_offset: 12,
            durability: Durability::Fsync,
            log_append_time_ms: 0,
            duplicate: false,
        }));
        let offsets: Vec<u64> = waiter.await.unwrap().iter().map(|ack| ack.offset).collect();
        assert_eq!(offsets, [10, 11, 12]);
    }

    #[tokio::test]
    async fn a_dropped_batch_fails_its_records() {
        let delivery = Arc::new(BatchDelivery::default());
        let future = DeliveryFuture {
            delivery: delivery.clone(),
            index: 0,
        };
        drop(CompleteOnDrop(delivery));
        assert!(matches!(future.await, Err(Error::ProducerClosed)));
    }
}
