//! The admin HTTP listener (`admin_listen`, default 127.0.0.1:7071): plain
//! HTTP/1 beside the gRPC port, for Prometheus, probes and people.
//!
//! Routes (see [`ROUTES`]; a path not listed is 404, a method the route
//! does not take is 405 with `Allow`):
//! - `/metrics`: every metric, Prometheus text 0.0.4, or OpenMetrics when
//!   the `Accept` header asks for `application/openmetrics-text`;
//! - `/healthz`: liveness, always 200 `ok` while the process serves;
//! - `/readyz`: readiness (`health::readiness`), 200 `ready` or 503 with
//!   the reason;
//! - `/api/v1/history?series=EXPR&from=-1h&to=now&step=1m`: the metrics
//!   history as JSON ([`history`]), the same read as the gRPC
//!   `Metrics.GetMetricsHistory`;
//! - `/api/v1/...`: the dashboard's JSON API ([`api_log`], [`api_jobs`],
//!   [`audit`]), documented in `docs/api.md`; each endpoint calls the gRPC
//!   services' own methods, so validation lives in one place;
//! - `/`, `/topics`, `/consumers`, `/queues`, `/jobs`, `/dead`, `/audit`
//!   and `/assets/*`: the dashboard's pages ([`pages`]), built into the
//!   binary.
//!
//! Requests that change state (POST) must send `Content-Type:
//! application/json`: a browser cannot send that across origins without a
//! CORS preflight, which this listener never grants, so another web site
//! cannot make a visitor's browser retry or purge jobs here.
//!
//! With authentication on, a call needs `Authorization: Bearer <token>` or
//! the session cookie of a dashboard login (`/api/v1/session`, see
//! `spool_auth::sessions`); a POST made with the cookie must also send the
//! session's CSRF token in `X-CSRF-Token`.
//!
//! New pages go in [`ROUTES`] and [`Admin::route`]; each route's handler is
//! a method of [`Admin`] or a function of its module, given what it reads.

// Handlers return their finished HTTP answer as the error of a `Result`
// to leave early; one is built per request, so its size (144 bytes) costs
// nothing that boxing it would save.
#![allow(clippy::result_large_err)]

mod api_jobs;
mod api_log;
mod audit;
mod history;
mod json;
mod pages;
mod params;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use spool_metrics::Format;
use spool_metrics::http::{Response, plain, response};

use self::json::error;
use self::params::Params;
use crate::access::{Caller, Via};
pub use crate::audit::{AUDIT_TOPIC, Audit};
use crate::health;
use crate::jobs_service::JobsService;
use crate::log_service::{LogService, ServerState};

/// The pages, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Live,
    Ready,
    History,
    Overview,
    Topics,
    Topic,
    Messages,
    Consumers,
    ResetCheckpoint,
    Queues,
    PauseQueue,
    ResumeQueue,
    Jobs,
    Job,
    CancelJob,
    Search,
    Dead,
    RetryDead,
    PurgeDead,
    AuditTrail,
    Session,
    Logout,
    Page,
    Asset,
}

const GET: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];
const GET_OR_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];

