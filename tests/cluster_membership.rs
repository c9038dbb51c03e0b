//! Membership changes on real `spoold` processes on 127.0.0.1: a node
//! replaces another under a QUORUM produce load. Node 4 starts with
//! `--join` and is added (`spool cluster add-node`), every replica node 1
//! holds moves to it (`spool cluster move-replica`), node 1 is removed
//! (`spool cluster remove-node`) and killed. Throughout, every
//! acknowledged record stays at its offset on every replica; afterwards
//! the cluster of nodes 2, 3 and 4 produces, places new topics on its own
//! nodes, runs jobs, and node 4 restarted keeps its place. The refusals
//! an operator can meet are checked on the way: a move to a node that has
//! not joined, an id at the wrong address, removing a node that still
//! holds replicas. And a move during which the partition's leader is
//! killed: it finishes on the next leader (or, run again, goes on to its
//! end), and every acknowledged record is on the new replicas.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::cluster::{TestCluster, WAIT, campaign_rounds, retryable, runtime};
use spool_client::jobs::{Claim, Finish, JobState, NewJob};
use spool_client::{Client, Durability, Error, NewTopic};

#[test]
fn a_node_replaces_another_under_a_produce_load() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(cluster.create_topic("orders", 1))?;
    runtime.block_on(cluster.create_topic("audit", 1))?;
    runtime.block_on(cluster.produce_through(2, "orders", "before", 30))?;
    runtime.block_on(cluster.produce_through(3, "audit", "before", 10))?;
    let admin = runtime.block_on(cluster.patient_client(2))?;

    // Node 4 is not a node yet: nothing can move to it.
    let refused = runtime.block_on(admin.move_replica("orders", 0, 1, 4));
    ensure!(
        matches!(&refused, Err(Error::InvalidArgument { status }) if status.message().contains("node 4 is not a node")),
        "a move to a node that has not joined: {refused:?}"
    );

    let address = cluster.start_joining(4);
    let load = {
        let _inside = runtime.enter();
        cluster.spawn_producer("orders", 0, &[2, 3, 4], "load")
    };
    runtime.block_on(async {
        // The address of node 3 under id 4 would count node 3 twice.
        let wrong = admin.add_node(4, cluster.peer_address(3)).await;
        ensure!(
            matches!(&wrong, Err(Error::InvalidArgument { status }) if status.message().contains("is node 3, not node 4")),
            "node 3's address taken for node 4: {wrong:?}"
        );

        // Through the CLI, as an operator adds it.
        let output = cluster.nodes[&2]
            .spool(&["cluster", "add-node", "--node-id", "4", "--peer-address", &address])
            .output();
        let said = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "spool cluster add-node: {said}");
        ensure!(said.contains("node 4 joined the cluster; nodes: 1, 2, 3, 4"), "{said}");
        // Asked again, it is already done.
        ensure!(admin.add_node(4, &address).await? == [1, 2, 3, 4]);

        let status = cluster.status(4).await?;
        let nodes: Vec<u64> = status.nodes.iter().map(|n| n.node_id).collect();
        ensure!(nodes == [1, 2, 3, 4], "node 4's status lists nodes {nodes:?}");
        for group in ["__cluster", "__jobs"] {
            let replicas = voters_seen(&cluster, 2, group).await?;
            ensure!(replicas == [1, 2, 3, 4], "{group} is on {replicas:?}");
        }

        // Removing node 1 is refused while it holds replicas.
        let refused = admin.remove_node(1).await;
        ensure!(
            matches!(&refused, Err(Error::Other(status))
                if status.code() == tonic::Code::FailedPrecondition
                    && status.message().contains("audit/0")
                    && status.message().contains("orders/0")),
            "removing a node that holds replicas: {refused:?}"
        );

        // Every replica of node 1 moves to node 4, under the load. Node 1
        // leads orders/0: the leadership moves to a replica that stays
        // before the group's voters change.
        admin.transfer_leader("orders", 0, 1).await?;
        let output = cluster.nodes[&3]
            .spool(&["cluster", "move-replica", "--topic", "orders", "--from", "1", "--to", "4"])
            .output();
        let said = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "spool cluster move-replica: {said}");
        ensure!(said.contains("orders/0 is on nodes 4, 2, 3"), "{said}");
        let orders = voters_seen(&cluster, 4, "orders").await?;
        ensure!(orders == [4, 2, 3], "orders/0 is on {orders:?}");
        ensure!(admin.move_replica("audit", 0, 1, 4).await? == [4, 2, 3]);
        // Asked again once done, it answers at once.
        ensure!(admin.move_replica("audit", 0, 1, 4).await? == [4, 2, 3]);
        Ok::<_, anyhow::Error>(())
    })?;
    let (sent, failed) = runtime.block_on(load.stop())?;
    ensure!(
        sent > failed,
        "the load got {sent} answers, {failed} of them failures"
    );
    runtime.block_on(cluster.check(&[2, 3, 4]))?;

    runtime.block_on(async {
        // Node 1 leads both groups of every node as it is removed.
        admin.transfer_leader("__cluster", 0, 1).await?;
        admin.transfer_leader("__jobs", 0, 1).await?;
        let removed = admin.remove_node(1).await?;
        ensure!(removed == [2, 3, 4], "nodes after the removal: {removed:?}");
        for group in ["__cluster", "__jobs"] {
            let replicas = voters_seen(&cluster, 3, group).await?;
            ensure!(replicas == [2, 3, 4], "{group} is on {replicas:?}");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    cluster.kill9(1);

    // Nodes 2, 3 and 4 are the cluster now.
    runtime.block_on(async {
        cluster.produce_through(4, "orders", "after", 20).await?;
        let created = admin.create_topic(NewTopic::new("later", 3)).await?;
        ensure!(created.partitions == 3);
        let status = cluster.status(3).await?;
        let placed: Vec<u64> = status
            .groups
            .iter()
            .filter(|g| g.topic == "later")
            .flat_map(|g| g.replicas.iter().map(|r| r.node_id))
            .collect();
        ensure!(
            placed.len() == 9 && placed.iter().all(|id| [2, 3, 4].contains(id)),
            "a new topic is placed on {placed:?}"
        );
        let nodes: Vec<u64> = status.nodes.iter().map(|n| n.node_id).collect();
        ensure!(nodes == [2, 3, 4], "status lists nodes {nodes:?}");
        run_one_job(&cluster.patient_client(4).await?).await
    })?;

    // Node 4 restarted keeps its place: its membership is stored.
    cluster.kill9(4);
    cluster.restart(4);
    runtime.block_on(async {
        cluster.produce_through(2, "orders", "restarted", 10).await?;
        cluster.check(&[2, 3, 4]).await
    })
}

/// The nodes holding `topic`/0's replicas that node `id`'s status shows,
/// once its leader reports every one of them caught up with no lag.
async fn voters_seen(cluster: &TestCluster, id: u64, topic: &str) -> Result<Vec<u64>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = cluster.status(id).await?;
        let group = status
            .groups
            .iter()
            .find(|g| g.topic == topic && g.partition == 0)
            .with_context(|| format!("node {id}'s status has no {topic}/0"))?;
        let settled = group.leader_id.is_some() && group.replicas.iter().all(|r| r.lag_entries.is_some());
        if settled || std::time::Instant::now() > deadline {
            return Ok(group.replicas.iter().map(|r| r.node_id).collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One job enqueued, claimed and completed through `client`.
async fn run_one_job(client: &Client) -> Result<()> {
    let jobs = client.jobs();
    let job = jobs
        .enqueue(NewJob::new("membership", "after the change"))
        .await?;
    let claim = Claim {
        queues: vec!["membership".to_owned()],
        max_jobs: 1,
        lease: Duration::from_secs(60),
        max_wait: Duration::from_secs(5),
        worker_id: "membership-test".to_owned(),
    };
    let claimed = jobs.claim(&claim).await?;
    ensure!(
        claimed.len() == 1 && claimed[0].id == job.job_id,
        "claimed {claimed:?}"
    );
    let finished = jobs
        .finish(vec![Finish::Complete {
            job_id: job.job_id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            result: bytes::Bytes::from_static(b"done"),
        }])
        .await?;
    ensure!(
        matches!(finished.as_slice(), [Ok(Some(JobState::Succeeded))]),
        "{finished:?}"
    );
    Ok(())
}

#[test]
fn a_move_survives_a_killed_leader_and_runs_again_to_its_end() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(cluster.create_topic("orders", 1))?;
    let address = cluster.start_joining(4);
    runtime.block_on(async {
        cluster.patient_client(1).await?.add_node(4, &address).await?;
        // A log for the newcomer to copy while the leader dies.
        let client = cluster.client(2).await?;
        for i in 0..40 {
            let batch: Vec<spool_client::Record> = (0..250)
                .map(|j| spool_client::Record::new(format!("bulk-{i}-{j}")))
                .collect();
            // Sent again while the partition has no leader (an election
            // on the two busy cores while node 4 starts).
            let deadline = std::time::Instant::now() + WAIT;
            let answer = loop {
                match client
                    .produce_records("orders", Some(0), batch.clone(), Durability::Quorum)
                    .await
                {
                    Ok(answer) => break answer,
                    Err(error) if std::time::Instant::now() < deadline && retryable(&error) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            };
            let result = answer.results.first().context("a produce result")?;
            ensure!(result.last_offset - result.base_offset == 249);
            for j in 0..250 {
                cluster.record_ack("orders", 0, result.base_offset + j, &format!("bulk-{i}-{j}"));
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let leader = runtime.block_on(cluster.agreed_leader(&[1, 2, 3], "orders", 0))?;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (from, driver) = (others[0], others[1]);

    // The move runs through a node that neither leads nor leaves; the
    // leader dies while it runs.
    let admin = runtime.block_on(cluster.patient_client(driver))?;
    let started_move = std::time::Instant::now();
    let moving = runtime.spawn({
        let admin = admin.clone();
        async move { admin.move_replica("orders", 0, from, 4).await }
    });
    std::thread::sleep(Duration::from_millis(40));
    cluster.kill9(leader);
    let answer = runtime.block_on(moving)?;
    // The command either finished on the next leader or failed with an
    // outcome to check; run again, it goes on to its end.
    eprintln!(
        "the move under a leader's death took {:?} and answered {answer:?}",
        started_move.elapsed()
    );
    let replicas = runtime.block_on(admin.move_replica("orders", 0, from, 4))?;
    let mut expected: Vec<u64> = [1, 2, 3]
        .into_iter()
        .map(|id| if id == from { 4 } else { id })
        .collect();
    expected.sort_unstable();
    let mut sorted = replicas.clone();
    sorted.sort_unstable();
    ensure!(sorted == expected, "orders/0 ended on {replicas:?}");

    cluster.restart(leader);
    runtime.block_on(async {
        cluster.produce_through(4, "orders", "after", 10).await?;
        let nodes: Vec<u64> = expected.clone();
        cluster.check(&nodes).await?;
        let seen = voters_seen(&cluster, 4, "orders").await?;
        ensure!(
            seen == replicas,
            "status shows {seen:?}, the move answered {replicas:?}"
        );
        Ok::<_, anyhow::Error>(())
    })
}

/// What happens to a third node while a replica moves, one per round in
/// turn.
const MOVE_FAULTS: [&str; 4] = [
    "nothing",
    "kill -9 of the partition's leader",
    "pause of a replica that stays",
    "kill -9 of the node running the move",
];

#[test]
#[ignore = "a long campaign: scripts/cluster-chaos.sh --membership ROUNDS runs it"]
fn membership_rounds() -> Result<()> {
    run_moves(campaign_rounds()?)
}

#[test]
fn every_move_fault_once() -> Result<()> {
    run_moves(MOVE_FAULTS.len() as u64)
}

/// `rounds` replica moves on four nodes under a QUORUM produce load
/// through every node: the partition's three replicas and a spare, the
/// replica moving from the leader (even rounds) or a follower (odd ones)
/// to the spare, which the node moved from then becomes. Each move meets
/// the next of [`MOVE_FAULTS`]; a move that fails with it is run again
/// through another node until it is done. After each round every
/// acknowledged record is at its offset on each of the partition's
/// replicas, their logs the same, and the cluster's status places the
/// partition where the move said.
fn run_moves(rounds: u64) -> Result<()> {
    const TOPIC: &str = "moving";
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(cluster.create_topic(TOPIC, 1))?;
    let address = cluster.start_joining(4);
    runtime.block_on(async {
        cluster.patient_client(1).await?.add_node(4, &address).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    let mut holders: Vec<u64> = vec![1, 2, 3];
    let mut spare = 4;
    for round in 0..rounds {
        let started = std::time::Instant::now();
        let fault = MOVE_FAULTS[(round % MOVE_FAULTS.len() as u64) as usize];
        let load = {
            let _inside = runtime.enter();
            cluster.spawn_producer(TOPIC, 0, &cluster.ids(), &format!("m{round}"))
        };
        runtime.block_on(cluster.wait_for_progress(TOPIC, 5))?;
        let leader = runtime.block_on(cluster.agreed_leader(&cluster.ids(), TOPIC, 0))?;
        let followers: Vec<u64> = holders.iter().copied().filter(|id| *id != leader).collect();
        let from = if round % 2 == 0 { leader } else { followers[0] };
        // The node that runs the move: one that stays, other than the
        // node a fault pauses.
        let staying: Vec<u64> = holders.iter().copied().filter(|id| *id != from).collect();
        let driver = staying[0];
        let admin = runtime.block_on(cluster.patient_client(driver))?;
        let moving = runtime.spawn({
            let admin = admin.clone();
            async move { admin.move_replica(TOPIC, 0, from, spare).await }
        });
        std::thread::sleep(Duration::from_millis(30));
        let mut stopped = None;
        let mut paused = None;
        match round % MOVE_FAULTS.len() as u64 {
            0 => {}
            1 => {
                cluster.kill9(leader);
                stopped = Some(leader);
            }
            2 => {
                let victim = staying[staying.len() - 1];
                cluster.pause(victim);
                paused = Some(victim);
            }
            _ => {
                cluster.kill9(driver);
                stopped = Some(driver);
            }
        }
        let first = runtime.block_on(moving)?;
        if let Some(victim) = paused {
            std::thread::sleep(Duration::from_millis(300));
            cluster.resume(victim);
        }
        // Through a node that runs, until the move is done.
        let alive = cluster
            .ids()
            .into_iter()
            .find(|id| Some(*id) != stopped)
            .context("a live node")?;
        let retry = runtime.block_on(cluster.patient_client(alive))?;
        let deadline = std::time::Instant::now() + WAIT;
        let replicas = loop {
            let attempt = runtime.block_on(async {
                tokio::time::timeout(WAIT, retry.move_replica(TOPIC, 0, from, spare))
                    .await
                    .context("no answer in time")?
                    .map_err(anyhow::Error::from)
            });
            match attempt {
                Ok(replicas) => break replicas,
                Err(error) if std::time::Instant::now() < deadline => {
                    eprintln!("round {round}: the move again: {error}");
                    describe(&runtime, &cluster, alive, TOPIC);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => {
                    describe(&runtime, &cluster, alive, TOPIC);
                    return Err(error).context(format!("round {round} ({fault}): the move never ended"));
                }
            }
        };
        if let Some(victim) = stopped {
            cluster.restart(victim);
        }
        let mut expected: Vec<u64> = holders
            .iter()
            .map(|&id| if id == from { spare } else { id })
            .collect();
        expected.sort_unstable();
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        ensure!(
            sorted == expected,
            "round {round} ({fault}): the partition is on {replicas:?}, not {expected:?}"
        );
        let to = spare;
        holders = expected;
        spare = from;
        let (sent, failed) = runtime.block_on(async {
            cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
            cluster.wait_for_progress(TOPIC, 5).await?;
            let counts = load.stop().await?;
            cluster
                .check(&holders)
                .await
                .with_context(|| format!("round {round} ({fault}; {from} to {to})"))?;
            let seen = voters_seen(&cluster, holders[0], TOPIC).await?;
            ensure!(
                seen == replicas,
                "round {round}: status shows {seen:?}, the move answered {replicas:?}"
            );
            Ok::<_, anyhow::Error>(counts)
        })?;
        eprintln!(
            "round {round}: move {from} to {to} under {fault}: ok in {} ms (first answer {}; {sent} produces, {failed} failed, {} acknowledged in all)",
            started.elapsed().as_millis(),
            if first.is_ok() { "ok" } else { "an error" },
            cluster.acked_count(TOPIC, 0),
        );
    }
    Ok(())
}

/// What node `via` sees of the metadata group and `topic`/0, for a
/// failure's report.
fn describe(runtime: &tokio::runtime::Runtime, cluster: &TestCluster, via: u64, topic: &str) {
    match runtime.block_on(cluster.status(via)) {
        Ok(status) => {
            for group in status
                .groups
                .iter()
                .filter(|g| g.topic == topic || g.topic == "__cluster")
            {
                let replicas: Vec<String> = group
                    .replicas
                    .iter()
                    .map(|r| {
                        format!(
                            "{}={}(applied {:?}, lag {:?})",
                            r.node_id, r.role, r.applied_index, r.lag_entries
                        )
                    })
                    .collect();
                eprintln!(
                    "  {}/{}: leader {:?}, term {}, committed {:?}: {}",
                    group.topic,
                    group.partition,
                    group.leader_id,
                    group.term,
                    group.committed_index,
                    replicas.join(" ")
                );
            }
        }
        Err(error) => eprintln!("  no status from node {via}: {error}"),
    }
}
