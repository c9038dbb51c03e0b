//! The audit trail of actions taken through the dashboard's API: who
//! (the client's address, and the name it gave in `X-Spool-User`, which
//! is not authenticated), when, what and how many jobs or partitions it
//! changed. Each action is one JSON record in the internal topic
//! `__audit`, appended with fsync before the action's answer, so the trail
//! survives restarts like every other piece of the server's state; it has
//! no retention (a record is about 200 bytes).
//!
//! `GET /api/v1/audit?limit=N` answers the newest `N` (default 100, at most
//! 1,000), newest first.

use std::ops::ControlFlow;

use http::StatusCode;
use serde_json::{Value, json};
use spool_log::{Durability, Partition, Record, Store};
use spool_metrics::http::{Peer, Response};

use super::Asked;
use super::json::{error, now_ms, ok};

/// The internal topic holding the trail.
pub const AUDIT_TOPIC: &str = "__audit";
const READ_MAX: u64 = 1_000;
/// Longest name kept from `X-Spool-User`.
const USER_BYTES_MAX: usize = 100;

/// Who sent a request.
#[derive(Debug, Clone, Default)]
pub(super) struct Who {
    pub(super) address: String,
    pub(super) user: Option<String>,
}

impl Who {
    pub(super) fn of<B>(request: &http::Request<B>) -> Who {
        let address = request
            .extensions()
            .get::<Peer>()
            .map(|Peer(address)| address.ip().to_string())
            .unwrap_or_default();
        let user = request
            .headers()
            .get("x-spool-user")
            .and_then(|value| value.to_str().ok())
            .map(|name| name.chars().take(USER_BYTES_MAX).collect::<String>())
            .filter(|name| !name.trim().is_empty());
        Who { address, user }
    }
}

/// The trail (see the module documentation).
#[derive(Debug)]
pub struct Audit {
    partition: Partition,
}

impl Audit {
    /// Opens the trail's topic, creating it on first use. Blocking.
    pub fn open(store: &Store) -> spool_log::Result<Audit> {
        Ok(Audit {
            partition: store.internal_partition(AUDIT_TOPIC)?,
        })
    }

    /// Records that `who` did `action` to `target`, changing `count`
    /// things, once the record is on disk.
    pub(super) async fn record(
        &self,
        who: &Who,
        action: &str,
        target: Value,
        count: u64,
    ) -> Result<(), Response> {
        let value = json!({
            "time_ms": now_ms(),
            "action": action,
            "user": who.user,
            "address": who.address,
            "target": target,
            "count": count,
        })
        .to_string();
        let partition = self.partition.clone();
        let key = action.to_owned();
        let appended = tokio::task::spawn_blocking(move || {
            let record = Record {
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                headers: &[],
                timestamp_ms: None,
            };
            partition.append(&[record], Durability::None)
        })
        .await;
        let end = match appended {
            Ok(Ok(outcome)) => outcome.last_offset + 1,
            Ok(Err(failure)) => return Err(unrecorded(&failure.to_string())),
            Err(failure) => return Err(unrecorded(&failure.to_string())),
        };
        self.partition
            .wait_durable(end)
            .await
            .map(|_| ())
            .map_err(|failure| unrecorded(&failure.to_string()))
    }

    /// The newest `limit` records, newest first. Blocking.
    fn newest(&self, limit: u64) -> spool_log::Result<Vec<Value>> {
        let end = self.partition.high_watermark();
        let from = end.saturating_sub(limit).max(self.partition.log_start_offset());
        let mut records = Vec::new();
        self.partition.scan(from, |_, record| {
            if let Some(Ok(mut value)) = record.value.map(serde_json::from_slice::<Value>) {
                if let Some(object) = value.as_object_mut() {
                    object.insert("offset".into(), record.offset.into());
                }
                records.push(value);
            }
            ControlFlow::Continue(())
        })?;
        records.reverse();
        Ok(records)
    }
}

fn unrecorded(reason: &str) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("the action was taken, but recording it in {AUDIT_TOPIC} failed: {reason}"),
    )
}

pub(super) async fn answer(audit: &Audit, asked: &Asked) -> Response {
    let limit = match asked.params.number::<u64>("limit") {
        Ok(limit) => limit.unwrap_or(100).clamp(1, READ_MAX),
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let partition = audit.partition.clone();
    let read = tokio::task::spawn_blocking(move || Audit { partition }.newest(limit)).await;
    match read {
        Ok(Ok(records)) => ok(&json!({ "topic": AUDIT_TOPIC, "records": records })),
        Ok(Err(failure)) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
    }
}
