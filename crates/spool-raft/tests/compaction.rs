//! Compaction of replicated logs (`Replica::compact_to`) and snapshots
//! that restart a lagging replica's log: a compacted group restarted from
//! its directories keeps its log start, last purged entry and membership;
//! a replica that missed entries the others purged, and a replica added
//! after the purge, catch up through the leader's snapshot; a replica
//! killed right after installing one opens again; and the files a crash
//! leaves in the middle of a purge or of a snapshot's install open to the
//! same log. A group with an owner's state purges nothing that state
//! does not cover, and hands the state to a replica that restarts its log
//! from the leader's snapshot. Every test ends with the
//! harness's check: every acknowledged write at or past a replica's log
//! start is in its committed log, offsets are dense, and the logs are the
//! same bytes from the latest start on.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Ack;
use common::cluster::{Cluster, WAIT, producer_batch};
use spool_raft::{AppSnapshot, AppState};

use anyhow::{Context, Result, ensure};

/// Polls `check` every 20 ms until it holds, for at most [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The offset after the last acknowledged write.
fn end(cluster: &Cluster) -> Result<u64> {
    Ok(cluster.acks.last().context("writes")?.appended.next_offset)
}

/// Compacts node `id`'s log below `offset`; returns its log start after.
async fn compact(cluster: &Cluster, id: u64, offset: u64) -> Result<u64> {
    let start = cluster.replica(id).compact_to(offset, WAIT).await?;
    ensure!(
        start > 0 && start <= offset,
        "node {id}'s log starts at {start} after compacting to {offset}"
    );
    Ok(start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_group_restarts_from_its_directories_and_goes_on() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "old", 300).await?;
    cluster.check_acknowledged_writes().await?;
    let boundary = end(&cluster)? * 2 / 3;

    // Nothing below offset 0 or a first batch: nothing to purge.
    assert_eq!(cluster.replica(leader).compact_to(0, WAIT).await?, 0);
    let mut starts = BTreeMap::new();
    for id in [1, 2, 3] {
        starts.insert(id, compact(&cluster, id, boundary).await?);
        // Again: nothing more to do.
        assert_eq!(cluster.replica(id).compact_to(boundary, WAIT).await?, starts[&id]);
    }
    let mut purged = BTreeMap::new();
    for id in [1, 2, 3] {
        let status = cluster.replica(id).status();
        let index = status.purged_index.context("a purged entry")?;
        ensure!(status.snapshot_index >= Some(index), "{status:?}");
        purged.insert(id, index);
    }
    cluster.check_acknowledged_writes().await?;

    for id in [1, 2, 3] {
        cluster.stop_node(id).await?;
    }
    for id in [1, 2, 3] {
        cluster.start_node(id).await?;
    }
    let leader = cluster.wait_for_leader(0, &[]).await?;
    for id in [1, 2, 3] {
        let replica = cluster.replica(id);
        let partition = replica.partition();
        assert_eq!(partition.log_start_offset(), starts[&id], "node {id}");
        eventually("the status is published", || {
            replica.status().purged_index.is_some()
        })
        .await?;
        let status = replica.status();
        assert_eq!(status.purged_index, Some(purged[&id]), "node {id}");
        assert_eq!(status.voters, vec![1, 2, 3], "node {id}");
        let below = partition.read_committed(starts[&id] - 1, 1024).unwrap_err();
        assert!(
            matches!(below, spool_log::Error::OffsetOutOfRange { earliest, .. } if earliest == starts[&id]),
            "node {id}: {below:?}"
        );
    }
    cluster.write(leader, "new", 40).await?;
    cluster.check_acknowledged_writes().await?;

    // And once more, past what the first compaction kept.
    let boundary = end(&cluster)? - 10;
    for id in [1, 2, 3] {
        let start = compact(&cluster, id, boundary).await?;
        ensure!(start >= starts[&id]);
    }
    cluster.write(leader, "last", 5).await?;
    cluster.check_acknowledged_writes().await?;
    Ok(())
}

/// Stops a follower, writes past it, compacts the other two beyond what
/// it holds, keeping the last `kept` records, and starts it again: it
/// must install the leader's snapshot. Returns the follower, the leader
/// and the offset compacted to.
async fn lag_a_follower_behind_a_purge(cluster: &mut Cluster, kept: u64) -> Result<(u64, u64, u64)> {
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "before", 50).await?;
    cluster.check_acknowledged_writes().await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    cluster.stop_node(follower).await?;
    cluster.write(leader, "missed", 300).await?;
    let boundary = end(cluster)? - kept;
    // A write is answered as soon as it is applied, a moment before the
    // engine publishes it: compacting before then would end the snapshot
    // one entry early, and with `kept` 0 the follower would then receive
    // an entry after it.
    let last = cluster.replica(leader).status().last_log_index;
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        let replica = cluster.replica(id).clone();
        eventually("every write is applied", || {
            replica.status().applied_index == last
        })
        .await?;
    }
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        compact(cluster, id, boundary).await?;
    }
    Ok((follower, leader, boundary))
}

