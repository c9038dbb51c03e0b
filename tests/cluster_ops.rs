//! Operating a cluster of three real `spoold` processes: the status any
//! node gives (the same leaders everywhere; a killed node unreachable and
//! lagging), a leader paused with SIGSTOP past the election timeout while
//! a producer goes on through the other nodes (a new leader takes over,
//! and the old one acknowledges nothing it cannot keep), and leadership
//! transfers through the API and the CLI under a produce load. Each ends
//! with every acknowledged record at its acknowledged offset in every
//! node's committed log, the logs being the same.
//!
//! `every_fault_once` runs one round of each fault of the campaign: kill
//! -9 of the leader, a pause, a transfer, a restart of every node at once
//! and a rolling restart (each node in turn stopped with SIGTERM, which
//! hands its leaderships over, and started again), with `__jobs` kept
//! small, so that the history retention compacts it all along.
//! `chaos_rounds`
//! (ignored; `scripts/cluster-chaos.sh ROUNDS` runs it) repeats them for
//! as many rounds as asked.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::Spoold;
use common::cluster::{Extra, TestCluster, WAIT, campaign_rounds, one_record_request, runtime};
use common::job_load::JobLoad;
use spool_client::{Client, Code, Error, NewTopic};

const TOPIC: &str = "ops";

/// Waits until `check` holds for the status node `id` gives.
async fn wait_for_status(
    cluster: &TestCluster,
    id: u64,
    what: &str,
    check: impl Fn(&spool_client::ClusterStatus) -> bool,
) -> Result<spool_client::ClusterStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        // A node just restarted may not answer yet.
        let status = cluster.status(id).await;
        if let Ok(status) = &status
            && check(status)
        {
            return Ok(status.clone());
        }
        ensure!(
            Instant::now() < deadline,
            "node {id}'s status never showed {what}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn status_names_the_same_leaders_on_every_node_and_a_killed_node_as_unreachable() -> Result<()> {
    let mut cluster = TestCluster::start(3);
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 2).await?;
        let load = cluster.spawn_producer(TOPIC, 0, &[1, 2, 3], "before");
        tokio::time::sleep(Duration::from_millis(500)).await;
        load.stop().await?;

        // Every node describes every node and group, with the same leaders.
        let mut leaders = Vec::new();
        for id in cluster.ids() {
            let status = wait_for_status(&cluster, id, "no lag", |status| {
                status
                    .groups
                    .iter()
                    .all(|g| g.replicas.iter().all(|r| r.lag_entries == Some(0)))
            })
            .await?;
            ensure!(status.node_id == id);
            ensure!(status.nodes.len() == 3 && status.nodes.iter().all(|n| n.reachable));
            for node in &status.nodes {
                ensure!(node.client_address == cluster.nodes[&node.node_id].addr.to_string());
            }
            let groups: Vec<String> = status
                .groups
                .iter()
                .map(|g| format!("{}/{}", g.topic, g.partition))
                .collect();
            ensure!(
                groups == ["__cluster/0", "__jobs/0", "ops/0", "ops/1"],
                "{groups:?}"
            );
            for group in &status.groups {
                let leader = group.leader_id.context("a leader")?;
                let roles: Vec<&str> = group.replicas.iter().map(|r| r.role.as_str()).collect();
                ensure!(roles.iter().filter(|r| **r == "leader").count() == 1, "{roles:?}");
                ensure!(
                    group
                        .replicas
                        .iter()
                        .any(|r| r.node_id == leader && r.role == "leader")
                );
                ensure!(group.committed_index.is_some());
            }
            leaders.push(status.groups.iter().map(|g| g.leader_id).collect::<Vec<_>>());
        }
        ensure!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");

        // The CLI shows the same, as a table and as JSON.
        let table = cluster.nodes[&2].ok(&["cluster", "status"]);
        ensure!(table.contains("ops/1") && table.contains("=leader"), "{table}");
        let json = cluster.nodes[&3].json(&["cluster", "status", "--json"]);
        ensure!(
            json["node_id"] == 3 && json["groups"].as_array().map(Vec::len) == Some(4),
            "{json}"
        );

        // Kill a node that leads nothing of partition 0; produce on.
        let leader = leaders[0][2].context("a leader of ops/0")?;
        let victim = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .context("a follower")?;
        cluster.kill9(victim);
        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != victim).collect();
        let load = cluster.spawn_producer(TOPIC, 0, &alive, "without");
        tokio::time::sleep(Duration::from_millis(500)).await;
        load.stop().await?;
        for &id in &alive {
            wait_for_status(&cluster, id, "the killed node unreachable and behind", |status| {
                let node = status.nodes.iter().find(|n| n.node_id == victim);
                let ops0 = status
                    .groups
                    .iter()
                    .find(|g| g.topic == TOPIC && g.partition == 0);
                let replica = ops0.and_then(|g| g.replicas.iter().find(|r| r.node_id == victim));
                node.is_some_and(|n| !n.reachable && n.client_address.is_empty())
                    && replica.is_some_and(|r| r.role == "unreachable" && r.lag_entries.unwrap_or(0) > 0)
            })
            .await?;
        }
        let json = cluster.nodes[&alive[0]].json(&["cluster", "status", "--format", "json"]);
        ensure!(
            json["nodes"][(victim - 1) as usize]["reachable"] == false,
            "{json}"
        );

        // Back, it catches up: no lag anywhere.
        cluster.restart(victim);
        wait_for_status(&cluster, alive[0], "the restarted node caught up", |status| {
            status.nodes.iter().all(|n| n.reachable)
                && status
                    .groups
                    .iter()
                    .all(|g| g.replicas.iter().all(|r| r.lag_entries == Some(0)))
        })
        .await?;
        cluster.check(&cluster.ids()).await?;
        Ok(())
    })
}

