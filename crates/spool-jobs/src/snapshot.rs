//! Snapshots of the job table, so a restart replays only the events
//! appended since the last one instead of the whole history.
//!
//! File `jobs.snapshot` (written atomically), little-endian: magic `SPJS`,
//! version u32 (3), the log offset the snapshot covers up to (exclusive)
//! u64, body length u64, CRC-32 of the body u32, then the body in the
//! [`crate::codec`] encoding: last job id, the jobs, the live idempotency
//! keys, the names of every known queue (version 2 added them, so that a
//! queue stays known after all its jobs have left memory). Version 3 added
//! each job's attempt records (stage times), written after its errors.
//! Version 4 added the names of the paused queues, after the known ones;
//! version 5 added each configured queue's name and configuration (in the
//! encoding of the `QueueConfigured` event), after the paused ones.
//! Versions 3 (no queue paused) and 4 (no queue configured) are still
//! read.
//!
//! A snapshot of another version is not read: the table is then rebuilt
//! from the whole log, which holds everything a snapshot does.

use std::path::Path;

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::config::JobsConfig;
use crate::core::JobsCore;
use crate::event::{read_queue_config, write_queue_config};
use crate::job::{Attempt, AttemptError, AttemptOutcome, Attempts, Job, JobState, Lease};
use crate::queue::QueueConfig;

pub const FILE_NAME: &str = "jobs.snapshot";
const MAGIC: &[u8; 4] = b"SPJS";
const VERSION: u32 = 5;
/// Earlier versions still read: without queue configurations (4), and
/// without paused queues either (3).
const VERSION_WITHOUT_CONFIGS: u32 = 4;
const VERSION_WITHOUT_PAUSES: u32 = 3;

fn readable(version: u32) -> bool {
    matches!(
        version,
        VERSION | VERSION_WITHOUT_CONFIGS | VERSION_WITHOUT_PAUSES
    )
}
const HEADER_BYTES: usize = 28;

fn state_code(state: JobState) -> u8 {
    state.index() as u8
}

fn state_from(code: u8) -> Option<JobState> {
    JobState::ALL.get(usize::from(code)).copied()
}

fn outcome_from(code: u8) -> Option<AttemptOutcome> {
    AttemptOutcome::ALL.get(usize::from(code)).copied()
}

fn write_job(w: &mut Writer, job: &Job) {
    w.u64(job.id);
    w.str(&job.queue);
    w.u8(state_code(job.state));
    w.bytes(&job.payload);
    w.str(&job.content_type);
    w.u64(job.headers.len() as u64);
    for (k, v) in &job.headers {
        w.str(k);
        w.str(v);
    }
    w.i64(i64::from(job.priority));
    w.u64(u64::from(job.attempt));
    w.u64(u64::from(job.attempts_max));
    w.u64(u64::from(job.attempts_forgiven));
    w.u64(job.timeout_ms);
    w.opt_str(job.idempotency_key.as_deref());
    w.i64(job.created_ms);
    w.i64(job.run_at_ms);
    w.opt_i64(job.started_ms);
    w.opt_i64(job.finished_ms);
    w.u64(job.errors.len() as u64);
    for e in &job.errors {
        w.u64(u64::from(e.attempt));
        w.str(&e.error);
        w.i64(e.failed_at_ms);
    }
    w.u64(job.attempts.len() as u64);
    for a in job.attempts.iter() {
        w.u64(u64::from(a.attempt));
        w.i64(a.available_at_ms);
        w.i64(a.claimed_at_ms);
        w.opt_i64(a.finished_at_ms);
        w.u8(a.outcome.index() as u8);
    }
    w.opt_bytes(job.result.as_deref());
    w.opt_str(job.progress.as_deref());
    w.u8(u8::from(job.cancel_requested));
    match &job.lease {
        None => w.u8(0),
        Some(lease) => {
            w.u8(1);
            w.u64(lease.token);
            w.i64(lease.until_ms);
            w.u64(lease.lease_ms);
            w.str(&lease.worker);
        }
    }
    match job.completed_token {
        None => w.u8(0),
        Some(token) => {
            w.u8(1);
            w.u64(token);
        }
    }
}

