//! `spoold`: serves Spool's gRPC API over a data directory.
//!
//! With no arguments it serves gRPC on 127.0.0.1:7070 and its admin HTTP
//! listener (metrics, health, the dashboard) on 127.0.0.1:7071, with data in
//! ./spool-data. Configuration layers: defaults, `--config FILE` (TOML),
//! `SPOOL_*` environment variables, then flags.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use spool_jobs::{JobsRuntime, RuntimeConfig};
use spool_log::Store;
use spool_proto::v1::admin_server::AdminServer;
use spool_proto::v1::cluster_server::ClusterServer;
use spool_proto::v1::jobs_server::JobsServer;
use spool_proto::v1::log_server::LogServer;
use spool_proto::v1::metrics_server::MetricsServer;
use spool_raft::GroupConfig;
use spool_server::access::Access;
use spool_server::admin::Admin;
use spool_server::admin_service::AdminService;
use spool_server::admission::AdmissionLayer;
use spool_server::auth_layer::AuthLayer;
use spool_server::cluster::{Bootstrap, Cluster, ClusterLogService, PeerTls};
use spool_server::cluster_service::ClusterService;
use spool_server::history::{self, History};
use spool_server::metrics::{self, ServerMetrics, rpc::RpcLayer};
use spool_server::tls::{Certificates, TlsFiles};
use spool_server::trace_context::{DecodeLayer, TraceLayer};
use spool_server::{Config, JobsService, LogFormat, LogService, MetricsService, ServerState, health};
use spool_telemetry::otlp::{Exporter, OtlpSettings, init_subscriber};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

/// How often the server pings each connection, and how long it waits for
/// the answer before closing it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(
    name = "spoold",
    version,
    about = "Spool's server: partitioned, durable commit-log topics over gRPC",
    after_help = "Examples:\n  spoold                                   # 127.0.0.1:7070, data in ./spool-data\n  spoold --admin-listen 0.0.0.0:7071 --insecure   # metrics, health and the dashboard, open to the network\n  spool init-security && spoold --listen 0.0.0.0:7070 --tls-cert spool-tls/server.pem --tls-key spool-tls/server.key --tokens-file spool-tls/tokens.toml\n  spoold --otlp-endpoint http://127.0.0.1:4317   # trace spans to an OTLP collector\n  spoold --config spool.toml --set retention_ms=3d\n  spoold --node-id 1 --peers 1=127.0.0.1:7080,2=127.0.0.1:7081,3=127.0.0.1:7082   # a cluster node (docs/cluster.md)\n  spoold --node-id 1 --peers 1=10.0.0.1:7080,2=10.0.0.2:7080,3=10.0.0.3:7080 --listen 10.0.0.1:7070 --tls-cert spool-tls/node-1.pem --tls-key spool-tls/node-1.key --peer-tls-ca spool-tls/ca.pem --tokens-file spool-tls/tokens.toml   # with mutual TLS between nodes\n  SPOOL_FETCH_BYTES_MAX=2MiB spoold --log-format json\n\nEvery configuration key can be set in the TOML file, as SPOOL_<KEY> in the\nenvironment, or with --set KEY=VALUE; see docs/operations.md for the keys."
)]
struct Args {
    /// TOML file with configuration keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory holding the data (default ./spool-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve on (default 127.0.0.1:7070; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the admin HTTP listener with /metrics, /healthz, /readyz
    /// and the dashboard at / (default 127.0.0.1:7071; `off` for none).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Export trace spans over OTLP gRPC to this receiver, like
    /// http://127.0.0.1:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else
    /// no export). OTEL_SERVICE_NAME names the service (default spoold).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Log format: human or json. Filter with RUST_LOG (default info).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Token file: every call must then authenticate with a token of it
    /// (`spool token create`) or a client certificate naming its principal.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// PEM certificate chain: both listeners serve TLS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: gRPC clients must present a certificate it signed.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle of the cluster's nodes: peer traffic is mutual TLS
    /// with --tls-cert and --tls-key, and a peer must present a
    /// certificate it signed (docs/security.md, "Peers").
    #[arg(long, value_name = "FILE")]
    peer_tls_ca: Option<PathBuf>,
    /// Serve an address other than loopback without TLS or authentication.
    #[arg(long)]
    insecure: bool,
    /// This node's id in a cluster (with --peers; docs/cluster.md).
    #[arg(long, value_name = "ID")]
    node_id: Option<u64>,
    /// Every node of the cluster as ID=HOST:PORT pairs, separated by
    /// commas, this node included; each address is that node's peer
    /// listener (Raft traffic), not its client address.
    #[arg(long, value_name = "ID=ADDR,...")]
    peers: Option<String>,
    /// Join a running cluster instead of starting a new one: the node
    /// waits until an operator adds it (`spool cluster add-node`).
    #[arg(long)]
    join: bool,
    /// Any configuration key, as KEY=VALUE; may be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        config.apply_toml(&text, &path.display().to_string())?;
    }
    config.apply_env(std::env::vars())?;
    if let Some(dir) = &args.data_dir {
        config.set("data_dir", &dir.to_string_lossy(), "flag --data-dir")?;
    }
    if let Some(listen) = &args.listen {
        config.set("listen", listen, "flag --listen")?;
    }
    if let Some(admin) = &args.admin_listen {
        config.set("admin_listen", admin, "flag --admin-listen")?;
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        config.set("otlp_endpoint", endpoint, "flag --otlp-endpoint")?;
    }
    if let Some(format) = &args.log_format {
        config.set("log_format", format, "flag --log-format")?;
    }
    for (key, path, flag) in [
        ("tokens_file", &args.tokens_file, "flag --tokens-file"),
        ("tls_cert", &args.tls_cert, "flag --tls-cert"),
        ("tls_key", &args.tls_key, "flag --tls-key"),
        ("tls_client_ca", &args.tls_client_ca, "flag --tls-client-ca"),
        ("peer_tls_ca", &args.peer_tls_ca, "flag --peer-tls-ca"),
    ] {
        if let Some(path) = path {
            config.set(key, &path.to_string_lossy(), flag)?;
        }
    }
    if args.insecure {
        config.set("insecure", "true", "flag --insecure")?;
    }
    if let Some(node_id) = args.node_id {
        config.set("node_id", &node_id.to_string(), "flag --node-id")?;
    }
    if let Some(peers) = &args.peers {
        config.set("peers", peers, "flag --peers")?;
    }
    if args.join {
        config.set("join", "true", "flag --join")?;
    }
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?} is not KEY=VALUE"))?;
        config.set(key.trim(), value.trim(), &format!("flag --set {key}"))?;
    }
    config.validate()?;
    Ok(config)
}

