//! A topic: a name, its settings, and its partitions.
//!
//! The settings live in `topic.meta` in the topic directory, a few
//! `key=value` lines written atomically, so that a topic reopens with the
//! settings it was created with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::TopicConfig;
use crate::context::StoreContext;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::partition::Partition;
use crate::recovery::PartitionRecovery;

pub const META_FILE: &str = "topic.meta";
const META_VERSION: &str = "1";

/// A topic and its open partitions.
#[derive(Debug)]
pub struct Topic {
    name: String,
    config: TopicConfig,
    dir: PathBuf,
    partitions: Vec<Partition>,
}

impl Topic {
    pub(crate) fn create(
        name: &str,
        dir: &Path,
        config: TopicConfig,
        context: &Arc<StoreContext>,
    ) -> Result<Topic> {
        fsutil::ensure_dir_durable(dir, true)?;
        fsutil::write_atomic(&dir.join(META_FILE), encode_meta(&config).as_bytes())?;
        let (topic, _) = Topic::open_with(name, dir, config, context, true)?;
        Ok(topic)
    }

    pub(crate) fn open(
        name: &str,
        dir: &Path,
        context: &Arc<StoreContext>,
        clean: bool,
    ) -> Result<(Topic, Vec<PartitionRecovery>)> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut config = decode_meta(&text).map_err(|reason| Error::BadFile {
            path: path.clone(),
            reason,
        })?;
        let internal_segment_bytes_max = context.config.internal_segment_bytes_max;
        if crate::names::is_internal_topic(name) && config.segment_bytes_max != internal_segment_bytes_max {
            // The store's setting wins for internal topics, so that a data
            // directory made before it (or with another value) follows it.
            // It only governs segments created from now on.
            tracing::info!(
                topic = name,
                from = config.segment_bytes_max,
                to = internal_segment_bytes_max,
                "internal topic takes the store's segment size"
            );
            config.segment_bytes_max = internal_segment_bytes_max;
            fsutil::write_atomic(&path, encode_meta(&config).as_bytes())?;
        }
        Topic::open_with(name, dir, config, context, clean)
    }

    fn open_with(
        name: &str,
        dir: &Path,
        config: TopicConfig,
        context: &Arc<StoreContext>,
        clean: bool,
    ) -> Result<(Topic, Vec<PartitionRecovery>)> {
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut recoveries = Vec::new();
        for id in 0..config.partitions {
            let (partition, recovery) =
                Partition::open(name, id, &dir.join(id.to_string()), &config, context, clean)?;
            partitions.push(partition);
            if recovery.is_eventful() {
                recoveries.push(recovery);
            }
        }
        let topic = Topic {
            name: name.to_owned(),
            config,
            dir: dir.to_owned(),
            partitions,
        };
        Ok((topic, recoveries))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The partition with this id, or `UnknownPartition`.
    pub fn partition(&self, id: u32) -> Result<&Partition> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.clone(),
                partition: id,
                partition_count: self.partition_count(),
            })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

fn encode_meta(config: &TopicConfig) -> String {
    let mut text = String::new();
    let optional = |value: Option<u64>| value.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let _ = writeln!(text, "version={META_VERSION}");
    let _ = writeln!(text, "partitions={}", config.partitions);
    let _ = writeln!(text, "segment_bytes_max={}", config.segment_bytes_max);
    let _ = writeln!(text, "segment_ms_max={}", config.segment_ms_max);
    let _ = writeln!(text, "retention_ms={}", optional(config.retention_ms));
    let _ = writeln!(text, "retention_bytes={}", optional(config.retention_bytes));
    if let Some(incarnation) = config.incarnation {
        let _ = writeln!(text, "incarnation={incarnation}");
    }
    text
}

fn decode_meta(text: &str) -> std::result::Result<TopicConfig, String> {
    let mut config = TopicConfig::default();
    let mut version = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} has no '='"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{key}: {e}"));
        let optional = || -> std::result::Result<Option<u64>, String> {
            if value == "none" {
                Ok(None)
            } else {
                number().map(Some)
            }
        };
        match key {
            "version" => version = Some(value.to_owned()),
            "partitions" => {
                config.partitions = u32::try_from(number()?).map_err(|e| format!("{key}: {e}"))?
            }
            "segment_bytes_max" => config.segment_bytes_max = number()?,
            "segment_ms_max" => config.segment_ms_max = number()?,
            "retention_ms" => config.retention_ms = optional()?,
            "retention_bytes" => config.retention_bytes = optional()?,
            "incarnation" => config.incarnation = optional()?,
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    if version.as_deref() != Some(META_VERSION) {
        return Err(format!("unsupported version {version:?}"));
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let config = TopicConfig {
            partitions: 3,
            segment_bytes_max: 1 << 20,
            segment_ms_max: 60_000,
            retention_ms: None,
            retention_bytes: Some(5 << 20),
            incarnation: None,
        };
        assert_eq!(decode_meta(&encode_meta(&config)).unwrap(), config);
        assert!(!encode_meta(&config).contains("incarnation"));
        let replicated = TopicConfig {
            incarnation: Some(412),
            ..config
        };
        assert!(encode_meta(&replicated).ends_with("incarnation=412\n"));
        assert_eq!(decode_meta(&encode_meta(&replicated)).unwrap(), replicated);
        assert!(decode_meta("partitions=2\n").is_err());
        assert!(decode_meta("version=1\npartitions=0\n").is_err());
    }
}
