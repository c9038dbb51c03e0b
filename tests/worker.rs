//! End-to-end tests of the `spool-worker` binary: real `spoold` and
//! `spool-worker` processes, jobs enqueued and inspected over gRPC.
//!
//! Run `cargo build -p spool-server -p spool-worker` first: the binaries are
//! taken from `target/debug`.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Spoold, binary};
use spool_proto::v1::{self, JobEventKind, JobState, jobs_client::JobsClient};
use tonic::transport::Channel;

/// A running `spool-worker`, its stderr in a file that is printed when the
/// test fails.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    fn start(server: &Spoold, dir: &Path, args: &[&str]) -> Worker {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("worker-{}.log", NEXT.fetch_add(1, Ordering::Relaxed)));
        let child = Command::new(binary("spool-worker"))
            .args(["--server", &server.url()])
            .args(args)
            .env("RUST_LOG", "info,spool_client=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("worker log"))
            .spawn()
            .expect("spawn spool-worker");
        Worker {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `wait`.
    fn wait_exit(&mut self, wait: Duration) -> ExitStatus {
        let deadline = Instant::now() + wait;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {wait:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

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

async fn enqueue(client: &mut JobsClient<Channel>, request: v1::EnqueueRequest) -> String {
    client
        .enqueue(request)
        .await
        .expect("enqueue")
        .into_inner()
        .job_id
}

async fn get(client: &mut JobsClient<Channel>, id: &str) -> v1::Job {
    client
        .get_job(v1::GetJobRequest { job_id: id.into() })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job")
}

/// Polls the job until `done` holds, at most `wait`.
async fn wait_for(
    client: &mut JobsClient<Channel>,
    id: &str,
    wait: Duration,
    what: &str,
    done: impl Fn(&v1::Job) -> bool,
) -> v1::Job {
    let deadline = Instant::now() + wait;
    loop {
        let job = get(client, id).await;
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is not {what} after {wait:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_state(client: &mut JobsClient<Channel>, id: &str, state: JobState, wait: Duration) -> v1::Job {
    wait_for(client, id, wait, state.as_str_name(), |job| {
        job.state == state as i32
    })
    .await
}

async fn history(client: &mut JobsClient<Channel>, id: &str) -> Vec<v1::JobEvent> {
    client
        .history(v1::HistoryRequest {
            job_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .events
}

fn claimed_attempts(events: &[v1::JobEvent]) -> Vec<u32> {
    events
        .iter()
        .filter(|e| e.kind == JobEventKind::Claimed as i32)
        .map(|e| e.attempt)
        .collect()
}

fn errors(job: &v1::Job) -> Vec<&str> {
    job.errors.iter().map(|e| e.error.as_str()).collect()
}

/// Pids of live processes whose command line is exactly `argv`, from /proc.
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[tokio::test]
async fn exec_completes_a_job_with_its_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(
        &mut client,
        v1::EnqueueRequest {
            attempts_max: Some(3),
            ..job("upper", "hello")
        },
    )
    .await;
    let _worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "upper",
            "--exec",
            r#"tr a-z A-Z; printf ' %s %s %s/%s %s' "$SPOOL_JOB_ID" "$SPOOL_QUEUE" "$SPOOL_ATTEMPT" "$SPOOL_ATTEMPTS_MAX" "$SPOOL_CONTENT_TYPE""#,
        ],
    );
    let done = wait_state(&mut client, &id, JobState::Succeeded, Duration::from_secs(10)).await;
    let result = String::from_utf8(done.result.unwrap().to_vec()).unwrap();
    assert_eq!(result, format!("HELLO {id} upper 1/3 text/plain"));
}

#[tokio::test]
async fn exec_sees_the_job_headers_and_its_trace_context() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let id = enqueue(
        &mut client,
        v1::EnqueueRequest {
            headers: [
                ("traceparent".to_owned(), traceparent.to_owned()),
                ("x-tenant.id".to_owned(), "acme".to_owned()),
            ]
            .into(),
            ..job("headers", "x")
        },
    )
    .await;
    let _worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "headers",
            "--exec",
            r#"printf '%s|%s|%s' "$TRACEPARENT" "$SPOOL_HEADER_TRACEPARENT" "$SPOOL_HEADER_X_TENANT_ID""#,
        ],
    );
    let done = wait_state(&mut client, &id, JobState::Succeeded, Duration::from_secs(10)).await;
    let result = String::from_utf8(done.result.unwrap().to_vec()).unwrap();
    assert_eq!(result, format!("{traceparent}|{traceparent}|acme"));
}

#[tokio::test]
async fn a_command_never_outlives_its_worker_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(&mut client, job("orphan", "x")).await;
    let mut worker = Worker::start(
        &server,
        dir.path(),
        &["--queue", "orphan", "--exec", "sleep 1011 & sleep 1011"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes(&["sleep", "1011"]).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the command did not start\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&mut client, &id).await.state, JobState::Running as i32);
    worker.kill9();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes(&["sleep", "1011"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the command outlived its worker: {left:?}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        worker.log().contains("killed the process groups of its commands"),
        "{}",
        worker.log()
    );
}

#[tokio::test]
async fn exit_code_100_sends_the_job_dead_after_one_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(&mut client, job("strict", "not an email")).await;
    let _worker = Worker::start(
        &server,
        dir.path(),
        &["--queue", "strict", "--exec", "echo 'bad address' >&2; exit 100"],
    );
    let dead = wait_state(&mut client, &id, JobState::Dead, Duration::from_secs(10)).await;
    assert_eq!(
        (dead.attempt, dead.attempts_max),
        (1, 25),
        "no retry despite attempts left"
    );
    let errors = errors(&dead);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("code 100") && errors[0].contains("bad address"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_missing_command_fails_the_attempt_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(&mut client, job("typo", "x")).await;
    let _worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "typo",
            "--retry-delay",
            "1h",
            "--exec",
            "no-such-command-4242 --flag",
        ],
    );
    let failed = wait_for(&mut client, &id, Duration::from_secs(10), "failed once", |job| {
        !job.errors.is_empty()
    })
    .await;
    assert_eq!(
        failed.state,
        JobState::Scheduled as i32,
        "retried later, not dead"
    );
    assert!(
        failed.errors[0].error.contains("no-such-command-4242"),
        "{:?}",
        failed.errors
    );
    assert!(failed.available_at_ms.unwrap() - failed.errors[0].failed_at_ms > 3_000_000);
}

#[tokio::test]
async fn a_hanging_command_is_killed_with_its_children_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(
        &mut client,
        v1::EnqueueRequest {
            attempts_max: Some(1),
            ..job("hang", "x")
        },
    )
    .await;
    let begin = Instant::now();
    let _worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "hang",
            "--timeout",
            "1s",
            "--exec",
            "sleep 1007 & sleep 1007",
        ],
    );
    // Both sleeps run before the timeout.
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes(&["sleep", "1007"]).len() < 2 {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = wait_state(&mut client, &id, JobState::Dead, Duration::from_secs(10)).await;
    assert!(begin.elapsed() < Duration::from_secs(6), "{:?}", begin.elapsed());
    assert!(errors(&dead)[0].contains("timed out"), "{:?}", dead.errors);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes(&["sleep", "1007"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep processes survived the timeout: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stdout_flood_completes_with_a_bounded_result() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(&mut client, job("flood", "x")).await;
    let begin = Instant::now();
    let _worker = Worker::start(
        &server,
        dir.path(),
        &["--queue", "flood", "--exec", "head -c 50000000 /dev/zero"],
    );
    let done = wait_state(&mut client, &id, JobState::Succeeded, Duration::from_secs(20)).await;
    // The default bound is the server's default result limit, 512 KiB.
    assert_eq!(done.result.unwrap().len(), 512 * 1024);
    assert!(begin.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_job_of_a_killed_worker_runs_again_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(&mut client, job("crash", "x")).await;
    let args = [
        "--queue",
        "crash",
        "--lease",
        "2s",
        "--exec",
        r#"if [ "$SPOOL_ATTEMPT" = 1 ]; then sleep 3; fi; echo "attempt $SPOOL_ATTEMPT""#,
    ];
    let mut first = Worker::start(&server, dir.path(), &args);
    wait_state(&mut client, &id, JobState::Running, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill9();
    let killed_at = Instant::now();
    let _second = Worker::start(&server, dir.path(), &args);
    let done = wait_state(&mut client, &id, JobState::Succeeded, Duration::from_secs(15)).await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(6),
        "{:?}",
        killed_at.elapsed()
    );
    assert_eq!(done.result.as_deref(), Some(&b"attempt 2\n"[..]));
    assert_eq!(done.attempt, 2);
    assert!(errors(&done)[0].contains("lease expired"), "{:?}", done.errors);
    let events = history(&mut client, &id).await;
    assert_eq!(claimed_attempts(&events), [1, 2]);
}

#[tokio::test]
async fn a_poison_job_goes_dead_and_never_blocks_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let poison = enqueue(
        &mut client,
        v1::EnqueueRequest {
            attempts_max: Some(3),
            priority: 10,
            ..job("mixed", "poison")
        },
    )
    .await;
    let mut good = Vec::new();
    for i in 0..10 {
        good.push(enqueue(&mut client, job("mixed", &format!("job {i}"))).await);
    }
    let _worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "mixed",
            "--concurrency",
            "2",
            "--retry-delay",
            "0",
            "--exec",
            r#"input=$(cat); if [ "$input" = poison ]; then echo poisoned >&2; exit 1; fi; echo "ok $input""#,
        ],
    );
    let dead = wait_state(&mut client, &poison, JobState::Dead, Duration::from_secs(15)).await;
    assert_eq!(dead.attempt, 3);
    assert_eq!(errors(&dead).len(), 3);
    assert!(
        errors(&dead)
            .iter()
            .all(|e| e.contains("code 1") && e.contains("poisoned"))
    );
    for (i, id) in good.iter().enumerate() {
        let done = wait_state(&mut client, id, JobState::Succeeded, Duration::from_secs(15)).await;
        assert_eq!(done.result.unwrap(), format!("ok job {i}\n").into_bytes());
        assert_eq!(done.attempt, 1);
    }
}

