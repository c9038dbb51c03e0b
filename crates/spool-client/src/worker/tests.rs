//! The worker runtime against an in-process fake of `spool.v1.Jobs` that
//! records every call and answers as scripted: batching, heartbeats,
//! cancellation, lost leases, timeouts, shutdown and reconnection, without a
//! real server.
//!
//! The tests run on tokio's paused clock (`start_paused`), the fake served
//! over in-memory streams: time moves only when every task waits for a
//! timer, and then jumps to it, so leases, timeouts, backoffs and grace
//! periods are exact and cost no waiting. The reconnection test alone
//! uses a real socket and the real clock: it is about a server that is not
//! listening yet.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use spool_proto::v1::{
    self, finish_item::Outcome as ItemOutcome, jobs_server::Jobs, jobs_server::JobsServer,
};
use tokio::sync::{Notify, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::*;

#[derive(Default)]
struct State {
    available: VecDeque<v1::ClaimedJob>,
    claims: Vec<v1::ClaimRequest>,
    heartbeats: Vec<v1::HeartbeatRequest>,
    batches: Vec<Vec<v1::FinishItem>>,
    releases: Vec<v1::ReleaseRequest>,
    /// Jobs whose heartbeats say cancellation was requested.
    cancelled: HashSet<String>,
    /// Jobs whose heartbeats are refused with FAILED_PRECONDITION.
    lost: HashSet<String>,
    /// So many next claims fail with UNAVAILABLE.
    unavailable_claims: u32,
    /// Every claim fails with INVALID_ARGUMENT.
    refuse_claims: bool,
    /// Claims answer at once, with no jobs (a server shutting down).
    empty_claims_at_once: bool,
}

#[derive(Clone, Default)]
struct Fake {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let result = f(&mut self.state.lock().unwrap());
        self.changed.notify_waiters();
        result
    }

    fn add_jobs(&self, count: usize, payload: &str) -> Vec<String> {
        self.with(|state| {
            (0..count)
                .map(|_| {
                    let id = (1_000 + state.available.len() + state.claims.len() * 100).to_string();
                    let id = format!("{id}{}", state.available.len());
                    state.available.push_back(v1::ClaimedJob {
                        job_id: id.clone(),
                        queue: "q".into(),
                        payload: Bytes::copy_from_slice(payload.as_bytes()),
                        content_type: "text/plain".into(),
                        attempt: 1,
                        attempts_max: 25,
                        lease_token: format!("{:016x}", id.parse::<u64>().unwrap()),
                        ..Default::default()
                    });
                    id
                })
                .collect()
        })
    }

    fn finished(&self) -> Vec<ItemOutcome> {
        self.with(|state| {
            state
                .batches
                .iter()
                .flatten()
                .filter_map(|item| item.outcome.clone())
                .collect()
        })
    }

    /// Waits until `condition` holds, up to 5 s.
    async fn wait_for(&self, what: &str, condition: impl Fn(&State) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            if condition(&self.state.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}");
            }
        }
    }
}