#[test]
fn a_single_node_server_has_no_cluster_to_describe() -> Result<()> {
    let server = Spoold::start_temp(&[]);
    runtime()?.block_on(async {
        let client = Client::connect(server.url()).await?;
        match client.cluster_status().await {
            Err(Error::Other(status)) if status.code() == Code::FailedPrecondition => {}
            other => bail!("a single node answered {other:?}"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let message = server.fails(&["cluster", "transfer-leader", "--topic", "t", "--to", "2"]);
    ensure!(message.contains("not a cluster node"), "{message}");
    Ok(())
}

#[test]
fn a_paused_leader_is_replaced_and_acknowledges_nothing_it_cannot_keep() -> Result<()> {
    let cluster = TestCluster::start(3);
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        let old = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
        let load = cluster.spawn_producer(TOPIC, 0, &others, "load");
        tokio::time::sleep(Duration::from_millis(300)).await;

        cluster.pause(old);
        // Produces sent straight to the paused leader, without a deadline:
        // they wait in its socket and are answered after it resumes, by
        // then no longer the leader.
        let stale: Vec<_> = (0..3)
            .map(|i| {
                let url = cluster.url(old);
                tokio::spawn(async move {
                    let value = format!("stale-{i}");
                    let request = one_record_request(TOPIC, &value);
                    // Connecting may fail too (the client's handshake has a
                    // deadline): that is one more produce not acknowledged.
                    let answer = async {
                        let client = Client::connect(url).await?;
                        let answer = client.log_client().produce(request).await?;
                        Ok::<_, anyhow::Error>(answer.into_inner().results[0].base_offset)
                    };
                    (value.clone(), answer.await)
                })
            })
            .collect();
        // Past the election timeout (at most 1 s), with room for a loaded
        // machine.
        let new = cluster.agreed_leader(&others, TOPIC, 0).await?;
        ensure!(new != old, "the paused node still leads");
        let during = cluster.acked_count(TOPIC, 0);
        let deadline = Instant::now() + WAIT;
        while cluster.acked_count(TOPIC, 0) <= during {
            ensure!(Instant::now() < deadline, "the new leader acknowledged nothing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        cluster.resume(old);
        let mut stale_acked = 0;
        for task in stale {
            let (value, answer) = tokio::time::timeout(WAIT, task).await??;
            if let Ok(offset) = answer {
                // Acknowledged after the pause: it must be kept like any
                // other acknowledged record.
                stale_acked += 1;
                let mut acked = cluster.acked.lock().expect("acks lock");
                acked.entry((TOPIC.to_owned(), 0)).or_default().insert(offset, value);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sent, failed) = load.stop().await?;
        cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        cluster.check(&cluster.ids()).await?;
        eprintln!(
            "pause: {sent} produces, {failed} failed, {} acknowledged; {stale_acked} of 3 sent to the paused leader acknowledged",
            cluster.acked_count(TOPIC, 0)
        );
        Ok(())
    })
}

#[test]
fn leadership_moves_to_the_named_node_through_any_node() -> Result<()> {
    let mut cluster = TestCluster::start(3);
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        let load = cluster.spawn_producer(TOPIC, 0, &[1, 2, 3], "load");
        let mut leader = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;

        // Through a node that does not lead, to each other node in turn.
        for round in 0..3 {
            let to = leader % 3 + 1;
            let via = to % 3 + 1;
            let started = Instant::now();
            let term = cluster
                .patient_client(via)
                .await?
                .transfer_leader(TOPIC, 0, to)
                .await
                .with_context(|| format!("round {round}: {leader} to {to} via {via}"))?;
            let took = started.elapsed();
            leader = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
            ensure!(leader == to, "round {round}: node {leader} leads, not {to}");
            let status = cluster.status(via).await?;
            let group = status.groups.iter().find(|g| g.topic == TOPIC).context("ops/0")?;
            ensure!(group.term >= term);
            eprintln!("transfer {round}: to node {to} in {} ms", took.as_millis());
        }

        // The metadata group, through the CLI.
        let meta = cluster.agreed_leader(&cluster.ids(), "__cluster", 0).await?;
        let to = meta % 3 + 1;
        let output = cluster.nodes[&meta]
            .spool(&[
                "cluster",
                "transfer-leader",
                "--metadata",
                "--to",
                &to.to_string(),
            ])
            .output();
        let said = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "{said}");
        ensure!(said.contains(&format!("node {to} leads __cluster/0")), "{said}");
        ensure!(cluster.agreed_leader(&cluster.ids(), "__cluster", 0).await? == to);

        // The job layer's group, through the CLI; jobs are still taken.
        let jobs_leader = cluster.agreed_leader(&cluster.ids(), "__jobs", 0).await?;
        let to = jobs_leader % 3 + 1;
        let output = cluster.nodes[&jobs_leader]
            .spool(&["cluster", "transfer-leader", "--jobs", "--to", &to.to_string()])
            .output();
        let said = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "{said}");
        ensure!(said.contains(&format!("node {to} leads __jobs/0")), "{said}");
        ensure!(cluster.agreed_leader(&cluster.ids(), "__jobs", 0).await? == to);
        cluster
            .patient_client(jobs_leader)
            .await?
            .jobs()
            .enqueue(spool_client::jobs::NewJob::new("after-transfer", "x"))
            .await?;

        // Topics are still created through the moved metadata group.
        cluster
            .patient_client(1)
            .await?
            .create_topic(NewTopic::new("after", 1))
            .await?;

        // Refusals: a node outside the group, a topic that does not exist.
        let client = cluster.client(1).await?;
        match client.transfer_leader(TOPIC, 0, 9).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => bail!("a transfer to node 9 answered {other:?}"),
        }
        match client.transfer_leader("missing", 0, 1).await {
            Err(Error::NotFound { .. }) => {}
            other => bail!("a transfer in a missing topic answered {other:?}"),
        }
        let message = cluster.nodes[&1].fails(&[
            "cluster",
            "transfer-leader",
            "--topic",
            TOPIC,
            "--partition",
            "5",
            "--to",
            "1",
        ]);
        ensure!(message.contains("partition 5"), "{message}");

        // Asked while the leader is dead, a transfer waits for the next
        // leader and is run by it.
        let (sent, failed) = load.stop().await?;
        let dead = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != dead).collect();
        cluster.kill9(dead);
        cluster
            .patient_client(alive[0])
            .await?
            .transfer_leader(TOPIC, 0, alive[1])
            .await
            .context("a transfer asked while the leader is dead")?;
        ensure!(cluster.agreed_leader(&alive, TOPIC, 0).await? == alive[1]);
        cluster.restart(dead);
        ensure!(cluster.acked_count(TOPIC, 0) > 0);
        eprintln!("transfers under load: {sent} produces, {failed} failed");
        cluster.check(&cluster.ids()).await?;
        Ok(())
    })
}

