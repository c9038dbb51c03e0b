//! The store: one data directory holding every topic.
//!
//! Layout:
//!
//! ```text
//! <data>/spool.lock                      held (flock) while a process has the store open
//! <data>/clean-shutdown                  present only between a clean close and the next open
//! <data>/topics/<topic>/topic.meta       the topic's settings
//! <data>/topics/<topic>/<partition>/     segments and the partition's recovery-point
//! <data>/trash/                          deleted topics on their way out
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{StoreConfig, TopicConfig};
use crate::context::StoreContext;
use crate::error::{Error, IoContext, Result};
use crate::flusher::Flusher;
use crate::fsutil;
use crate::names::validate_topic_name;
use crate::partition::{Partition, now_ms};
use crate::recovery::PartitionRecovery;
use crate::topic::Topic;

const LOCK_FILE: &str = "spool.lock";
const CLEAN_MARKER: &str = "clean-shutdown";
const TOPICS_DIR: &str = "topics";
const TRASH_DIR: &str = "trash";

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The previous process closed the store cleanly.
    pub clean: bool,
    /// Partitions that needed a scan or a repair; the rest opened as they
    /// were.
    pub partitions: Vec<PartitionRecovery>,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Partition flushes that synced data (each one or more fsyncs).
    pub flushes: u64,
    pub open_segments: u64,
}

