//! Job events: every change of a job's state, as appended to the log.
//!
//! Each event carries the decision made, not just the request: the lease's
//! end, a retry's not-before time (with its jitter), the attempt number. So
//! replaying the events rebuilds exactly the state that was served, without
//! consulting a clock or a random number generator.

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::job::JobId;
use crate::queue::{Backoff, QueueConfig, RateLimit};

/// Why a dead job was purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeReason {
    Requested,
    Retention,
    /// Its queue was deleted.
    QueueDeleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Enqueued {
        id: JobId,
        at_ms: i64,
        queue: String,
        payload: Bytes,
        content_type: String,
        headers: Vec<(String, String)>,
        priority: i32,
        attempts_max: u32,
        timeout_ms: u64,
        run_at_ms: i64,
        idempotency_key: Option<String>,
        /// End of the idempotency key's dedup window.
        dedup_until_ms: Option<i64>,
    },
    Claimed {
        id: JobId,
        at_ms: i64,
        attempt: u32,
        token: u64,
        lease_until_ms: i64,
        worker: String,
    },
    LeaseExtended {
        id: JobId,
        at_ms: i64,
        lease_until_ms: i64,
        progress: Option<String>,
    },
    Completed {
        id: JobId,
        at_ms: i64,
        result: Bytes,
    },
    /// An attempt failed (reported by the worker, or its lease ran out).
    /// `retry_at_ms` is the next not-before time, or `None` when the job is
    /// now dead.
    Failed {
        id: JobId,
        at_ms: i64,
        attempt: u32,
        error: String,
        retry_at_ms: Option<i64>,
        lease_expired: bool,
    },
    /// A worker gave a job back unrun (shutdown): available again at once,
    /// and the attempt does not count.
    Released {
        id: JobId,
        at_ms: i64,
    },
    CancelRequested {
        id: JobId,
        at_ms: i64,
    },
    Cancelled {
        id: JobId,
        at_ms: i64,
    },
    /// A dead job made available again with a fresh budget of attempts.
    Redriven {
        id: JobId,
        at_ms: i64,
    },
    Purged {
        id: JobId,
        at_ms: i64,
        reason: PurgeReason,
    },
    /// A queue was paused (claims stop handing out its jobs) or resumed.
    /// Not about one job: its id, and its record key, are 0.
    QueuePaused {
        at_ms: i64,
        queue: String,
        paused: bool,
    },
    /// A queue's whole configuration after a change (not the change).
    /// Not about one job: its id, and its record key, are 0.
    QueueConfigured {
        at_ms: i64,
        queue: String,
        config: QueueConfig,
    },
    /// A queue was deleted: it is forgotten with its configuration and
    /// pause. Its jobs were purged by the events just before this one.
    QueueDeleted {
        at_ms: i64,
        queue: String,
    },
}

const ENQUEUED: u8 = 1;
const CLAIMED: u8 = 2;
const LEASE_EXTENDED: u8 = 3;
const COMPLETED: u8 = 4;
const FAILED: u8 = 5;
const RELEASED: u8 = 6;
const CANCEL_REQUESTED: u8 = 7;
const CANCELLED: u8 = 8;
const REDRIVEN: u8 = 9;
const PURGED: u8 = 10;
const QUEUE_PAUSED: u8 = 11;
const QUEUE_CONFIGURED: u8 = 12;
const QUEUE_DELETED: u8 = 13;

/// Version byte in front of every encoded event.
const VERSION: u8 = 1;

impl Event {
    pub fn id(&self) -> JobId {
        match self {
            Event::Enqueued { id, .. }
            | Event::Claimed { id, .. }
            | Event::LeaseExtended { id, .. }
            | Event::Completed { id, .. }
            | Event::Failed { id, .. }
            | Event::Released { id, .. }
            | Event::CancelRequested { id, .. }
            | Event::Cancelled { id, .. }
            | Event::Redriven { id, .. }
            | Event::Purged { id, .. } => *id,
            Event::QueuePaused { .. } | Event::QueueConfigured { .. } | Event::QueueDeleted { .. } => 0,
        }
    }

    pub fn at_ms(&self) -> i64 {
        match self {
            Event::Enqueued { at_ms, .. }
            | Event::Claimed { at_ms, .. }
            | Event::LeaseExtended { at_ms, .. }
            | Event::Completed { at_ms, .. }
            | Event::Failed { at_ms, .. }
            | Event::Released { at_ms, .. }
            | Event::CancelRequested { at_ms, .. }
            | Event::Cancelled { at_ms, .. }
            | Event::Redriven { at_ms, .. }
            | Event::Purged { at_ms, .. }
            | Event::QueuePaused { at_ms, .. }
            | Event::QueueConfigured { at_ms, .. }
            | Event::QueueDeleted { at_ms, .. } => *at_ms,
        }
    }