/// A node stopped with SIGTERM first hands the leadership of every group
/// it leads to another replica: as soon as it has exited, the other nodes
/// already name a live leader of the partition and of the metadata group
/// (after a crash they would name the dead node until an election, about
/// a second later), and no acknowledged record is lost.
#[test]
fn a_node_stopped_with_sigterm_hands_its_leaderships_over_first() -> Result<()> {
    let mut cluster = TestCluster::start(3);
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        let leader = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        // The metadata group led by the same node, so that one stop hands
        // over both.
        cluster
            .patient_client(leader)
            .await?
            .transfer_leader("__cluster", 0, leader)
            .await?;
        cluster.produce_through(leader, TOPIC, "before", 5).await?;
        let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        let load = cluster.spawn_producer(TOPIC, 0, &others, "load");
        cluster.wait_for_progress(TOPIC, 5).await?;
        cluster.terminate(leader);
        for id in &others {
            let status = cluster.status(*id).await?;
            for topic in [TOPIC, "__cluster"] {
                let named = status
                    .groups
                    .iter()
                    .find(|g| g.topic == topic)
                    .with_context(|| format!("node {id} reports no {topic}/0"))?
                    .leader_id;
                ensure!(
                    named.is_some_and(|l| others.contains(&l)),
                    "right after node {leader} stopped, node {id} names {named:?} as the leader of {topic}/0"
                );
            }
        }
        cluster.wait_for_progress(TOPIC, 5).await?;
        cluster.restart(leader);
        cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        let (sent, failed) = load.stop().await?;
        eprintln!("{sent} produces, {failed} failed");
        cluster.check(&cluster.ids()).await
    })
}

