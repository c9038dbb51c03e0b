//! The admin HTTP listener (`admin_listen`, default 127.0.0.1:7071): plain
//! HTTP/1 beside the gRPC port, for Prometheus and probes.
//!
//! Routes (GET or HEAD; another method is 405, another path 404):
//! - `/metrics`: every metric, Prometheus text 0.0.4, or OpenMetrics when
//!   the `Accept` header asks for `application/openmetrics-text`;
//! - `/healthz`: liveness, always 200 `ok` while the process serves;
//! - `/readyz`: readiness (`health::readiness`), 200 `ready` or 503 with
//!   the reason;
//! - `/api/v1/history?series=EXPR&from=-1h&to=now&step=1m`: the metrics
//!   history as JSON ([`history`]), the same read as the gRPC
//!   `Metrics.GetMetricsHistory`.
//!
//! New pages go in [`ROUTES`] and [`Admin::route`]; each route's handler is
//! a method of [`Admin`], which holds what the pages read.

mod history;

use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode, header};
use spool_metrics::Format;
use spool_metrics::http::{Response, plain, response};

use crate::health;
use crate::log_service::ServerState;

/// The pages, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Live,
    Ready,
    History,
}

const ROUTES: [(&str, Route); 4] = [
    ("/metrics", Route::Metrics),
    ("/healthz", Route::Live),
    ("/readyz", Route::Ready),
    ("/api/v1/history", Route::History),
];

/// What the admin pages read.
#[derive(Debug)]
pub struct Admin {
    exposition: Arc<spool_metrics::Exposition>,
    state: Arc<ServerState>,
    /// `None` when the server keeps no metrics history.
    history: Option<Arc<crate::history::History>>,
}

impl Admin {
    pub fn new(
        exposition: Arc<spool_metrics::Exposition>,
        state: Arc<ServerState>,
        history: Option<Arc<crate::history::History>>,
    ) -> Self {
        Admin {
            exposition,
            state,
            history,
        }
    }

    /// Answers one request. No page reads a request body.
    pub async fn handle<B>(self: Arc<Self>, request: http::Request<B>) -> Response {
        let path = request.uri().path();
        let Some(&(_, route)) = ROUTES.iter().find(|(known, _)| *known == path) else {
            let paths: Vec<&str> = ROUTES.iter().map(|(path, _)| *path).collect();
            return plain(
                StatusCode::NOT_FOUND,
                &format!(
                    "not found: {path}; the admin listener serves {}",
                    paths.join(", ")
                ),
            );
        };
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut refused = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("method {} is not allowed on {path}; use GET", request.method()),
            );
            refused
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return refused;
        }
        self.route(route, &request).await
    }

    async fn route<B>(self: Arc<Self>, route: Route, request: &http::Request<B>) -> Response {
        match route {
            Route::Metrics => self.metrics(request).await,
            Route::Live => plain(StatusCode::OK, "ok"),
            Route::Ready => match health::readiness(&self.state) {
                Ok(()) => plain(StatusCode::OK, "ready"),
                Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, &reason.to_string()),
            },
            Route::History => history::answer(self.history.clone(), request.uri().query()).await,
        }
    }

    async fn metrics<B>(self: Arc<Self>, request: &http::Request<B>) -> Response {
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use spool_log::{Durability, FaultInjector, Record, Store, StoreConfig, TopicConfig};
    use tokio::sync::watch;

    use super::*;
    use crate::Config;
    use crate::metrics::{self, ServerMetrics};

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
        let metrics = Arc::new(ServerMetrics::new().unwrap());
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
        let admin = Arc::new(Admin::new(
            Arc::new(metrics::exposition(&metrics, &state, None)),
            Arc::clone(&state),
            None,
        ));
        Fixture {
            admin,
            metrics,
            state,
            faults,
            shutdown,
            _dir: dir,
        }
    }

    async fn get(admin: &Arc<Admin>, method: Method, path: &str) -> (StatusCode, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let response = Arc::clone(admin).handle(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
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
