//! Server configuration, in layers: defaults, then a TOML file, then
//! `SPOOL_*` environment variables, then command-line flags. Every key has
//! one name used in all layers (`fetch_bytes_max` in TOML is
//! `SPOOL_FETCH_BYTES_MAX` in the environment), and an invalid value fails
//! at start with a message naming the key and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use spool_format::units::{parse_bytes, parse_duration_ms};
use spool_jobs::{HISTORY_RETENTION_DEFAULT, JobsConfig};
use spool_log::{Durability, Retention, StoreConfig, TopicConfig};

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration `{key}` (from {origin}): {reason}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Everything `spoold` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to serve gRPC on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the admin HTTP listener (`/metrics`, `/healthz`,
    /// `/readyz`); `None` (`off`) serves none.
    pub admin_listen: Option<SocketAddr>,
    /// OTLP gRPC receiver of the server's trace spans (`http://HOST:PORT`);
    /// `None` leaves it to `OTEL_EXPORTER_OTLP_ENDPOINT`, and without that
    /// no span is exported.
    pub otlp_endpoint: Option<String>,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Durability for produce requests that leave it unspecified.
    pub default_durability: Durability,
    /// Largest request message the server decodes.
    pub request_bytes_max: u64,
    /// Produce request bytes being appended at once, across all clients.
    pub inflight_bytes_max: u64,
    /// Produce request bytes being appended at once from one connection.
    pub connection_inflight_bytes_max: u64,
    /// How long a produce request waits for in-flight room before it is
    /// answered RESOURCE_EXHAUSTED.
    pub inflight_wait_ms: u64,
    /// HTTP/2 window of each call: what a client may send before the server
    /// reads, so the most a produce request waiting for in-flight room holds
    /// in memory. The connection's window is this times the calls a
    /// connection may have open.
    pub stream_window_bytes: u64,
    /// Calls one connection may have open at once (HTTP/2 concurrent
    /// streams).
    pub streams_per_connection_max: u32,
    /// Largest header block of a call (HTTP/2 header list size): call
    /// metadata such as tokens and trace context.
    pub request_header_bytes_max: u64,
    /// Connections open at once to the gRPC listener, from all clients.
    pub connections_max: u64,
    /// Connections open at once from one client address.
    pub connections_per_address_max: u64,
    /// A new connection that sends fewer than 24 bytes (an HTTP/2 preface)
    /// in this long is closed.
    pub connection_handshake_timeout_ms: u64,
    /// A connection from which nothing arrives for this long is closed (a
    /// live client answers the server's keepalive pings, sent every 30 s).
    pub connection_idle_timeout_ms: u64,
    /// Response size of a fetch that asks for 0 bytes.
    pub fetch_bytes_default: u64,
    /// Largest fetch or subscribe chunk; larger requests are capped.
    pub fetch_bytes_max: u64,
    /// Longest long poll a fetch may ask for.
    pub fetch_wait_ms_max: u64,
    /// Largest chunk a subscription sends at once. Smaller than fetches:
    /// what a stalled subscriber pins in server memory is about a chunk
    /// being encoded plus one read ahead, per subscribed partition.
    pub subscribe_bytes_max: u64,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace_ms: u64,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    pub store: StoreConfig,
    pub jobs: JobsConfig,
    /// A jobs snapshot is taken after this many job events, so a restart
    /// replays at most about this many.
    pub job_snapshot_events: u64,
    /// Time between samples of the metrics history (`__metrics`); 0 keeps
    /// no history.
    pub metrics_history_interval_ms: u64,
    /// Samples older than this are deleted, a whole segment at a time.
    pub metrics_history_retention_ms: Option<u64>,
    /// The oldest segments of the history go while it is larger.
    pub metrics_history_retention_bytes: Option<u64>,
    /// How much job history `__jobs` keeps, by time and size (events the
    /// job table still needs are kept regardless).
    pub job_history_retention: Retention,
    /// Token file (`spool token`); set, every call must authenticate.
    pub tokens_file: Option<PathBuf>,
    /// PEM certificate chain; with `tls_key`, both listeners serve TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that gRPC clients' certificates must chain to (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle of the cluster's nodes: set, the peer listener serves
    /// TLS with `tls_cert`/`tls_key` and takes only peers whose certificate
    /// chains to it, and this node presents its certificate to its peers
    /// and checks theirs against it (`docs/security.md`, "Peers").
    pub peer_tls_ca: Option<PathBuf>,
    /// Serve a non-loopback address without TLS or authentication.
    pub insecure: bool,
    /// This node's id in a cluster (`docs/cluster.md`); with `peers`, the
    /// server runs in cluster mode. `None`: single-node mode.
    pub node_id: Option<u64>,
    /// Every node of the cluster (this one included): node id to peer
    /// address, where the node's `spool.v1.Peer` listener serves. Empty in
    /// single-node mode.
    pub peers: BTreeMap<u64, String>,
    /// Cluster mode: this node joins a running cluster (it waits to be
    /// added with `spool cluster add-node`) instead of starting a new one
    /// with the nodes of `peers`.
    pub join: bool,
    /// Cluster mode: how often a group's leader sends heartbeats.
    pub raft_heartbeat_interval_ms: u64,
    /// Cluster mode: the shortest election timeout (the longest is twice
    /// this). A follower that heard from a leader waits this plus the
    /// longest, three to four times this value, before it runs for leader
    /// (`docs/cluster.md`, "Timing").
    pub raft_election_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7070".parse().expect("valid address"),
            admin_listen: Some("127.0.0.1:7071".parse().expect("valid address")),
            otlp_endpoint: None,
            data_dir: PathBuf::from("spool-data"),
            log_format: LogFormat::Human,
            default_durability: Durability::Fsync,
            request_bytes_max: 16 << 20,
            inflight_bytes_max: 32 << 20,
            connection_inflight_bytes_max: 16 << 20,
            inflight_wait_ms: 5_000,
            stream_window_bytes: 256 << 10,
            streams_per_connection_max: 200,
            request_header_bytes_max: 16 << 10,
            connections_max: 10_000,
            connections_per_address_max: 1_000,
            connection_handshake_timeout_ms: 10_000,
            connection_idle_timeout_ms: 300_000,
            fetch_bytes_default: 1 << 20,
            fetch_bytes_max: 3 << 20,
            fetch_wait_ms_max: 60_000,
            subscribe_bytes_max: 512 << 10,
            shutdown_grace_ms: 10_000,
            default_partitions: 1,
            store: StoreConfig::default(),
            jobs: JobsConfig::default(),
            job_snapshot_events: 200_000,
            metrics_history_interval_ms: 5_000,
            metrics_history_retention_ms: Some(7 * 86_400_000),
            metrics_history_retention_bytes: None,
            job_history_retention: HISTORY_RETENTION_DEFAULT,
            tokens_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            peer_tls_ca: None,
            insecure: false,
            node_id: None,
            peers: BTreeMap::new(),
            join: false,
            raft_heartbeat_interval_ms: 50,
            raft_election_timeout_ms: 250,
        }
    }
}