    /// Events after which the job is gone from the log's point of view
    /// (a history scan may stop there).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::Completed { .. } | Event::Cancelled { .. } | Event::Purged { .. }
        )
    }

    /// Stable lower-case name, for history listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Enqueued { .. } => "enqueued",
            Event::Claimed { .. } => "claimed",
            Event::LeaseExtended { .. } => "lease_extended",
            Event::Completed { .. } => "completed",
            Event::Failed {
                retry_at_ms: Some(_), ..
            } => "retry_scheduled",
            Event::Failed {
                retry_at_ms: None, ..
            } => "dead",
            Event::Released { .. } => "released",
            Event::CancelRequested { .. } => "cancel_requested",
            Event::Cancelled { .. } => "cancelled",
            Event::Redriven { .. } => "redriven",
            Event::Purged { .. } => "purged",
            Event::QueuePaused { paused: true, .. } => "queue_paused",
            Event::QueuePaused { paused: false, .. } => "queue_resumed",
            Event::QueueConfigured { .. } => "queue_configured",
            Event::QueueDeleted { .. } => "queue_deleted",
        }
    }

    /// The record key an event is stored under: its job id.
    pub fn key(&self) -> [u8; 8] {
        self.id().to_be_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf);
        buf
    }

    /// Appends the encoding to `buf`, so that many events can share one
    /// buffer.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let mut w = Writer {
            buf: std::mem::take(buf),
        };
        w.u8(VERSION);
        match self {
            Event::Enqueued {
                id,
                at_ms,
                queue,
                payload,
                content_type,
                headers,
                priority,
                attempts_max,
                timeout_ms,
                run_at_ms,
                idempotency_key,
                dedup_until_ms,
            } => {
                w.u8(ENQUEUED);
                w.u64(*id);
                w.i64(*at_ms);
                w.str(queue);
                w.bytes(payload);
                w.str(content_type);
                w.u64(headers.len() as u64);
                for (k, v) in headers {
                    w.str(k);
                    w.str(v);
                }
                w.i64(i64::from(*priority));
                w.u64(u64::from(*attempts_max));
                w.u64(*timeout_ms);
                w.i64(*run_at_ms);
                w.opt_str(idempotency_key.as_deref());
                w.opt_i64(*dedup_until_ms);
            }
            Event::Claimed {
                id,
                at_ms,
                attempt,
                token,
                lease_until_ms,
                worker,
            } => {
                w.u8(CLAIMED);
                w.u64(*id);
                w.i64(*at_ms);
                w.u64(u64::from(*attempt));
                w.u64(*token);
                w.i64(*lease_until_ms);
                w.str(worker);
            }
            Event::LeaseExtended {
                id,
                at_ms,
                lease_until_ms,
                progress,
            } => {
                w.u8(LEASE_EXTENDED);
                w.u64(*id);
                w.i64(*at_ms);
                w.i64(*lease_until_ms);
                w.opt_str(progress.as_deref());
            }
            Event::Completed { id, at_ms, result } => {
                w.u8(COMPLETED);
                w.u64(*id);
                w.i64(*at_ms);
                w.bytes(result);
            }
            Event::Failed {
                id,
                at_ms,
                attempt,
                error,
                retry_at_ms,
                lease_expired,
            } => {
                w.u8(FAILED);
                w.u64(*id);
                w.i64(*at_ms);
                w.u64(u64::from(*attempt));
                w.str(error);
                w.opt_i64(*retry_at_ms);
                w.u8(u8::from(*lease_expired));
            }
            Event::Released { id, at_ms } => simple(&mut w, RELEASED, *id, *at_ms),
            Event::CancelRequested { id, at_ms } => simple(&mut w, CANCEL_REQUESTED, *id, *at_ms),
            Event::Cancelled { id, at_ms } => simple(&mut w, CANCELLED, *id, *at_ms),
            Event::Redriven { id, at_ms } => simple(&mut w, REDRIVEN, *id, *at_ms),
            Event::Purged { id, at_ms, reason } => {
                simple(&mut w, PURGED, *id, *at_ms);
                w.u8(match reason {
                    PurgeReason::Requested => 0,
                    PurgeReason::Retention => 1,
                    PurgeReason::QueueDeleted => 2,
                });
            }
            Event::QueuePaused { at_ms, queue, paused } => {
                simple(&mut w, QUEUE_PAUSED, 0, *at_ms);
                w.str(queue);
                w.u8(u8::from(*paused));
            }
            Event::QueueConfigured { at_ms, queue, config } => {
                simple(&mut w, QUEUE_CONFIGURED, 0, *at_ms);
                w.str(queue);
                write_queue_config(&mut w, config);
            }
            Event::QueueDeleted { at_ms, queue } => {
                simple(&mut w, QUEUE_DELETED, 0, *at_ms);
                w.str(queue);
            }
        }
        *buf = w.buf;
    }

    /// Decodes an event; `None` for bytes that are not one.
    pub fn decode(bytes: Bytes) -> Option<Event> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let kind = r.u8()?;
        let id = r.u64()?;
        let at_ms = r.i64()?;
        let event = match kind {
            ENQUEUED => {
                let queue = r.string()?;
                let payload = r.bytes()?;
                let content_type = r.string()?;
                let count = r.u64()?;
                let mut headers = Vec::new();
                for _ in 0..count {
                    headers.push((r.string()?, r.string()?));
                }
                Event::Enqueued {
                    id,
                    at_ms,
                    queue,
                    payload,
                    content_type,
                    headers,
                    priority: r.i32()?,
                    attempts_max: r.u32()?,
                    timeout_ms: r.u64()?,
                    run_at_ms: r.i64()?,
                    idempotency_key: r.opt_string()?,
                    dedup_until_ms: r.opt_i64()?,
                }
            }
            CLAIMED => Event::Claimed {
                id,
                at_ms,
                attempt: r.u32()?,
                token: r.u64()?,
                lease_until_ms: r.i64()?,
                worker: r.string()?,
            },
            LEASE_EXTENDED => Event::LeaseExtended {
                id,
                at_ms,
                lease_until_ms: r.i64()?,
                progress: r.opt_string()?,
            },
            COMPLETED => Event::Completed {
                id,
                at_ms,
                result: r.bytes()?,
            },
            FAILED => Event::Failed {
                id,
                at_ms,
                attempt: r.u32()?,
                error: r.string()?,
                retry_at_ms: r.opt_i64()?,
                lease_expired: r.u8()? != 0,
            },
            RELEASED => Event::Released { id, at_ms },
            CANCEL_REQUESTED => Event::CancelRequested { id, at_ms },
            CANCELLED => Event::Cancelled { id, at_ms },
            REDRIVEN => Event::Redriven { id, at_ms },
            PURGED => Event::Purged {
                id,
                at_ms,
                reason: match r.u8()? {
                    0 => PurgeReason::Requested,
                    1 => PurgeReason::Retention,
                    2 => PurgeReason::QueueDeleted,
                    _ => return None,
                },
            },
            QUEUE_PAUSED => Event::QueuePaused {
                at_ms,
                queue: r.string()?,
                paused: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            },
            QUEUE_CONFIGURED => Event::QueueConfigured {
                at_ms,
                queue: r.string()?,
                config: read_queue_config(&mut r)?,
            },
            QUEUE_DELETED => Event::QueueDeleted {
                at_ms,
                queue: r.string()?,
            },
            _ => return None,
        };
        r.is_empty().then_some(event)
    }
}