/// Path patterns (`*` is one path segment), their route and methods; the
/// first that matches wins.
const ROUTES: &[(&str, Route, &[Method])] = &[
    ("/metrics", Route::Metrics, GET),
    ("/healthz", Route::Live, GET),
    ("/readyz", Route::Ready, GET),
    ("/api/v1/history", Route::History, GET),
    ("/api/v1/overview", Route::Overview, GET),
    ("/api/v1/topics", Route::Topics, GET),
    ("/api/v1/topics/*", Route::Topic, GET),
    ("/api/v1/topics/*/messages", Route::Messages, GET),
    ("/api/v1/consumers", Route::Consumers, GET),
    ("/api/v1/consumers/*/*/reset", Route::ResetCheckpoint, POST),
    ("/api/v1/queues", Route::Queues, GET),
    ("/api/v1/queues/*/pause", Route::PauseQueue, POST),
    ("/api/v1/queues/*/resume", Route::ResumeQueue, POST),
    ("/api/v1/jobs", Route::Jobs, GET),
    ("/api/v1/jobs/*", Route::Job, GET),
    ("/api/v1/jobs/*/cancel", Route::CancelJob, POST),
    ("/api/v1/search", Route::Search, GET),
    ("/api/v1/dead", Route::Dead, GET),
    ("/api/v1/dead/retry", Route::RetryDead, POST),
    ("/api/v1/dead/purge", Route::PurgeDead, POST),
    ("/api/v1/audit", Route::AuditTrail, GET),
    ("/api/v1/session", Route::Session, GET_OR_POST),
    ("/api/v1/session/logout", Route::Logout, POST),
    ("/", Route::Page, GET),
    ("/topics", Route::Page, GET),
    ("/topics/*", Route::Page, GET),
    ("/consumers", Route::Page, GET),
    ("/queues", Route::Page, GET),
    ("/jobs", Route::Page, GET),
    ("/jobs/*", Route::Page, GET),
    ("/dead", Route::Page, GET),
    ("/audit", Route::Page, GET),
    ("/assets/*", Route::Asset, GET),
];

/// 401 with the scheme to use.
fn unauthorized(reason: &str) -> Response {
    let mut answer = error(StatusCode::UNAUTHORIZED, reason);
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    answer
}

/// Largest request body a POST may send.
const BODY_BYTES_MAX: usize = 64 * 1024;

/// The route `path` matches and the values of its `*` segments.
fn find_route(path: &str) -> Option<(Route, &'static [Method], Vec<String>)> {
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES.iter().find_map(|(pattern, route, methods)| {
        let wanted: Vec<&str> = pattern.split('/').collect();
        if wanted.len() != segments.len() {
            return None;
        }
        let mut values = Vec::new();
        for (want, got) in wanted.iter().zip(&segments) {
            if *want == "*" {
                if got.is_empty() {
                    return None;
                }
                values.push(params::percent_decode(got)?);
            } else if want != got {
                return None;
            }
        }
        Some((*route, *methods, values))
    })
}

/// The Log service the dashboard calls: the cluster's on a cluster node
/// (topics, offsets and checkpoints as the cluster has them), else the
/// single node's.
#[derive(Debug, Clone)]
enum AdminLog {
    Local(LogService),
    Cluster(crate::cluster::ClusterLogService),
}

