//! `GET /api/v1/history`: the metrics history as JSON, for the dashboard
//! and for `curl`. The read is the gRPC `Metrics.GetMetricsHistory`'s
//! ([`read_history`]); this module turns the query string into its request
//! and its answer into JSON.
//!
//! Query parameters: `series` (repeated: one expression each), `from` and
//! `to` (Unix epoch milliseconds, `now`, or a duration before now such as
//! `-1h`), `step` (a duration such as `1m`). The answer:
//!
//! ```json
//! {"from_time_ms": 1, "to_time_ms": 2, "step_ms": 60000, "interval_ms": 5000,
//!  "oldest_sample_time_ms": 0,
//!  "results": [{"expression": "...", "series": [{"labels": {"queue": "a"}, "points": [[1, 0.5]]}]}]}
//! ```
//!
//! A bad parameter or expression answers 400, a server without history
//! 409, each with `{"error": "..."}`.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};
use spool_format::units::parse_duration_ms;
use spool_metrics::http::{Response, response};

use super::params::percent_decode;
use crate::history::{History, HistoryAnswer, HistoryRequest};
use crate::metrics_service::read_history;

const JSON: &str = "application/json";

pub async fn answer(history: Option<Arc<History>>, query: Option<&str>) -> Response {
    let request = match request(query.unwrap_or_default()) {
        Ok(request) => request,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    match read_history(history, request).await {
        Ok(answer) => response(StatusCode::OK, JSON, to_json(&answer).to_string()),
        Err(status) => {
            let code = match status.code() {
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(code, status.message())
        }
    }
}

fn error(code: StatusCode, reason: &str) -> Response {
    response(code, JSON, json!({ "error": reason }).to_string())
}

/// The read a query string asks for.
fn request(query: &str) -> Result<HistoryRequest, String> {
    let mut request = HistoryRequest::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| format!("parameter {name}: bad percent-encoding"))?;
        match name {
            "series" => request.series.push(value),
            "from" => request.from_time_ms = time(&value).map_err(|e| format!("parameter from: {e}"))?,
            "to" => request.to_time_ms = time(&value).map_err(|e| format!("parameter to: {e}"))?,
            "step" => {
                request.step_ms = parse_duration_ms(&value).map_err(|e| format!("parameter step: {e}"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; known: series, from, to, step"
                ));
            }
        }
    }
    Ok(request)
}

/// A time as `HistoryRequest` takes it: `now` is 0 (for `to`), `-1h` is
/// relative (negative), digits are Unix epoch milliseconds.
fn time(value: &str) -> Result<i64, String> {
    if value == "now" {
        return Ok(0);
    }
    if let Some(before) = value.strip_prefix('-') {
        let ms = parse_duration_ms(before).map_err(|e| e.to_string())?;
        return i64::try_from(ms).map(|ms| -ms.max(1)).map_err(|e| e.to_string());
    }
    value.parse::<i64>().ok().filter(|&ms| ms > 0).ok_or_else(|| {
        format!("{value:?} is neither Unix epoch milliseconds, `now`, nor a duration before now like -1h")
    })
}

pub(super) fn to_json(answer: &HistoryAnswer) -> Value {
    let results: Vec<Value> = answer
        .results
        .iter()
        .map(|result| {
            let series: Vec<Value> = result
                .series
                .iter()
                .map(|(labels, points)| {
                    let labels: serde_json::Map<String, Value> = labels
                        .iter()
                        .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                        .collect();
                    let points: Vec<Value> =
                        points.iter().map(|(time, value)| json!([time, value])).collect();
                    json!({ "labels": labels, "points": points })
                })
                .collect();
            json!({ "expression": result.expression, "series": series })
        })
        .collect();
    json!({
        "from_time_ms": answer.from_time_ms,
        "to_time_ms": answer.to_time_ms,
        "step_ms": answer.step_ms,
        "interval_ms": answer.interval_ms,
        "oldest_sample_time_ms": answer.oldest_sample_time_ms,
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_become_requests() {
        let request = request(
            "series=rate%28spool_jobs_completed_total%7Bqueue%3D%22a%20b%22%7D%29&series=spool_jobs&from=-1h&to=now&step=1m",
        )
        .unwrap();
        assert_eq!(
            request.series,
            ["rate(spool_jobs_completed_total{queue=\"a b\"})", "spool_jobs"]
        );
        assert_eq!(
            (request.from_time_ms, request.to_time_ms, request.step_ms),
            (-3_600_000, 0, 60_000)
        );
        let absolute = super::request("series=x&from=1700000000000&to=1700000600000").unwrap();
        assert_eq!(
            (absolute.from_time_ms, absolute.to_time_ms),
            (1_700_000_000_000, 1_700_000_600_000)
        );
        assert_eq!(super::request("series=a+b").unwrap().series, ["a b"]);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (query, reason) in [
            ("series=x&from=yesterday", "parameter from"),
            ("series=x&to=-soon", "parameter to"),
            ("series=x&step=fast", "parameter step"),
            ("series=%zz", "bad percent-encoding"),
            ("series=%e2%28", "bad percent-encoding"),
            ("sieres=x", "unknown parameter \"sieres\""),
        ] {
            let error = request(query).unwrap_err();
            assert!(error.contains(reason), "{query}: {error}");
        }
    }
}