/// An owner's state for the tests: as far as the test says it has
/// folded the log, and the states installed from the leader.
#[derive(Default)]
struct Folded {
    next_offset: AtomicU64,
    installed: Mutex<Vec<AppSnapshot>>,
}

impl Folded {
    fn data(next_offset: u64) -> Vec<u8> {
        format!("folded below {next_offset}").into_bytes()
    }
}

impl AppState for Folded {
    fn durable_offset(&self) -> u64 {
        self.next_offset.load(Ordering::SeqCst)
    }

    fn snapshot(&self) -> Option<AppSnapshot> {
        let next_offset = self.durable_offset();
        (next_offset > 0).then(|| AppSnapshot {
            next_offset,
            data: Folded::data(next_offset),
        })
    }

    fn install(&self, snapshot: AppSnapshot) -> Result<(), String> {
        self.next_offset.fetch_max(snapshot.next_offset, Ordering::SeqCst);
        self.installed.lock().unwrap().push(snapshot);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_an_owners_state_purges_only_what_it_covers_and_hands_it_to_a_lagging_replica()
-> Result<()> {
    let mut cluster = Cluster::start().await?;
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "old", 200).await?;
    // Every replica reopened with an owner's state.
    let folded: BTreeMap<u64, Arc<Folded>> = (1..=3).map(|id| (id, Arc::new(Folded::default()))).collect();
    for id in [1, 2, 3] {
        cluster.stop_node(id).await?;
        cluster
            .apps
            .insert(id, Arc::clone(&folded[&id]) as Arc<dyn AppState>);
    }
    for id in [1, 2, 3] {
        cluster.start_node(id).await?;
    }
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "more", 100).await?;
    let written = end(&cluster)?;

    // The owner has folded a third of the log: nothing past it goes,
    // however far the compaction is asked to go.
    let covered = written / 3;
    folded[&leader].next_offset.store(covered, Ordering::SeqCst);
    let start = compact(&cluster, leader, written).await?;
    ensure!(
        start <= covered,
        "the log starts at {start}, past the {covered} the owner covers"
    );
    // An owner that has folded nothing lets nothing go.
    let other = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    ensure!(cluster.replica(other).compact_to(written, WAIT).await? == 0);

