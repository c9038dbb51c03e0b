//! `--http`: POSTs each job to an HTTP endpoint.
//!
//! The request carries the payload, `Content-Type` set to the job's content
//! type (`application/octet-stream` when it has none), the job's headers
//! (for example `traceparent`), and `Spool-Job-Id`, `Spool-Queue`,
//! `Spool-Attempt`, `Spool-Attempts-Max`. A 2xx answer completes the job
//! with the body (bounded) as result; a 4xx other than 408 and 429 fails the
//! job for good; anything else, a refused connection and a timeout fail the
//! attempt, retried. HTTP/1.1 over plain TCP; connections are kept alive
//! between jobs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spool_client::worker::{Handler, Job, Outcome, StopReason};

use crate::metrics::WorkerMetrics;

/// Bytes of an error response's body kept in the attempt's error.
const ERROR_BODY_BYTES: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Job headers never forwarded: they would contradict the request itself.
const RESERVED_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "te",
    "upgrade",
];

/// POSTs jobs to one URL; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct HttpHandler {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    result_bytes_max: usize,
    retry_delay: Option<Duration>,
    retry_after_max: Duration,
    /// Where statuses are counted, by the job's queue.
    metrics: Arc<WorkerMetrics>,
}

impl HttpHandler {
    pub fn new(
        url: Uri,
        result_bytes_max: usize,
        retry_delay: Option<Duration>,
        retry_after_max: Duration,
        metrics: Arc<WorkerMetrics>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HttpHandler {
            client,
            url,
            result_bytes_max,
            retry_delay,
            retry_after_max,
            metrics,
        }
    }

    fn retry(&self, error: String, retry_after: Option<Duration>) -> Outcome {
        Outcome::Fail {
            error,
            retryable: true,
            retry_delay: retry_after.or(self.retry_delay),
        }
    }

    fn request(&self, job: &Job) -> Result<Request<Full<Bytes>>, http::Error> {
        let content_type = match job.content_type() {
            "" => "application/octet-stream",
            given => given,
        };
        let mut builder = Request::post(self.url.clone());
        let mut forwarded: Vec<(&String, &String)> = job.headers().iter().collect();
        forwarded.sort();
        // When the worker exports traces the endpoint continues the
        // attempt's `run {queue}` span, not the job's original context.
        let traceparent = spool_telemetry::current_traceparent();
        for (name, value) in forwarded {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("spool-") {
                continue;
            }
            if traceparent.is_some() && lower == spool_telemetry::TRACEPARENT {
                continue;
            }
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(name), Ok(value)) => builder = builder.header(name, value),
                _ => tracing::debug!(header = %name, "skipping a job header that is not a valid HTTP header"),
            }
        }
        if let Some(traceparent) = traceparent {
            builder = builder.header(spool_telemetry::TRACEPARENT, traceparent);
        }
        builder
            .header(CONTENT_TYPE, content_type)
            .header("Spool-Job-Id", job.id())
            .header("Spool-Queue", job.queue())
            .header("Spool-Attempt", job.attempt())
            .header("Spool-Attempts-Max", job.attempts_max())
            .body(Full::new(job.payload().clone()))
    }

    async fn post(&self, job: &Job) -> Outcome {
        let request = match self.request(job) {
            Ok(request) => request,
            Err(error) => return Outcome::fail_permanently(format!("cannot build the request: {error}")),
        };
        let started = Instant::now();
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => return self.retry(format!("POST {} failed: {}", self.url, chain(&error)), None),
        };
        let status = response.status();
        if let Some(queue) = self.metrics.queue(job.queue()) {
            queue.count_http_status(status);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| retry_after(value.to_str().ok()?, SystemTime::now()))
            .map(|delay| {
                if delay > self.retry_after_max {
                    tracing::info!(
                        asked_ms = delay.as_millis() as u64,
                        "Retry-After is longer than --retry-after-max; waiting that long instead"
                    );
                }
                delay.min(self.retry_after_max)
            });
        let keep = if status.is_success() {
            self.result_bytes_max
        } else {
            ERROR_BODY_BYTES
        };
        let body = match read_head(response.into_body(), keep).await {
            Ok(body) => body,
            Err(error) => {
                return self.retry(
                    format!("reading the response body from {} failed: {error}", self.url),
                    None,
                );
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(status = status.as_u16(), elapsed_ms, "endpoint answered");
        match Verdict::of(status) {
            Verdict::Complete => Outcome::complete(body),
            Verdict::Dead => Outcome::fail_permanently(describe(status, &body)),
            Verdict::Retry => self.retry(describe(status, &body), retry_after),
        }
    }
}

impl Handler for HttpHandler {
    async fn handle(&self, job: Job) -> Outcome {
        tokio::select! {
            outcome = self.post(&job) => outcome,
            reason = job.stopped() => match reason {
                StopReason::Cancelled => Outcome::fail_permanently("cancelled: the request was abandoned"),
                _ => self.retry(format!("stopped: {reason}"), None),
            },
        }
    }
}

/// What a status code does to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Complete,
    Dead,
    Retry,
}

impl Verdict {
    fn of(status: StatusCode) -> Self {
        if status.is_success() {
            Verdict::Complete
        } else if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            Verdict::Dead
        } else {
            Verdict::Retry
        }
    }
}

/// The delay a Retry-After value asks for: whole seconds, or an HTTP date
/// (one in the past asks for none). `None` for anything else.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    let body = body.trim();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

/// An error and its sources, "outer: inner: root".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads the first `keep_bytes` of a body; the rest is not read (the
/// connection is then closed instead of reused).
async fn read_head<B>(mut body: B, keep_bytes: usize) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    let mut kept = Vec::new();
    while kept.len() < keep_bytes {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(|error| chain(&error))?;
        if let Ok(data) = frame.into_data() {
            let room = keep_bytes - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(Bytes::from(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn status_codes_decide_the_outcome() {
        let verdict = |code: u16| Verdict::of(StatusCode::from_u16(code).unwrap());
        assert_eq!(verdict(200), Verdict::Complete);
        assert_eq!(verdict(204), Verdict::Complete);
        assert_eq!(verdict(400), Verdict::Dead);
        assert_eq!(verdict(404), Verdict::Dead);
        assert_eq!(verdict(422), Verdict::Dead);
        assert_eq!(verdict(408), Verdict::Retry);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(500), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        assert_eq!(verdict(301), Verdict::Retry);
    }

    #[test]
    fn errors_name_the_status_and_the_body() {
        assert_eq!(
            describe(StatusCode::SERVICE_UNAVAILABLE, b""),
            "HTTP 503 Service Unavailable"
        );
        assert_eq!(
            describe(StatusCode::UNPROCESSABLE_ENTITY, b"bad email\n"),
            "HTTP 422 Unprocessable Entity: bad email"
        );
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        let body = Full::new(Bytes::from(vec![1u8; 10_000]));
        assert_eq!(read_head(body, 100).await.unwrap().len(), 100);
        let body = Full::new(Bytes::from_static(b"ok"));
        assert_eq!(read_head(body, 100).await.unwrap(), Bytes::from_static(b"ok"));
    }
}
