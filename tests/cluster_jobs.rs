//! The job layer in cluster mode, with three real `spoold` processes on
//! 127.0.0.1: `__jobs` is one Raft group over every node, only its leader
//! takes job requests, and the Rust client follows the leader's address
//! from any node. Jobs are enqueued and some completed, the leader of
//! `__jobs` is killed with `kill -9`: every acknowledged job is still
//! there on the new leader, no completed job is handed out again, the
//! others are, and a restarted node's table (rebuilt from its replica of
//! the committed log) says the same once it leads.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::cluster::{Extra, TestCluster, WAIT, runtime};
use common::dashboard;
use spool_client::jobs::{Claim, Finish, JobState, NewJob};
use spool_client::worker::{Job, Outcome, Worker, WorkerConfig};
use spool_client::{Client, Error};

const JOBS_TOPIC: &str = "__jobs";
const QUEUE: &str = "emails";

#[test]
fn acknowledged_jobs_survive_a_killed_job_layer_leader_and_completed_ones_never_run_again() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(async {
        let leader = cluster.agreed_leader(&cluster.ids(), JOBS_TOPIC, 0).await?;
        let follower = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a follower");

        // Through a follower: the client is sent on to the leader.
        let client = cluster.patient_client(follower).await?;
        let jobs = client.jobs();
        let mut enqueued = Vec::new();
        for i in 0..20 {
            let job = jobs
                .enqueue(NewJob::new(QUEUE, format!("job-{i}")))
                .await
                .with_context(|| format!("enqueueing job {i} through node {follower}"))?;
            enqueued.push(job.job_id);
        }
        let claimed = claim_all(&client, 10).await?;
        ensure!(claimed.len() == 10, "claimed {} of 10", claimed.len());
        for result in jobs.finish(completions(&claimed)).await? {
            ensure!(result? == Some(JobState::Succeeded));
        }
        let completed: BTreeSet<String> = claimed.keys().cloned().collect();

        cluster.kill9(leader);
        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        let new_leader = cluster.agreed_leader(&alive, JOBS_TOPIC, 0).await?;
        ensure!(new_leader != leader);

        // Every acknowledged job is there, in the state it was left in.
        let survivor = cluster.patient_client(alive[0]).await?;
        expect_states(&survivor, &enqueued, &completed, JobState::Available).await?;

        // The jobs not completed are handed out again, and only those.
        let reclaimed = claim_all(&survivor, enqueued.len() as u32).await?;
        let reclaimed_ids: BTreeSet<String> = reclaimed.keys().cloned().collect();
        let expected: BTreeSet<String> = enqueued
            .iter()
            .filter(|id| !completed.contains(*id))
            .cloned()
            .collect();
        ensure!(
            reclaimed_ids == expected,
            "after the failover the claims handed out {reclaimed_ids:?}, expected {expected:?}"
        );
        for result in survivor.jobs().finish(completions(&reclaimed)).await? {
            ensure!(result? == Some(JobState::Succeeded));
        }

        // The killed node restarts, follows, and once it leads its table
        // (rebuilt from its log and the new leader's entries) has every job
        // completed.
        cluster.restart(leader);
        let all: BTreeSet<String> = enqueued.iter().cloned().collect();
        let admin = cluster.patient_client(new_leader).await?;
        let deadline = Instant::now() + WAIT;
        loop {
            match admin.transfer_leader(JOBS_TOPIC, 0, leader).await {
                Ok(_) => break,
                Err(error) if Instant::now() < deadline => {
                    tracing_note(&error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error).context("moving the job layer back to the restarted node"),
            }
        }
        let back = cluster.agreed_leader(&cluster.ids(), JOBS_TOPIC, 0).await?;
        ensure!(
            back == leader,
            "node {leader} should lead __jobs, node {back} does"
        );
        let restarted = cluster.patient_client(leader).await?;
        expect_states(&restarted, &enqueued, &all, JobState::Succeeded).await?;
        ensure!(
            claim_all(&restarted, 20).await?.is_empty(),
            "a completed job was handed out again"
        );
        Ok(())
    })
}

