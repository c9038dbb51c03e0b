//! The size limits a producer's records must stay under, checked before a
//! record is batched: the server's (as `GetServerInfo` reported them when
//! the producer was created), the topic's segment size and this client's
//! own message limit. A record the server would refuse is refused here,
//! with every limit it exceeds named, instead of failing its whole batch
//! (or the HTTP/2 stream, for a message over `request_bytes_max`).
//!
//! Sizes come from field lengths alone (`Record::stored_bytes`), so a
//! check costs no encoding and no copy.

use crate::client::ServerLimits;
use crate::error::{Error, ExceededLimit, Result, SizeLimit};
use crate::record::{single_record_batch_bytes, stored_bytes, varint_bytes};

/// What a producer checks its records against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceLimits {
    /// `None` for a server that does not report its limits (one older than
    /// `GetServerInfo`): the server then checks them alone.
    pub server: Option<ServerLimits>,
    /// The topic's segment size: no batch may be larger.
    pub segment_bytes: u64,
    /// This client's largest message ([`crate::ClientOptions::message_bytes_max`]).
    pub client_message_bytes_max: u64,
    /// Bytes of the topic's name, which every request carries.
    pub topic_bytes: u64,
}

impl ProduceLimits {
    /// Every limit a record of `stored_bytes` (see `Record::stored_bytes`)
    /// exceeds as the first record of a batch, tightest first.
    pub fn exceeded(&self, stored_bytes: u64) -> Vec<ExceededLimit> {
        let mut exceeded: Vec<ExceededLimit> = self
            .checks(stored_bytes)
            .into_iter()
            .flatten()
            .filter(|&(_, actual_bytes, max_bytes)| actual_bytes > max_bytes)
            .map(|(limit, actual_bytes, max_bytes)| ExceededLimit {
                limit,
                actual_bytes,
                max_bytes,
            })
            .collect();
        exceeded.sort_by_key(|e| e.max_bytes);
        exceeded
    }

    /// `Ok` for a record of `stored_bytes` within every limit, else
    /// [`Error::RecordTooLarge`].
    ///
    /// Runs once per record a producer takes, so the common answer costs
    /// comparisons only: the list of exceeded limits is built (and
    /// allocated) only for a record that fails.
    pub fn check(&self, stored_bytes: u64) -> Result<()> {
        let within = self
            .checks(stored_bytes)
            .into_iter()
            .flatten()
            .all(|(_, actual_bytes, max_bytes)| actual_bytes <= max_bytes);
        if within {
            Ok(())
        } else {
            Err(Error::RecordTooLarge {
                exceeded: self.exceeded(stored_bytes),
            })
        }
    }

    /// Each limit with the size it measures for a record of `stored_bytes`
    /// as the first of a batch, and its maximum; the server's are `None`
    /// when the server did not report them.
    fn checks(&self, stored_bytes: u64) -> [Option<(SizeLimit, u64, u64)>; 5] {
        let batch_bytes = single_record_batch_bytes(stored_bytes);
        let request_bytes = self.request_bytes(batch_bytes);
        let server = self.server;
        [
            Some((SizeLimit::SegmentBytes, batch_bytes, self.segment_bytes)),
            Some((
                SizeLimit::ClientMessageBytesMax,
                request_bytes,
                self.client_message_bytes_max,
            )),
            server.map(|server| (SizeLimit::RecordBytesMax, stored_bytes, server.record_bytes_max)),
            server.map(|server| (SizeLimit::BatchBytesMax, batch_bytes, server.batch_bytes_max)),
            server.map(|server| {
                (
                    SizeLimit::RequestBytesMax,
                    request_bytes,
                    server.request_bytes_max,
                )
            }),
        ]
    }

    /// As [`check`](Self::check), for a record with a key of `key_bytes`, a
    /// value of `value_bytes` and no headers, sized from the lengths alone:
    /// for input known to be too large before it is held whole.
    pub fn check_value(&self, key_bytes: Option<usize>, value_bytes: usize) -> Result<()> {
        self.check(stored_bytes(key_bytes, Some(value_bytes), std::iter::empty()))
    }

    /// The tightest limit, in bytes: a record whose key, value and headers
    /// together are larger certainly exceeds it (each limit measures at
    /// least those bytes). A bound for reading input before it is a record.
    pub fn record_payload_bytes_max(&self) -> u64 {
        let mut tightest = self.segment_bytes.min(self.client_message_bytes_max);
        if let Some(server) = self.server {
            tightest = tightest
                .min(server.record_bytes_max)
                .min(server.batch_bytes_max)
                .min(server.request_bytes_max);
        }
        tightest
    }