/// The kind of value a key takes, which decides how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A socket address: `127.0.0.1:7070`.
    Address,
    /// A URL: `http://127.0.0.1:4317`.
    Url,
    /// A file system path.
    Path,
    /// One of a few words.
    Choice,
    /// A size (`spool_format::units`): `64MiB`, `4096`.
    Size,
    /// A duration (`spool_format::units`): `500ms`, `7d`. A TOML integer
    /// for such a key is milliseconds, since every duration key ends in
    /// `_ms`.
    Duration,
    /// A whole number.
    Count,
    /// `true` or `false`.
    Switch,
    /// A cluster's nodes: `1=127.0.0.1:7080,2=127.0.0.1:7081`.
    Peers,
}

/// The keys accepted in every layer, in the order `--help` lists them,
/// with the kind of value each takes.
pub const KEYS: &[(&str, ValueKind)] = &[
    ("listen", ValueKind::Address),
    ("admin_listen", ValueKind::Address),
    ("otlp_endpoint", ValueKind::Url),
    ("data_dir", ValueKind::Path),
    ("log_format", ValueKind::Choice),
    ("default_durability", ValueKind::Choice),
    ("request_bytes_max", ValueKind::Size),
    ("inflight_bytes_max", ValueKind::Size),
    ("connection_inflight_bytes_max", ValueKind::Size),
    ("inflight_wait_ms", ValueKind::Duration),
    ("stream_window_bytes", ValueKind::Size),
    ("streams_per_connection_max", ValueKind::Count),
    ("request_header_bytes_max", ValueKind::Size),
    ("connections_max", ValueKind::Count),
    ("connections_per_address_max", ValueKind::Count),
    ("connection_handshake_timeout_ms", ValueKind::Duration),
    ("connection_idle_timeout_ms", ValueKind::Duration),
    ("fetch_bytes_default", ValueKind::Size),
    ("fetch_bytes_max", ValueKind::Size),
    ("fetch_wait_ms_max", ValueKind::Duration),
    ("subscribe_bytes_max", ValueKind::Size),
    ("shutdown_grace_ms", ValueKind::Duration),
    ("default_partitions", ValueKind::Count),
    ("record_bytes_max", ValueKind::Size),
    ("batch_bytes_max", ValueKind::Size),
    ("partitions_max", ValueKind::Count),
    ("open_segments_max", ValueKind::Count),
    ("preallocate_bytes", ValueKind::Size),
    ("index_interval_bytes", ValueKind::Size),
    ("flush_threads", ValueKind::Count),
    ("checkpoint_interval_ms", ValueKind::Duration),
    ("retention_check_interval_ms", ValueKind::Duration),
    ("segment_bytes", ValueKind::Size),
    ("segment_ms", ValueKind::Duration),
    ("retention_ms", ValueKind::Duration),
    ("retention_bytes", ValueKind::Size),
    ("internal_segment_bytes", ValueKind::Size),
    ("producer_state_retention_ms", ValueKind::Duration),
    ("producers_max", ValueKind::Count),
    ("job_attempts_max", ValueKind::Count),
    ("job_lease_ms", ValueKind::Duration),
    ("job_dedup_window_ms", ValueKind::Duration),
    ("job_finished_retention_ms", ValueKind::Duration),
    ("job_dead_retention_ms", ValueKind::Duration),
    ("job_finished_in_memory_max", ValueKind::Count),
    ("jobs_in_memory_max", ValueKind::Count),
    ("job_payload_bytes_max", ValueKind::Size),
    ("job_snapshot_events", ValueKind::Count),
    ("metrics_history_interval_ms", ValueKind::Duration),
    ("metrics_history_retention_ms", ValueKind::Duration),
    ("metrics_history_retention_bytes", ValueKind::Size),
    ("job_history_retention_ms", ValueKind::Duration),
    ("job_history_retention_bytes", ValueKind::Size),
    ("tokens_file", ValueKind::Path),
    ("tls_cert", ValueKind::Path),
    ("tls_key", ValueKind::Path),
    ("tls_client_ca", ValueKind::Path),
    ("peer_tls_ca", ValueKind::Path),
    ("insecure", ValueKind::Switch),
    ("node_id", ValueKind::Count),
    ("peers", ValueKind::Peers),
    ("join", ValueKind::Switch),
    ("raft_heartbeat_interval_ms", ValueKind::Duration),
    ("raft_election_timeout_ms", ValueKind::Duration),
];

/// `SPOOL_*` environment variables that other Spool programs read: the
/// CLI and the worker (`SPOOL_SERVER`), a job handler's environment as
/// `spool-worker` sets it, and the repository's tests and scripts. `spoold`
/// leaves these alone; any other `SPOOL_*` name is refused as a likely typo
/// of a key. A trailing `*` matches any rest of the name.
pub const OTHER_PROGRAMS_VARIABLES: &[&str] = &[
    "SPOOL_SERVER",
    "SPOOL_TOKEN",
    "SPOOL_TLS_CA",
    "SPOOL_TLS_CERT",
    "SPOOL_TLS_KEY",
    "SPOOL_JOB_ID",
    "SPOOL_QUEUE",
    "SPOOL_ATTEMPT",
    "SPOOL_ATTEMPTS_MAX",
    "SPOOL_CONTENT_TYPE",
    "SPOOL_HEADER_*",
    "SPOOL_SCRATCH_DIR",
    "SPOOL_CRASH_*",
];