/// A TCP server that accepts connections and never answers.
fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn an_http_endpoint_that_never_answers_times_out_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let id = enqueue(
        &mut client,
        v1::EnqueueRequest {
            attempts_max: Some(2),
            ..job("silent", "x")
        },
    )
    .await;
    let url = format!("http://{}/hook", silent_server());
    let begin = Instant::now();
    let _worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "silent",
            "--timeout",
            "1s",
            "--retry-delay",
            "0",
            "--http",
            &url,
        ],
    );
    let dead = wait_state(&mut client, &id, JobState::Dead, Duration::from_secs(10)).await;
    assert!(begin.elapsed() < Duration::from_secs(8), "{:?}", begin.elapsed());
    assert_eq!(dead.attempt, 2, "the first timeout was retried");
    assert!(
        errors(&dead).iter().all(|e| e.contains("timed out")),
        "{:?}",
        dead.errors
    );
}

/// One request as the test endpoint saw it.
#[derive(Debug, Clone)]
struct Seen {
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP/1.1 endpoint that answers with the status code given as the
/// request body (`200`, `422`, `503`); records every request.
fn status_server() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || serve_one(stream, &log));
        }
    });
    (addr, seen)
}

fn serve_one(stream: TcpStream, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = HashMap::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    let (status, reply) = match body.as_str() {
        "200" => ("200 OK", format!("done {}", headers["spool-job-id"])),
        "422" => ("422 Unprocessable Entity", "invalid recipient".to_owned()),
        _ => ("503 Service Unavailable", "overloaded".to_owned()),
    };
    log.lock().unwrap().push(Seen { headers, body });
    let mut stream = stream;
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).unwrap();
}

