//! JSON answers of the admin listener, and the one mapping from a gRPC
//! status to an HTTP status for them.

use http::StatusCode;
use serde_json::{Value, json};
use spool_metrics::http::{Response, response};
use tonic::Code;

const JSON: &str = "application/json";

/// `200` with `value`.
pub(super) fn ok(value: &Value) -> Response {
    response(StatusCode::OK, JSON, value.to_string())
}

/// `code` with `{"error": reason}`.
pub(super) fn error(code: StatusCode, reason: &str) -> Response {
    response(code, JSON, json!({ "error": reason }).to_string())
}

/// A refused call of a gRPC service, as an HTTP answer: the status code
/// that means the same, and the status' message.
pub(super) fn refused(status: &tonic::Status) -> Response {
    let code = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, status.message())
}

/// Unix epoch milliseconds now.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
