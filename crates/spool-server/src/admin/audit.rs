//! The dashboard's side of the audit trail ([`crate::audit`]): who sent an
//! HTTP request, and `GET /api/v1/audit?limit=N`, the newest `N` records
//! (default 100, at most 1,000), newest first.

use http::StatusCode;
use serde_json::json;
use spool_metrics::http::{Peer, Response};

use super::Asked;
use super::json::{error, ok};
use crate::access::{Caller, Via};
use crate::audit::{AUDIT_TOPIC, Audit, AuditError, AuditFilter, READ_MAX, Who};

/// Longest name kept from `X-Spool-User`.
const USER_BYTES_MAX: usize = 100;

/// Who sent a request: its address, the principal its bearer token named
/// (`caller`) and the name it gave in `X-Spool-User`.
pub(super) fn who<B>(request: &http::Request<B>, caller: &Caller) -> Who {
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
    Who {
        address,
        principal: caller.principal.as_ref().map(|p| p.name.clone()),
        user,
        via: Via::Http,
    }
}

/// The answer when an action's record could not be written.
pub(super) fn unrecorded(failure: &AuditError) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string())
}

pub(super) async fn answer(audit: &Audit, asked: &Asked) -> Response {
    let limit = match asked.params.number::<u64>("limit") {
        Ok(limit) => limit.unwrap_or(100).clamp(1, READ_MAX as u64) as usize,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let audit = audit.clone();
    let filter = AuditFilter {
        limit,
        ..AuditFilter::default()
    };
    match tokio::task::spawn_blocking(move || audit.read(&filter)).await {
        Ok(Ok(records)) => ok(&json!({ "topic": AUDIT_TOPIC, "records": records })),
        Ok(Err(failure)) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
    }
}