    /// The largest batch the producer may build, in bytes: within the
    /// server's batch limit and the topic's segment, and small enough that
    /// its request fits the server's and the client's message limits.
    pub fn batch_bytes_max(&self) -> u64 {
        let request_max = self.server.map_or(self.client_message_bytes_max, |server| {
            server.request_bytes_max.min(self.client_message_bytes_max)
        });
        let mut batch_max = self
            .segment_bytes
            .min(request_max.saturating_sub(self.request_framing_bytes_max()));
        if let Some(server) = self.server {
            batch_max = batch_max.min(server.batch_bytes_max);
        }
        batch_max
    }

    /// Bytes of the Produce request carrying one encoded batch of
    /// `batch_bytes`: the topic, partition and durability fields and the
    /// batch's own field. Sized with the smallest partition number's field,
    /// so a request is never refused here that the server would take.
    fn request_bytes(&self, batch_bytes: u64) -> u64 {
        let topic = 1 + varint_bytes(self.topic_bytes) + self.topic_bytes;
        let partition = 2;
        let durability = 2;
        topic + partition + durability + 1 + varint_bytes(batch_bytes) + batch_bytes
    }

    /// The most bytes a Produce request adds around its batch: the topic,
    /// the largest partition number, the durability and the batch field's
    /// tag and length.
    fn request_framing_bytes_max(&self) -> u64 {
        let topic = 1 + varint_bytes(self.topic_bytes) + self.topic_bytes;
        topic + 6 + 2 + 1 + 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ServerLimits = ServerLimits {
        request_bytes_max: 16 << 20,
        record_bytes_max: 1 << 20,
        batch_bytes_max: 8 << 20,
        fetch_bytes_max: 3 << 20,
        job_payload_bytes_max: 512 << 10,
    };

    fn limits(server: Option<ServerLimits>) -> ProduceLimits {
        ProduceLimits {
            server,
            segment_bytes: 1 << 30,
            client_message_bytes_max: 64 << 20,
            topic_bytes: 6,
        }
    }

    fn names(exceeded: &[ExceededLimit]) -> Vec<&'static str> {
        exceeded.iter().map(|e| e.limit.name()).collect()
    }

    #[test]
    fn a_record_over_several_limits_names_them_all_tightest_first() {
        let limits = limits(Some(SERVER));
        assert!(limits.exceeded(1 << 20).is_empty(), "exactly record_bytes_max");
        assert_eq!(names(&limits.exceeded((1 << 20) + 1)), ["record_bytes_max"]);
        let huge = limits.exceeded(100 << 20);
        assert_eq!(
            names(&huge),
            [
                "record_bytes_max",
                "batch_bytes_max",
                "request_bytes_max",
                "message_bytes_max"
            ]
        );
        assert_eq!(huge[0].actual_bytes, 100 << 20);
        assert!(
            huge[1].actual_bytes > huge[0].actual_bytes,
            "a batch is more than its record"
        );
        match limits.check(100 << 20) {
            Err(Error::RecordTooLarge { exceeded }) => assert_eq!(exceeded, huge),
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn without_the_server_s_limits_only_the_client_s_and_the_topic_s_are_checked() {
        let limits = ProduceLimits {
            segment_bytes: 1 << 20,
            ..limits(None)
        };
        assert!(limits.exceeded((1 << 20) - 100).is_empty());
        assert_eq!(names(&limits.exceeded(2 << 20)), ["segment_bytes"]);
        assert_eq!(limits.record_payload_bytes_max(), 1 << 20);
    }

    #[test]
    fn batches_fit_every_limit_and_the_request_around_them() {
        assert_eq!(limits(Some(SERVER)).batch_bytes_max(), 8 << 20);
        let tight_request = ServerLimits {
            request_bytes_max: 8 << 20,
            ..SERVER
        };
        let batch_max = limits(Some(tight_request)).batch_bytes_max();
        assert!(batch_max < 8 << 20);
        let limits = limits(Some(tight_request));
        assert!(limits.request_bytes(batch_max) <= 8 << 20);
        assert_eq!(limits.record_payload_bytes_max(), 1 << 20);
    }
}
