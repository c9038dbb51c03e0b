//! The idempotent producer's client side: a producer id per partition
//! (from `Log.InitProducer`), batches numbered with the partition's next
//! sequence, and retries that resend the same numbered bytes, so the
//! server stores a retried batch once and answers it with the original
//! offsets.
//!
//! A partition sends one numbered batch at a time (its lock is held from
//! numbering to the answer): the server refuses a sequence that does not
//! follow the last one it stored, and two requests in flight could arrive
//! out of order. When a batch fails for good its outcome may be unknown
//! (stored, but the answer lost); the partition then takes a new producer
//! id for its next batch, starting again at sequence 0, so that the next
//! batch is neither refused as out of order nor mistaken for the failed
//! one.

use bytes::{Bytes, BytesMut};
use spool_format::batch::{self, ProducerFields};
use tokio::sync::Mutex;

use crate::client::Client;
use crate::error::Result;

/// What the server calls a batch of a producer id it does not remember
/// (`spool-producer-error` metadata).
const UNKNOWN_PRODUCER: &str = "unknown-producer";

/// Sequence numbering of one producer's partitions.
#[derive(Debug)]
pub(super) struct Sequencer {
    partitions: Vec<Mutex<Session>>,
}

/// One partition's producer id and the sequence its next batch gets;
/// `None` until the first batch, and again after a batch failed for good.
#[derive(Debug, Default)]
struct Session {
    producer: Option<(i64, i16)>,
    next_sequence: i32,
}

impl Sequencer {
    /// A sequencer for `partitions` partitions, each starting with `first`
    /// (the id `Producer::new` asked for, which also checks that the server
    /// has `InitProducer`): sequences are per partition, so one id serves
    /// them all.
    pub(super) fn new(partitions: u32, first: (i64, i16)) -> Sequencer {
        let partitions = (0..partitions)
            .map(|_| {
                Mutex::new(Session {
                    producer: Some(first),
                    next_sequence: 0,
                })
            })
            .collect::<Vec<_>>();
        Sequencer { partitions }
    }

    /// Numbers `encoded` for `partition` and sends it with `send` (which
    /// retries), taking a new producer id when the server no longer knows
    /// the partition's.
    pub(super) async fn send<T, F, Fut>(
        &self,
        client: &Client,
        topic: &str,
        partition: u32,
        encoded: Bytes,
        record_count: u64,
        send: F,
    ) -> Result<T>
    where
        F: Fn(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut session = self.partitions[partition as usize].lock().await;
        let mut fresh_id_taken = false;
        loop {
            let (producer_id, producer_epoch) = match session.producer {
                Some(producer) => producer,
                None => {
                    let producer = client.init_producer(topic).await?;
                    *session = Session {
                        producer: Some(producer),
                        next_sequence: 0,
                    };
                    fresh_id_taken = true;
                    producer
                }
            };
            let mut bytes = BytesMut::from(encoded.clone());
            batch::stamp_producer(
                &mut bytes,
                ProducerFields {
                    producer_id,
                    producer_epoch,
                    base_sequence: session.next_sequence,
                },
            );
            match send(bytes.freeze()).await {
                Ok(answer) => {
                    session.next_sequence = add_sequence(session.next_sequence, record_count);
                    return Ok(answer);
                }
                // The partition forgot the id (its state expired): the batch
                // was not stored under it. Once with a fresh id.
                Err(error) if error.producer_error() == Some(UNKNOWN_PRODUCER) && !fresh_id_taken => {
                    session.producer = None;
                }
                Err(error) => {
                    session.producer = None;
                    return Err(error);
                }
            }
        }
    }
}

/// `sequence + count` in Kafka's sequence space, which wraps from
/// `i32::MAX` to 0.
fn add_sequence(sequence: i32, count: u64) -> i32 {
    let span = u64::from(i32::MAX as u32) + 1;
    ((sequence as u64 + count % span) % span) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_to_zero() {
        assert_eq!(add_sequence(0, 5), 5);
        assert_eq!(add_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 4), 2);
    }
}
