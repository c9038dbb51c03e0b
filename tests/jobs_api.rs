//! End-to-end tests of `spool.v1.Jobs` against real `spoold` processes.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::Spoold;
use spool_proto::v1::{self, jobs_client::JobsClient};
use tonic::Code;
use tonic::transport::Channel;

async fn connect(server: &Spoold) -> JobsClient<Channel> {
    JobsClient::connect(server.url()).await.expect("connect")
}

fn job(queue: &str, payload: &str) -> v1::EnqueueRequest {
    v1::EnqueueRequest {
        queue: queue.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

fn claim(queue: &str, max_jobs: u32, lease_ms: u64, max_wait_ms: u32) -> v1::ClaimRequest {
    v1::ClaimRequest {
        queues: vec![queue.into()],
        max_jobs,
        lease_ms,
        max_wait_ms,
        worker_id: "test".into(),
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("expected an error").code()
}

#[tokio::test]
async fn a_job_runs_fails_retries_and_completes_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = client
        .enqueue(v1::EnqueueRequest {
            attempts_max: Some(3),
            ..job("emails", "hello")
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let claimed = client
        .claim(claim("emails", 10, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(claimed[0].payload, Bytes::from_static(b"hello"));
    let failed = client
        .fail(v1::FailRequest {
            job_id: id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            error: "smtp timeout".into(),
            retryable: None,
            retry_delay_ms: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state, v1::JobState::Scheduled as i32);
    let again = client
        .claim(claim("emails", 10, 30_000, 5_000))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(again[0].attempt, 2);
    // The first attempt's token is stale now.
    let stale = client
        .complete(v1::CompleteRequest {
            job_id: id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            result: Bytes::new(),
        })
        .await;
    assert_eq!(code_of(stale), Code::FailedPrecondition);
    client
        .complete(v1::CompleteRequest {
            job_id: id.clone(),
            lease_token: again[0].lease_token.clone(),
            result: Bytes::from_static(b"sent"),
        })
        .await
        .unwrap();
    let stored = client
        .get_job(v1::GetJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(stored.state, v1::JobState::Succeeded as i32);
    assert_eq!(stored.errors[0].error, "smtp timeout");
    assert_eq!(stored.result.as_deref(), Some(&b"sent"[..]));
    let history = client
        .history(v1::HistoryRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<_> = history.iter().map(|e| e.kind).collect();
    use v1::JobEventKind as K;
    assert_eq!(
        kinds,
        [
            K::Enqueued,
            K::Claimed,
            K::RetryScheduled,
            K::Claimed,
            K::Completed
        ]
        .map(|k| k as i32)
    );
}

#[tokio::test]
async fn bad_job_requests_get_their_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let cases = [
        job("../x", "p"),
        v1::EnqueueRequest {
            attempts_max: Some(0),
            ..job("q", "p")
        },
        v1::EnqueueRequest {
            timeout_ms: Some(0),
            ..job("q", "p")
        },
        v1::EnqueueRequest {
            schedule: Some(v1::enqueue_request::Schedule::DelayMs(u64::MAX)),
            ..job("q", "p")
        },
        job("q", &"x".repeat(600 * 1024)),
    ];
    for request in cases {
        assert_eq!(code_of(client.enqueue(request).await), Code::InvalidArgument);
    }
    let unknown = client
        .get_job(v1::GetJobRequest {
            job_id: "12345".into(),
        })
        .await;
    assert_eq!(code_of(unknown), Code::NotFound);
    let malformed = client.get_job(v1::GetJobRequest { job_id: "abc".into() }).await;
    assert_eq!(code_of(malformed), Code::InvalidArgument);
    let id = client.enqueue(job("q", "p")).await.unwrap().into_inner().job_id;
    let forged = client
        .complete(v1::CompleteRequest {
            job_id: id.clone(),
            lease_token: "0123456789abcdef".into(),
            result: Bytes::new(),
        })
        .await;
    assert_eq!(code_of(forged), Code::FailedPrecondition);
    let claimed = client
        .claim(claim("q", 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    client
        .complete(v1::CompleteRequest {
            job_id: id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            result: Bytes::new(),
        })
        .await
        .unwrap();
    let late_heartbeat = client
        .heartbeat(v1::HeartbeatRequest {
            job_id: id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            extend_ms: 1_000,
            progress: None,
        })
        .await;
    assert_eq!(
        code_of(late_heartbeat),
        Code::FailedPrecondition,
        "a heartbeat for a finished job"
    );
    let cancel_finished = client.cancel(v1::CancelRequest { job_id: id }).await;
    assert_eq!(code_of(cancel_finished), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_lost_worker_s_job_is_redelivered_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = client.enqueue(job("q", "p")).await.unwrap().into_inner().job_id;
    let first = client
        .claim(claim("q", 1, 500, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(first.len(), 1);
    // The worker vanishes; a long-polling claim gets the job once the lease
    // runs out, as attempt 2.
    let started = std::time::Instant::now();
    let second = client
        .claim(claim("q", 1, 30_000, 10_000))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(second[0].job_id, id);
    assert_eq!(second[0].attempt, 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn idempotent_enqueues_race_to_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let client = connect(&server).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .enqueue(v1::EnqueueRequest {
                    idempotency_key: Some("order-42".into()),
                    ..job("q", "charge")
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let response = task.await.unwrap();
        ids.insert(response.job_id);
        fresh += usize::from(!response.deduplicated);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(fresh, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_keeps_every_acknowledged_enqueue_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &[]);
    let client = connect(&server).await;
    let (enqueued_tx, mut enqueued_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (completed_tx, mut completed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut tasks = Vec::new();
    for p in 0..2 {
        let mut client = client.clone();
        let enqueued_tx = enqueued_tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let batch = v1::EnqueueBatchRequest {
                    jobs: (0..20).map(|j| job("load", &format!("p{p}-{i}-{j}"))).collect(),
                };
                match client.enqueue_batch(batch).await {
                    Ok(response) => {
                        for result in response.into_inner().results {
                            let _ = enqueued_tx.send(result.job_id);
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    for _ in 0..2 {
        let mut client = client.clone();
        let completed_tx = completed_tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(response) = client.claim(claim("load", 50, 60_000, 100)).await else {
                    return;
                };
                for job in response.into_inner().jobs {
                    let done = client
                        .complete(v1::CompleteRequest {
                            job_id: job.job_id.clone(),
                            lease_token: job.lease_token,
                            result: Bytes::new(),
                        })
                        .await;
                    match done {
                        Ok(_) => {
                            let _ = completed_tx.send(job.job_id);
                        }
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill9();
    for task in tasks {
        let _ = task.await;
    }
    drop((enqueued_tx, completed_tx));
    let mut enqueued = Vec::new();
    while let Some(id) = enqueued_rx.recv().await {
        enqueued.push(id);
    }
    let mut completed = HashSet::new();
    while let Some(id) = completed_rx.recv().await {
        completed.insert(id);
    }
    assert!(enqueued.len() > 100, "too little load: {}", enqueued.len());
    assert!(!completed.is_empty());

    server.restart();
    let mut client = connect(&server).await;
    let mut states = std::collections::HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(v1::ListJobsRequest {
                queue: "load".into(),
                page_token: page_token.clone(),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for job in page.jobs {
            states.insert(job.job_id, job.state);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for id in &enqueued {
        let state = states
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged job {id} lost"));
        if completed.contains(id) {
            assert_eq!(
                *state,
                v1::JobState::Succeeded as i32,
                "acknowledged completion of {id} lost"
            );
        }
    }
    // Nothing completed runs again: drain the queue and check.
    loop {
        let jobs = client
            .claim(claim("load", 500, 60_000, 0))
            .await
            .unwrap()
            .into_inner()
            .jobs;
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            assert!(
                !completed.contains(&job.job_id),
                "completed job {} was delivered again",
                job.job_id
            );
        }
    }
}