/// A queue's configuration: a byte of flags saying which settings are set,
/// then each set one in the order of the flags. Also the snapshot's
/// encoding.
pub(crate) fn write_queue_config(w: &mut Writer, config: &QueueConfig) {
    let flags = u8::from(config.attempts_max.is_some())
        | u8::from(config.backoff.is_some()) << 1
        | u8::from(config.lease_ms.is_some()) << 2
        | u8::from(config.timeout_ms.is_some()) << 3
        | u8::from(config.finished_retention_ms.is_some()) << 4
        | u8::from(config.dead_retention_ms.is_some()) << 5
        | u8::from(config.concurrency_limit.is_some()) << 6
        | u8::from(config.rate_limit.is_some()) << 7;
    w.u8(flags);
    if let Some(v) = config.attempts_max {
        w.u64(u64::from(v));
    }
    if let Some(b) = config.backoff {
        w.u64(b.min_ms);
        w.u64(b.max_ms);
    }
    for v in [
        config.lease_ms,
        config.timeout_ms,
        config.finished_retention_ms,
        config.dead_retention_ms,
    ]
    .into_iter()
    .flatten()
    {
        w.u64(v);
    }
    if let Some(v) = config.concurrency_limit {
        w.u64(u64::from(v));
    }
    if let Some(rate) = config.rate_limit {
        w.u64(u64::from(rate.jobs));
        w.u64(rate.per_ms);
    }
}