fn read_job(r: &mut Reader) -> Option<Job> {
    let id = r.u64()?;
    let queue = r.string()?;
    let state = state_from(r.u8()?)?;
    let payload = r.bytes()?;
    let content_type = r.string()?;
    let mut headers = Vec::new();
    for _ in 0..r.u64()? {
        headers.push((r.string()?, r.string()?));
    }
    let priority = r.i32()?;
    let attempt = r.u32()?;
    let attempts_max = r.u32()?;
    let attempts_forgiven = r.u32()?;
    let timeout_ms = r.u64()?;
    let idempotency_key = r.opt_string()?;
    let created_ms = r.i64()?;
    let run_at_ms = r.i64()?;
    let started_ms = r.opt_i64()?;
    let finished_ms = r.opt_i64()?;
    let mut errors = Vec::new();
    for _ in 0..r.u64()? {
        errors.push(AttemptError {
            attempt: r.u32()?,
            error: r.string()?,
            failed_at_ms: r.i64()?,
        });
    }
    let mut attempts = Attempts::default();
    for _ in 0..r.u64()? {
        attempts.push(Attempt {
            attempt: r.u32()?,
            available_at_ms: r.i64()?,
            claimed_at_ms: r.i64()?,
            finished_at_ms: r.opt_i64()?,
            outcome: outcome_from(r.u8()?)?,
        });
    }
    let result = r.opt_bytes()?;
    let progress = r.opt_string()?;
    let cancel_requested = r.u8()? != 0;
    let lease = match r.u8()? {
        0 => None,
        1 => Some(Lease {
            token: r.u64()?,
            until_ms: r.i64()?,
            lease_ms: r.u64()?,
            worker: r.string()?,
        }),
        _ => return None,
    };
    let completed_token = match r.u8()? {
        0 => None,
        1 => Some(r.u64()?),
        _ => return None,
    };
    Some(Job {
        id,
        queue: queue.into(),
        state,
        payload,
        content_type,
        headers,
        priority,
        attempt,
        attempts_max,
        attempts_forgiven,
        timeout_ms,
        idempotency_key,
        created_ms,
        run_at_ms,
        started_ms,
        finished_ms,
        errors,
        attempts,
        result,
        progress,
        cancel_requested,
        lease,
        completed_token,
    })
}