/// An open data directory. Closing it cleanly (explicitly or by dropping
/// it) flushes everything and lets the next open skip recovery.
#[derive(Debug)]
pub struct Store {
    inner: Arc<StoreInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct StoreInner {
    dir: PathBuf,
    context: Arc<StoreContext>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// The data-directory lock, released when the store closes.
    lock: Mutex<Option<File>>,
    stop: Mutex<bool>,
    stop_signal: Condvar,
    closed: AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, recovering every
    /// partition, and starts the flusher and maintenance threads.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<(Store, RecoveryReport)> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        fsutil::create_dir_durable(&dir.join(TOPICS_DIR))?;
        let lock = lock_dir(&dir)?;

        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        if clean {
            // Removed before anything is written, so a crash from here on
            // makes the next open recover.
            std::fs::remove_file(&marker).ctx("remove", &marker)?;
            fsutil::sync_dir(&dir)?;
        }
        empty_trash(&dir.join(TRASH_DIR))?;

        let flusher = Arc::new(Flusher::default());
        let context = Arc::new(StoreContext {
            config,
            flusher: Arc::clone(&flusher),
            open_segments: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        });
        let started = Instant::now();
        let mut topics = BTreeMap::new();
        let mut report = RecoveryReport {
            clean,
            partitions: Vec::new(),
        };
        let topics_dir = dir.join(TOPICS_DIR);
        for entry in std::fs::read_dir(&topics_dir).ctx("list", &topics_dir)? {
            let entry = entry.ctx("list", &topics_dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_topic_name(&name).is_err() || !entry.path().is_dir() {
                tracing::warn!(path = %entry.path().display(), "ignoring a file that is not a topic");
                continue;
            }
            if !entry.path().join(crate::topic::META_FILE).exists() {
                // A crash in the middle of creating the topic: it was never
                // acknowledged, so it is removed rather than half-opened.
                tracing::warn!(topic = %name, "removing a topic whose creation did not finish");
                let trash = dir.join(TRASH_DIR);
                fsutil::create_dir_durable(&trash)?;
                let target = trash.join(format!("{name}.incomplete.{}", now_ms()));
                std::fs::rename(entry.path(), &target).ctx("rename", &entry.path())?;
                std::fs::remove_dir_all(&target).ctx("remove", &target)?;
                continue;
            }
            let (topic, recoveries) = Topic::open(&name, &entry.path(), &context, clean)?;
            report.partitions.extend(recoveries);
            topics.insert(name, Arc::new(topic));
        }
        tracing::info!(
            dir = %dir.display(), clean, topics = topics.len(),
            repaired_partitions = report.partitions.len(),
            elapsed_ms = started.elapsed().as_millis() as u64, "store opened"
        );

        let inner = Arc::new(StoreInner {
            dir,
            context: Arc::clone(&context),
            topics: RwLock::new(topics),
            lock: Mutex::new(Some(lock)),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let mut threads = flusher
            .start(context.config.flush_threads)
            .map_err(|e| Error::io("spawn flusher", &inner.dir, e))?;
        let maintenance = Arc::clone(&inner);
        threads.push(
            std::thread::Builder::new()
                .name("spool-maintenance".into())
                .spawn(move || maintenance.run_maintenance())
                .map_err(|e| Error::io("spawn maintenance", &inner.dir, e))?,
        );
        Ok((
            Store {
                inner,
                threads: Mutex::new(threads),
            },
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.context.config
    }

    /// Creates a topic. Fails with `TopicExists` if the name is taken.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        self.ensure_open()?;
        validate_topic_name(name)?;
        config.validate()?;
        let partitions_max = self.inner.context.config.partitions_max;
        if config.partitions > partitions_max {
            return Err(Error::LimitExceeded {
                limit: "partitions_max",
                actual: config.partitions.into(),
                max: partitions_max.into(),
            });
        }
        let mut topics = self.inner.topics.write().expect("topics lock");
        if topics.contains_key(name) {
            return Err(Error::TopicExists {
                topic: name.to_owned(),
            });
        }
        let dir = self.inner.dir.join(TOPICS_DIR).join(name);
        let topic = match Topic::create(name, &dir, config, &self.inner.context) {
            Ok(topic) => Arc::new(topic),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };
        topics.insert(name.to_owned(), Arc::clone(&topic));
        tracing::info!(
            topic = name,
            partitions = topic.partition_count(),
            "topic created"
        );
        Ok(topic)
    }

    /// The single partition of an internal topic the server keeps for
    /// itself (`__checkpoints`, `__jobs`), created on first use with no
    /// retention (its records are the server's state: its owner decides
    /// when they may go) and segments of `internal_segment_bytes_max`.
    pub fn internal_partition(&self, name: &str) -> Result<Partition> {
        debug_assert!(crate::names::is_internal_topic(name));
        let topic = match self.topic(name) {
            Ok(topic) => topic,
            Err(Error::UnknownTopic { .. }) => self.create_topic(
                name,
                TopicConfig {
                    partitions: 1,
                    retention_ms: None,
                    retention_bytes: None,
                    segment_bytes_max: self.config().internal_segment_bytes_max,
                    ..self.config().topic_defaults.clone()
                },
            )?,
            Err(other) => return Err(other),
        };
        topic.partition(0).cloned()
    }

    /// Deletes a topic and its data. Readers that still hold batches keep
    /// them valid; appends through old partition handles fail with `Closed`.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.ensure_open()?;
        validate_topic_name(name)?;
        let topic = self
            .inner
            .topics
            .write()
            .expect("topics lock")
            .remove(name)
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_owned(),
            })?;
        for partition in topic.partitions() {
            partition.shared().abandon();
        }
        let trash = self.inner.dir.join(TRASH_DIR);
        fsutil::create_dir_durable(&trash)?;
        let target = trash.join(format!("{name}.{}", now_ms()));
        std::fs::rename(topic.dir(), &target).ctx("rename", topic.dir())?;
        fsutil::sync_dir(&self.inner.dir.join(TOPICS_DIR))?;
        std::fs::remove_dir_all(&target).ctx("remove", &target)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Partition> {
        self.topic(topic)?.partition(partition).cloned()
    }

    /// Runs retention on every partition now; returns segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        self.inner.enforce_retention(now_ms)
    }

    /// Flushes every partition and records its recovery point now.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint_all()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            flushes: self.inner.context.flushes.load(Ordering::Relaxed),
            open_segments: self.inner.context.open_segments.load(Ordering::SeqCst),
        }
    }

    fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Closes cleanly: flushes and seals every partition, records recovery
    /// points and leaves the clean-shutdown marker.
    /// Later calls, and every other method after it, find the store closed.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.close_inner();
        self.release_lock();
        result
    }

    fn release_lock(&self) {
        self.inner.lock.lock().expect("lock file lock").take();
    }

    fn close_inner(&self) -> Result<()> {
        self.stop_threads();
        let mut first_error = None;
        for topic in self.topics() {
            for partition in topic.partitions() {
                if let Err(error) = partition.shared().close() {
                    tracing::error!(topic = topic.name(), partition = partition.id(), %error, "partition did not close cleanly");
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        fsutil::write_atomic(&self.inner.dir.join(CLEAN_MARKER), b"")?;
        tracing::info!(dir = %self.inner.dir.display(), "store closed cleanly");
        Ok(())
    }

    /// Stops everything without flushing or sealing, as a crash would
    /// (the page cache keeps what was written). For recovery tests.
    #[doc(hidden)]
    pub fn simulate_crash(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_threads();
        for topic in self.topics() {
            for partition in topic.partitions() {
                partition.shared().abandon();
            }
        }
        self.release_lock();
    }

    fn stop_threads(&self) {
        *self.inner.stop.lock().expect("stop lock") = true;
        self.inner.stop_signal.notify_all();
        self.inner.context.flusher.stop();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "store did not close cleanly");
        }
    }
}