#[tokio::test]
async fn http_status_codes_complete_kill_or_retry_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let (addr, seen) = status_server();
    let ok = enqueue(
        &mut client,
        v1::EnqueueRequest {
            content_type: "application/json".into(),
            headers: [("traceparent".to_owned(), "00-abc-def-01".to_owned())].into(),
            ..job("hooks", "200")
        },
    )
    .await;
    let rejected = enqueue(&mut client, job("hooks", "422")).await;
    let busy = enqueue(
        &mut client,
        v1::EnqueueRequest {
            attempts_max: Some(2),
            ..job("hooks", "503")
        },
    )
    .await;
    let url = format!("http://{addr}/jobs");
    let _worker = Worker::start(
        &server,
        dir.path(),
        &["--queue", "hooks", "--retry-delay", "0", "--http", &url],
    );
    let done = wait_state(&mut client, &ok, JobState::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(done.result.unwrap(), format!("done {ok}").into_bytes());
    let dead = wait_state(&mut client, &rejected, JobState::Dead, Duration::from_secs(10)).await;
    assert_eq!(dead.attempt, 1, "a 422 is not retried");
    assert!(errors(&dead)[0].contains("422") && errors(&dead)[0].contains("invalid recipient"));
    let retried = wait_state(&mut client, &busy, JobState::Dead, Duration::from_secs(10)).await;
    assert_eq!(retried.attempt, 2, "a 503 is retried");
    assert!(
        errors(&retried).iter().all(|e| e.contains("503")),
        "{:?}",
        retried.errors
    );

    let seen = seen.lock().unwrap();
    let first = seen.iter().find(|s| s.body == "200").expect("the 200 request");
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.headers["spool-job-id"], ok);
    assert_eq!(first.headers["spool-queue"], "hooks");
    assert_eq!(first.headers["spool-attempt"], "1");
    assert_eq!(first.headers["spool-attempts-max"], "25");
    assert_eq!(first.headers["traceparent"], "00-abc-def-01");
    let attempts: Vec<&str> = seen
        .iter()
        .filter(|s| s.body == "503")
        .map(|s| s.headers["spool-attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["1", "2"]);
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_and_releases_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    let slow = enqueue(
        &mut client,
        v1::EnqueueRequest {
            priority: 10,
            ..job("drain", "slow")
        },
    )
    .await;
    let mut waiting = Vec::new();
    for name in ["a", "b"] {
        let request = v1::EnqueueRequest {
            attempts_max: Some(2),
            ..job("drain", name)
        };
        waiting.push(enqueue(&mut client, request).await);
    }
    let mut worker = Worker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "drain",
            "--concurrency",
            "1",
            "--prefetch",
            "2",
            "--grace",
            "10s",
            "--exec",
            r#"if [ "$(cat)" = slow ]; then sleep 2; fi; echo "done""#,
        ],
    );
    for id in [&slow, &waiting[0], &waiting[1]] {
        wait_state(&mut client, id, JobState::Running, Duration::from_secs(10)).await;
    }
    worker.terminate();
    let signalled = Instant::now();
    // The jobs not started are given back at once, while the slow one runs.
    for id in &waiting {
        let released = wait_state(&mut client, id, JobState::Available, Duration::from_secs(1)).await;
        assert!(released.errors.is_empty(), "{:?}", released.errors);
    }
    assert_eq!(get(&mut client, &slow).await.state, JobState::Running as i32);
    let status = worker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", worker.log());
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let done = get(&mut client, &slow).await;
    assert_eq!(done.state, JobState::Succeeded as i32);
    assert_eq!(done.result.as_deref(), Some(&b"done\n"[..]));
    let events = history(&mut client, &waiting[0]).await;
    let release = events.iter().find(|e| e.kind == JobEventKind::Available as i32);
    assert!(
        release.is_some_and(|e| e.detail.contains("released")),
        "{events:?}"
    );

    // The released attempt does not count: with attempts_max 2, one failed
    // attempt after it still leaves a retry.
    let _failing = Worker::start(
        &server,
        dir.path(),
        &["--queue", "drain", "--retry-delay", "1h", "--exec", "exit 1"],
    );
    for id in &waiting {
        let failed = wait_for(&mut client, id, Duration::from_secs(10), "failed once", |job| {
            !job.errors.is_empty()
        })
        .await;
        assert_eq!(failed.attempt, 2);
        assert_eq!(failed.state, JobState::Scheduled as i32, "{failed:?}");
    }
}

#[test]
fn usage_errors_exit_with_code_2() {
    let status = Command::new(binary("spool-worker"))
        .args(["--queue", "q"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let status = Command::new(binary("spool-worker"))
        .args(["--queue", "q", "--exec", "cat", "--timeout", "soon"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[tokio::test]
async fn a_queue_name_the_server_refuses_exits_with_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut worker = Worker::start(&server, dir.path(), &["--queue", "../etc", "--exec", "cat"]);
    let status = worker.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", worker.log());
    assert!(worker.log().contains("queue"), "{}", worker.log());
}