/// Encodes `core` as covering the log up to `offset` (exclusive).
pub fn encode(core: &JobsCore, offset: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(core.last_id);
    w.u64(core.jobs.len() as u64);
    for job in core.jobs.values() {
        write_job(&mut w, job);
    }
    w.u64(core.keys.len() as u64);
    for ((queue, key), (id, until)) in &core.keys {
        w.str(queue);
        w.str(key);
        w.u64(*id);
        w.i64(*until);
    }
    let queues: Vec<&str> = core.queues().collect();
    w.u64(queues.len() as u64);
    for queue in queues {
        w.str(queue);
    }
    let paused: Vec<&str> = core.paused_queues().collect();
    w.u64(paused.len() as u64);
    for queue in paused {
        w.str(queue);
    }
    let configured: Vec<(&str, &QueueConfig)> = core.configured_queues().collect();
    w.u64(configured.len() as u64);
    for (queue, config) in configured {
        w.str(queue);
        write_queue_config(&mut w, config);
    }
    let body = w.buf;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a snapshot into a core and the offset it covers; `None` if the
/// bytes are not a whole, valid snapshot.
pub fn decode(bytes: Bytes, config: JobsConfig, seed: u64) -> Option<(JobsCore, u64)> {
    let offset = check(&bytes).ok()?;
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let mut r = Reader::new(bytes.slice(HEADER_BYTES..));
    let mut core = JobsCore::new(config, seed);
    let last_id = r.u64()?;
    for _ in 0..r.u64()? {
        core.restore_job(read_job(&mut r)?);
    }
    for _ in 0..r.u64()? {
        let queue = r.string()?;
        let key = r.string()?;
        let id = r.u64()?;
        let until = r.i64()?;
        core.restore_key(&queue, key, id, until);
    }
    for _ in 0..r.u64()? {
        core.restore_queue(&r.string()?);
    }
    if version >= VERSION_WITHOUT_CONFIGS {
        for _ in 0..r.u64()? {
            core.restore_paused(&r.string()?);
        }
    }
    if version >= VERSION {
        for _ in 0..r.u64()? {
            let queue = r.string()?;
            let config = read_queue_config(&mut r)?;
            core.restore_config(&queue, config);
        }
    }
    core.last_id = core.last_id.max(last_id);
    r.is_empty().then_some((core, offset))
}

/// Reads the snapshot in `dir`, if there is a valid one.
pub fn load(dir: &Path, config: &JobsConfig, seed: u64) -> Option<(JobsCore, u64)> {
    let path = dir.join(FILE_NAME);
    let bytes = std::fs::read(&path).ok()?;
    let version = bytes
        .get(4..8)
        .filter(|_| bytes.starts_with(MAGIC))
        .map(|v| u32::from_le_bytes(v.try_into().expect("4 bytes")));
    let decoded = decode(Bytes::from(bytes), config.clone(), seed);
    if decoded.is_none() {
        match version {
            Some(version) if !readable(version) => tracing::warn!(
                path = %path.display(),
                version,
                "ignoring a jobs snapshot of another format version; replaying the whole log"
            ),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring a damaged jobs snapshot; replaying the whole log")
            }
        }
    }
    decoded
}

/// Writes a snapshot of `core` covering the log up to `offset`.
pub fn store(dir: &Path, core: &JobsCore, offset: u64) -> spool_log::Result<()> {
    write(dir, &encode(core, offset))
}

/// Writes an encoded snapshot atomically.
pub fn write(dir: &Path, encoded: &[u8]) -> spool_log::Result<()> {
    let mut files = FILES.lock().expect("jobs snapshot files lock");
    write_unlocked(dir, encoded)?;
    files.insert(dir.to_path_buf(), encoded_offset(encoded));
    Ok(())
}

/// The offset in the header of a snapshot [`encode`] made.
fn encoded_offset(encoded: &[u8]) -> u64 {
    u64::from_le_bytes(encoded[8..16].try_into().expect("an encoded snapshot's header"))
}

fn write_unlocked(dir: &Path, encoded: &[u8]) -> spool_log::Result<()> {
    spool_log::fsutil::create_dir_durable(dir)?;
    spool_log::fsutil::write_atomic(&dir.join(FILE_NAME), encoded)
}

// Cluster mode: the snapshot is also the job layer's state in `__jobs`'
// Raft group (`spool_raft::AppState`): the group compacts no further than
// the stored snapshot covers, sends it to a replica whose log restarts
// from the leader's snapshot, and that replica stores it here before its
// log restarts. Its offset must then never go back, whoever writes:
// the job thread (its own table) or the group (the leader's). One lock
// orders every write of the process, and the functions below keep the
// offset of each directory's stored snapshot.

/// The offsets of the stored snapshots this process has written or read
/// whole, by directory; what the lock guards.
static FILES: std::sync::Mutex<std::collections::BTreeMap<std::path::PathBuf, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The offset a whole, valid encoded snapshot covers; why not otherwise.
pub fn check(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return Err("not a jobs snapshot".to_owned());
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if !readable(version) {
        return Err(format!("a jobs snapshot of unknown version {version}"));
    }
    let offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let body_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if bytes.len() as u64 != HEADER_BYTES as u64 + body_len {
        return Err(format!("{} bytes do not hold a body of {body_len}", bytes.len()));
    }
    if crc32fast::hash(&bytes[HEADER_BYTES..]) != crc {
        return Err("checksum mismatch".to_owned());
    }
    Ok(offset)
}

