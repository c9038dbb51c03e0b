//! Retention of replicated topics: every `retention_check_interval_ms`,
//! each replica on this node whose topic has a retention (in the
//! metadata's `TopicSpec`) is compacted below the offset spool-log's
//! retention would keep from (`Partition::retention_start`), with
//! `Replica::compact_to`: a snapshot, then a purge of whole segments. Each
//! node compacts its own replicas; a replica that later needs entries its
//! leader purged gets the leader's snapshot (`docs/cluster.md`,
//! "Snapshots").
//!
//! The metadata log is compacted the same way, below what this node has
//! applied and stored (`metadata_snapshot.rs`), and `__jobs` below its
//! history retention and the job table's stored snapshot.
//!
//! The store's own retention never runs on these partitions (the local
//! topic has none, `applier.rs`): deleting a replica's segments behind
//! the Raft log's back would leave entries neither held nor purged.

use std::sync::Arc;
use std::time::Duration;

use spool_log::Retention;
use tokio::sync::watch;

use super::Cluster;

/// How long one replica's compaction may wait for its snapshot and purge
/// (a leader purges once no replication task still reads the entries);
/// the next pass goes on from where it stopped.
const COMPACTION_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn run(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let interval_ms = cluster.store.config().retention_check_interval_ms;
    if interval_ms == 0 {
        return;
    }
    let interval = Duration::from_millis(interval_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        compact_replicas(&cluster).await;
        compact_metadata(&cluster).await;
        compact_jobs(&cluster).await;
    }
}

/// Compacts this node's replica of `__jobs` below where the history
/// retention (`job_history_retention_*`) would start it: the engine stops
/// at the job table's stored snapshot (`jobs::JobsSnapshots`), so no
/// event the table still needs goes, and the job thread takes a snapshot
/// when the retention waits for one.
async fn compact_jobs(cluster: &Cluster) {
    let retention = cluster.job_history_retention;
    if retention.keeps_everything() {
        return;
    }
    let replica = &cluster.jobs;
    let partition = replica.partition();
    let boundary = partition.retention_start(&retention, now_ms());
    if boundary <= partition.log_start_offset() {
        return;
    }
    match replica.compact_to(boundary, COMPACTION_WAIT).await {
        Ok(log_start_offset) => {
            tracing::debug!(
                boundary,
                log_start_offset,
                "the history retention compacted __jobs"
            );
        }
        Err(error) => {
            tracing::warn!(boundary, %error, "the history retention could not compact __jobs; the next pass tries again");
        }
    }
}

/// Compacts this node's replica of the metadata log below the offset its
/// applied state covers, once that frees a whole segment: the state is
/// stored first, and a snapshot sent to another node carries it
/// (`metadata_snapshot.rs`), so the commands below are no longer needed
/// to restart, or to bring a node up to date. Without
/// this, every checkpoint commit would stay in the log for good.
async fn compact_metadata(cluster: &Cluster) {
    let replica = &cluster.metadata;
    let partition = replica.partition();
    let applied = cluster.state.read().expect("metadata lock").applied_through();
    if partition.start_after_deleting_below(applied) <= partition.log_start_offset() {
        return;
    }
    // The state is stored first: the purge goes no further than the
    // stored state covers.
    let snapshots = std::sync::Arc::clone(&cluster.metadata_snapshots);
    let saved = tokio::task::spawn_blocking(move || snapshots.save())
        .await
        .expect("storing the metadata snapshot does not panic");
    let applied = match saved {
        Ok(offset) => offset,
        Err(error) => {
            tracing::warn!(%error, "cannot store the metadata snapshot; the metadata log is not compacted");
            return;
        }
    };
    match replica.compact_to(applied, COMPACTION_WAIT).await {
        Ok(log_start_offset) => {
            tracing::info!(applied, log_start_offset, "compacted the metadata log");
        }
        Err(error) => {
            tracing::warn!(applied, %error, "the metadata log could not be compacted; the next pass tries again");
        }
    }
}

/// One pass over this node's replicas.
async fn compact_replicas(cluster: &Cluster) {
    for (group, replica) in cluster.service.replicas() {
        if spool_log::is_internal_topic(&group.topic) {
            continue;
        }
        let Some(entry) = cluster.topic(&group.topic) else {
            continue;
        };
        let retention = Retention {
            ms: entry.spec.retention_ms,
            bytes: entry.spec.retention_bytes,
        };
        if retention.keeps_everything() {
            continue;
        }
        let partition = replica.partition();
        let boundary = partition.retention_start(&retention, now_ms());
        if boundary <= partition.log_start_offset() {
            continue;
        }
        match replica.compact_to(boundary, COMPACTION_WAIT).await {
            Ok(log_start_offset) => {
                tracing::debug!(%group, boundary, log_start_offset, "retention compacted a replica");
            }
            Err(error) => {
                tracing::warn!(%group, boundary, %error, "retention could not compact a replica; the next pass tries again");
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