impl StoreInner {
    fn partitions(&self) -> Vec<Partition> {
        let topics = self.topics.read().expect("topics lock");
        topics
            .values()
            .flat_map(|t| t.partitions().iter().cloned())
            .collect()
    }

    fn checkpoint_all(&self) -> Result<()> {
        let mut first_error = None;
        for partition in self.partitions() {
            if let Err(error) = partition.checkpoint() {
                tracing::error!(topic = partition.topic(), partition = partition.id(), %error, "checkpoint failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let mut deleted = 0;
        for partition in self.partitions() {
            deleted += partition.enforce_retention(now_ms)?;
        }
        Ok(deleted)
    }

    fn run_maintenance(&self) {
        let config = &self.context.config;
        let period = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let checkpoint_every = period(config.checkpoint_interval_ms);
        let retention_every = period(config.retention_check_interval_ms);
        let mut next_checkpoint = checkpoint_every.map(|d| Instant::now() + d);
        let mut next_retention = retention_every.map(|d| Instant::now() + d);
        loop {
            let wake = [next_checkpoint, next_retention].into_iter().flatten().min();
            {
                let stop = self.stop.lock().expect("stop lock");
                let timeout = wake.map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(Instant::now())
                });
                let (stop, _) = self
                    .stop_signal
                    .wait_timeout_while(stop, timeout, |stop| !*stop)
                    .expect("stop lock");
                if *stop {
                    return;
                }
            }
            let now = Instant::now();
            if let (Some(at), Some(every)) = (next_checkpoint, checkpoint_every)
                && now >= at
            {
                let _ = self.checkpoint_all();
                next_checkpoint = Some(Instant::now() + every);
            }
            if let (Some(at), Some(every)) = (next_retention, retention_every)
                && now >= at
            {
                if let Err(error) = self.enforce_retention(now_ms()) {
                    tracing::error!(%error, "retention failed");
                }
                next_retention = Some(Instant::now() + every);
            }
        }
    }
}

/// Takes the data directory's lock file, so a second process gets a clear
/// error instead of corrupting the log.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .ctx("open", &path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: dir.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
    }
    // The pid is for people reading the directory; the lock is the flock.
    file.set_len(0).ctx("truncate", &path)?;
    writeln!(file, "{}", std::process::id()).ctx("write", &path)?;
    Ok(file)
}

fn empty_trash(trash: &Path) -> Result<()> {
    if trash.exists() {
        std::fs::remove_dir_all(trash).ctx("remove", trash)?;
    }
    Ok(())
}
