//! The audit trail: every state-changing administrative action, through
//! gRPC or the dashboard's HTTP API, as one JSON record in the internal
//! topic `__audit`: when, what (`action`, its `target` and how many things
//! it changed), who (the authenticated principal; for the dashboard also
//! the name it gave in `X-Spool-User`, which is not authenticated) and from
//! where (the client's address, and `via`: `grpc` or `http`). A record is
//! appended and fsynced before the action's answer, so the trail survives
//! restarts like every other piece of the server's state; it has no
//! retention (a record is about 250 bytes).
//!
//! Actions: `create_topic`, `delete_topic`, `reset_checkpoint`,
//! `retry_dead`, `purge_dead`, `cancel`, `pause_queue`, `resume_queue`,
//! `create_token`, `revoke_token`. Read with `Admin.ReadAudit` (`spool
//! audit`) or `GET /api/v1/audit`.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use serde_json::{Value, json};
use spool_log::{Durability, Partition, Record, Store};

use crate::access::{Caller, Via};

/// The internal topic holding the trail.
pub const AUDIT_TOPIC: &str = "__audit";
/// Most records one read answers.
pub const READ_MAX: usize = 1_000;

/// Who asked for an action.
#[derive(Debug, Clone)]
pub struct Who {
    /// The client's IP address.
    pub address: String,
    /// The authenticated principal; `None` without authentication.
    pub principal: Option<String>,
    /// The name a dashboard user gave (`X-Spool-User`), not authenticated.
    pub user: Option<String>,
    pub via: Via,
}

impl Who {
    /// Who a gRPC call's caller is.
    pub fn of(caller: Option<&Caller>) -> Who {
        Who {
            address: caller
                .and_then(|c| c.address)
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            principal: caller.and_then(|c| c.principal.as_ref()).map(|p| p.name.clone()),
            user: None,
            via: caller.map_or(Via::Grpc, |c| c.via),
        }
    }
}

/// An action was taken but its record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the action was taken, but recording it in {AUDIT_TOPIC} failed: {0}")]
    Append(#[source] spool_log::Error),
    #[error("the action was taken, but recording it in {AUDIT_TOPIC} failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Which records a read answers; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: String,
    pub action: String,
    /// Records at or after (0: any).
    pub since_time_ms: i64,
    /// Records before (0: any).
    pub until_time_ms: i64,
    pub limit: usize,
}

impl AuditFilter {
    fn matches(&self, record: &Value) -> bool {
        let text = |key: &str| record.get(key).and_then(Value::as_str).unwrap_or("");
        let time_ms = record.get("time_ms").and_then(Value::as_i64).unwrap_or(0);
        (self.principal.is_empty() || text("principal") == self.principal)
            && (self.action.is_empty() || text("action") == self.action)
            && (self.since_time_ms == 0 || time_ms >= self.since_time_ms)
            && (self.until_time_ms == 0 || time_ms < self.until_time_ms)
    }
}

/// The trail (see the module documentation).
#[derive(Debug, Clone)]
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
    pub async fn record(&self, who: &Who, action: &str, target: Value, count: u64) -> Result<(), AuditError> {
        let value = json!({
            "time_ms": now_ms(),
            "action": action,
            "principal": who.principal,
            "user": who.user,
            "address": who.address,
            "via": who.via.as_str(),
            "target": target,
            "count": count,
        })
        .to_string();
        let partition = self.partition.clone();
        let key = action.to_owned();
        let outcome = tokio::task::spawn_blocking(move || {
            let record = Record {
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                headers: &[],
                timestamp_ms: None,
            };
            partition.append(&[record], Durability::None)
        })
        .await
        .map_err(AuditError::Task)?
        .map_err(AuditError::Append)?;
        self.partition
            .wait_durable(outcome.last_offset + 1)
            .await
            .map(|_| ())
            .map_err(AuditError::Append)
    }

    /// The newest records that match `filter`, newest first, each with its
    /// `offset`. Blocking: reads the whole trail, which stays small.
    pub fn read(&self, filter: &AuditFilter) -> spool_log::Result<Vec<Value>> {
        let limit = filter.limit.clamp(1, READ_MAX);
        let mut kept = VecDeque::with_capacity(limit);
        self.partition.scan(0, |_, record| {
            if let Some(Ok(mut value)) = record.value.map(serde_json::from_slice::<Value>)
                && filter.matches(&value)
            {
                if let Some(object) = value.as_object_mut() {
                    object.insert("offset".into(), record.offset.into());
                }
                if kept.len() == limit {
                    kept.pop_front();
                }
                kept.push_back(value);
            }
            ControlFlow::Continue(())
        })?;
        Ok(kept.into_iter().rev().collect())
    }
}

/// Unix epoch milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

impl Audit {
    /// Records a gRPC call's action. A call made inside the process (the
    /// dashboard calling a service's method) carries no caller and is not
    /// recorded here: the dashboard records its own action, once, with the
    /// count of everything it changed.
    pub async fn record_call(
        &self,
        caller: Option<&Caller>,
        action: &str,
        target: Value,
        count: u64,
    ) -> Result<(), tonic::Status> {
        let Some(caller) = caller else {
            return Ok(());
        };
        self.record(&Who::of(Some(caller)), action, target, count)
            .await
            .map_err(|failure| tonic::Status::internal(failure.to_string()))
    }
}