/// The stored snapshot of `dir`, whole and valid, with its offset.
/// Blocking.
pub fn stored(dir: &Path) -> Option<(u64, Vec<u8>)> {
    let mut files = FILES.lock().expect("jobs snapshot files lock");
    let (offset, bytes) = read_stored(dir)?;
    files.insert(dir.to_path_buf(), offset);
    Some((offset, bytes))
}

/// The offset the stored snapshot of `dir` covers (0 for none, or one
/// that is not whole). Blocking: reads the file the first time.
pub fn stored_offset(dir: &Path) -> u64 {
    known_offset(&mut FILES.lock().expect("jobs snapshot files lock"), dir)
}

/// Writes `encoded` (a snapshot [`encode`] made) unless the stored
/// snapshot covers more; returns the offset stored afterwards. Cluster
/// mode, where a stored snapshot never goes back (module comment above).
pub fn write_if_newer(dir: &Path, encoded: &[u8]) -> spool_log::Result<u64> {
    store_if_newer(dir, encoded, encoded_offset(encoded))
}

/// Stores a snapshot received from the leader of `__jobs`, said to cover
/// the log up to `next_offset`: refused when it is not whole or covers
/// another offset, kept only if it covers more than the one stored.
pub fn install(dir: &Path, encoded: &[u8], next_offset: u64) -> Result<u64, String> {
    let offset = check(encoded)?;
    if offset != next_offset {
        return Err(format!(
            "the job table covers offset {offset}, the snapshot says {next_offset}"
        ));
    }
    store_if_newer(dir, encoded, offset).map_err(|error| error.to_string())
}

/// [`write_if_newer`] of a snapshot covering `offset`.
fn store_if_newer(dir: &Path, encoded: &[u8], offset: u64) -> spool_log::Result<u64> {
    let mut files = FILES.lock().expect("jobs snapshot files lock");
    let stored = known_offset(&mut files, dir);
    if stored > offset {
        return Ok(stored);
    }
    write_unlocked(dir, encoded)?;
    files.insert(dir.to_path_buf(), offset);
    Ok(offset)
}

/// The offset of `dir`'s stored snapshot as `files` knows it, reading
/// the file the first time.
fn known_offset(files: &mut std::collections::BTreeMap<std::path::PathBuf, u64>, dir: &Path) -> u64 {
    *files
        .entry(dir.to_path_buf())
        .or_insert_with(|| read_stored(dir).map_or(0, |(offset, _)| offset))
}

fn read_stored(dir: &Path) -> Option<(u64, Vec<u8>)> {
    let bytes = std::fs::read(dir.join(FILE_NAME)).ok()?;
    let offset = check(&bytes).ok()?;
    Some((offset, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(offset: u64) -> Vec<u8> {
        encode(&JobsCore::new(JobsConfig::default(), 1), offset)
    }

    #[test]
    fn a_replicas_stored_snapshot_never_goes_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("jobs");
        assert_eq!(stored_offset(&dir), 0);
        assert!(stored(&dir).is_none());
        assert_eq!(write_if_newer(&dir, &encoded(40)).unwrap(), 40);
        // An older table (the job thread's, written after the leader's
        // was installed) leaves the newer one.
        assert_eq!(write_if_newer(&dir, &encoded(30)).unwrap(), 40);
        assert_eq!(stored(&dir).unwrap(), (40, encoded(40)));
        assert_eq!(install(&dir, &encoded(90), 90).unwrap(), 90);
        assert_eq!(stored_offset(&dir), 90);
        let mut damaged = encoded(120);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(install(&dir, &damaged, 120).unwrap_err(), "checksum mismatch");
        assert!(install(&dir, b"SPJS", 0).is_err());
        assert_eq!(check(&encoded(7)), Ok(7));
        assert_eq!(stored_offset(&dir), 90);
    }
}