    // A follower stopped, the others compact past its log: it comes back
    // through the leader's snapshot, and its owner is handed the state.
    let follower = other;
    let old_end = cluster.replica(follower).partition().high_watermark();
    cluster.stop_node(follower).await?;
    cluster.write(leader, "missed", 300).await?;
    let written = end(&cluster)?;
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        folded[&id].next_offset.store(written, Ordering::SeqCst);
        compact(&cluster, id, written - 5).await?;
    }
    // The leader sends its owner's latest state, past its snapshot's end.
    folded[&leader].next_offset.store(written + 3, Ordering::SeqCst);
    let leader_state = folded[&leader].snapshot().context("the leader's state")?;
    cluster.start_node(follower).await?;
    let partition = cluster.replica(follower).partition().clone();
    eventually("the follower installs a snapshot", || {
        partition.log_start_offset() > old_end
    })
    .await?;
    eventually("the owner is handed the state", || {
        !folded[&follower].installed.lock().unwrap().is_empty()
    })
    .await?;
    let installed = folded[&follower].installed.lock().unwrap().clone();
    ensure!(installed == vec![leader_state.clone()], "{installed:?}");
    ensure!(
        installed[0].next_offset >= partition.log_start_offset(),
        "the state covers everything below the restarted log"
    );
    cluster.write(leader, "after", 20).await?;
    cluster.check_acknowledged_writes().await?;

    // `raft-start` records the snapshot without the owner's state.
    let recorded = std::fs::read(partition_dir(&cluster, follower).join("raft-start"))?;
    let hex: String = leader_state.data.iter().map(|b| format!("{b:02x}")).collect();
    ensure!(
        !recorded.windows(hex.len()).any(|window| window == hex.as_bytes()),
        "raft-start holds the owner's state"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_purged_entries_restarts_its_log_from_a_snapshot() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let (follower, leader, boundary) = lag_a_follower_behind_a_purge(&mut cluster, 20).await?;
    let old_end = {
        cluster.start_node(follower).await?;
        cluster.replica(follower).partition().high_watermark()
    };
    let partition = cluster.replica(follower).partition().clone();
    eventually("the follower installs a snapshot", || {
        partition.log_start_offset() > old_end
    })
    .await?;
    // (The engine publishes the snapshot once the install returns.)
    let replica = cluster.replica(follower).clone();
    eventually("the snapshot is published", || {
        replica.status().purged_index.is_some()
    })
    .await?;
    let status = replica.status();
    let snapshot = status.snapshot_index.context("an installed snapshot")?;
    ensure!(status.purged_index == Some(snapshot), "{status:?}");
    // The log restarted where the leader's snapshot ends, and holds the
    // leader's entries from there.
    cluster.write(leader, "after", 20).await?;
    cluster.check_acknowledged_writes().await?;
    let start = partition.log_start_offset();
    let leader_partition = cluster.replica(leader).partition();
    ensure!(leader_partition.log_start_offset() <= start);
    // The snapshot ends at the last entry purged, not at the last one
    // applied: the follower holds every record from the boundary on, as
    // the replicas that compacted do.
    ensure!(
        start <= boundary,
        "the follower's log starts at {start}, past the boundary {boundary} the others kept from"
    );
    ensure!(partition.high_watermark() == leader_partition.high_watermark());

    // A restart keeps the new start, the purged id and the membership.
    cluster.stop_node(follower).await?;
    cluster.start_node(follower).await?;
    let replica = cluster.replica(follower).clone();
    assert_eq!(replica.partition().log_start_offset(), start);
    eventually("the status is published", || {
        replica.status().purged_index.is_some()
    })
    .await?;
    assert_eq!(replica.status().purged_index, Some(snapshot));
    assert_eq!(replica.status().voters, vec![1, 2, 3]);
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "restarted", 10).await?;
    cluster.check_acknowledged_writes().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_right_after_installing_a_snapshot_opens_again() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let (follower, leader, _) = lag_a_follower_behind_a_purge(&mut cluster, 20).await?;
    cluster.start_node(follower).await?;
    let old_end = cluster.replica(follower).partition().high_watermark();
    let partition = cluster.replica(follower).partition().clone();
    eventually("the follower installs a snapshot", || {
        partition.log_start_offset() > old_end
    })
    .await?;
    cluster.crash_node(follower).await?;
    cluster.write(leader, "while-down", 10).await?;
    cluster.start_node(follower).await?;
    ensure!(cluster.replica(follower).partition().log_start_offset() > old_end);
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "after", 10).await?;
    cluster.check_acknowledged_writes().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_after_the_purge_catches_up_through_a_snapshot() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "before", 300).await?;
    let boundary = end(&cluster)? - 20;
    for id in [1, 2, 3] {
        compact(&cluster, id, boundary).await?;
    }
    cluster.start_node(4).await?;
    let voters: BTreeMap<u64, String> = (1..=4).map(|id| (id, format!("node-{id}"))).collect();
    cluster.replica(leader).change_voters(&voters, WAIT).await?;
    assert_eq!(cluster.replica(leader).status().voters, vec![1, 2, 3, 4]);
    let joined = cluster.replica(4).partition().clone();
    ensure!(
        joined.log_start_offset() > 0,
        "node 4 holds the log from {}",
        joined.log_start_offset()
    );
    let joined_replica = cluster.replica(4).clone();
    eventually("node 4's snapshot is published", || {
        joined_replica.status().snapshot_index.is_some()
    })
    .await?;
    cluster.write(leader, "after", 20).await?;
    cluster.check_acknowledged_writes().await?;
    Ok(())
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn partition_dir(cluster: &Cluster, id: u64) -> PathBuf {
    cluster
        .node_dir(id)
        .join("topics")
        .join(common::cluster::TOPIC)
        .join("0")
}