/// One Log call on whichever service the dashboard uses.
macro_rules! delegate {
    ($($name:ident($request:ty) -> $response:ty;)*) => {
        impl AdminLog {
            $(
                async fn $name(
                    &self,
                    request: tonic::Request<$request>,
                ) -> Result<tonic::Response<$response>, tonic::Status> {
                    use spool_proto::v1::log_server::Log as _;
                    match self {
                        AdminLog::Local(log) => log.$name(request).await,
                        AdminLog::Cluster(log) => log.$name(request).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    commit_checkpoint(spool_proto::v1::CommitCheckpointRequest) -> spool_proto::v1::CommitCheckpointResponse;
    describe_topic(spool_proto::v1::DescribeTopicRequest) -> spool_proto::v1::DescribeTopicResponse;
    fetch(spool_proto::v1::FetchRequest) -> spool_proto::v1::FetchResponse;
    get_checkpoint(spool_proto::v1::GetCheckpointRequest) -> spool_proto::v1::GetCheckpointResponse;
    list_offsets(spool_proto::v1::ListOffsetsRequest) -> spool_proto::v1::ListOffsetsResponse;
    list_topics(spool_proto::v1::ListTopicsRequest) -> spool_proto::v1::ListTopicsResponse;
}

impl AdminLog {
    fn for_state(state: &Arc<ServerState>) -> AdminLog {
        match state.cluster.get() {
            Some(cluster) => AdminLog::Cluster(crate::cluster::ClusterLogService::new(
                Arc::clone(state),
                Arc::clone(cluster),
            )),
            None => AdminLog::Local(LogService::new(Arc::clone(state))),
        }
    }
}

/// What the admin pages read.
#[derive(Debug)]
pub struct Admin {
    exposition: Arc<spool_metrics::Exposition>,
    state: Arc<ServerState>,
    /// `None` when the server keeps no metrics history.
    history: Option<Arc<crate::history::History>>,
    log: AdminLog,
    /// `None` for a listener without the job layer (unit tests).
    jobs: Option<JobsService>,
    audit: Audit,
    /// Dashboard logins.
    sessions: std::sync::Mutex<spool_auth::Sessions>,
    /// Session cookies are marked `Secure` (sent over HTTPS only) when the
    /// listener serves TLS.
    secure_cookies: bool,
}

/// Routes anyone may ask for, with authentication on or off: probes, and
/// the dashboard's pages and assets (which hold no data; their API calls
/// need a token).
fn open_route(route: Route) -> bool {
    matches!(
        route,
        Route::Live | Route::Ready | Route::Page | Route::Asset | Route::Session | Route::Logout
    )
}

/// The name of the dashboard's session cookie.
const SESSION_COOKIE: &str = "spool_session";
/// How long a dashboard login lasts.
const SESSION_LIFETIME_MS: i64 = 12 * 3_600_000;
/// Dashboard logins held at once; past it the oldest end.
const SESSIONS_MAX: usize = 10_000;

/// The `Set-Cookie` value of a new session: HTTP-only (the page's script
/// never sees it), sent only to this site, and with `secure` (a listener
/// serving TLS) only over HTTPS.
fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a, B>(request: &'a http::Request<B>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// A request as the handlers see it: what the route matched, the query
/// string, the body and who sent it.
#[derive(Debug)]
struct Asked {
    path: String,
    values: Vec<String>,
    params: Params,
    body: Bytes,
    /// `address`, the principal of the bearer token and, when the client
    /// named itself, `X-Spool-User`.
    who: crate::audit::Who,
}

impl Admin {
    /// An admin listener; `jobs` is `None` on a server without the job
    /// layer, whose job routes then answer 503. Opens (creating on first
    /// use) the audit trail's internal topic: blocking.
    pub fn new(
        exposition: Arc<spool_metrics::Exposition>,
        state: Arc<ServerState>,
        history: Option<Arc<crate::history::History>>,
        jobs: Option<JobsService>,
    ) -> spool_log::Result<Self> {
        let audit = state.audit.clone();
        Ok(Admin {
            exposition,
            log: AdminLog::for_state(&state),
            state,
            history,
            jobs,
            audit,
            sessions: std::sync::Mutex::new(spool_auth::Sessions::new(SESSIONS_MAX, SESSION_LIFETIME_MS)),
            secure_cookies: false,
        })
    }

    /// Marks session cookies `Secure`: for a listener that serves TLS.
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, spool_auth::Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers one request.
    pub async fn handle<B>(self: Arc<Self>, request: http::Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        let Some((route, methods, values)) = find_route(&path) else {
            let paths: Vec<&str> = ROUTES.iter().map(|(path, _, _)| *path).collect();
            return plain(
                StatusCode::NOT_FOUND,
                &format!(
                    "not found: {path}; the admin listener serves {}",
                    paths.join(", ")
                ),
            );
        };
        if !methods.contains(request.method()) {
            let allowed: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let mut refused = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "method {} is not allowed on {path}; use {}",
                    request.method(),
                    allowed[0]
                ),
            );
            refused.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_str(&allowed.join(", ")).expect("method names are header text"),
            );
            return refused;
        }
        let params = match Params::parse(request.uri().query().unwrap_or_default()) {
            Ok(params) => params,
            Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
        };
        let caller = match self.authenticate(route, &request) {
            Ok(caller) => caller,
            Err(refusal) => return refusal,
        };
        let who = audit::who(&request, &caller);
        let (parts, body) = request.into_parts();
        let body = if parts.method == Method::POST {
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("application/json"));
            if !json {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "a POST must send Content-Type: application/json",
                );
            }
            match http_body_util::Limited::new(body, BODY_BYTES_MAX).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(reason) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("reading the body failed (at most {BODY_BYTES_MAX} bytes): {reason}"),
                    );
                }
            }
        } else {
            Bytes::new()
        };
        let asked = Asked {
            path,
            values,
            params,
            body,
            who,
        };
        let parts = http::Request::from_parts(parts, ());
        self.route(route, &parts, asked).await
    }

    async fn route(self: Arc<Self>, route: Route, request: &http::Request<()>, asked: Asked) -> Response {
        match route {
            Route::Metrics => self.metrics(request).await,
            Route::Live => plain(StatusCode::OK, "ok"),
            Route::Ready => match health::readiness(&self.state) {
                Ok(()) => plain(StatusCode::OK, "ready"),
                Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, &reason.to_string()),
            },
            Route::History => history::answer(self.history.clone(), request.uri().query()).await,
            Route::Overview => api_log::overview(&self).await,
            Route::Topics => api_log::topics(&self, &asked).await,
            Route::Topic => api_log::topic(&self, &asked).await,
            Route::Messages => api_log::messages(&self, &asked).await,
            Route::Consumers => api_log::consumers(&self).await,
            Route::ResetCheckpoint => api_log::reset_checkpoint(&self, &asked).await,
            Route::Queues => api_jobs::queues(&self).await,
            Route::PauseQueue => api_jobs::pause(&self, &asked, true).await,
            Route::ResumeQueue => api_jobs::pause(&self, &asked, false).await,
            Route::Jobs => api_jobs::jobs(&self, &asked).await,
            Route::Job => api_jobs::job(&self, &asked).await,
            Route::CancelJob => api_jobs::cancel(&self, &asked).await,
            Route::Search => api_jobs::search(&self, &asked).await,
            Route::Dead => api_jobs::dead(&self, &asked).await,
            Route::RetryDead => api_jobs::act_on_dead(&self, &asked, api_jobs::DeadAction::Retry).await,
            Route::PurgeDead => api_jobs::act_on_dead(&self, &asked, api_jobs::DeadAction::Purge).await,
            Route::AuditTrail => audit::answer(&self.audit, &asked).await,
            Route::Session if request.method() == Method::POST => self.log_in(&asked),
            Route::Session => self.session(request),
            Route::Logout => self.log_out(request),
            Route::Page => pages::page(&asked.path),
            Route::Asset => pages::asset(&asked.path),
        }
    }

    async fn metrics(self: Arc<Self>, request: &http::Request<()>) -> Response {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok());
        let format = Format::from_accept(accept);
        // Collectors read segment files (consumer lag): off the runtime.
        match tokio::task::spawn_blocking(move || self.exposition.render(format)).await {
            Ok(text) => response(StatusCode::OK, format.content_type(), text),
            Err(error) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("collecting metrics failed: {error}"),
            ),
        }
    }

    /// The caller of an HTTP request. With authentication on, every route
    /// but the open ones needs `Authorization: Bearer <token>` of a
    /// principal with `cluster=admin`: 401 without valid credentials, 403
    /// without the grant.
    fn authenticate<B>(&self, route: Route, request: &http::Request<B>) -> Result<Caller, Response> {
        let address = request
            .extensions()
            .get::<spool_metrics::http::Peer>()
            .map(|spool_metrics::http::Peer(address)| *address);
        let mut caller = Caller {
            principal: None,
            address,
            via: Via::Http,
        };
        let access = &self.state.access;
        if !access.enabled() || open_route(route) {
            return Ok(caller);
        }
        let header = request.headers().get(header::AUTHORIZATION);
        let principal = match header.map(|value| access.authenticate_header(value.as_bytes())) {
            Some(Ok(principal)) => principal,
            Some(Err(refusal)) => return Err(unauthorized(&refusal.to_string())),
            None => self.session_principal(request)?,
        };
        if let Err(refusal) = principal.authorize(spool_auth::Action::CLUSTER_ADMIN, "") {
            return Err(error(StatusCode::FORBIDDEN, &refusal.to_string()));
        }
        caller.principal = Some(principal);
        Ok(caller)
    }

    /// The principal of a request made with the session cookie; a POST must
    /// also repeat the session's CSRF token.
    fn session_principal<B>(
        &self,
        request: &http::Request<B>,
    ) -> Result<Arc<spool_auth::Principal>, Response> {
        let Some(id) = cookie(request, SESSION_COOKIE) else {
            return Err(unauthorized(&spool_auth::Unauthenticated::Missing.to_string()));
        };
        let session = self.sessions().get(id, json::now_ms()).cloned();
        let Some(session) = session else {
            return Err(unauthorized("the session ended: log in again"));
        };
        // The token is checked again: a revoked token ends its sessions.
        let principal = self
            .state
            .access
            .authenticate_token(&session.token)
            .map_err(|_| unauthorized("the token of this session was revoked: log in again"))?;
        if request.method() == Method::POST {
            let presented = request
                .headers()
                .get("x-csrf-token")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            if !session.csrf_matches(presented) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "a request made with the session cookie must send the session's X-CSRF-Token",
                ));
            }
        }
        Ok(principal)
    }

    /// `POST /api/v1/session` `{"token": "..."}`: logs a browser in. The
    /// token must be valid and hold `cluster=admin`; the answer sets the
    /// session cookie and gives the CSRF token.
    fn log_in(&self, asked: &Asked) -> Response {
        let access = &self.state.access;
        if !access.enabled() {
            return json::ok(&serde_json::json!({ "authentication": false }));
        }
        let token = serde_json::from_slice::<serde_json::Value>(&asked.body)
            .ok()
            .and_then(|body| body.get("token").and_then(|t| t.as_str()).map(str::to_owned));
        let Some(token) = token else {
            return error(StatusCode::BAD_REQUEST, "send {\"token\": \"spool_...\"}");
        };
        let principal = match access.authenticate_token(token.trim()) {
            Ok(principal) => principal,
            Err(refusal) => return unauthorized(&refusal.to_string()),
        };
        if let Err(refusal) = principal.authorize(spool_auth::Action::CLUSTER_ADMIN, "") {
            return error(StatusCode::FORBIDDEN, &refusal.to_string());
        }
        let opened = self.sessions().open(token.trim(), json::now_ms());
        let (id, session) = match opened {
            Ok(opened) => opened,
            Err(failure) => return error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
        };
        let mut answer = json::ok(&serde_json::json!({
            "authentication": true,
            "principal": principal.name,
            "csrf_token": session.csrf_token,
            "expires_at_ms": session.expires_at_ms,
        }));
        let cookie = session_cookie(&id, self.secure_cookies);
        answer.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("hex and ASCII words are header text"),
        );
        answer
    }

    /// `GET /api/v1/session`: whether authentication is on and, if so, who
    /// the session cookie stands for and its CSRF token; 401 without a
    /// live session.
    fn session(&self, request: &http::Request<()>) -> Response {
        if !self.state.access.enabled() {
            return json::ok(&serde_json::json!({ "authentication": false }));
        }
        let principal = match self.session_principal(request) {
            Ok(principal) => principal,
            Err(refusal) => return refusal,
        };
        let id = cookie(request, SESSION_COOKIE).unwrap_or_default();
        let sessions = self.sessions();
        let Some(session) = sessions.get(id, json::now_ms()) else {
            return unauthorized("the session ended: log in again");
        };
        json::ok(&serde_json::json!({
            "authentication": true,
            "principal": principal.name,
            "csrf_token": session.csrf_token,
            "expires_at_ms": session.expires_at_ms,
        }))
    }

    /// `POST /api/v1/session/logout`: ends the session and clears the
    /// cookie.
    fn log_out(&self, request: &http::Request<()>) -> Response {
        if let Some(id) = cookie(request, SESSION_COOKIE) {
            self.sessions().close(id);
        }
        let mut answer = json::ok(&serde_json::json!({ "logged_out": true }));
        answer.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static("spool_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        );
        answer
    }

    /// Records an action of the dashboard in the audit trail; the answer
    /// to send instead when that fails.
    async fn record(
        &self,
        who: &crate::audit::Who,
        action: &str,
        target: serde_json::Value,
        count: u64,
    ) -> Result<(), Response> {
        self.audit
            .record(who, action, target, count)
            .await
            .map_err(|failure| audit::unrecorded(&failure))
    }

    /// The job service, or the answer for a server without one.
    fn jobs(&self) -> Result<&JobsService, Response> {
        self.jobs
            .as_ref()
            .ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "this listener has no job layer"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use spool_log::{Durability, FaultInjector, Record, Store, StoreConfig, TopicConfig};
    use tokio::sync::watch;

    use super::*;
    use crate::Config;
    use crate::metrics::{self, ServerMetrics};

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_under_tls() {
        let plain = session_cookie("ab12", false);
        assert_eq!(
            plain,
            "spool_session=ab12; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        let secure = session_cookie("ab12", true);
        assert_eq!(secure, format!("{plain}; Secure"));
        let request = http::Request::builder()
            .header(header::COOKIE, "theme=dark; spool_session=ab12")
            .header(header::COOKIE, "other=1")
            .body(())
            .unwrap();
        assert_eq!(cookie(&request, SESSION_COOKIE), Some("ab12"));
        assert_eq!(cookie(&request, "other"), Some("1"));
        assert_eq!(cookie(&request, "missing"), None);
    }

    struct Fixture {
        admin: Arc<Admin>,
        metrics: Arc<ServerMetrics>,
        state: Arc<ServerState>,
        faults: Arc<FaultInjector>,
        shutdown: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(
            ServerMetrics::new(crate::connections::ConnectionLimits {
                total_max: 10,
                per_address_max: 10,
                handshake_timeout: std::time::Duration::from_secs(10),
                idle_timeout: std::time::Duration::from_secs(60),
            })
            .unwrap(),
        );
        let faults = Arc::new(FaultInjector::default());
        let store_config = StoreConfig {
            faults: Some(Arc::clone(&faults)),
            observer: Some(Arc::clone(&metrics.storage) as Arc<dyn spool_log::StoreObserver>),
            checkpoint_interval_ms: 0,
            ..StoreConfig::default()
        };
        let (store, _) = Store::open(dir.path(), store_config).unwrap();
        let (shutdown, receiver) = watch::channel(false);
        let state = Arc::new(ServerState::new(Arc::new(store), Config::default(), receiver).unwrap());
        let admin = Arc::new(
            Admin::new(
                Arc::new(metrics::exposition(&metrics, &state, None)),
                Arc::clone(&state),
                None,
                None,
            )
            .unwrap(),
        );
        Fixture {
            admin,
            metrics,
            state,
            faults,
            shutdown,
            _dir: dir,
        }
    }

    async fn send(
        admin: &Arc<Admin>,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = Arc::clone(admin).handle(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(admin: &Arc<Admin>, method: Method, path: &str) -> (StatusCode, String) {
        send(admin, method, path, None, "").await
    }

    fn poison(fixture: &Fixture) {
        let partition = fixture
            .state
            .store
            .create_topic("orders", TopicConfig::default())
            .unwrap()
            .partitions()[0]
            .clone();
        fixture.faults.set_sync_fails(true);
        partition
            .append(&[Record::value(b"lost")], Durability::Fsync)
            .unwrap_err();
    }

    #[test]
    fn patterns_match_whole_segments() {
        let (route, _, values) = find_route("/api/v1/topics/orders/messages").unwrap();
        assert_eq!((route, values), (Route::Messages, vec!["orders".to_owned()]));
        let (route, _, values) = find_route("/api/v1/consumers/billing/orders/reset").unwrap();
        assert_eq!(
            (route, values),
            (
                Route::ResetCheckpoint,
                vec!["billing".to_owned(), "orders".to_owned()]
            )
        );
        let (route, _, values) = find_route("/api/v1/topics/a%2Eb").unwrap();
        assert_eq!((route, values), (Route::Topic, vec!["a.b".to_owned()]));
        assert_eq!(find_route("/api/v1/topics/").map(|r| r.0), None);
        assert_eq!(find_route("/api/v1/topicsx").map(|r| r.0), None);
        assert_eq!(find_route("/").map(|r| r.0), Some(Route::Page));
    }

    #[tokio::test]
    async fn routes_answer_and_refuse_as_documented() {
        let fixture = fixture();
        let admin = &fixture.admin;
        assert_eq!(
            get(admin, Method::GET, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            get(admin, Method::GET, "/readyz").await,
            (StatusCode::OK, "ready\n".into())
        );
        let (status, text) = get(admin, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("spool_storage_poisoned 0\n"), "{text}");
        let (status, text) = get(admin, Method::GET, "/dashboard").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            text.contains("/metrics, /healthz, /readyz, /api/v1/history"),
            "{text}"
        );
        let (status, text) = get(admin, Method::POST, "/metrics").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(text.contains("use GET"), "{text}");
        let (status, text) = get(admin, Method::GET, "/api/v1/dead/retry").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(text.contains("use POST"), "{text}");
        // A form post (what another site could make a browser send) is
        // refused before anything is read.
        let (status, text) = send(
            admin,
            Method::POST,
            "/api/v1/dead/retry",
            Some("application/x-www-form-urlencoded"),
            "queue=q",
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
        let (status, text) = send(
            admin,
            Method::POST,
            "/api/v1/dead/retry",
            Some("application/json"),
            r#"{"queue":"q"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        let (status, text) = get(admin, Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("<script"), "{text}");
        let (status, _) = get(admin, Method::GET, "/assets/nothing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, text) = get(admin, Method::GET, "/api/v1/topics?internal=true").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("\"__audit\""), "{text}");
    }

    #[tokio::test]
    async fn a_poisoned_partition_makes_the_server_unready_over_http_and_grpc() {
        let fixture = fixture();
        let (reporter, service) = tonic_health::server::health_reporter();
        crate::health::set_serving(&reporter).await;
        tokio::spawn(crate::health::follow_storage(
            fixture.metrics.storage.poisoned(),
            reporter,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = |service: &str| {
            let request = tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            };
            let mut health = health.clone();
            async move { health.check(request).await.unwrap().into_inner().status }
        };
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
        assert_eq!(status("spool.v1.Log").await, serving);

        poison(&fixture);
        let (code, text) = get(&fixture.admin, Method::GET, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text.contains("storage is poisoned") && text.contains("orders/0"),
            "{text}"
        );
        let (_, metrics_text) = get(&fixture.admin, Method::GET, "/metrics").await;
        assert!(
            metrics_text.contains("spool_storage_poisoned 1\n"),
            "{metrics_text}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for service in ["spool.v1.Log", "spool.v1.Jobs", "spool.v1.Metrics", ""] {
            while status(service).await != not_serving {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{service:?} still serving"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        fixture.shutdown.send_replace(true);
        let (code, text) = get(&fixture.admin, Method::GET, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("shutting down"), "{text}");
    }
}