/// The faults of the campaign, one per round in turn.
const FAULTS: [&str; 5] = [
    "kill -9 and restart the leader",
    "pause and resume the leader",
    "transfer the leadership",
    "restart every node",
    "restart every node in turn",
];

/// Faults hit the leader of the partition in the first cycle of
/// [`FAULTS`], the leader of the job layer's group (`__jobs`) in the next,
/// and so on.
fn target_of(round: u64) -> &'static str {
    if (round / FAULTS.len() as u64).is_multiple_of(2) {
        TOPIC
    } else {
        JOBS_TOPIC
    }
}

const JOBS_TOPIC: &str = "__jobs";

#[test]
fn every_fault_once() -> Result<()> {
    // And once more: a kill of the job layer's leader.
    run_faults(FAULTS.len() as u64 + 1)
}

#[test]
#[ignore = "a long fault campaign: scripts/cluster-chaos.sh ROUNDS runs it"]
fn chaos_rounds() -> Result<()> {
    run_faults(campaign_rounds()?)
}

/// `rounds` rounds under a producer at QUORUM through the nodes that do
/// not lead and a job load (enqueues, claims and completions; see
/// `common/job_load.rs`), each with the next of [`FAULTS`] on the leader
/// of the partition or of `__jobs` ([`target_of`]), each checked: every
/// acknowledged record at its offset in every node's committed log, the
/// logs the same; every acknowledged job there, every acknowledged
/// completion kept, no completed job handed out again.
///
/// The nodes keep little of `__jobs` (32 KiB segments, 64 KiB of
/// history) and check retention twice a second, so its replicas are
/// compacted all through the faults, and a node that comes back behind
/// the others' purge restarts from the leader's snapshot and job table.
fn run_faults(rounds: u64) -> Result<()> {
    let mut cluster = TestCluster::start_with(
        3,
        Extra::settings(&[
            "retention_check_interval_ms=500ms",
            "record_bytes_max=32KiB",
            "batch_bytes_max=32KiB",
            "internal_segment_bytes=32KiB",
            "job_history_retention_bytes=64KiB",
            "job_snapshot_events=500",
        ]),
    );
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        let mut jobs_acknowledged = 0;
        for round in 0..rounds {
            let started = Instant::now();
            let target = target_of(round);
            let leader = cluster.agreed_leader(&cluster.ids(), target, 0).await?;
            let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
            let fault = FAULTS[(round % FAULTS.len() as u64) as usize];
            let load = cluster.spawn_producer(TOPIC, 0, &others, &format!("r{round}"));
            let jobs = JobLoad::spawn(cluster.url(others[0]), cluster.url(others[1]), cluster.client_options());
            cluster.wait_for_progress(TOPIC, 5).await?;
            jobs.wait_for_progress(3).await?;
            match round % FAULTS.len() as u64 {
                0 => {
                    cluster.kill9(leader);
                    cluster.agreed_leader(&others, target, 0).await?;
                    cluster.wait_for_progress(TOPIC, 5).await?;
                    jobs.wait_for_progress(3).await?;
                    cluster.restart(leader);
                }
                1 => {
                    cluster.pause(leader);
                    cluster.agreed_leader(&others, target, 0).await?;
                    cluster.wait_for_progress(TOPIC, 5).await?;
                    jobs.wait_for_progress(3).await?;
                    cluster.resume(leader);
                }
                2 => {
                    cluster
                        .patient_client(others[0])
                        .await?
                        .transfer_leader(target, 0, others[1])
                        .await?;
                }
                3 => {
                    for id in cluster.ids() {
                        cluster.kill9(id);
                    }
                    for id in cluster.ids() {
                        cluster.restart(id);
                    }
                }
                _ => rolling_restart(&mut cluster).await?,
            }
            cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
            cluster.agreed_leader(&cluster.ids(), JOBS_TOPIC, 0).await?;
            cluster.wait_for_progress(TOPIC, 5).await?;
            jobs.wait_for_progress(3).await?;
            let (sent, failed) = load.stop().await?;
            let job_url = cluster.url(others[0]);
            let job_record = jobs.stop().await?;
            cluster
                .check(&cluster.ids())
                .await
                .with_context(|| format!("round {round} ({fault} on {target})"))?;
            JobLoad::check(&job_record, &job_url, &cluster.client_options())
                .await
                .with_context(|| format!("round {round} ({fault} on {target}): the job layer"))?;
            let job_record = job_record.lock().expect("job record lock");
            jobs_acknowledged += job_record.enqueued.len();
            eprintln!(
                "round {round}: {fault} on {target}: ok in {} ms ({sent} produces, {failed} failed, {} acknowledged in all; \
                 {} jobs enqueued, {} completed, {} job calls failed, {jobs_acknowledged} jobs acknowledged in all; \
                 __jobs starts at {:?})",
                started.elapsed().as_millis(),
                cluster.acked_count(TOPIC, 0),
                job_record.enqueued.len(),
                job_record.completed.len(),
                job_record.failed_calls,
                jobs_log_starts(&cluster),
            );
        }
        // The history retention ran through the faults on every node.
        if rounds > FAULTS.len() as u64 {
            let starts = jobs_log_starts(&cluster);
            ensure!(
                starts.iter().all(|start| start.is_some_and(|start| start > 0)),
                "__jobs was not compacted on every node: it starts at {starts:?}"
            );
        }
        Ok(())
    })
}

/// Where each node's `__jobs` starts on disk, by node id.
fn jobs_log_starts(cluster: &TestCluster) -> Vec<Option<u64>> {
    cluster
        .ids()
        .into_iter()
        .map(|id| cluster.first_segment(id, JOBS_TOPIC))
        .collect()
}

/// Stops each node in turn with SIGTERM and starts it again, as an
/// upgrade does (a stopping node hands its leaderships over itself); the
/// next node stops only once the cluster agrees on a leader again and the
/// producer has made progress.
async fn rolling_restart(cluster: &mut TestCluster) -> Result<()> {
    for id in cluster.ids() {
        cluster.terminate(id);
        cluster.wait_for_progress(TOPIC, 5).await?;
        cluster.restart(id);
        cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        cluster.wait_for_progress(TOPIC, 5).await?;
    }
    Ok(())
}
