//! The history retention of `__jobs` in a cluster, with three real
//! `spoold` processes, small internal segments and a small history
//! retention: under a job load through two nodes while the third is
//! down, each of the two compacts its replica of `__jobs` (its first
//! segments go, never past the job table's stored snapshot). The third
//! comes back behind their purge: it stores the leader's job table, its
//! log restarts from the leader's snapshot, and once it leads `__jobs`
//! every acknowledged job is there, every acknowledged completion holds,
//! and a further load through it hands out no completed job again.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::cluster::{Extra, TestCluster, WAIT, runtime};
use common::job_load::JobLoad;

const JOBS_TOPIC: &str = "__jobs";

fn cluster() -> TestCluster {
    TestCluster::start_with(
        3,
        Extra::settings(&[
            "retention_check_interval_ms=200ms",
            "record_bytes_max=16KiB",
            "batch_bytes_max=16KiB",
            "internal_segment_bytes=16KiB",
            "job_history_retention_bytes=32KiB",
            "job_snapshot_events=100",
        ]),
    )
}

/// Where node `id`'s `__jobs` starts on disk.
fn first_segment(nodes: &TestCluster, id: u64) -> Result<u64> {
    nodes
        .first_segment(id, JOBS_TOPIC)
        .with_context(|| format!("node {id} holds no segment of {JOBS_TOPIC}"))
}

/// Waits until node `id`'s `__jobs` starts past `past`.
async fn wait_log_start(nodes: &TestCluster, id: u64, past: u64, what: &str) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let start = first_segment(nodes, id)?;
        if start > past {
            return Ok(start);
        }
        ensure!(
            Instant::now() < deadline,
            "node {id}: {what} (its __jobs starts at {start})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_history_of_jobs_is_compacted_and_a_node_behind_it_takes_the_leaders_table() -> Result<()> {
    let runtime = runtime()?;
    let mut nodes = cluster();
    // Node 3 must not lead `__jobs` when it goes down.
    runtime.block_on(async {
        let leader = nodes.agreed_leader(&nodes.ids(), JOBS_TOPIC, 0).await?;
        if leader == 3 {
            move_jobs_leader(&nodes, 1, 1).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let held = first_segment(&nodes, 3)?;
    ensure!(held == 0, "node 3's __jobs starts at {held}");
    nodes.kill9(3);

    let record = runtime.block_on(async {
        let load = JobLoad::spawn(nodes.url(1), nodes.url(2), nodes.client_options());
        let deadline = Instant::now() + WAIT * 4;
        // Until both nodes have compacted past everything node 3 holds
        // (the first segment, at least), and the load has gone on after.
        let mut compacted = false;
        while !compacted {
            load.wait_for_progress(20).await?;
            compacted = [1, 2]
                .into_iter()
                .all(|id| nodes.first_segment(id, JOBS_TOPIC).is_some_and(|start| start > 0));
            ensure!(Instant::now() < deadline, "nodes 1 and 2 never compacted __jobs");
        }
        load.wait_for_progress(20).await?;
        for id in [1, 2] {
            ensure!(
                nodes.data_dir(id).join("jobs/jobs.snapshot").is_file(),
                "node {id} compacted __jobs without a stored snapshot"
            );
        }
        let (enqueued, completed) = load.progress();
        eprintln!("{enqueued} jobs enqueued and {completed} completed while node 3 was down");
        let record = load.stop().await?;
        JobLoad::check(&record, &nodes.url(1), &nodes.client_options()).await?;
        Ok::<_, anyhow::Error>(record)
    })?;

    nodes.restart(3);
    runtime.block_on(async {
        let start = wait_log_start(&nodes, 3, 0, "restarts its __jobs from the leader's snapshot").await?;
        eprintln!("node 3's __jobs restarted at {start}");
        ensure!(
            nodes.data_dir(3).join("jobs/jobs.snapshot").is_file(),
            "node 3 stored the leader's job table"
        );
        move_jobs_leader(&nodes, 1, 3).await?;
        // Node 3's table: the leader's snapshot and the events after it.
        JobLoad::check(&record, &nodes.url(3), &nodes.client_options()).await?;
        let load = JobLoad::spawn(nodes.url(3), nodes.url(3), nodes.client_options());
        load.wait_for_progress(20).await?;
        let more = load.stop().await?;
        JobLoad::check(&more, &nodes.url(3), &nodes.client_options()).await?;
        // A job completed before is never handed out again.
        let old = record.lock().expect("job record lock");
        let again: Vec<String> = more
            .lock()
            .expect("job record lock")
            .completed
            .intersection(&old.completed)
            .cloned()
            .collect();
        ensure!(again.is_empty(), "completed jobs came back: {again:?}");
        Ok::<_, anyhow::Error>(())
    })
}

/// Makes node `to` the leader of `__jobs`, asking through node `via`,
/// retrying while the group is busy.
async fn move_jobs_leader(nodes: &TestCluster, via: u64, to: u64) -> Result<()> {
    let admin = nodes.patient_client(via).await?;
    let deadline = Instant::now() + WAIT;
    loop {
        match admin.transfer_leader(JOBS_TOPIC, 0, to).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                eprintln!("moving __jobs to node {to}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error).with_context(|| format!("moving __jobs to node {to}")),
        }
    }
    let leader = nodes.agreed_leader(&nodes.ids(), JOBS_TOPIC, 0).await?;
    ensure!(leader == to, "node {leader} leads __jobs, not node {to}");
    Ok(())
}