/// Logs on stderr, and the trace spans' export when an endpoint is
/// configured (the flag or key, else `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn init_tracing(config: &Config) -> anyhow::Result<Option<Exporter>> {
    let otlp = OtlpSettings::resolve(
        config.otlp_endpoint.as_deref(),
        |name| std::env::var(name).ok(),
        "spoold",
    )
    .context("invalid OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let exporter = init_subscriber(config.log_format == LogFormat::Json, otlp.as_ref())?;
    if let Some(otlp) = &otlp {
        tracing::info!(endpoint = %otlp.endpoint, service_name = %otlp.service_name, "exporting trace spans over OTLP");
    }
    Ok(exporter)
}

/// Each segment keeps up to three files open; the default soft limit of
/// 1,024 descriptors would cap a server at a few hundred partitions.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we
    // pass, which lives on this stack frame for the duration of the call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                tracing::debug!(open_files_max = limit.rlim_max, "raised the open files limit");
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("spoold: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let exporter = match init_tracing(&config) {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("spoold: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("spoold: {error:#}");
            std::process::ExitCode::FAILURE
        }
    };
    if let Some(exporter) = exporter {
        // Blocks until the last spans are sent: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    code
}

async fn run(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    let started = Instant::now();
    let limits = spool_server::connections::ConnectionLimits {
        total_max: config.connections_max as usize,
        per_address_max: config.connections_per_address_max as usize,
        handshake_timeout: Duration::from_millis(config.connection_handshake_timeout_ms),
        idle_timeout: Duration::from_millis(config.connection_idle_timeout_ms),
    };
    let metrics = Arc::new(ServerMetrics::new(limits).context("cannot read the services' descriptors")?);
    let mut config = config;
    config.store.observer = Some(Arc::clone(&metrics.storage) as Arc<dyn spool_log::StoreObserver>);
    let data_dir = config.data_dir.clone();
    let store_config = config.store.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&data_dir, store_config))
        .await?
        .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    for partition in &report.partitions {
        tracing::info!(topic = %partition.topic, partition = partition.partition, scans = partition.scans.len(),
            lost_data = partition.lost_data(), "recovered partition");
    }

    let access = match &config.tokens_file {
        Some(path) => {
            let access = Access::with_tokens_file(path)?;
            tracing::info!(tokens_file = %path.display(), tokens = access.token_entries().len(), "authentication on");
            access
        }
        None => Access::open(),
    };
    let access = Arc::new(access);
    let tls = match config.tls_files() {
        Some(files) => {
            let grpc = Certificates::load(files.clone(), &[b"h2"])?;
            // The admin listener speaks HTTP/1 and asks for no client
            // certificate: browsers and scrapers authenticate with tokens.
            let admin_files = TlsFiles {
                client_ca: None,
                ..files
            };
            let admin = Certificates::load(admin_files, &[b"http/1.1"])?;
            Some((Arc::new(grpc), Arc::new(admin)))
        }
        None => None,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut state = {
        let store = Arc::clone(&store);
        let config = config.clone();
        tokio::task::spawn_blocking(move || ServerState::new(store, config, shutdown_rx)).await??
    };
    state.access = Arc::clone(&access);
    let state = Arc::new(state);
    let peer_tls = match (config.peer_tls_files(), &config.peer_tls_ca) {
        (Some(files), Some(ca)) => {
            let client = spool_server::tls::peer_client_config(&files.cert, &files.key, ca)?;
            let listener = Arc::new(Certificates::load(files, &[b"h2"])?);
            Some(PeerTls { listener, client })
        }
        _ => None,
    };
    let watched: Vec<Arc<Certificates>> = tls
        .iter()
        .flat_map(|(grpc, admin)| [Arc::clone(grpc), Arc::clone(admin)])
        .chain(peer_tls.iter().map(|peer| Arc::clone(&peer.listener)))
        .collect();
    tokio::spawn(spool_server::reload::run(
        Arc::clone(&access),
        watched,
        state.shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let admin_listener = match config.admin_listen {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin)
                .await
                .with_context(|| format!("cannot listen on {admin} (admin_listen; `off` turns it off)"))?,
        ),
        None => None,
    };

    // Cluster mode (`--node-id` with `--peers`): the peer listener, the
    // metadata group and the job layer's group start here (before the job
    // runtime, which runs over the latter), and the Log service is the
    // replicated one. Without them nothing of it runs.
    let cluster = match config.node_id {
        Some(node_id) => Some(
            Cluster::start(
                Arc::clone(&store),
                GroupConfig {
                    node_id,
                    heartbeat_interval_ms: config.raft_heartbeat_interval_ms,
                    election_timeout_min_ms: config.raft_election_timeout_ms,
                    election_timeout_max_ms: 2 * config.raft_election_timeout_ms,
                },
                Bootstrap {
                    peers: config.peers.clone(),
                    join: config.join,
                },
                address.to_string(),
                spool_server::cluster::DataSettings {
                    segment_bytes_max: config.store.topic_defaults.segment_bytes_max,
                    job_history_retention: config.job_history_retention,
                },
                peer_tls,
                state.shutdown.clone(),
            )
            .await
            .context("cannot start cluster mode")?,
        ),
        None => None,
    };
    if let Some(cluster) = &cluster {
        // The dashboard and the consumer-lag metrics read the cluster's
        // checkpoints and topics through it.
        let _ = state.cluster.set(Arc::clone(cluster));
    }
    let jobs = {
        let store = Arc::clone(&store);
        let runtime_config = RuntimeConfig {
            jobs: config.effective_jobs(),
            snapshot_events: config.job_snapshot_events,
            history_retention: config.job_history_retention,
            retention_check_interval_ms: config.store.retention_check_interval_ms,
            ..RuntimeConfig::new(config.data_dir.join(spool_server::cluster::JOBS_SNAPSHOT_DIR))
        };
        // In a cluster `__jobs` is replicated: the table follows its
        // group, and takes requests on the node that leads it.
        let replicated = cluster.as_ref().map(|cluster| cluster.jobs_group());
        let (runtime, startup) = tokio::task::spawn_blocking(move || match replicated {
            Some((partition, group)) => JobsRuntime::start_replicated(partition, group, runtime_config),
            None => JobsRuntime::start(&store, runtime_config),
        })
        .await??;
        tracing::info!(
            jobs = startup.jobs,
            replayed_events = startup.replayed_events,
            elapsed_ms = startup.elapsed_ms,
            "job layer ready"
        );
        Arc::new(runtime)
    };

    let exposition = Arc::new(metrics::exposition(&metrics, &state, Some(&jobs)));
    let history = match config.metrics_history() {
        Some(history_config) => {
            let store = Arc::clone(&store);
            let history = tokio::task::spawn_blocking(move || History::open(&store, history_config))
                .await?
                .with_context(|| format!("cannot open the metrics history ({})", history::TOPIC))?;
            let history = Arc::new(history);
            tokio::spawn(history::run_sampler(
                Arc::clone(&history),
                Arc::clone(&exposition),
                state.shutdown.clone(),
            ));
            Some(history)
        }
        None => None,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health::set_serving(&health_reporter).await;
    tokio::spawn(health::follow_storage(
        metrics.storage.poisoned(),
        health_reporter.clone(),
    ));
    let reflection = spool_server::reflection::v1_service()?;
    let reflection_v1alpha = spool_server::reflection::v1alpha_service()?;
    // A fetch returns at least one whole batch even past its byte budget,
    // so a response can reach fetch_bytes_max plus one largest batch.
    let encode_max = (config.fetch_bytes_max + config.store.batch_bytes_max) as usize + (1 << 20);
    let log = LogServer::new(LogService::new(Arc::clone(&state)))
        .max_decoding_message_size(config.request_bytes_max as usize)
        .max_encoding_message_size(encode_max);
    let jobs_service = JobsService::new(Arc::clone(&jobs), state.shutdown.clone())
        .with_access(Arc::clone(&access), state.audit.clone());
    let jobs_service = JobsServer::new(jobs_service)
        .max_decoding_message_size(config.request_bytes_max as usize)
        .max_encoding_message_size(64 << 20);

    let metrics_service =
        MetricsServer::new(MetricsService::new(history.clone()).with_access(Arc::clone(&access)))
            .max_encoding_message_size(64 << 20);
    let admin_service = AdminServer::new(AdminService::new(Arc::clone(&access), state.audit.clone()));
    let cluster_service = ClusterServer::new(ClusterService::new(
        Arc::clone(&access),
        state.audit.clone(),
        cluster.clone(),
    ));

    let admin_address = match admin_listener {
        Some(admin_listener) => {
            let admin_address = admin_listener.local_addr()?;
            let admin = {
                let (exposition, state) = (Arc::clone(&exposition), Arc::clone(&state));
                let jobs = JobsService::new(Arc::clone(&jobs), state.shutdown.clone()).with_standby_reads();
                tokio::task::spawn_blocking(move || Admin::new(exposition, state, history, Some(jobs)))
                    .await?
                    .context("cannot open the audit trail (__audit)")?
            };
            let admin = Arc::new(admin.with_secure_cookies(tls.is_some()));
            // Served until the process ends, so /readyz answers 503 through
            // the shutdown grace period.
            let handler = move |request| Arc::clone(&admin).handle(request);
            match tls.as_ref().map(|(_, admin)| Arc::clone(admin)) {
                Some(certificates) => tokio::spawn(spool_metrics::http::serve_with(
                    admin_listener,
                    move |stream| {
                        let certificates = Arc::clone(&certificates);
                        async move { certificates.handshake(stream).await }
                    },
                    handler,
                    std::future::pending(),
                )),
                None => tokio::spawn(spool_metrics::http::serve(
                    admin_listener,
                    handler,
                    std::future::pending(),
                )),
            };
            Some(admin_address)
        }
        None => None,
    };

    tracing::info!(%address, admin_address = ?admin_address, tls = tls.is_some(), authentication = access.enabled(), data_dir = %config.data_dir.display(), startup_ms = started.elapsed().as_millis() as u64, "spoold serving");
    // Machine-readable lines on stdout for scripts and tests: the gRPC
    // address first, then the admin listener's when there is one. A reader
    // that stopped reading (a closed pipe) must not stop the server, so
    // write errors are ignored rather than panicking as `println!` does.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {address}");
    if let Some(admin_address) = admin_address {
        let _ = writeln!(stdout, "admin listening on {admin_address}");
    }
    let _ = stdout.flush();
    drop(stdout);

    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let stream_window = config.stream_window_bytes as u32; // checked: at most 8 MiB
    let streams = config.streams_per_connection_max;
    let connections = Arc::clone(&metrics.connections);
    let gate = Arc::clone(&metrics.connection_gate);
    // Each accepted connection is counted, then admitted by the gate or
    // closed at once, before a byte of it is read (connections.rs).
    let admit = move |stream: tokio::net::TcpStream, peer: std::net::SocketAddr| match gate
        .guard(connections.track(stream), peer.ip())
    {
        Ok(guarded) => Some(guarded),
        Err(refusal) => {
            tracing::debug!(%peer, reason = refusal.name(), "connection refused: too many open");
            None
        }
    };
    let router = tonic::transport::Server::builder()
        // Produce requests wait for in-flight room before tonic reads them
        // (admission.rs); meanwhile each holds at most its stream window.
        // The connection window covers every stream's window, so streams
        // waiting for room can never use it up and stall the streams
        // already admitted on the same connection.
        .max_concurrent_streams(streams)
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(stream_window * streams)
        .http2_max_header_list_size(config.request_header_bytes_max as u32) // checked: at most 1 MiB
        // Pings find peers that are gone; a live client's answers also keep
        // its connection from counting as idle (connections.rs).
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Outermost, so a call's span and time include its wait for
        // admission.
        .layer(TraceLayer)
        .layer(RpcLayer::new(Arc::clone(&metrics.rpc)))
        // Before admission: a call without credentials takes no in-flight
        // room.
        .layer(AuthLayer::new(Arc::clone(&access)))
        .layer(AdmissionLayer::new(
            Arc::clone(&state.inflight),
            config.request_bytes_max,
        ))
        // Innermost: a call's `decode` span starts once it is admitted.
        .layer(DecodeLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(jobs_service)
        .add_service(metrics_service)
        .add_service(admin_service)
        .add_service(cluster_service);
    let router = match &cluster {
        Some(cluster) => router.add_service(
            LogServer::new(ClusterLogService::new(Arc::clone(&state), Arc::clone(cluster)))
                .max_decoding_message_size(config.request_bytes_max as usize)
                .max_encoding_message_size(encode_max),
        ),
        None => router.add_service(log),
    };
    let handing_over = cluster.clone();
    let stopped = async move {
        shutdown_signal().await;
        // Leaderships move to other nodes while this one still takes
        // requests: those that reach it meanwhile are answered with the
        // new leaders' hints instead of a closed connection.
        if let Some(cluster) = &handing_over {
            cluster.hand_over().await;
        }
        health::set_not_serving(&health_reporter).await;
        let _ = shutdown_tx.send(true);
    };
    let serve: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match tls {
        Some((certificates, _)) => Box::pin(router.serve_with_incoming_shutdown(
            spool_server::tls::incoming(listener, certificates, admit),
            stopped,
        )),
        None => Box::pin(
            router.serve_with_incoming_shutdown(
                // Without TCP_NODELAY small responses and HTTP/2 window
                // updates wait on Nagle and delayed ACKs: 40 ms stalls.
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .filter_map(move |accepted| match accepted {
                        Ok(stream) => {
                            let peer = stream.peer_addr().ok()?;
                            admit(stream, peer).map(Ok)
                        }
                        Err(error) => Some(Err(error)),
                    }),
                stopped,
            ),
        ),
    };
    let mut serve = serve;
    let mut stopping = state.shutdown.clone();
    tokio::select! {
        result = &mut serve => result?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_ms = config.shutdown_grace_ms, "requests still running after the grace period; closing anyway"),
    }

    let closing = Instant::now();
    if let Some(cluster) = &cluster {
        cluster.shutdown().await;
    }
    tokio::task::spawn_blocking(move || {
        jobs.stop();
        store.close()
    })
    .await??;
    tracing::info!(
        close_ms = closing.elapsed().as_millis() as u64,
        "store closed cleanly"
    );
    Ok(())
}