#[test]
fn a_worker_runs_every_job_through_a_failover_of_the_job_layer() -> Result<()> {
    const JOBS: usize = 300;
    const CONCURRENCY: usize = 4;
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(async {
        let leader = cluster.agreed_leader(&cluster.ids(), JOBS_TOPIC, 0).await?;
        let follower = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a follower");
        let client = cluster.patient_client(follower).await?;
        let jobs = (0..JOBS)
            .map(|i| NewJob::new(QUEUE, format!("job-{i}")))
            .collect();
        let enqueued: Vec<String> = client
            .jobs()
            .enqueue_batch(jobs)
            .await?
            .into_iter()
            .map(|job| job.job_id)
            .collect();

        // A worker on the follower's address, counting each job's runs.
        let runs = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
        let handler = {
            let runs = std::sync::Arc::clone(&runs);
            move |job: Job| {
                let runs = std::sync::Arc::clone(&runs);
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    *runs
                        .lock()
                        .expect("runs lock")
                        .entry(job.id().to_owned())
                        .or_default() += 1;
                    Outcome::complete("done")
                }
            }
        };
        let config = WorkerConfig {
            concurrency: CONCURRENCY,
            claim_wait: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            ack_linger: Duration::from_millis(1),
            worker_id: "failover-worker".to_owned(),
            ..WorkerConfig::default()
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker::new(&client, config).handle(QUEUE, handler);
        let running = tokio::spawn(async move {
            let mut stopped = stopped;
            worker
                .run_until(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });

        // A third of the jobs run, then the job layer's leader dies.
        let deadline = Instant::now() + WAIT;
        while runs.lock().expect("runs lock").len() < JOBS / 3 {
            ensure!(
                Instant::now() < deadline,
                "the worker ran too few jobs before the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.kill9(leader);
        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        cluster.agreed_leader(&alive, JOBS_TOPIC, 0).await?;

        // Every job succeeds, through the new leader.
        let survivor = cluster.patient_client(alive[0]).await?;
        let survivor_jobs = survivor.jobs();
        let deadline = Instant::now() + 2 * WAIT;
        loop {
            let stats = retry(|| survivor_jobs.stats(QUEUE)).await?;
            if stats.succeeded_count == JOBS as u64 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "only {} of {JOBS} jobs succeeded after the failover: {stats:?}",
                stats.succeeded_count
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.send_replace(true);
        let report = running.await?.context("the worker failed")?;
        expect_states(
            &survivor,
            &enqueued,
            &enqueued.iter().cloned().collect(),
            JobState::Succeeded,
        )
        .await?;

        // At least once: every job's completion was acknowledged once, and
        // a job ran again only after the server refused its first
        // completion (its lease, answered before it was committed, died
        // with the leader: `lost`). How many that is depends on how far
        // the commits trailed the claims when the leader died.
        let runs = runs.lock().expect("runs lock").clone();
        ensure!(runs.len() == JOBS, "{} of {JOBS} jobs ran", runs.len());
        ensure!(report.completed == JOBS as u64, "{report:?}");
        let again: Vec<_> = runs.iter().filter(|(_, count)| **count > 1).collect();
        eprintln!(
            "{} of {JOBS} jobs ran more than once; worker report: {report:?}",
            again.len()
        );
        ensure!(
            again.len() as u64 <= report.lost,
            "{} jobs ran more than once, {} leases lost (worker report {report:?}): {again:?}",
            again.len(),
            report.lost
        );
        Ok(())
    })
}

#[test]
fn a_follower_s_dashboard_shows_the_jobs_from_its_standby_table() -> Result<()> {
    let extra = Extra {
        settings: Some(Box::new(|_| vec!["admin_listen=127.0.0.1:0".to_owned()])),
        ..Extra::default()
    };
    let cluster = TestCluster::start_with(3, extra);
    let runtime = runtime()?;
    runtime.block_on(async {
        let leader = cluster.agreed_leader(&cluster.ids(), JOBS_TOPIC, 0).await?;
        let follower = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a follower");
        let client = cluster.patient_client(leader).await?;
        let jobs = (0..5).map(|i| NewJob::new(QUEUE, format!("job-{i}"))).collect();
        client.jobs().enqueue_batch(jobs).await?;

        // The follower's page counts them once it has applied the commit
        // (within tens of milliseconds).
        let admin = cluster.nodes[&follower].admin_addr.expect("the dashboard is on");
        let deadline = Instant::now() + WAIT;
        loop {
            let queues = tokio::task::spawn_blocking(move || dashboard::get(admin, "/api/v1/queues")).await?;
            let available = queues["queues"]
                .as_array()
                .and_then(|queues| queues.iter().find(|q| q["queue"] == QUEUE))
                .map(|queue| queue["counts"]["available"].clone());
            if available == Some(serde_json::json!(5)) {
                break;
            }
            ensure!(Instant::now() < deadline, "node {follower}'s dashboard: {queues}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
}

/// A completion of each claimed job (job id to lease token).
fn completions(claimed: &BTreeMap<String, String>) -> Vec<Finish> {
    claimed
        .iter()
        .map(|(id, token)| Finish::Complete {
            job_id: id.clone(),
            lease_token: token.clone(),
            result: bytes::Bytes::from_static(b"sent"),
        })
        .collect()
}

/// Claims up to `max` jobs of the queue, asking until a claim comes back
/// empty; job id to lease token.
async fn claim_all(client: &Client, max: u32) -> Result<BTreeMap<String, String>> {
    let mut claimed = BTreeMap::new();
    let jobs_client = client.jobs();
    while (claimed.len() as u32) < max {
        let claim = Claim {
            queues: vec![QUEUE.to_owned()],
            max_jobs: max - claimed.len() as u32,
            lease: Duration::from_secs(60),
            max_wait: Duration::ZERO,
            worker_id: "cluster-jobs-test".to_owned(),
        };
        let jobs = retry(|| jobs_client.claim(&claim)).await?;
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            ensure!(
                claimed.insert(job.id.clone(), job.lease_token).is_none(),
                "job {} was handed out twice",
                job.id
            );
        }
    }
    Ok(claimed)
}

/// Checks every job of `ids`: those in `done` succeeded, the others are in
/// `others`.
async fn expect_states(
    client: &Client,
    ids: &[String],
    done: &BTreeSet<String>,
    others: JobState,
) -> Result<()> {
    let jobs = client.jobs();
    for id in ids {
        let job = retry(|| jobs.get(id))
            .await
            .with_context(|| format!("job {id}"))?;
        let expected = if done.contains(id) {
            JobState::Succeeded
        } else {
            others
        };
        ensure!(
            job.state == expected,
            "job {id} is {:?}, expected {expected:?}",
            job.state
        );
    }
    Ok(())
}

/// Runs `call` until it answers, while the job layer has no leader yet
/// (UNAVAILABLE) or the answer's node is just taking over, for at most
/// [`WAIT`].
async fn retry<T, F, Fut>(call: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(error) if Instant::now() < deadline && retryable(&error) => {
                tracing_note(&error);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn retryable(error: &Error) -> bool {
    matches!(
        error.code(),
        Some(tonic::Code::Unavailable | tonic::Code::FailedPrecondition | tonic::Code::DeadlineExceeded)
    ) && error.leader_hint().is_some()
        || matches!(error.code(), Some(tonic::Code::Unavailable))
}

fn tracing_note(error: &Error) {
    eprintln!("retrying: {error}");
}
