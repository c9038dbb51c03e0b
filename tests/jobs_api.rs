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
    assert_eq!(
        failed.state,
        v1::JobState::Available as i32,
        "a retry without delay is available at once"
    );
    assert_eq!(failed.retry_delay_ms, Some(0));
    let again = client
        .claim(claim("emails", 10, 30_000, 0))
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

/// Enqueues a job to `queue` that goes dead on its first failure, and
/// fails it; returns its id.
async fn dead_job(client: &mut JobsClient<Channel>, queue: &str, error: &str) -> String {
    let id = client
        .enqueue(v1::EnqueueRequest {
            attempts_max: Some(1),
            ..job(queue, "p")
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let claimed = client
        .claim(claim(queue, 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(claimed[0].job_id, id);
    let failed = client
        .fail(v1::FailRequest {
            job_id: id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            error: error.into(),
            retryable: Some(false),
            retry_delay_ms: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state, v1::JobState::Dead as i32);
    id
}

async fn state_of(client: &mut JobsClient<Channel>, id: &str) -> v1::JobState {
    let job = client
        .get_job(v1::GetJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    job.state()
}

fn dead_filter(queue: &str) -> v1::DeadJobFilter {
    v1::DeadJobFilter {
        queue: queue.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn bulk_dead_job_calls_must_name_their_queue() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let a = dead_job(&mut client, "billing", "card declined").await;
    let b = dead_job(&mut client, "emails", "card declined").await;
    use v1::{purge_dead_request as purge, retry_dead_request as retry};
    let retry_all = client
        .retry_dead(v1::RetryDeadRequest {
            target: Some(retry::Target::Filter(dead_filter(""))),
            dry_run: false,
        })
        .await;
    let status = retry_all.expect_err("a filter without a queue");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("queue"), "{status:?}");
    let purge_all = client
        .purge_dead(v1::PurgeDeadRequest {
            target: Some(purge::Target::Filter(v1::DeadJobFilter {
                error_contains: "declined".into(),
                ..dead_filter("")
            })),
            dry_run: false,
        })
        .await;
    assert_eq!(code_of(purge_all), Code::InvalidArgument);
    for id in [&a, &b] {
        assert_eq!(
            state_of(&mut client, id).await,
            v1::JobState::Dead,
            "nothing was touched"
        );
    }
    let unknown = client
        .purge_dead(v1::PurgeDeadRequest {
            target: Some(purge::Target::Filter(dead_filter("never-used"))),
            dry_run: false,
        })
        .await;
    assert_eq!(code_of(unknown), Code::NotFound);
    let neither = client
        .retry_dead(v1::RetryDeadRequest {
            target: None,
            dry_run: false,
        })
        .await;
    assert_eq!(code_of(neither), Code::InvalidArgument);
    // Named, the scope is one queue only.
    let retried = client
        .retry_dead(v1::RetryDeadRequest {
            target: Some(retry::Target::Filter(dead_filter("billing"))),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner()
        .retried_count;
    assert_eq!(retried, 1);
    assert_eq!(state_of(&mut client, &a).await, v1::JobState::Available);
    assert_eq!(state_of(&mut client, &b).await, v1::JobState::Dead);
}

#[tokio::test]
async fn out_of_range_claim_and_heartbeat_limits_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    client.enqueue(job("q", "p")).await.unwrap();
    for (request, limit) in [
        (claim("q", 1, u64::MAX, 0), "lease_ms"),
        (claim("q", 1_000_000, 30_000, 0), "max_jobs"),
    ] {
        let status = client.claim(request).await.expect_err(limit);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(limit), "{status:?}");
    }
    let claimed = client
        .claim(claim("q", 1_000, 43_200_000, 0))
        .await
        .expect("the limits themselves are accepted")
        .into_inner()
        .jobs;
    assert_eq!(claimed[0].lease_ms, 43_200_000);
    let status = client
        .heartbeat(v1::HeartbeatRequest {
            job_id: claimed[0].job_id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            extend_ms: u64::MAX,
            progress: None,
        })
        .await
        .expect_err("an extension past lease_ms_max");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("lease_ms_max"), "{status:?}");
}

// Multi-threaded so that the client's connection task answers the server's
// GOAWAY while this thread blocks in `terminate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queues_are_not_found_and_a_used_queue_stays_known() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &["job_finished_retention_ms=1ms"]);
    let mut client = connect(&server).await;
    let stats = client
        .queue_stats(v1::QueueStatsRequest {
            queue: "never-used".into(),
        })
        .await;
    assert_eq!(code_of(stats), Code::NotFound);
    let listed = client
        .list_jobs(v1::ListJobsRequest {
            queue: "never-used".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code_of(listed), Code::NotFound);
    let everything = client.list_jobs(v1::ListJobsRequest::default()).await;
    assert_eq!(
        code_of(everything),
        Code::InvalidArgument,
        "a listing names its queue"
    );
    // A claim on a queue nobody used yet waits like on an empty one.
    let claimed = client.claim(claim("later", 1, 30_000, 0)).await.unwrap();
    assert!(claimed.into_inner().jobs.is_empty());

    // A queue whose every job has left memory is still known, also after
    // a restart from a snapshot and after a crash.
    let id = client
        .enqueue(job("short", "p"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let claimed = client
        .claim(claim("short", 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    client
        .complete(v1::CompleteRequest {
            job_id: id,
            lease_token: claimed[0].lease_token.clone(),
            result: Bytes::new(),
        })
        .await
        .unwrap();
    let stats_of = |client: &mut JobsClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .queue_stats(v1::QueueStatsRequest {
                    queue: "short".into(),
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats_of(&mut client).await.unwrap().succeeded_count > 0 {
        assert!(std::time::Instant::now() < deadline, "the job never left memory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for crash in [false, true] {
        if crash {
            server.kill9();
        } else {
            assert!(server.terminate().success());
        }
        server.restart();
        client = connect(&server).await;
        let stats = stats_of(&mut client).await.expect("a used queue stays known");
        assert_eq!(stats.succeeded_count, 0);
        let listed = client
            .list_jobs(v1::ListJobsRequest {
                queue: "short".into(),
                ..Default::default()
            })
            .await
            .expect("a used queue stays known");
        assert!(listed.into_inner().jobs.is_empty());
    }
}

#[tokio::test]
async fn queue_names_follow_the_topic_name_rule() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    for name in ["__jobs", "__mine", "", "a/b", &"x".repeat(250)] {
        let status = client.enqueue(job(name, "p")).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
        assert!(status.message().contains("queue"), "{name:?}: {status:?}");
    }
    let status = client.enqueue(job("__mine", "p")).await.unwrap_err();
    assert!(
        status.message().contains("\"__\""),
        "the rule is named: {status:?}"
    );
    let batch = client
        .enqueue_batch(v1::EnqueueBatchRequest {
            jobs: vec![job("ok", "p"), job("__mine", "p")],
        })
        .await;
    assert_eq!(code_of(batch), Code::InvalidArgument);
    let claimed = client.claim(claim("__jobs", 1, 30_000, 0)).await;
    assert_eq!(code_of(claimed), Code::InvalidArgument);
    let stats = client
        .queue_stats(v1::QueueStatsRequest {
            queue: "__jobs".into(),
        })
        .await;
    assert_eq!(code_of(stats), Code::InvalidArgument);
    let listed = client
        .list_jobs(v1::ListJobsRequest {
            queue: "__jobs".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code_of(listed), Code::InvalidArgument);
    let retried = client
        .retry_dead(v1::RetryDeadRequest {
            target: Some(v1::retry_dead_request::Target::Filter(dead_filter("__jobs"))),
            dry_run: false,
        })
        .await;
    assert_eq!(code_of(retried), Code::InvalidArgument);
    // Nothing was enqueued by the refused batch.
    let ok = client.list_jobs(v1::ListJobsRequest {
        queue: "ok".into(),
        ..Default::default()
    });
    assert_eq!(code_of(ok.await), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_through_v1alpha_and_v1() {
    use tonic::codegen::tokio_stream::{self, StreamExt};
    use tonic_reflection::pb::{v1 as r1, v1alpha as r1alpha};
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let wanted = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "spool.v1.Admin",
        "spool.v1.Cluster",
        "spool.v1.Jobs",
        "spool.v1.Log",
        "spool.v1.Metrics",
    ];

    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut alpha = r1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = r1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection is served")
        .into_inner();
    let answer = answers.next().await.expect("an answer").unwrap();
    let Some(r1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, wanted);

    let mut v1 = r1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 reflection is served")
        .into_inner();
    let answer = answers.next().await.expect("an answer").unwrap();
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, wanted);
}

async fn complete_one(client: &mut JobsClient<Channel>, queue: &str, result: &str) -> String {
    let id = client.enqueue(job(queue, "p")).await.unwrap().into_inner().job_id;
    let claimed = client
        .claim(claim(queue, 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(claimed[0].job_id, id);
    client
        .complete(v1::CompleteRequest {
            job_id: id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            result: Bytes::copy_from_slice(result.as_bytes()),
        })
        .await
        .unwrap();
    id
}

async fn get(client: &mut JobsClient<Channel>, id: &str) -> v1::Job {
    client
        .get_job(v1::GetJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
}

#[tokio::test]
async fn get_job_answers_from_the_log_once_a_job_left_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(
        dir.path(),
        &["job_finished_in_memory_max=2", "job_dead_retention_ms=1h"],
    );
    let mut client = connect(&server).await;
    let first = complete_one(&mut client, "reports", "first").await;
    let in_memory = get(&mut client, &first).await;
    assert!(!in_memory.from_history);
    for n in 0..3 {
        complete_one(&mut client, "reports", &format!("later {n}")).await;
    }
    let stats = |client: &mut JobsClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .queue_stats(v1::QueueStatsRequest {
                    queue: "reports".into(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    // The count rule: only the two newest stay; the eviction runs on the
    // job thread's next turn.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut now = stats(&mut client).await;
    while now.succeeded_count > 2 {
        assert!(std::time::Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = stats(&mut client).await;
    }
    assert_eq!(now.finished_in_memory_max, 2);
    assert_eq!(now.finished_in_memory_count, 2);
    assert_eq!(now.finished_evicted_early_count, 2);
    assert_eq!(now.finished_retention_ms, 3_600_000);
    assert_eq!(now.dead_retention_ms, 3_600_000);

    let listed = client
        .list_jobs(v1::ListJobsRequest {
            queue: "reports".into(),
            state: v1::JobState::Succeeded as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(listed.iter().all(|j| j.job_id != first), "no longer listed");
    let rebuilt = get(&mut client, &first).await;
    assert!(rebuilt.from_history);
    assert_eq!(
        v1::Job {
            from_history: false,
            ..rebuilt.clone()
        },
        in_memory,
        "the job as it was served"
    );
    assert_eq!(rebuilt.result.as_deref(), Some(&b"first"[..]));

    // A purged dead job answers as dead, with its purge time.
    let dead = dead_job(&mut client, "reports", "no such report").await;
    client
        .purge_dead(v1::PurgeDeadRequest {
            target: Some(v1::purge_dead_request::Target::JobId(dead.clone())),
            dry_run: false,
        })
        .await
        .unwrap();
    let purged = get(&mut client, &dead).await;
    assert!(purged.from_history);
    assert_eq!(purged.state(), v1::JobState::Dead);
    assert!(purged.purged_at_ms.is_some());
    assert_eq!(purged.errors[0].error, "no such report");
    // Calls that change jobs still answer NOT_FOUND for it.
    let retried = client
        .retry_dead(v1::RetryDeadRequest {
            target: Some(v1::retry_dead_request::Target::JobId(dead)),
            dry_run: false,
        })
        .await;
    assert_eq!(code_of(retried), Code::NotFound);
    // An id the server never gave out.
    let never = client
        .get_job(v1::GetJobRequest {
            job_id: "12345".into(),
        })
        .await;
    assert_eq!(code_of(never), Code::NotFound);
}

/// The server's millisecond clock floors: a duration it measured between
/// two moments may be up to a millisecond off the client's view of them.
const CLOCK_SLACK_MS: u64 = 1;

/// True when `reported` is a percentile of durations each known to lie in
/// `low..=high` milliseconds, within HdrHistogram's precision (the top of
/// a bucket: at most 1/128 above).
fn reported_within(reported: u64, low: u64, high: u64) -> bool {
    reported + CLOCK_SLACK_MS >= low && reported <= high + high / 128 + CLOCK_SLACK_MS
}

#[tokio::test]
async fn queue_stats_count_a_known_workload_and_time_its_stages() {
    let server = Spoold::start_temp(&[]);
    let mut client = connect(&server).await;
    // Ten jobs; five are claimed after about 300 ms and run about 200 ms,
    // five more are claimed after about 600 ms and run about 50 ms.
    let enqueue_sent = std::time::Instant::now();
    let batch = v1::EnqueueBatchRequest {
        jobs: (0..10).map(|n| job("timed", &n.to_string())).collect(),
    };
    client.enqueue_batch(batch).await.unwrap();
    let enqueue_acked = std::time::Instant::now();
    let mut waits = Vec::new();
    let mut runs = Vec::new();
    for (pause_ms, run_ms) in [(300, 200), (300, 50)] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let claim_sent = std::time::Instant::now();
        let claimed = client
            .claim(claim("timed", 5, 30_000, 0))
            .await
            .unwrap()
            .into_inner()
            .jobs;
        let claim_acked = std::time::Instant::now();
        assert_eq!(claimed.len(), 5);
        // Server-side, each wait lies between these client-side bounds.
        waits.push((
            (claim_sent - enqueue_acked).as_millis() as u64,
            (claim_acked - enqueue_sent).as_millis() as u64,
        ));
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        let finish_sent = std::time::Instant::now();
        let items = claimed
            .iter()
            .map(|c| v1::FinishItem {
                outcome: Some(v1::finish_item::Outcome::Complete(v1::CompleteRequest {
                    job_id: c.job_id.clone(),
                    lease_token: c.lease_token.clone(),
                    result: Bytes::new(),
                })),
            })
            .collect();
        let results = client
            .finish_batch(v1::FinishBatchRequest { items })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.code == 0), "{results:?}");
        let finish_acked = std::time::Instant::now();
        runs.push((
            (finish_sent - claim_acked).as_millis() as u64,
            (finish_acked - claim_sent).as_millis() as u64,
        ));
    }
    // One job fails once and is retried at once, then succeeds.
    let flaky = client
        .enqueue(job("timed", "flaky"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let claimed = client
        .claim(claim("timed", 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    client
        .fail(v1::FailRequest {
            job_id: flaky.clone(),
            lease_token: claimed[0].lease_token.clone(),
            error: "once".into(),
            retryable: Some(true),
            retry_delay_ms: Some(0),
        })
        .await
        .unwrap();
    let claimed = client
        .claim(claim("timed", 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    client
        .complete(v1::CompleteRequest {
            job_id: flaky,
            lease_token: claimed[0].lease_token.clone(),
            result: Bytes::new(),
        })
        .await
        .unwrap();

    let stats = client
        .queue_stats(v1::QueueStatsRequest {
            queue: "timed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let totals = (
        stats.enqueued_total,
        stats.claimed_total,
        stats.completed_total,
        stats.failed_total,
        stats.retried_total,
        stats.dead_total,
        stats.expired_lease_total,
        stats.cancelled_total,
    );
    assert_eq!(totals, (11, 12, 11, 1, 1, 0, 0, 0));
    assert_eq!(stats.succeeded_count, 11);
    assert_eq!(stats.workers_connected, 1, "one worker id claimed just now");
    // Queue wait: 12 observations; the five early ones are the median's
    // side (p50 is the 6th smallest: the flaky job's two are the
    // smallest), the five late ones give p99.
    let wait = stats.queue_wait_last_minute.unwrap();
    assert_eq!(wait.count, 12);
    let (early, late) = (waits[0], waits[1]);
    assert!(
        reported_within(wait.p50_ms, early.0, early.1),
        "{wait:?} {waits:?}"
    );
    assert!(reported_within(wait.p99_ms, late.0, late.1), "{wait:?} {waits:?}");
    assert_eq!(stats.queue_wait_last_hour.unwrap().count, 12);
    // Run time: 12 attempts; the five long runs are the top, the five
    // short runs and the flaky job's two attempts the bottom, so p50 (6th
    // smallest) is a short run.
    let run = stats.run_time_last_minute.unwrap();
    assert_eq!(run.count, 12);
    let (long, short) = (runs[0], runs[1]);
    assert!(reported_within(run.p50_ms, short.0, short.1), "{run:?} {runs:?}");
    assert!(reported_within(run.p99_ms, long.0, long.1), "{run:?} {runs:?}");
    // End to end: one per completed job.
    assert_eq!(stats.end_to_end_last_minute.unwrap().count, 11);
    let listed = client
        .list_queues(v1::ListQueuesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queues;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].queue.as_str(), listed[0].succeeded_count),
        ("timed", 11)
    );
}

#[tokio::test]
async fn get_job_shows_the_stages_of_a_retried_job_also_once_rebuilt_from_the_log() {
    let server = Spoold::start_temp(&["job_finished_in_memory_max=1"]);
    let mut client = connect(&server).await;
    let id = client
        .enqueue(job("retried", "x"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let first = client
        .claim(claim("retried", 1, 30_000, 0))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .fail(v1::FailRequest {
            job_id: id.clone(),
            lease_token: first[0].lease_token.clone(),
            error: "try again".into(),
            retryable: Some(true),
            retry_delay_ms: Some(300),
        })
        .await
        .unwrap();
    // The retry is claimed by a long poll as soon as its backoff ends.
    let second = client
        .claim(claim("retried", 1, 30_000, 5_000))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(second[0].attempt, 2);
    client
        .complete(v1::CompleteRequest {
            job_id: id.clone(),
            lease_token: second[0].lease_token.clone(),
            result: Bytes::new(),
        })
        .await
        .unwrap();
    let served = get(&mut client, &id).await;
    let attempts = &served.attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts.iter().map(|a| a.outcome()).collect::<Vec<_>>(),
        [v1::AttemptOutcome::Failed, v1::AttemptOutcome::Succeeded]
    );
    let first_end = attempts[0].finished_at_ms.unwrap();
    assert!(first_end - attempts[0].claimed_at_ms >= 50, "{attempts:?}");
    assert_eq!(
        attempts[1].available_at_ms - first_end,
        300,
        "the backoff is the retry delay, exactly: {attempts:?}"
    );
    assert!(attempts[1].claimed_at_ms >= attempts[1].available_at_ms);
    assert_eq!(attempts[0].available_at_ms, served.created_at_ms);
    assert_eq!(served.finished_at_ms, attempts[1].finished_at_ms);
    // Another job completes; the count rule (one finished job in memory)
    // takes this one out, and GetJob rebuilds it from the log.
    complete_one(&mut client, "retried", "next").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rebuilt = loop {
        let job = get(&mut client, &id).await;
        if job.from_history {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "the job never left memory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rebuilt.attempts, served.attempts);
}