/// Replaces node `id`'s directory by `backup`, with `raft_start` as its
/// `raft-start`: the files a crash would have left.
fn restore_with(cluster: &Cluster, id: u64, backup: &Path, raft_start: &[u8]) -> Result<()> {
    std::fs::remove_dir_all(cluster.node_dir(id))?;
    copy_tree(backup, &cluster.node_dir(id))?;
    std::fs::write(partition_dir(cluster, id).join("raft-start"), raft_start)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_recording_a_purge_and_deleting_segments_opens_the_same_log() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "before", 300).await?;
    cluster.check_acknowledged_writes().await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    let backup = cluster.dir.path().join("backup");
    cluster.stop_node(follower).await?;
    copy_tree(&cluster.node_dir(follower), &backup)?;
    cluster.start_node(follower).await?;
    let replica = cluster.replica(follower).clone();
    eventually("the follower applies", || {
        replica.status().applied_index.is_some()
    })
    .await?;
    let start = compact(&cluster, follower, end(&cluster)? - 20).await?;
    let purged = replica.status().purged_index;
    cluster.stop_node(follower).await?;

    // The record is written, no segment and no own entry deleted yet.
    let record = std::fs::read(partition_dir(&cluster, follower).join("raft-start"))?;
    restore_with(&cluster, follower, &backup, &record)?;
    cluster.start_node(follower).await?;
    let replica = cluster.replica(follower).clone();
    ensure!(
        replica.partition().log_start_offset() < start,
        "the old segments are still there"
    );
    eventually("the status is published", || {
        replica.status().purged_index.is_some()
    })
    .await?;
    assert_eq!(replica.status().purged_index, purged);
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "after", 10).await?;
    cluster.check_acknowledged_writes().await?;
    // The next compaction deletes what the crash left.
    ensure!(compact(&cluster, follower, end(&cluster)? - 5).await? >= start);
    cluster.check_acknowledged_writes().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_an_installed_snapshot_restarted_the_log_is_finished_at_open() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    // Everything compacted: the snapshot ends at the last entry, so the
    // follower receives nothing after it and the record read back below
    // is the state right after the install (with entries past the
    // snapshot, putting the old log back would take from the follower
    // entries the leader knows it holds).
    let (follower, _, _) = lag_a_follower_behind_a_purge(&mut cluster, 0).await?;
    let backup = cluster.dir.path().join("backup");
    copy_tree(&cluster.node_dir(follower), &backup)?;
    cluster.start_node(follower).await?;
    let old_end = cluster.replica(follower).partition().high_watermark();
    let replica = cluster.replica(follower).clone();
    eventually("the follower installs a snapshot", || {
        replica.partition().log_start_offset() > old_end && replica.status().purged_index.is_some()
    })
    .await?;
    let start = replica.partition().log_start_offset();
    cluster.stop_node(follower).await?;

    // `raft-start` written with the restart pending, the old log still
    // there: the state right before the partition's restart.
    let mut record = std::fs::read(partition_dir(&cluster, follower).join("raft-start"))?;
    record[8] = 1;
    let body = record.len() - 4;
    let crc = crc32fast::hash(&record[..body]);
    record[body..].copy_from_slice(&crc.to_le_bytes());
    restore_with(&cluster, follower, &backup, &record)?;
    cluster.start_node(follower).await?;
    let partition = cluster.replica(follower).partition().clone();
    assert_eq!(partition.log_start_offset(), start);
    let leader = cluster.wait_for_leader(0, &[]).await?;
    cluster.write(leader, "after", 10).await?;
    cluster.check_acknowledged_writes().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_restarted_from_a_snapshot_keeps_the_producers_below_its_start() -> Result<()> {
    let mut cluster = Cluster::start().await?;
    let leader = cluster.wait_for_leader(0, &[]).await?;
    // Producer 41's batches 0 to 4, before the follower stops.
    let mut originals = Vec::new();
    for sequence in 0..5 {
        let batch = producer_batch(&format!("p-{sequence}"), 2, 41, sequence * 2);
        let appended = cluster.replica(leader).append(batch).await?;
        ensure!(!appended.duplicate);
        cluster.acks.push(Ack {
            tag: format!("p-{sequence}"),
            count: 2,
            appended,
        });
        originals.push(appended);
    }
    let (follower, leader, _) = lag_a_follower_behind_a_purge(&mut cluster, 20).await?;
    cluster.start_node(follower).await?;
    let old_end = cluster.replica(follower).partition().high_watermark();
    let replica = cluster.replica(follower).clone();
    eventually("the follower installs a snapshot", || {
        replica.partition().log_start_offset() > old_end && replica.status().purged_index.is_some()
    })
    .await?;
    ensure!(replica.partition().log_start_offset() > originals[4].next_offset);
    ensure!(
        replica.partition().producer_entry(41).is_some(),
        "the snapshot carried producer 41"
    );

    // The follower leads now: a retry of a batch below its log start is
    // answered with the original's offsets, and the producer goes on.
    cluster
        .replica(leader)
        .transfer_leadership(follower, WAIT)
        .await?;
    let leader = cluster.wait_for_leader(0, &[]).await?;
    ensure!(leader == follower, "node {leader} leads");
    for (sequence, original) in [(0, originals[0]), (4, originals[4])] {
        let retry = producer_batch(&format!("p-{sequence}"), 2, 41, sequence * 2);
        let answer = cluster.replica(leader).append(retry).await?;
        ensure!(
            answer.duplicate && answer.base_offset == original.base_offset,
            "a retry of batch {sequence} answered {answer:?}"
        );
    }
    let next = cluster
        .replica(leader)
        .append(producer_batch("p-5", 2, 41, 10))
        .await?;
    ensure!(!next.duplicate);
    cluster.acks.push(Ack {
        tag: "p-5".to_owned(),
        count: 2,
        appended: next,
    });
    cluster.check_acknowledged_writes().await?;
    Ok(())
}
