//! Server configuration, in layers: defaults, then a TOML file, then
//! `SPOOL_*` environment variables, then command-line flags. Every key has
//! one name used in all layers (`fetch_bytes_max` in TOML is
//! `SPOOL_FETCH_BYTES_MAX` in the environment), and an invalid value fails
//! at start with a message naming the key and where it came from.

use std::net::SocketAddr;
use std::path::PathBuf;

use spool_jobs::JobsConfig;
use spool_log::{Durability, StoreConfig, TopicConfig};
use spool_proto::units::{parse_bytes, parse_duration_ms};

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7070".parse().expect("valid address"),
            data_dir: PathBuf::from("spool-data"),
            log_format: LogFormat::Human,
            default_durability: Durability::Fsync,
            request_bytes_max: 16 << 20,
            inflight_bytes_max: 32 << 20,
            connection_inflight_bytes_max: 16 << 20,
            inflight_wait_ms: 5_000,
            stream_window_bytes: 256 << 10,
            fetch_bytes_default: 1 << 20,
            fetch_bytes_max: 3 << 20,
            fetch_wait_ms_max: 60_000,
            subscribe_bytes_max: 512 << 10,
            shutdown_grace_ms: 10_000,
            default_partitions: 1,
            store: StoreConfig::default(),
            jobs: JobsConfig::default(),
            job_snapshot_events: 200_000,
        }
    }
}

/// The keys accepted in every layer, in the order `--help` lists them.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "log_format",
    "default_durability",
    "request_bytes_max",
    "inflight_bytes_max",
    "connection_inflight_bytes_max",
    "inflight_wait_ms",
    "stream_window_bytes",
    "fetch_bytes_default",
    "fetch_bytes_max",
    "fetch_wait_ms_max",
    "subscribe_bytes_max",
    "shutdown_grace_ms",
    "default_partitions",
    "record_bytes_max",
    "batch_bytes_max",
    "partitions_max",
    "open_segments_max",
    "preallocate_bytes",
    "index_interval_bytes",
    "flush_threads",
    "checkpoint_interval_ms",
    "retention_check_interval_ms",
    "segment_bytes",
    "segment_ms",
    "retention_ms",
    "retention_bytes",
    "job_attempts_max",
    "job_lease_ms",
    "job_dedup_window_ms",
    "job_finished_retention_ms",
    "job_dead_retention_ms",
    "job_finished_in_memory_max",
    "jobs_in_memory_max",
    "job_payload_bytes_max",
    "job_snapshot_events",
];

impl Config {
    /// Sets one key from its text form. Sizes take units (`64MiB`),
    /// durations take units (`30s`, `7d`), `retention_*` also take `none`.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let error = |reason: String| ConfigError {
            key: key.to_owned(),
            origin: origin.to_owned(),
            reason,
        };
        let bytes = || parse_bytes(value).map_err(error);
        let ms = || parse_duration_ms(value).map_err(error);
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
            "fetch_bytes_default" => self.fetch_bytes_default = bytes()?,
            "fetch_bytes_max" => self.fetch_bytes_max = bytes()?,
            "fetch_wait_ms_max" => self.fetch_wait_ms_max = ms()?,
            "subscribe_bytes_max" => self.subscribe_bytes_max = bytes()?,
            "shutdown_grace_ms" => self.shutdown_grace_ms = ms()?,
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
            _ => return Err(error(format!("unknown key; known keys are: {}", KEYS.join(", ")))),
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
                toml::Value::Integer(i) => i.to_string(),
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

    /// Applies every `SPOOL_<KEY>` variable present in `vars`.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SPOOL_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            // Other tools share the SPOOL_ prefix (SPOOL_SERVER is the CLI's,
            // SPOOL_CRASH_* the crash test's): only known keys are ours.
            if !KEYS.contains(&key.as_str()) {
                continue;
            }
            self.set(&key, &value, &format!("environment variable {name}"))?;
        }
        Ok(())
    }

    /// The job layer's settings as the runtime uses them: a job's enqueue
    /// event carries its payload and must fit in one record, so payloads are
    /// also held to half of `record_bytes_max`.
    pub fn effective_jobs(&self) -> JobsConfig {
        let mut jobs = self.jobs.clone();
        jobs.payload_bytes_max = jobs.payload_bytes_max.min(self.store.record_bytes_max / 2);
        jobs
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
        if self.subscribe_bytes_max == 0 {
            return Err(fail("subscribe_bytes_max", "must be above zero".into()));
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
}
