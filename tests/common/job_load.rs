//! A steady job load on a cluster for the fault tests: one task enqueues
//! jobs one at a time, another claims and completes them, both through the
//! Rust client (which follows the job layer's leader from any node). It
//! records every acknowledged enqueue and completion, and every job a
//! claim hands out; afterwards [`JobLoad::check`] holds the job layer to
//! its promises: no acknowledged job is lost, no acknowledged completion is
//! undone, and no job whose completion was acknowledged is handed out
//! again.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spool_client::jobs::{Claim, Finish, JobState, NewJob};
use spool_client::{Client, ClientOptions};

use super::cluster::WAIT;

/// What the load saw acknowledged.
#[derive(Debug, Default)]
pub struct JobRecord {
    /// Jobs whose enqueue was acknowledged.
    pub enqueued: BTreeSet<String>,
    /// Jobs whose completion was acknowledged.
    pub completed: BTreeSet<String>,
    /// Jobs handed out by a claim after their completion was
    /// acknowledged: each one a broken promise.
    pub handed_out_again: Vec<String>,
    pub failed_calls: u64,
}

/// A running job load ([`JobLoad::spawn`]).
pub struct JobLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub record: Arc<Mutex<JobRecord>>,
    url: String,
    options: ClientOptions,
}

const QUEUE: &str = "chaos";

impl JobLoad {
    /// Starts enqueueing through `url` and claiming and completing through
    /// `claim_url`, with clients made with `options`.
    pub fn spawn(url: String, claim_url: String, options: ClientOptions) -> JobLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(JobRecord::default()));
        let tasks = vec![
            tokio::spawn(enqueue(
                url.clone(),
                options.clone(),
                Arc::clone(&stop),
                Arc::clone(&record),
            )),
            tokio::spawn(work(
                claim_url,
                options.clone(),
                Arc::clone(&stop),
                Arc::clone(&record),
            )),
        ];
        JobLoad {
            stop,
            tasks,
            record,
            url,
            options,
        }
    }

    /// How many enqueues and completions were acknowledged so far.
    pub fn progress(&self) -> (usize, usize) {
        let record = self.record.lock().expect("job record lock");
        (record.enqueued.len(), record.completed.len())
    }

    /// Waits until `count` more enqueues and completions are acknowledged.
    pub async fn wait_for_progress(&self, count: usize) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        let (enqueued, completed) = self.progress();
        loop {
            let (now_enqueued, now_completed) = self.progress();
            if now_enqueued >= enqueued + count && now_completed >= completed + count {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no job progress: {now_enqueued} enqueued, {now_completed} completed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops both tasks.
    pub async fn stop(self) -> Result<Arc<Mutex<JobRecord>>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(WAIT, task).await??;
        }
        Ok(self.record)
    }

    /// Checks the promises against the job table of the leader (through
    /// `url`, once the load is stopped): every acknowledged job exists,
    /// every acknowledged completion is SUCCEEDED, and no claim handed out
    /// a job after its completion was acknowledged.
    pub async fn check(record: &Mutex<JobRecord>, url: &str, options: &ClientOptions) -> Result<()> {
        let (enqueued, completed, again) = {
            let record = record.lock().expect("job record lock");
            (
                record.enqueued.clone(),
                record.completed.clone(),
                record.handed_out_again.clone(),
            )
        };
        ensure!(again.is_empty(), "completed jobs handed out again: {again:?}");
        let client = Client::connect_with(url.to_owned(), options.clone()).await?;
        let jobs = client.jobs();
        for id in &enqueued {
            let deadline = Instant::now() + WAIT;
            let job = loop {
                match jobs.get(id).await {
                    Ok(job) => break job,
                    Err(error)
                        if Instant::now() < deadline && error.code() != Some(tonic::Code::NotFound) =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => anyhow::bail!("acknowledged job {id}: {error}"),
                }
            };
            if completed.contains(id) {
                ensure!(
                    job.state == JobState::Succeeded,
                    "job {id}'s completion was acknowledged, but it is {:?}",
                    job.state
                );
            }
        }
        Ok(())
    }

    /// [`check`](Self::check) for this load's own record, through its
    /// enqueue URL.
    pub async fn check_now(&self) -> Result<()> {
        JobLoad::check(&self.record, &self.url, &self.options).await
    }
}

async fn connect(url: &str, options: &ClientOptions) -> Option<Client> {
    Client::connect_with(url.to_owned(), options.clone()).await.ok()
}

async fn enqueue(url: String, options: ClientOptions, stop: Arc<AtomicBool>, record: Arc<Mutex<JobRecord>>) {
    let mut client = None;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&url, &options).await;
        }
        let Some(connected) = &client else {
            pause().await;
            continue;
        };
        sent += 1;
        match connected
            .jobs()
            .enqueue(NewJob::new(QUEUE, format!("job-{sent}")))
            .await
        {
            Ok(job) => {
                record
                    .lock()
                    .expect("job record lock")
                    .enqueued
                    .insert(job.job_id);
            }
            Err(_) => {
                record.lock().expect("job record lock").failed_calls += 1;
                client = None;
                pause().await;
            }
        }
    }
}

async fn work(url: String, options: ClientOptions, stop: Arc<AtomicBool>, record: Arc<Mutex<JobRecord>>) {
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&url, &options).await;
        }
        let Some(connected) = &client else {
            pause().await;
            continue;
        };
        let claim = Claim {
            queues: vec![QUEUE.to_owned()],
            max_jobs: 10,
            lease: Duration::from_secs(5),
            max_wait: Duration::from_millis(200),
            worker_id: "chaos".to_owned(),
        };
        let jobs = connected.jobs();
        let claimed = match jobs.claim(&claim).await {
            Ok(claimed) => claimed,
            Err(_) => {
                record.lock().expect("job record lock").failed_calls += 1;
                client = None;
                pause().await;
                continue;
            }
        };
        {
            let mut record = record.lock().expect("job record lock");
            for job in &claimed {
                if record.completed.contains(&job.id) {
                    record.handed_out_again.push(job.id.clone());
                }
            }
        }
        if claimed.is_empty() {
            continue;
        }
        let outcomes = claimed
            .iter()
            .map(|job| Finish::Complete {
                job_id: job.id.clone(),
                lease_token: job.lease_token.clone(),
                result: bytes::Bytes::from_static(b"done"),
            })
            .collect();
        match jobs.finish(outcomes).await {
            Ok(results) => {
                let mut record = record.lock().expect("job record lock");
                for (job, result) in claimed.iter().zip(results) {
                    if matches!(result, Ok(Some(JobState::Succeeded))) {
                        record.completed.insert(job.id.clone());
                    }
                }
            }
            Err(_) => {
                record.lock().expect("job record lock").failed_calls += 1;
                client = None;
                pause().await;
            }
        }
    }
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}