pub(crate) fn read_queue_config(r: &mut Reader) -> Option<QueueConfig> {
    let flags = r.u8()?;
    let set = |bit: u8| flags & (1 << bit) != 0;
    let mut config = QueueConfig::default();
    if set(0) {
        config.attempts_max = Some(r.u32()?);
    }
    if set(1) {
        config.backoff = Some(Backoff {
            min_ms: r.u64()?,
            max_ms: r.u64()?,
        });
    }
    if set(2) {
        config.lease_ms = Some(r.u64()?);
    }
    if set(3) {
        config.timeout_ms = Some(r.u64()?);
    }
    if set(4) {
        config.finished_retention_ms = Some(r.u64()?);
    }
    if set(5) {
        config.dead_retention_ms = Some(r.u64()?);
    }
    if set(6) {
        config.concurrency_limit = Some(r.u32()?);
    }
    if set(7) {
        config.rate_limit = Some(RateLimit {
            jobs: r.u32()?,
            per_ms: r.u64()?,
        });
    }
    Some(config)
}

fn simple(w: &mut Writer, kind: u8, id: JobId, at_ms: i64) {
    w.u8(kind);
    w.u64(id);
    w.i64(at_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Event> {
        vec![
            Event::Enqueued {
                id: 7,
                at_ms: 100,
                queue: "emails".into(),
                payload: Bytes::from_static(b"{\"to\":\"a@b\"}"),
                content_type: "application/json".into(),
                headers: vec![("traceparent".into(), "00-1-2-01".into())],
                priority: -3,
                attempts_max: 25,
                timeout_ms: 30_000,
                run_at_ms: 200,
                idempotency_key: Some("k".into()),
                dedup_until_ms: Some(86_400_100),
            },
            Event::Claimed {
                id: 7,
                at_ms: 201,
                attempt: 1,
                token: u64::MAX,
                lease_until_ms: 30_201,
                worker: "w1".into(),
            },
            Event::LeaseExtended {
                id: 7,
                at_ms: 300,
                lease_until_ms: 40_000,
                progress: Some("50%".into()),
            },
            Event::Failed {
                id: 7,
                at_ms: 400,
                attempt: 1,
                error: "boom".into(),
                retry_at_ms: Some(20_000),
                lease_expired: false,
            },
            Event::Completed {
                id: 7,
                at_ms: 500,
                result: Bytes::from_static(b"ok"),
            },
            Event::Released { id: 7, at_ms: 1 },
            Event::CancelRequested { id: 7, at_ms: 2 },
            Event::Cancelled { id: 7, at_ms: 3 },
            Event::Redriven { id: 7, at_ms: 4 },
            Event::Purged {
                id: 7,
                at_ms: 5,
                reason: PurgeReason::Retention,
            },
            Event::QueuePaused {
                at_ms: 6,
                queue: "emails".into(),
                paused: true,
            },
            Event::Purged {
                id: 7,
                at_ms: 7,
                reason: PurgeReason::QueueDeleted,
            },
            Event::QueueConfigured {
                at_ms: 8,
                queue: "emails".into(),
                config: QueueConfig::default(),
            },
            Event::QueueConfigured {
                at_ms: 9,
                queue: "emails".into(),
                config: QueueConfig {
                    attempts_max: Some(10),
                    backoff: Some(Backoff {
                        min_ms: 5_000,
                        max_ms: 3_600_000,
                    }),
                    lease_ms: Some(30_000),
                    timeout_ms: Some(300_000),
                    finished_retention_ms: Some(86_400_000),
                    dead_retention_ms: Some(0),
                    concurrency_limit: Some(4),
                    rate_limit: Some(RateLimit {
                        jobs: 100,
                        per_ms: 1_000,
                    }),
                },
            },
            Event::QueueConfigured {
                at_ms: 10,
                queue: "emails".into(),
                config: QueueConfig {
                    lease_ms: Some(1),
                    concurrency_limit: Some(1),
                    ..QueueConfig::default()
                },
            },
            Event::QueueDeleted {
                at_ms: 11,
                queue: "emails".into(),
            },
        ]
    }

    #[test]
    fn every_event_round_trips() {
        for event in samples() {
            let bytes = Bytes::from(event.encode());
            assert_eq!(Event::decode(bytes.clone()), Some(event.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(Event::decode(bytes.slice(..cut)), None, "{event:?} cut at {cut}");
            }
        }
    }
}