fn is_other_programs_variable(name: &str) -> bool {
    OTHER_PROGRAMS_VARIABLES
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
}

/// The key nearest to a misspelt one, if any is near enough to suggest.
fn nearest_key(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|&(name, _)| (edit_distance(key, name), name))
        .filter(|&(distance, _)| distance <= 3)
        .min()
        .map(|(_, name)| name)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.as_bytes().iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The kind of value `key` takes, or `None` for an unknown key.
/// Parses a peer map, `ID=HOST:PORT` pairs separated by commas.
pub fn parse_peers(value: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, address) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("node id {id:?} in {pair:?} is not a whole number"))?;
        let address = address.trim();
        if address.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "{address:?} (node {id}) is not an address like 127.0.0.1:7080"
            ));
        }
        if peers.insert(id, address.to_owned()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(peers)
}

pub fn value_kind(key: &str) -> Option<ValueKind> {
    KEYS.iter().find(|&&(name, _)| name == key).map(|&(_, kind)| kind)
}

impl Config {
    /// Sets one key from its text form. Sizes take units (`64MiB`),
    /// durations take units (`30s`, `7d`), `retention_*` and
    /// `job_history_retention_*` also take `none`.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let error = |reason: String| ConfigError {
            key: key.to_owned(),
            origin: origin.to_owned(),
            reason,
        };
        let bytes = || parse_bytes(value).map_err(|e| error(e.into()));
        let ms = || parse_duration_ms(value).map_err(|e| error(e.into()));
        let count = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| error(format!("{value:?} is not a whole number")))
        };
        let optional = |parse: &dyn Fn() -> Result<u64, ConfigError>| {
            if value.trim() == "none" {
                Ok(None)
            } else {
                parse().map(Some)
            }
        };
        let topic: &mut TopicConfig = &mut self.store.topic_defaults;
        match key {
            "listen" => {
                self.listen = value
                    .parse()
                    .map_err(|_| error(format!("{value:?} is not an address like 127.0.0.1:7070")))?;
            }
            "admin_listen" => {
                self.admin_listen = match value.trim() {
                    "off" => None,
                    address => Some(address.parse().map_err(|_| {
                        error(format!(
                            "{value:?} is not an address like 127.0.0.1:7071, or \"off\" for no admin listener"
                        ))
                    })?),
                };
            }
            "otlp_endpoint" => {
                self.otlp_endpoint =
                    Some(spool_telemetry::parse_endpoint(value).map_err(|e| error(e.to_string()))?);
            }
            "data_dir" => self.data_dir = PathBuf::from(value),
            "log_format" => {
                self.log_format = match value {
                    "human" => LogFormat::Human,
                    "json" => LogFormat::Json,
                    _ => return Err(error(format!("{value:?} is neither \"human\" nor \"json\""))),
                }
            }
            "default_durability" => {
                self.default_durability = match value {
                    "fsync" => Durability::Fsync,
                    "none" => Durability::None,
                    _ => return Err(error(format!("{value:?} is neither \"fsync\" nor \"none\""))),
                }
            }
            "request_bytes_max" => self.request_bytes_max = bytes()?,
            "inflight_bytes_max" => self.inflight_bytes_max = bytes()?,
            "connection_inflight_bytes_max" => self.connection_inflight_bytes_max = bytes()?,
            "inflight_wait_ms" => self.inflight_wait_ms = ms()?,
            "stream_window_bytes" => self.stream_window_bytes = bytes()?,
            "streams_per_connection_max" => {
                self.streams_per_connection_max =
                    u32::try_from(count()?).map_err(|e| error(e.to_string()))?;
            }
            "request_header_bytes_max" => self.request_header_bytes_max = bytes()?,
            "connections_max" => self.connections_max = count()?,
            "connections_per_address_max" => self.connections_per_address_max = count()?,
            "connection_handshake_timeout_ms" => self.connection_handshake_timeout_ms = ms()?,
            "connection_idle_timeout_ms" => self.connection_idle_timeout_ms = ms()?,
            "fetch_bytes_default" => self.fetch_bytes_default = bytes()?,
            "fetch_bytes_max" => self.fetch_bytes_max = bytes()?,
            "fetch_wait_ms_max" => self.fetch_wait_ms_max = ms()?,
            "subscribe_bytes_max" => self.subscribe_bytes_max = bytes()?,
            "shutdown_grace_ms" => self.shutdown_grace_ms = ms()?,
            "raft_heartbeat_interval_ms" => self.raft_heartbeat_interval_ms = ms()?,
            "raft_election_timeout_ms" => self.raft_election_timeout_ms = ms()?,
            "default_partitions" => {
                self.default_partitions = u32::try_from(count()?).map_err(|e| error(e.to_string()))?;
            }
            "record_bytes_max" => self.store.record_bytes_max = bytes()?,
            "batch_bytes_max" => self.store.batch_bytes_max = bytes()?,
            "partitions_max" => {
                self.store.partitions_max = u32::try_from(count()?).map_err(|e| error(e.to_string()))?;
            }
            "open_segments_max" => self.store.open_segments_max = count()?,
            "preallocate_bytes" => self.store.preallocate_bytes = bytes()?,
            "index_interval_bytes" => self.store.index_interval_bytes = bytes()?,
            "flush_threads" => self.store.flush_threads = count()? as usize,
            "checkpoint_interval_ms" => self.store.checkpoint_interval_ms = ms()?,
            "retention_check_interval_ms" => self.store.retention_check_interval_ms = ms()?,
            "segment_bytes" => topic.segment_bytes_max = bytes()?,
            "segment_ms" => topic.segment_ms_max = ms()?,
            "retention_ms" => topic.retention_ms = optional(&ms)?,
            "retention_bytes" => topic.retention_bytes = optional(&bytes)?,
            "internal_segment_bytes" => self.store.internal_segment_bytes_max = bytes()?,
            "producer_state_retention_ms" => self.store.producer_state_retention_ms = ms()?,
            "producers_max" => self.store.producers_max = count()?,
            "job_attempts_max" => {
                self.jobs.attempts_max_default = u32::try_from(count()?).map_err(|e| error(e.to_string()))?;
            }
            "job_lease_ms" => self.jobs.lease_ms_default = ms()?,
            "job_dedup_window_ms" => self.jobs.dedup_window_ms = ms()?,
            "job_finished_retention_ms" => self.jobs.finished_retention_ms = ms()?,
            "job_dead_retention_ms" => self.jobs.dead_retention_ms = ms()?,
            "job_finished_in_memory_max" => self.jobs.finished_in_memory_max = count()? as usize,
            "jobs_in_memory_max" => self.jobs.jobs_in_memory_max = count()? as usize,
            "job_payload_bytes_max" => self.jobs.payload_bytes_max = bytes()?,
            "job_snapshot_events" => self.job_snapshot_events = count()?,
            "metrics_history_interval_ms" => self.metrics_history_interval_ms = ms()?,
            "metrics_history_retention_ms" => self.metrics_history_retention_ms = optional(&ms)?,
            "metrics_history_retention_bytes" => self.metrics_history_retention_bytes = optional(&bytes)?,
            "job_history_retention_ms" => self.job_history_retention.ms = optional(&ms)?,
            "job_history_retention_bytes" => self.job_history_retention.bytes = optional(&bytes)?,
            "tokens_file" => self.tokens_file = Some(PathBuf::from(value)),
            "tls_cert" => self.tls_cert = Some(PathBuf::from(value)),
            "tls_key" => self.tls_key = Some(PathBuf::from(value)),
            "tls_client_ca" => self.tls_client_ca = Some(PathBuf::from(value)),
            "peer_tls_ca" => self.peer_tls_ca = Some(PathBuf::from(value)),
            "insecure" | "join" => {
                let switch = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(error(format!("{value:?} is neither \"true\" nor \"false\""))),
                };
                match key {
                    "insecure" => self.insecure = switch,
                    _ => self.join = switch,
                }
            }
            "node_id" => self.node_id = Some(count()?),
            "peers" => self.peers = parse_peers(value).map_err(error)?,
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|&(name, _)| name).collect();
                let reason = match nearest_key(key) {
                    Some(near) => format!(
                        "unknown key; did you mean {near}? Known keys are: {}",
                        known.join(", ")
                    ),
                    None => format!("unknown key; known keys are: {}", known.join(", ")),
                };
                return Err(error(reason));
            }
        }
        Ok(())
    }

    /// Applies a TOML file's top-level keys.
    pub fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: "(file)".into(),
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
        for (key, value) in table {
            let text = match value {
                toml::Value::String(s) => s,
                // An integer for a duration key is milliseconds, as the
                // key's name says (`checkpoint_interval_ms = 500`).
                toml::Value::Integer(i) if value_kind(&key) == Some(ValueKind::Duration) => format!("{i}ms"),
                toml::Value::Integer(i) => i.to_string(),
                // `[peers]` with `1 = "127.0.0.1:7080"` lines.
                toml::Value::Table(table) if key == "peers" => table
                    .iter()
                    .map(|(id, address)| match address {
                        toml::Value::String(address) => Ok(format!("{id}={address}")),
                        other => Err(ConfigError {
                            key: format!("peers.{id}"),
                            origin: origin.to_owned(),
                            reason: format!("expected an address string, found {}", other.type_str()),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(ConfigError {
                        key,
                        origin: origin.to_owned(),
                        reason: format!("expected a string or a number, found {}", other.type_str()),
                    });
                }
            };
            self.set(&key, &text, origin)?;
        }
        Ok(())
    }

    /// Applies every `SPOOL_<KEY>` variable present in `vars`. A `SPOOL_*`
    /// variable that names no key and that no other Spool program reads
    /// (`OTHER_PROGRAMS_VARIABLES`) is an error: a typo in a setting must
    /// not pass silently.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SPOOL_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let origin = format!("environment variable {name}");
            if value_kind(&key).is_none() {
                if is_other_programs_variable(&name) {
                    continue;
                }
                let hint = match nearest_key(&key) {
                    Some(near) => format!("did you mean SPOOL_{}?", near.to_ascii_uppercase()),
                    None => "see docs/operations.md for the keys".to_owned(),
                };
                return Err(ConfigError {
                    key,
                    origin,
                    reason: format!(
                        "{name} is not a spoold setting ({hint}); unset it, or, if another program needs it, start spoold without it"
                    ),
                });
            }
            self.set(&key, &value, &origin)?;
        }
        Ok(())
    }

    /// The job layer's settings as the runtime uses them: payloads are
    /// also held to half of `record_bytes_max`, so that an operator's record
    /// limit bounds what a client can put in a job as it bounds what it can
    /// put in a record (`__jobs` itself is held only to `batch_bytes_max`).
    pub fn effective_jobs(&self) -> JobsConfig {
        let mut jobs = self.jobs.clone();
        jobs.payload_bytes_max = jobs.payload_bytes_max.min(self.store.record_bytes_max / 2);
        jobs
    }

    /// How the metrics history is kept; `None` when it is off.
    pub fn metrics_history(&self) -> Option<crate::history::HistoryConfig> {
        (self.metrics_history_interval_ms > 0).then_some(crate::history::HistoryConfig {
            interval_ms: self.metrics_history_interval_ms,
            retention_ms: self.metrics_history_retention_ms,
            retention_bytes: self.metrics_history_retention_bytes,
        })
    }

    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The peer listener's TLS files (the client CA being the nodes' CA),
    /// when peer TLS is on: the node's own certificate serves both as the
    /// peer listener's and as the one it presents to its peers.
    pub fn peer_tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: Some(self.peer_tls_ca.clone()?),
        })
    }

    /// This node's peer address, in cluster mode.
    fn own_peer_address(&self) -> Option<SocketAddr> {
        self.peers.get(&self.node_id?)?.parse().ok()
    }

    /// Secure by default: a listener on an address other than loopback
    /// needs TLS and authentication, unless `insecure` says otherwise. For
    /// the peer listener, mutual TLS is both: a peer is whoever holds a
    /// certificate of the nodes' CA.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.insecure {
            return Ok(());
        }
        if let Some(address) = self.own_peer_address().filter(|a| !a.ip().is_loopback())
            && self.peer_tls_ca.is_none()
        {
            return Err(ConfigError {
                key: "peer_tls_ca".to_owned(),
                origin: "the combined configuration".to_owned(),
                reason: format!(
                    "this node's peer address {address} is not a loopback address and peer traffic has no TLS: \
                     anyone who reaches it could vote and append to the cluster's logs. Run `spool init-security` \
                     with a --node per node and start spoold with the --tls-cert, --tls-key and --peer-tls-ca flags \
                     it prints, or pass --insecure to run peer traffic in the clear"
                ),
            });
        }
        if self.tls_cert.is_some() && self.tokens_file.is_some() {
            return Ok(());
        }
        let exposed = [("listen", Some(self.listen)), ("admin_listen", self.admin_listen)]
            .into_iter()
            .find_map(|(key, address)| address.filter(|a| !a.ip().is_loopback()).map(|a| (key, a)));
        match exposed {
            None => Ok(()),
            Some((key, address)) => {
                let missing = match (self.tls_cert.is_some(), self.tokens_file.is_some()) {
                    (false, false) => "TLS and authentication",
                    (false, true) => "TLS",
                    _ => "authentication",
                };
                Err(ConfigError {
                    key: key.to_owned(),
                    origin: "the combined configuration".to_owned(),
                    reason: format!(
                        "{address} is not a loopback address and the server has no {missing}: run `spool init-security` \
                         and start spoold with the --tls-cert, --tls-key and --tokens-file flags it prints, or pass \
                         --insecure to serve it in the clear to anyone who can connect"
                    ),
                })
            }
        }
    }

    /// Checks the whole configuration, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            key: key.to_owned(),
            origin: "the combined configuration".to_owned(),
            reason,
        };
        self.store.validate().map_err(|e| match e {
            spool_log::Error::InvalidConfig { key, value, reason } => {
                // The engine's names for the keys this server calls otherwise.
                let key = match key {
                    "segment_bytes_max" => "segment_bytes",
                    "segment_ms_max" => "segment_ms",
                    "internal_segment_bytes_max" => "internal_segment_bytes",
                    other => other,
                };
                fail(key, format!("{value} is {reason}"))
            }
            other => fail("store", other.to_string()),
        })?;
        if self.request_bytes_max < self.store.batch_bytes_max {
            return Err(fail(
                "request_bytes_max",
                "must be at least batch_bytes_max, or full batches could never arrive".into(),
            ));
        }
        if self.fetch_bytes_max == 0 {
            return Err(fail("fetch_bytes_max", "must be above zero".into()));
        }
        if self.fetch_bytes_default == 0 {
            return Err(fail("fetch_bytes_default", "must be above zero".into()));
        }
        if self.fetch_bytes_default > self.fetch_bytes_max {
            return Err(fail(
                "fetch_bytes_default",
                "must not exceed fetch_bytes_max".into(),
            ));
        }
        if self.connection_inflight_bytes_max > self.inflight_bytes_max {
            return Err(fail(
                "connection_inflight_bytes_max",
                "must not exceed inflight_bytes_max".into(),
            ));
        }
        if self.connection_inflight_bytes_max < self.store.batch_bytes_max {
            return Err(fail(
                "connection_inflight_bytes_max",
                "must be at least batch_bytes_max, or a full batch could never be admitted".into(),
            ));
        }
        // HTTP/2 windows are at least 65,535 bytes (RFC 9113) and fit in 31
        // bits together: 200 calls per connection.
        if !(65_535..=8 << 20).contains(&self.stream_window_bytes) {
            return Err(fail(
                "stream_window_bytes",
                "must be between 64KiB and 8MiB".into(),
            ));
        }
        // The connection's window is every stream's window together, and
        // HTTP/2 windows fit in 31 bits.
        if self.streams_per_connection_max == 0
            || u64::from(self.streams_per_connection_max) * self.stream_window_bytes > (1 << 31) - 1
        {
            return Err(fail(
                "streams_per_connection_max",
                format!(
                    "must be at least 1, and times stream_window_bytes ({}) under 2GiB",
                    self.stream_window_bytes
                ),
            ));
        }
        if !(1 << 10..=1 << 20).contains(&self.request_header_bytes_max) {
            return Err(fail(
                "request_header_bytes_max",
                "must be between 1KiB and 1MiB".into(),
            ));
        }
        if self.connections_max == 0 || self.connections_per_address_max == 0 {
            let key = if self.connections_max == 0 {
                "connections_max"
            } else {
                "connections_per_address_max"
            };
            return Err(fail(key, "must be at least 1".into()));
        }
        if self.connection_handshake_timeout_ms == 0 || self.connection_idle_timeout_ms == 0 {
            let key = if self.connection_handshake_timeout_ms == 0 {
                "connection_handshake_timeout_ms"
            } else {
                "connection_idle_timeout_ms"
            };
            return Err(fail(key, "must be longer than zero".into()));
        }
        if self.subscribe_bytes_max == 0 {
            return Err(fail("subscribe_bytes_max", "must be above zero".into()));
        }
        if self.raft_heartbeat_interval_ms == 0 {
            return Err(fail(
                "raft_heartbeat_interval_ms",
                "must be longer than zero".into(),
            ));
        }
        if self.raft_election_timeout_ms < 2 * self.raft_heartbeat_interval_ms {
            return Err(fail(
                "raft_election_timeout_ms",
                format!(
                    "must be at least twice raft_heartbeat_interval_ms ({} ms), or followers would start elections between heartbeats",
                    self.raft_heartbeat_interval_ms
                ),
            ));
        }
        match (self.node_id, self.peers.is_empty()) {
            (None, true) => {}
            (None, false) => {
                return Err(fail(
                    "node_id",
                    "cluster mode (peers) needs this node's id".into(),
                ));
            }
            (Some(_), true) => return Err(fail("peers", "cluster mode (node_id) needs the peer map".into())),
            (Some(id), false) => {
                if !self.peers.contains_key(&id) {
                    return Err(fail(
                        "peers",
                        format!("must list this node (node_id {id}) with its peer address"),
                    ));
                }
                if self.listen.ip().is_unspecified() {
                    return Err(fail(
                        "listen",
                        "in cluster mode other nodes name this address to clients: it needs a concrete IP, not 0.0.0.0 or ::"
                            .into(),
                    ));
                }
            }
        }
        let jobs = &self.jobs;
        if jobs.attempts_max_default == 0 || jobs.attempts_max_default > jobs.attempts_max_limit {
            return Err(fail(
                "job_attempts_max",
                format!("must be between 1 and {}", jobs.attempts_max_limit),
            ));
        }
        if jobs.lease_ms_default == 0 || jobs.lease_ms_default > jobs.lease_ms_max {
            return Err(fail(
                "job_lease_ms",
                format!("must be between 1 ms and {} ms", jobs.lease_ms_max),
            ));
        }
        if (1..100).contains(&self.metrics_history_interval_ms) {
            return Err(fail(
                "metrics_history_interval_ms",
                "must be 0 (no history) or at least 100ms".into(),
            ));
        }
        if self.job_history_retention.ms == Some(0) {
            return Err(fail(
                "job_history_retention_ms",
                "must be above zero, or none".into(),
            ));
        }
        if self.job_history_retention.bytes == Some(0) {
            return Err(fail(
                "job_history_retention_bytes",
                "must be above zero, or none".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let missing = if self.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(fail(missing, "tls_cert and tls_key go together".into()));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(fail(
                "tls_client_ca",
                "client certificates need TLS: set tls_cert and tls_key too".into(),
            ));
        }
        if self.peer_tls_ca.is_some() && self.tls_cert.is_none() {
            return Err(fail(
                "peer_tls_ca",
                "peer TLS uses this node's certificate: set tls_cert and tls_key too".into(),
            ));
        }
        if self.join && self.node_id.is_none() {
            return Err(fail(
                "join",
                "joining a cluster is for cluster mode: set node_id and peers too".into(),
            ));
        }
        if self.peer_tls_ca.is_some() && self.node_id.is_none() {
            return Err(fail(
                "peer_tls_ca",
                "peer TLS is for cluster mode: set node_id and peers too".into(),
            ));
        }
        self.check_exposure()?;
        if self.default_partitions == 0 || self.default_partitions > self.store.partitions_max {
            return Err(fail(
                "default_partitions",
                "must be between 1 and partitions_max".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_defaults_validate() {
        let mut config = Config::default();
        config.validate().unwrap();
        config
            .apply_toml(
                "listen = \"127.0.0.1:9000\"\nretention_ms = \"3d\"\nfetch_bytes_max = 2097152\n",
                "f",
            )
            .unwrap();
        config
            .apply_env([
                ("SPOOL_LISTEN".to_owned(), "127.0.0.1:9001".to_owned()),
                ("SPOOL_SERVER".to_owned(), "http://ignored".to_owned()),
                ("HOME".to_owned(), "/root".to_owned()),
            ])
            .unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.store.topic_defaults.retention_ms, Some(3 * 86_400_000));
        assert_eq!(config.fetch_bytes_max, 2 << 20);
        config.validate().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let mut config = Config::default();
        let err = config
            .apply_toml("fetch_bytes_max = \"lots\"", "spool.toml")
            .unwrap_err();
        assert_eq!(err.key, "fetch_bytes_max");
        assert!(err.to_string().contains("spool.toml"), "{err}");
        config
            .apply_env([("SPOOL_CRASH_ROUNDS".to_owned(), "5".to_owned())])
            .expect("other tools' SPOOL_ variables are not ours");
        let err = config
            .apply_env([("SPOOL_LISTEN".to_owned(), "nowhere".to_owned())])
            .unwrap_err();
        assert!(err.to_string().contains("SPOOL_LISTEN"), "{err}");
        let err = config.set("segmnet_bytes", "1", "flag").unwrap_err();
        assert!(err.reason.contains("segment_bytes"), "{err}");
        config.set("segment_bytes", "16GiB", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "segment_bytes");
    }

    #[test]
    fn the_metrics_history_is_on_by_default_and_each_key_sets_its_part() {
        let mut config = Config::default();
        let history = config.metrics_history().unwrap();
        assert_eq!(history.interval_ms, 5_000);
        assert_eq!(history.retention_ms, Some(7 * 86_400_000));
        config
            .set("metrics_history_retention_ms", "none", "flag")
            .unwrap();
        config
            .set("metrics_history_retention_bytes", "1GiB", "flag")
            .unwrap();
        config.set("metrics_history_interval_ms", "1s", "flag").unwrap();
        let history = config.metrics_history().unwrap();
        assert_eq!(
            (history.interval_ms, history.retention_ms, history.retention_bytes),
            (1_000, None, Some(1 << 30))
        );
        config.set("metrics_history_interval_ms", "0", "flag").unwrap();
        assert_eq!(config.metrics_history(), None);
        config.validate().unwrap();
        config.set("metrics_history_interval_ms", "10ms", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "metrics_history_interval_ms");
    }

    #[test]
    fn unknown_spool_variables_are_refused_with_the_nearest_key() {
        let mut config = Config::default();
        let err = config
            .apply_env([("SPOOL_FETCH_BYTES_MAXX".to_owned(), "2MiB".to_owned())])
            .unwrap_err();
        assert_eq!(err.key, "fetch_bytes_maxx");
        assert!(
            err.reason.contains("did you mean SPOOL_FETCH_BYTES_MAX?"),
            "{err}"
        );
        let err = config
            .apply_env([("SPOOL_NOTHING_LIKE_IT".to_owned(), "1".to_owned())])
            .unwrap_err();
        assert!(err.reason.contains("not a spoold setting"), "{err}");
        for other in [
            "SPOOL_SERVER",
            "SPOOL_JOB_ID",
            "SPOOL_HEADER_TRACEPARENT",
            "SPOOL_SCRATCH_DIR",
        ] {
            config
                .apply_env([(other.to_owned(), "x".to_owned())])
                .unwrap_or_else(|err| panic!("{other} belongs to another program: {err}"));
        }
    }

    #[test]
    fn durations_follow_the_shared_grammar_in_every_layer() {
        let mut config = Config::default();
        config
            .apply_toml("checkpoint_interval_ms = 500\nsegment_bytes = 1048576\n", "f")
            .unwrap();
        assert_eq!(config.store.checkpoint_interval_ms, 500);
        assert_eq!(config.store.topic_defaults.segment_bytes_max, 1 << 20);
        let err = config
            .apply_env([("SPOOL_INFLIGHT_WAIT_MS".to_owned(), "250".to_owned())])
            .unwrap_err();
        assert!(
            err.reason.contains("250ms"),
            "a bare number names the unit to add: {err}"
        );
        let err = config.set("request_bytes_max", "16M", "flag").unwrap_err();
        assert!(
            err.reason.contains("16MiB") && err.reason.contains("16MB"),
            "{err}"
        );
    }

    #[test]
    fn every_key_takes_a_value_of_its_kind() {
        for &(key, kind) in KEYS {
            let value = match kind {
                ValueKind::Address => "127.0.0.1:0",
                ValueKind::Url => "http://127.0.0.1:4317",
                ValueKind::Path => "data",
                ValueKind::Choice if key == "log_format" => "json",
                ValueKind::Choice => "none",
                ValueKind::Size => "1MiB",
                ValueKind::Duration => "2s",
                ValueKind::Count => "3",
                ValueKind::Switch => "true",
                ValueKind::Peers => "1=127.0.0.1:7080,2=127.0.0.1:7081",
            };
            let mut config = Config::default();
            config
                .set(key, value, "test")
                .unwrap_or_else(|err| panic!("{key} ({kind:?}) refused {value}: {err}"));
            if kind == ValueKind::Duration {
                assert!(config.set(key, "2", "test").is_err(), "{key} took a bare number");
            }
        }
    }

    #[test]
    fn cluster_mode_needs_a_node_id_listed_in_the_peers_and_a_fixed_client_address() {
        let mut config = Config::default();
        config
            .set("peers", "1=127.0.0.1:7080, 2=127.0.0.1:7081", "flag --peers")
            .unwrap();
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.validate().unwrap_err().key, "node_id");
        config.set("node_id", "3", "flag --node-id").unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.key == "peers" && err.reason.contains("node_id 3"), "{err}");
        config.set("node_id", "2", "flag --node-id").unwrap();
        config.validate().unwrap();
        config.set("listen", "0.0.0.0:7070", "flag --listen").unwrap();
        config.set("insecure", "true", "flag --insecure").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "listen");

        for bad in ["1", "x=127.0.0.1:1", "1=nowhere", "1=127.0.0.1:1,1=127.0.0.1:2"] {
            assert!(parse_peers(bad).is_err(), "{bad} was taken");
        }
        let mut single = Config::default();
        single.set("node_id", "1", "test").unwrap();
        assert_eq!(single.validate().unwrap_err().key, "peers");
    }

    #[test]
    fn raft_timing_is_a_pair_of_durations_with_the_timeout_at_least_two_heartbeats() {
        let mut config = Config::default();
        assert_eq!(
            (config.raft_heartbeat_interval_ms, config.raft_election_timeout_ms),
            (50, 250)
        );
        config.set("raft_heartbeat_interval_ms", "100ms", "test").unwrap();
        config.set("raft_election_timeout_ms", "1s", "test").unwrap();
        config.validate().unwrap();
        assert_eq!(
            (config.raft_heartbeat_interval_ms, config.raft_election_timeout_ms),
            (100, 1_000)
        );
        config.set("raft_election_timeout_ms", "150ms", "test").unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.key == "raft_election_timeout_ms" && err.reason.contains("100 ms"),
            "{err}"
        );
        config.set("raft_heartbeat_interval_ms", "0ms", "test").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "raft_heartbeat_interval_ms");
    }

    #[test]
    fn the_peer_map_is_a_string_or_a_table_in_the_config_file() {
        for text in [
            "node_id = 2\npeers = \"1=127.0.0.1:7080,2=127.0.0.1:7081\"\n",
            "node_id = 2\n[peers]\n1 = \"127.0.0.1:7080\"\n2 = \"127.0.0.1:7081\"\n",
        ] {
            let mut config = Config::default();
            config.apply_toml(text, "spool.toml").unwrap();
            assert_eq!(config.node_id, Some(2));
            assert_eq!(config.peers.get(&2).map(String::as_str), Some("127.0.0.1:7081"));
            config.validate().unwrap();
        }
    }

    #[test]
    fn the_admin_listener_takes_an_address_or_off() {
        let mut config = Config::default();
        assert_eq!(config.admin_listen, Some("127.0.0.1:7071".parse().unwrap()));
        config.set("admin_listen", "off", "test").unwrap();
        assert_eq!(config.admin_listen, None);
        config
            .apply_env([("SPOOL_ADMIN_LISTEN".to_owned(), "0.0.0.0:9100".to_owned())])
            .unwrap();
        assert_eq!(config.admin_listen, Some("0.0.0.0:9100".parse().unwrap()));
        let err = config
            .set("admin_listen", "localhost", "flag --admin-listen")
            .unwrap_err();
        assert_eq!(err.key, "admin_listen");
        assert!(err.reason.contains("\"off\""), "{err}");
    }

    #[test]
    fn the_otlp_endpoint_is_an_http_url_set_in_any_layer() {
        let mut config = Config::default();
        assert_eq!(config.otlp_endpoint, None, "no export unless asked");
        config
            .apply_env([(
                "SPOOL_OTLP_ENDPOINT".to_owned(),
                "http://collector:4317/".to_owned(),
            )])
            .unwrap();
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        let err = config
            .set("otlp_endpoint", "collector:4317", "flag --otlp-endpoint")
            .unwrap_err();
        assert_eq!(err.key, "otlp_endpoint");
        assert!(err.reason.contains("http://"), "{err}");
        // The standard OTEL_* variables are not spoold keys, and not typos.
        config
            .apply_env([(
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                "http://x:4317".to_owned(),
            )])
            .unwrap();
    }

    #[test]
    fn job_history_retention_takes_a_time_a_size_or_none() {
        let mut config = Config::default();
        assert_eq!(config.job_history_retention.ms, Some(7 * 86_400_000));
        assert_eq!(config.job_history_retention.bytes, Some(16 << 30));
        config
            .apply_toml("job_history_retention_ms = \"1d\"\n", "f")
            .unwrap();
        config
            .apply_env([("SPOOL_JOB_HISTORY_RETENTION_BYTES".to_owned(), "none".to_owned())])
            .unwrap();
        config
            .set(
                "internal_segment_bytes",
                "16MiB",
                "flag --set internal_segment_bytes",
            )
            .unwrap();
        assert_eq!(config.job_history_retention.ms, Some(86_400_000));
        assert_eq!(config.job_history_retention.bytes, None);
        assert_eq!(config.store.internal_segment_bytes_max, 16 << 20);
        config.validate().unwrap();
        config.set("job_history_retention_ms", "0s", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "job_history_retention_ms");
        let mut config = Config::default();
        config.set("internal_segment_bytes", "4MiB", "flag").unwrap();
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "internal_segment_bytes", "below batch_bytes_max: {err}");
    }

    #[test]
    fn stream_windows_stay_within_what_http2_allows() {
        for (window, valid) in [("1KiB", false), ("64KiB", true), ("8MiB", true), ("16MiB", false)] {
            let mut config = Config::default();
            config.set("stream_window_bytes", window, "flag").unwrap();
            match config.validate() {
                Ok(()) => assert!(valid, "{window} was accepted"),
                Err(err) => {
                    assert!(!valid, "{window}: {err}");
                    assert_eq!(err.key, "stream_window_bytes");
                }
            }
        }
    }

    #[test]
    fn connection_bounds_are_checked() {
        let cases = [
            ("streams_per_connection_max", "0", false),
            ("streams_per_connection_max", "1000", true),
            // 257 streams of the largest window pass 2 GiB together.
            ("streams_per_connection_max", "257", false),
            ("request_header_bytes_max", "512", false),
            ("request_header_bytes_max", "64KiB", true),
            ("request_header_bytes_max", "2MiB", false),
            ("connections_max", "0", false),
            ("connections_per_address_max", "0", false),
            ("connection_handshake_timeout_ms", "0", false),
            ("connection_idle_timeout_ms", "0", false),
            ("connection_idle_timeout_ms", "1m", true),
        ];
        for (key, value, valid) in cases {
            let mut config = Config::default();
            if key == "streams_per_connection_max" && value == "257" {
                config.set("stream_window_bytes", "8MiB", "flag").unwrap();
            }
            config.set(key, value, "flag").unwrap();
            match config.validate() {
                Ok(()) => assert!(valid, "{key}={value} was accepted"),
                Err(err) => {
                    assert!(!valid, "{key}={value}: {err}");
                    assert_eq!(err.key, key);
                }
            }
        }
    }

    #[test]
    fn a_non_loopback_listener_needs_tls_and_authentication_or_insecure() {
        let mut config = Config::default();
        config.set("listen", "0.0.0.0:7070", "flag --listen").unwrap();
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "listen");
        assert!(
            err.reason.contains("no TLS and authentication") && err.reason.contains("spool init-security"),
            "{err}"
        );
        config.set("tokens_file", "tokens.toml", "flag").unwrap();
        assert!(config.validate().unwrap_err().reason.contains("has no TLS:"));
        config.set("tls_cert", "cert.pem", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "tls_key");
        config.set("tls_key", "key.pem", "flag").unwrap();
        config.validate().unwrap();
        let mut config = Config::default();
        config.set("admin_listen", "10.0.0.1:7071", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "admin_listen");
        config.set("insecure", "true", "flag --insecure").unwrap();
        config.validate().unwrap();
        assert!(config.set("insecure", "yes", "flag").is_err());
        let mut config = Config::default();
        config.set("tls_client_ca", "ca.pem", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "tls_client_ca");
    }

    #[test]
    fn a_non_loopback_peer_address_needs_peer_tls_or_insecure() {
        let mut config = Config::default();
        config.set("node_id", "1", "flag --node-id").unwrap();
        config
            .set(
                "peers",
                "1=10.0.0.1:7080,2=10.0.0.2:7080,3=10.0.0.3:7080",
                "flag --peers",
            )
            .unwrap();
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "peer_tls_ca");
        assert!(
            err.reason.contains("10.0.0.1:7080")
                && err.reason.contains("--peer-tls-ca")
                && err.reason.contains("--insecure"),
            "{err}"
        );
        // TLS and tokens for clients do not cover the peer listener.
        config.set("tls_cert", "node-1.pem", "flag").unwrap();
        config.set("tls_key", "node-1.key", "flag").unwrap();
        config.set("tokens_file", "tokens.toml", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "peer_tls_ca");
        config.set("peer_tls_ca", "ca.pem", "flag").unwrap();
        config.validate().unwrap();
        let files = config.peer_tls_files().unwrap();
        assert_eq!(files.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(files.cert, PathBuf::from("node-1.pem"));

        // Another node's address does not matter: each node checks its own.
        let mut config = Config::default();
        config.set("node_id", "1", "flag").unwrap();
        config
            .set("peers", "1=127.0.0.1:7080,2=10.0.0.2:7080", "flag")
            .unwrap();
        config.validate().unwrap();
        config.set("node_id", "2", "flag").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "peer_tls_ca");
        config.set("insecure", "true", "flag --insecure").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn peer_tls_needs_the_nodes_certificate_and_cluster_mode() {
        let mut config = Config::default();
        config.set("node_id", "1", "flag").unwrap();
        config.set("peers", "1=127.0.0.1:7080", "flag").unwrap();
        config.set("peer_tls_ca", "ca.pem", "flag").unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.key == "peer_tls_ca" && err.reason.contains("tls_cert"),
            "{err}"
        );
        let mut config = Config::default();
        config.set("tls_cert", "server.pem", "flag").unwrap();
        config.set("tls_key", "server.key", "flag").unwrap();
        config.set("peer_tls_ca", "ca.pem", "flag").unwrap();
        let err = config.validate().unwrap_err();
        assert!(
            err.key == "peer_tls_ca" && err.reason.contains("cluster mode"),
            "{err}"
        );
        assert_eq!(
            config.peer_tls_files().map(|f| f.client_ca),
            Some(Some(PathBuf::from("ca.pem")))
        );
    }
}