#[tonic::async_trait]
impl Jobs for Fake {
    async fn enqueue(&self, _: Request<v1::EnqueueRequest>) -> Result<Response<v1::EnqueueResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn enqueue_batch(
        &self,
        _: Request<v1::EnqueueBatchRequest>,
    ) -> Result<Response<v1::EnqueueBatchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn claim(&self, request: Request<v1::ClaimRequest>) -> Result<Response<v1::ClaimResponse>, Status> {
        let request = request.into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms));
        let max_jobs = request.max_jobs.max(1) as usize;
        // Ok(true): answer at once with no jobs.
        let at_once = self.with(|state| {
            state.claims.push(request.clone());
            if state.refuse_claims {
                return Err(Status::invalid_argument("queue name is not valid"));
            }
            if state.unavailable_claims > 0 {
                state.unavailable_claims -= 1;
                return Err(Status::unavailable("starting up"));
            }
            Ok(state.empty_claims_at_once)
        })?;
        if at_once {
            return Ok(Response::new(v1::ClaimResponse { jobs: Vec::new() }));
        }
        loop {
            let notified = self.changed.notified();
            let jobs: Vec<v1::ClaimedJob> = {
                let mut state = self.state.lock().unwrap();
                let take = max_jobs.min(state.available.len());
                state.available.drain(..take).collect()
            };
            if !jobs.is_empty() {
                let jobs = jobs
                    .into_iter()
                    .map(|job| v1::ClaimedJob {
                        lease_ms: request.lease_ms,
                        ..job
                    })
                    .collect();
                self.changed.notify_waiters();
                return Ok(Response::new(v1::ClaimResponse { jobs }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(v1::ClaimResponse { jobs: Vec::new() }));
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.with(|state| {
            state.heartbeats.push(request.clone());
            if state.lost.contains(&request.job_id) {
                return Err(Status::failed_precondition("lease expired"));
            }
            Ok(Response::new(v1::HeartbeatResponse {
                cancel_requested: state.cancelled.contains(&request.job_id),
                lease_ms: request.extend_ms,
            }))
        })
    }

    async fn complete(
        &self,
        _: Request<v1::CompleteRequest>,
    ) -> Result<Response<v1::CompleteResponse>, Status> {
        Err(Status::unimplemented("the worker sends FinishBatch"))
    }

    async fn fail(&self, _: Request<v1::FailRequest>) -> Result<Response<v1::FailResponse>, Status> {
        Err(Status::unimplemented("the worker sends FinishBatch"))
    }

    async fn finish_batch(
        &self,
        request: Request<v1::FinishBatchRequest>,
    ) -> Result<Response<v1::FinishBatchResponse>, Status> {
        let items = request.into_inner().items;
        let results = items
            .iter()
            .map(|item| match &item.outcome {
                Some(ItemOutcome::Complete(c)) => v1::FinishResult {
                    job_id: c.job_id.clone(),
                    state: v1::JobState::Succeeded as i32,
                    ..Default::default()
                },
                Some(ItemOutcome::Fail(f)) => v1::FinishResult {
                    job_id: f.job_id.clone(),
                    state: if f.retryable == Some(false) {
                        v1::JobState::Dead
                    } else {
                        v1::JobState::Scheduled
                    } as i32,
                    ..Default::default()
                },
                None => v1::FinishResult {
                    code: tonic::Code::InvalidArgument as u32,
                    ..Default::default()
                },
            })
            .collect();
        self.with(|state| state.batches.push(items));
        Ok(Response::new(v1::FinishBatchResponse { results }))
    }

    async fn release(
        &self,
        request: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        self.with(|state| state.releases.push(request.into_inner()));
        Ok(Response::new(v1::ReleaseResponse {}))
    }

    async fn cancel(&self, _: Request<v1::CancelRequest>) -> Result<Response<v1::CancelResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_job(&self, _: Request<v1::GetJobRequest>) -> Result<Response<v1::GetJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_jobs(
        &self,
        _: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn history(&self, _: Request<v1::HistoryRequest>) -> Result<Response<v1::HistoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn retry_dead(
        &self,
        _: Request<v1::RetryDeadRequest>,
    ) -> Result<Response<v1::RetryDeadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn purge_dead(
        &self,
        _: Request<v1::PurgeDeadRequest>,
    ) -> Result<Response<v1::PurgeDeadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn queue_stats(
        &self,
        _: Request<v1::QueueStatsRequest>,
    ) -> Result<Response<v1::QueueStatsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_queues(
        &self,
        _: Request<v1::ListQueuesRequest>,
    ) -> Result<Response<v1::ListQueuesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn pause_queue(
        &self,
        _: Request<v1::PauseQueueRequest>,
    ) -> Result<Response<v1::PauseQueueResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn resume_queue(
        &self,
        _: Request<v1::ResumeQueueRequest>,
    ) -> Result<Response<v1::ResumeQueueResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn configure_queue(
        &self,
        _: Request<v1::ConfigureQueueRequest>,
    ) -> Result<Response<v1::ConfigureQueueResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_queue(
        &self,
        _: Request<v1::DeleteQueueRequest>,
    ) -> Result<Response<v1::DeleteQueueResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn search_jobs(
        &self,
        _: Request<v1::SearchJobsRequest>,
    ) -> Result<Response<v1::SearchJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` over in-memory streams; returns a client connected to it.
///
/// No socket: every wake-up goes through tokio, so on a paused clock the
/// runtime is idle only when it waits for a timer, and time then jumps to
/// it. Each connection the client opens is a new duplex stream handed to
/// the server.
async fn serve(fake: &Fake) -> Client {
    let (connections, accepted) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let incoming = futures_util::stream::unfold(accepted, |mut accepted| async move {
        let stream = accepted.recv().await?;
        Some((Ok::<_, std::io::Error>(stream), accepted))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(JobsServer::new(fake.clone()))
            .serve_with_incoming(Box::pin(incoming)),
    );
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connections = connections.clone();
        async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            connections
                .send(server)
                .map_err(|_| std::io::Error::other("the fake server stopped"))?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
        }
    });
    let url = "http://fake.invalid";
    let channel = tonic::transport::Endpoint::from_static(url)
        .connect_with_connector(connector)
        .await
        .unwrap();
    Client::from_channel(channel, url, &crate::ClientOptions::default())
}

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        claim_wait: Duration::from_millis(100),
        grace: Duration::from_secs(5),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        worker_id: "unit-test".into(),
        ..WorkerConfig::default()
    }
}

/// A shutdown future and the switch that resolves it.
fn switch() -> (oneshot::Sender<()>, impl Future<Output = ()> + Send) {
    let (sender, receiver) = oneshot::channel::<()>();
    (sender, async move {
        let _ = receiver.await;
    })
}

#[tokio::test(start_paused = true)]
async fn runs_jobs_with_bounded_claims_and_batched_acknowledgements() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    let ids = fake.add_jobs(40, "hello");
    let (stop, shutdown) = switch();
    let worker = Worker::new(&client, config()).handle("q", |job: Job| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Outcome::complete(format!("{}:{}", job.id(), String::from_utf8_lossy(job.payload())))
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("every job to be acknowledged", |s| {
        s.batches.iter().map(Vec::len).sum::<usize>() == 40
    })
    .await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!((report.claimed, report.completed, report.lost), (40, 40, 0));
    let mut results: Vec<String> = fake
        .finished()
        .into_iter()
        .map(|outcome| match outcome {
            ItemOutcome::Complete(c) => String::from_utf8(c.result.to_vec()).unwrap(),
            ItemOutcome::Fail(f) => panic!("unexpected failure {f:?}"),
        })
        .collect();
    results.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("{id}:hello")).collect();
    expected.sort();
    assert_eq!(results, expected);
    fake.with(|state| {
        assert!(
            state.claims.iter().all(|c| c.max_jobs >= 1 && c.max_jobs <= 4),
            "claims ask for free slots only"
        );
        assert!(
            state
                .claims
                .iter()
                .all(|c| c.queues == ["q"] && c.worker_id == "unit-test")
        );
        assert!(
            state.batches.len() < 40,
            "{} batches for 40 jobs",
            state.batches.len()
        );
    });
}

#[tokio::test(start_paused = true)]
async fn heartbeats_carry_progress_and_bring_cancellation() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    let id = fake.add_jobs(1, "x").remove(0);
    fake.with(|state| state.cancelled.insert(id.clone()));
    let (stop, shutdown) = switch();
    let config = WorkerConfig {
        lease: Duration::from_millis(300),
        ..config()
    };
    let worker = Worker::new(&client, config).handle("q", |job: Job| async move {
        job.set_progress("50%");
        tokio::time::timeout(Duration::from_secs(5), job.cancelled())
            .await
            .unwrap();
        assert_eq!(job.stop_reason(), Some(StopReason::Cancelled));
        Outcome::fail_permanently("stopped on request")
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("the failure", |s| !s.batches.is_empty()).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    fake.with(|state| {
        let first = &state.heartbeats[0];
        assert_eq!(first.job_id, id);
        assert_eq!(first.extend_ms, 300, "the heartbeat asks for the worker's lease");
        assert_eq!(first.progress.as_deref(), Some("50%"));
    });
    match &fake.finished()[..] {
        [ItemOutcome::Fail(f)] => {
            assert_eq!(f.error, "stopped on request");
            assert_eq!(f.retryable, Some(false));
        }
        other => panic!("expected one failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_go_every_third_of_the_lease() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.add_jobs(1, "x");
    let (stop, shutdown) = switch();
    let config = WorkerConfig {
        lease: Duration::from_millis(300),
        ..config()
    };
    let worker = Worker::new(&client, config).handle("q", |_job: Job| async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        Outcome::complete("")
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("the completion", |s| !s.batches.is_empty()).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    // On the paused clock the handler runs exactly 1 s: a heartbeat every
    // 100 ms from 100 ms on (the one due as it ends may or may not go).
    let beats = fake.with(|state| state.heartbeats.len());
    assert!(
        (9..=10).contains(&beats),
        "{beats} heartbeats in 1 s at a 300 ms lease"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_reaches_the_handler_and_its_outcome_is_not_sent() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    let id = fake.add_jobs(1, "x").remove(0);
    fake.with(|state| state.lost.insert(id));
    let (stop, shutdown) = switch();
    let saw = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&saw);
    let config = WorkerConfig {
        lease: Duration::from_millis(150),
        ..config()
    };
    let worker = Worker::new(&client, config).handle("q", move |job: Job| {
        let seen = Arc::clone(&seen);
        async move {
            let reason = job.stopped().await;
            *seen.lock().unwrap() = Some(reason);
            Outcome::complete("too late")
        }
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("a refused heartbeat", |s| !s.heartbeats.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(*saw.lock().unwrap(), Some(StopReason::LeaseLost));
    assert_eq!(report.lost, 1);
    assert!(fake.finished().is_empty(), "nothing is reported for a lost lease");
}

/// Sets a flag when dropped: shows that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_drops_the_handler_and_fails_the_attempt() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.add_jobs(1, "x");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let (stop, shutdown) = switch();
    let config = WorkerConfig {
        timeout: Some(Duration::from_millis(150)),
        retry_delay: Some(Duration::from_millis(10)),
        ..config()
    };
    let worker = Worker::new(&client, config).handle("q", move |_job: Job| {
        let guard = DropFlag(Arc::clone(&flag));
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Outcome::complete("never")
        }
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("the failure", |s| !s.batches.is_empty()).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    match &fake.finished()[..] {
        [ItemOutcome::Fail(f)] => {
            assert!(f.error.contains("timed out"), "{}", f.error);
            assert_eq!(f.retryable, Some(true));
            assert_eq!(f.retry_delay_ms, Some(10));
        }
        other => panic!("expected one failure, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(dropped.load(Ordering::SeqCst), "the handler's future was dropped");
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_waiting_jobs_and_lets_running_ones_finish() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    let ids = fake.add_jobs(3, "x");
    let (stop, shutdown) = switch();
    let started = Arc::new(Notify::new());
    let signal = Arc::clone(&started);
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 2,
        ..config()
    };
    let worker = Worker::new(&client, config).handle("q", move |job: Job| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            Outcome::complete(job.id().to_owned())
        }
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    started.notified().await;
    fake.wait_for("all three claimed", |s| s.available.is_empty())
        .await;
    stop.send(()).unwrap();
    fake.wait_for("two releases", |s| s.releases.len() == 2).await;
    assert!(
        fake.finished().is_empty(),
        "the running job is still running when the others are released"
    );
    let report = run.await.unwrap().unwrap();
    assert_eq!((report.completed, report.released), (1, 2));
    let completed = match &fake.finished()[..] {
        [ItemOutcome::Complete(c)] => c.job_id.clone(),
        other => panic!("expected one completion, got {other:?}"),
    };
    let mut all: Vec<String> = fake.with(|s| s.releases.iter().map(|r| r.job_id.clone()).collect());
    all.push(completed);
    all.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(all, expected);
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_grace_period_stops_and_releases_running_jobs() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.add_jobs(1, "x");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let (stop, shutdown) = switch();
    let config = WorkerConfig {
        grace: Duration::from_millis(100),
        ..config()
    };
    let started = Arc::new(Notify::new());
    let signal = Arc::clone(&started);
    let worker = Worker::new(&client, config).handle("q", move |_job: Job| {
        let guard = DropFlag(Arc::clone(&flag));
        let signal = Arc::clone(&signal);
        async move {
            let _guard = guard;
            signal.notify_one();
            tokio::time::sleep(Duration::from_secs(30)).await;
            Outcome::complete("never")
        }
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    started.notified().await;
    let begin = tokio::time::Instant::now();
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(
        begin.elapsed(),
        Duration::from_millis(100),
        "the run ends when the grace period does"
    );
    assert_eq!(report.released, 1);
    assert!(fake.finished().is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn claims_are_retried_with_backoff_while_the_server_is_unavailable() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.with(|state| state.unavailable_claims = 4);
    fake.add_jobs(1, "x");
    let (stop, shutdown) = switch();
    let worker = Worker::new(&client, config()).handle("q", |_job: Job| async { Outcome::complete("ok") });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("the completion", |s| !s.batches.is_empty()).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.completed, 1);
    assert!(fake.with(|s| s.claims.len()) >= 5);
}

#[tokio::test(start_paused = true)]
async fn early_empty_claims_are_not_repeated_in_a_tight_loop() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.with(|state| state.empty_claims_at_once = true);
    let (stop, shutdown) = switch();
    let config = WorkerConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(100),
        ..config()
    };
    let worker = Worker::new(&client, config).handle("q", |_job: Job| async { Outcome::complete("") });
    let run = tokio::spawn(worker.run_until(shutdown));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    // The first claim, then one per backoff of 50 to 100 ms.
    let claims = fake.with(|state| state.claims.len());
    assert!((6..=11).contains(&claims), "{claims} claims in 500 ms");
}

#[tokio::test]
async fn a_worker_reconnects_after_the_server_was_down() {
    // Nothing listens at first: the worker starts anyway and keeps trying.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::connect_lazy(format!("http://{addr}"), crate::ClientOptions::default()).unwrap();
    let (stop, shutdown) = switch();
    let worker = Worker::new(&client, config()).handle("q", |_job: Job| async { Outcome::complete("ok") });
    let run = tokio::spawn(worker.run_until(shutdown));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fake = Fake::default();
    fake.add_jobs(1, "x");
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(JobsServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    fake.wait_for("the completion", |s| !s.batches.is_empty()).await;
    stop.send(()).unwrap();
    assert_eq!(run.await.unwrap().unwrap().completed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_claim_ends_the_run_with_an_error() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.with(|state| state.refuse_claims = true);
    let worker = Worker::new(&client, config()).handle("q", |_job: Job| async { Outcome::complete("") });
    let error = worker.run_until(std::future::pending()).await.unwrap_err();
    assert!(matches!(error, WorkerError::ClaimRefused { .. }), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_the_attempt() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    fake.add_jobs(1, "x");
    let (stop, shutdown) = switch();
    let worker = Worker::new(&client, config()).handle("q", |job: Job| async move {
        if !job.payload().is_empty() {
            panic!("bad payload");
        }
        Outcome::complete("")
    });
    let run = tokio::spawn(worker.run_until(shutdown));
    fake.wait_for("the failure", |s| !s.batches.is_empty()).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    match &fake.finished()[..] {
        [ItemOutcome::Fail(f)] => assert!(f.error.contains("bad payload"), "{}", f.error),
        other => panic!("expected one failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_needs_a_handler_and_valid_settings() {
    let fake = Fake::default();
    let client = serve(&fake).await;
    let error = Worker::new(&client, config())
        .run_until(std::future::ready(()))
        .await
        .unwrap_err();
    assert!(matches!(error, WorkerError::NoQueues));
    let bad = WorkerConfig {
        concurrency: 0,
        ..config()
    };
    let error = Worker::new(&client, bad)
        .handle("q", |_job: Job| async { Outcome::complete("") })
        .run_until(std::future::ready(()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            WorkerError::InvalidConfig {
                field: "concurrency",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn settings_are_checked_against_their_ranges() {
    assert!(WorkerConfig::default().validate().is_ok());
    let cases: [(&str, WorkerConfig); 7] = [
        (
            "lease",
            WorkerConfig {
                lease: Duration::from_millis(10),
                ..WorkerConfig::default()
            },
        ),
        (
            "timeout",
            WorkerConfig {
                timeout: Some(Duration::ZERO),
                ..WorkerConfig::default()
            },
        ),
        (
            "claim_wait",
            WorkerConfig {
                claim_wait: Duration::from_secs(120),
                ..WorkerConfig::default()
            },
        ),
        (
            "claim_wait",
            WorkerConfig {
                claim_wait: Duration::ZERO,
                ..WorkerConfig::default()
            },
        ),
        (
            "ack_batch_max",
            WorkerConfig {
                ack_batch_max: 0,
                ..WorkerConfig::default()
            },
        ),
        (
            "concurrency",
            WorkerConfig {
                concurrency: CAPACITY_MAX,
                prefetch: 1,
                ..WorkerConfig::default()
            },
        ),
        (
            "backoff_min",
            WorkerConfig {
                backoff_min: Duration::from_secs(20),
                ..WorkerConfig::default()
            },
        ),
    ];
    for (field, config) in cases {
        match config.validate() {
            Err(WorkerError::InvalidConfig { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{field}: expected an error naming it, got {other:?}"),
        }
    }
    assert!(
        WorkerConfig::default()
            .worker_id
            .ends_with(&std::process::id().to_string())
    );
}

#[test]
fn queues_are_listed_sorted() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::connect_lazy("http://127.0.0.1:1", crate::ClientOptions::default()).unwrap();
        let worker = Worker::new(&client, WorkerConfig::default())
            .handle("b", |_job: Job| async { Outcome::complete("") })
            .handle("a", |_job: Job| async { Outcome::complete("") });
        assert_eq!(worker.queues(), ["a", "b"]);
        assert!(format!("{worker:?}").contains("queues: [\"a\", \"b\"]"));
    });
}
