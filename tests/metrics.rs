//! End-to-end tests of spoold's admin listener: after a known workload,
//! `/metrics` scraped over HTTP and parsed must show the numbers that
//! workload implies; the health pages answer as documented.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::Spoold;
use common::scrape::{self, Sample, matching, parse, value};
use spool_proto::v1::{self, log_client::LogClient};
use tonic::Code;
use tonic::transport::Channel;

const TOPIC: &str = "orders";
const VALUE_BYTES: usize = 100;
/// How old the records' timestamps are when produced.
const AGE_MS: i64 = 60_000;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn connect(server: &Spoold) -> LogClient<Channel> {
    LogClient::connect(server.url()).await.expect("connect")
}

fn records(count: usize, timestamp_ms: i64) -> Vec<v1::Record> {
    (0..count)
        .map(|_| v1::Record {
            key: None,
            value: Some(Bytes::from(vec![b'v'; VALUE_BYTES])),
            headers: vec![],
            timestamp_ms: Some(timestamp_ms),
        })
        .collect()
}

fn produce(partition: u32, records: Vec<v1::Record>) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: TOPIC.into(),
        partition: Some(partition),
        durability: v1::Durability::Fsync as i32,
        data: Some(v1::produce_request::Data::Records(v1::RecordList { records })),
    }
}

fn scrape_metrics(server: &Spoold) -> Vec<Sample> {
    let answer = scrape::get(server.admin_addr.unwrap(), "/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&answer.body)
}

/// Buckets of one histogram series: cumulative, ending at `+Inf` with the
/// count.
fn check_histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let bucket = format!("{name}_bucket");
    let buckets: Vec<&Sample> = matching(samples, &bucket, labels).collect();
    assert!(buckets.len() > 2, "{name}{labels:?} has buckets");
    assert!(buckets.windows(2).all(|pair| pair[0].value <= pair[1].value));
    let last = buckets.last().unwrap();
    assert_eq!(last.labels["le"], "+Inf");
    let count = value(samples, &format!("{name}_count"), labels);
    assert_eq!(last.value, count, "{name}{labels:?}");
    count
}

#[tokio::test]
async fn a_known_workload_shows_in_the_scraped_numbers() {
    let server = Spoold::start_temp(&[]);
    let mut client = connect(&server).await;
    client
        .create_topic(v1::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let produced_at = now_ms();
    let timestamp_ms = produced_at - AGE_MS;
    // Partition 0: five requests of two records; partition 1: two of three.
    for _ in 0..5 {
        client
            .produce(produce(0, records(2, timestamp_ms)))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        client
            .produce(produce(1, records(3, timestamp_ms)))
            .await
            .unwrap();
    }
    // One more record to partition 1, traced.
    let mut traced = tonic::Request::new(produce(1, records(1, timestamp_ms)));
    traced.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    client.produce(traced).await.unwrap();
    let (records_0, records_1) = (10u64, 7u64);

    // Read everything back, then commit partition 0 behind its end and
    // partition 1 at its end.
    for (partition, expected) in [(0, records_0), (1, records_1)] {
        let fetched = client
            .fetch(v1::FetchRequest {
                topic: TOPIC.into(),
                partition,
                offset: 0,
                max_bytes: 1 << 20,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched.records.len() as u64, expected);
    }
    client
        .commit_checkpoint(v1::CommitCheckpointRequest {
            consumer: "billing".into(),
            topic: TOPIC.into(),
            partitions: vec![
                v1::PartitionCheckpoint {
                    partition: 0,
                    offset: 4,
                    commit_time_ms: 0,
                },
                v1::PartitionCheckpoint {
                    partition: 1,
                    offset: records_1,
                    commit_time_ms: 0,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let missing = client
        .fetch(v1::FetchRequest {
            topic: "no-such-topic".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let described = client
        .describe_topic(v1::DescribeTopicRequest { name: TOPIC.into() })
        .await
        .unwrap()
        .into_inner();
    let stored_bytes: u64 = described.partitions.iter().map(|p| p.size_bytes).sum();
    assert!(stored_bytes > (records_0 + records_1) * VALUE_BYTES as u64);

    let samples = scrape_metrics(&server);
    let elapsed_s = (now_ms() - produced_at) as f64 / 1000.0;
    let topic = [("topic", TOPIC)];

    // Log counters, per topic.
    assert_eq!(
        value(&samples, "spool_log_appended_records_total", &topic),
        (records_0 + records_1) as f64
    );
    assert_eq!(
        value(&samples, "spool_log_appended_bytes_total", &topic),
        stored_bytes as f64
    );
    assert_eq!(
        value(&samples, "spool_log_fetched_records_total", &topic),
        (records_0 + records_1) as f64
    );
    assert_eq!(
        value(&samples, "spool_log_fetched_bytes_total", &topic),
        stored_bytes as f64
    );
    // Partition gauges.
    for (partition, expected) in [("0", records_0), ("1", records_1)] {
        let labels = [("topic", TOPIC), ("partition", partition)];
        assert_eq!(
            value(&samples, "spool_partition_high_watermark", &labels),
            expected as f64
        );
        assert_eq!(value(&samples, "spool_partition_log_start_offset", &labels), 0.0);
        assert_eq!(value(&samples, "spool_partition_segments", &labels), 1.0);
        let described = &described.partitions[partition.parse::<usize>().unwrap()];
        assert_eq!(
            value(&samples, "spool_partition_size_bytes", &labels),
            described.size_bytes as f64
        );
    }
    // Consumer lag: 6 records behind on partition 0, whose oldest unread
    // record is AGE_MS old; caught up on partition 1.
    let lag = |partition| {
        [
            ("consumer", "billing"),
            ("topic", TOPIC),
            ("partition", partition),
        ]
    };
    assert_eq!(value(&samples, "spool_consumer_lag_records", &lag("0")), 6.0);
    assert_eq!(value(&samples, "spool_consumer_lag_records", &lag("1")), 0.0);
    let lag_seconds = value(&samples, "spool_consumer_lag_seconds", &lag("0"));
    let age_s = AGE_MS as f64 / 1000.0;
    assert!(
        lag_seconds >= age_s && lag_seconds <= age_s + elapsed_s + 1.0,
        "lag {lag_seconds} s, records {age_s} s old, {elapsed_s} s ago"
    );
    assert_eq!(value(&samples, "spool_consumer_lag_seconds", &lag("1")), 0.0);

    // Calls, by method and code: 8 produces answered ok, 1 fetch NOT_FOUND.
    let produce_ok = [("method", "Produce"), ("code", "ok")];
    assert_eq!(
        check_histogram(&samples, "spool_rpc_duration_seconds", &produce_ok),
        8.0
    );
    assert!(value(&samples, "spool_rpc_duration_seconds_sum", &produce_ok) > 0.0);
    assert_eq!(
        check_histogram(
            &samples,
            "spool_rpc_duration_seconds",
            &[("method", "Fetch"), ("code", "not_found")]
        ),
        1.0
    );
    assert_eq!(
        check_histogram(
            &samples,
            "spool_rpc_duration_seconds",
            &[("method", "Fetch"), ("code", "ok")]
        ),
        2.0
    );
    // Health checks and reflection are not Spool's methods.
    assert!(
        samples
            .iter()
            .filter(|s| s.name.starts_with("spool_rpc_duration_seconds"))
            .all(|s| !s.labels["method"].contains('.'))
    );

    // Group commits: every fsynced produce was covered by some flush.
    assert!(check_histogram(&samples, "spool_log_fsync_duration_seconds", &[]) >= 1.0);
    check_histogram(&samples, "spool_log_flush_records", &[]);
    assert!(value(&samples, "spool_log_flush_records_sum", &[]) >= (records_0 + records_1) as f64);

    // The server.
    assert_eq!(value(&samples, "spool_storage_poisoned", &[]), 0.0);
    assert!(value(&samples, "spool_open_connections", &[]) >= 1.0);
    assert_eq!(
        value(
            &samples,
            "spool_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(value(&samples, "spool_uptime_seconds", &[]) > 0.0);
    assert_eq!(value(&samples, "spool_inflight_bytes", &[]), 0.0);
    assert_eq!(
        value(
            &samples,
            "spool_requests_refused_total",
            &[("reason", "inflight_bytes")]
        ),
        0.0
    );
    // Labels stay within the documented names.
    let allowed = [
        "topic",
        "partition",
        "consumer",
        "queue",
        "state",
        "method",
        "code",
        "le",
        "reason",
        "version",
    ];
    for sample in &samples {
        for key in sample.labels.keys() {
            assert!(allowed.contains(&key.as_str()), "{} has label {key}", sample.name);
        }
    }

    // OpenMetrics, when asked: the traced produce left its trace id as an
    // exemplar, and the page ends with # EOF.
    let answer = scrape::request(
        server.admin_addr.unwrap(),
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    );
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    let open_metrics = parse(&answer.body);
    let exemplars: Vec<&Sample> = matching(&open_metrics, "spool_rpc_duration_seconds_bucket", &produce_ok)
        .filter(|sample| sample.exemplar.is_some())
        .collect();
    assert_eq!(exemplars.len(), 1, "{exemplars:?}");
    assert!(
        exemplars[0]
            .exemplar
            .as_deref()
            .unwrap()
            .starts_with(&format!("{{trace_id=\"{TRACE_ID}\"}} ")),
        "{exemplars:?}"
    );
    // The same numbers in both formats.
    assert_eq!(
        value(&open_metrics, "spool_log_appended_records_total", &topic),
        (records_0 + records_1) as f64
    );
}

#[test]
fn health_pages_answer_and_unknown_requests_are_refused() {
    let server = Spoold::start_temp(&[]);
    let admin = server.admin_addr.unwrap();
    let live = scrape::get(admin, "/healthz");
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));
    let ready = scrape::get(admin, "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let missing = scrape::get(admin, "/admin");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/metrics"), "{}", missing.body);
    let wrong_method = scrape::request(admin, "DELETE", "/metrics", &[]);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "GET, HEAD");
}

#[test]
fn the_admin_listener_can_be_turned_off() {
    let server = Spoold::start_temp(&["admin_listen=off"]);
    assert_eq!(server.admin_addr, None);
    assert!(std::net::TcpStream::connect(server.addr).is_ok());
}

/// A scrape with a thousand partitions (10 topics of 100), timed. The
/// debug build is several times slower than a release build, so the bound
/// here only catches a scrape gone quadratic; docs/performance.md has the
/// release figure.
#[tokio::test]
async fn a_scrape_of_a_thousand_partitions_lists_them_all() {
    let server = Spoold::start_temp(&["preallocate_bytes=4KiB"]);
    let mut client = connect(&server).await;
    for topic in 0..10 {
        client
            .create_topic(v1::CreateTopicRequest {
                name: format!("t{topic}"),
                partitions: 100,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let started = Instant::now();
    let samples = scrape_metrics(&server);
    let elapsed = started.elapsed();
    let partitions = samples
        .iter()
        .filter(|s| s.name == "spool_partition_high_watermark" && s.labels["topic"].starts_with('t'))
        .count();
    assert_eq!(partitions, 1000);
    assert!(elapsed < Duration::from_secs(2), "scrape took {elapsed:?}");
}

/// A `spool-worker` with `--metrics-listen`, after it ran jobs that
/// completed, failed for good and failed with an exit code to retry.
#[tokio::test]
async fn a_worker_serves_its_own_metrics_after_running_jobs() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use spool_proto::v1::jobs_client::JobsClient;

    let server = Spoold::start_temp(&[]);
    let mut jobs = JobsClient::connect(server.url()).await.unwrap();
    let mut ids = Vec::new();
    for payload in ["ok", "ok", "ok", "dead", "retry"] {
        let request = v1::EnqueueRequest {
            queue: "thumbnails".into(),
            payload: Bytes::from(payload),
            attempts_max: Some(1),
            ..Default::default()
        };
        ids.push(jobs.enqueue(request).await.unwrap().into_inner().job_id);
    }
    let script = "read -r p; case \"$p\" in ok) echo done;; dead) exit 100;; *) exit 3;; esac";
    let mut worker = Command::new(common::binary("spool-worker"))
        .args([
            "--server",
            &server.url(),
            "--queue",
            "thumbnails",
            "--concurrency",
            "3",
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--exec", script])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(worker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address: std::net::SocketAddr = line
        .trim()
        .strip_prefix("metrics listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .parse()
        .unwrap();

    // Every job ends (one attempt each), then the metrics say how.
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let job = jobs
                .get_job(v1::GetJobRequest { job_id: id.clone() })
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap();
            if job.state == v1::JobState::Succeeded as i32 || job.state == v1::JobState::Dead as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {job:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let answer = scrape::get(address, "/metrics");
    assert_eq!(answer.status, 200);
    let samples = parse(&answer.body);
    let queue = |code| [("queue", "thumbnails"), ("code", code)];
    assert_eq!(
        value(&samples, "spool_worker_handler_outcomes_total", &queue("ok")),
        3.0
    );
    assert_eq!(
        value(&samples, "spool_worker_handler_outcomes_total", &queue("dead")),
        1.0
    );
    assert_eq!(
        value(&samples, "spool_worker_handler_outcomes_total", &queue("retry")),
        1.0
    );
    assert_eq!(
        value(&samples, "spool_worker_handler_outcomes_total", &queue("stopped")),
        0.0
    );
    assert_eq!(value(&samples, "spool_worker_exit_codes_total", &queue("0")), 3.0);
    assert_eq!(
        value(&samples, "spool_worker_exit_codes_total", &queue("100")),
        1.0
    );
    assert_eq!(value(&samples, "spool_worker_exit_codes_total", &queue("3")), 1.0);
    assert_eq!(
        check_histogram(
            &samples,
            "spool_worker_handler_duration_seconds",
            &[("queue", "thumbnails")]
        ),
        5.0
    );
    assert_eq!(value(&samples, "spool_worker_slots", &[]), 3.0);
    assert_eq!(value(&samples, "spool_worker_slots_busy", &[]), 0.0);
    assert_eq!(scrape::get(address, "/other").status, 404);
    worker.kill().unwrap();
    worker.wait().unwrap();
}

#[tokio::test]
async fn a_known_job_workload_shows_in_the_queue_metrics() {
    use spool_proto::v1::jobs_client::JobsClient;
    let server = Spoold::start_temp(&[]);
    let mut jobs = JobsClient::connect(server.url()).await.unwrap();
    // The first job carries a trace: its observations become exemplars.
    let traced = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for payload in ["a", "b", "c"] {
        jobs.enqueue(v1::EnqueueRequest {
            queue: "mails".into(),
            payload: Bytes::from_static(payload.as_bytes()),
            headers: match payload {
                "a" => [("traceparent".to_owned(), traced.to_owned())].into(),
                _ => Default::default(),
            },
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let claimed = jobs
        .claim(v1::ClaimRequest {
            queues: vec!["mails".into()],
            max_jobs: 2,
            lease_ms: 30_000,
            max_wait_ms: 0,
            worker_id: "w1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(claimed.len(), 2);
    jobs.complete(v1::CompleteRequest {
        job_id: claimed[0].job_id.clone(),
        lease_token: claimed[0].lease_token.clone(),
        result: Bytes::new(),
    })
    .await
    .unwrap();
    jobs.fail(v1::FailRequest {
        job_id: claimed[1].job_id.clone(),
        lease_token: claimed[1].lease_token.clone(),
        error: "bad address".into(),
        retryable: Some(false),
        retry_delay_ms: None,
    })
    .await
    .unwrap();
    // The third job waits, available, long enough to have an age.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let samples = scrape_metrics(&server);
    let queue = [("queue", "mails")];
    for (name, expected) in [
        ("spool_jobs_enqueued_total", 3.0),
        ("spool_jobs_claimed_total", 2.0),
        ("spool_jobs_completed_total", 1.0),
        ("spool_jobs_failed_total", 1.0),
        ("spool_jobs_dead_total", 1.0),
        ("spool_jobs_retried_total", 0.0),
        ("spool_jobs_expired_leases_total", 0.0),
        ("spool_jobs_cancelled_total", 0.0),
        ("spool_queue_leases_held", 0.0),
        ("spool_queue_workers_connected", 1.0),
    ] {
        assert_eq!(value(&samples, name, &queue), expected, "{name}");
    }
    for (state, expected) in [
        ("scheduled", 0.0),
        ("available", 1.0),
        ("running", 0.0),
        ("succeeded", 1.0),
        ("dead", 1.0),
        ("cancelled", 0.0),
    ] {
        assert_eq!(
            value(&samples, "spool_jobs", &[("queue", "mails"), ("state", state)]),
            expected,
            "{state}"
        );
    }
    let age = value(&samples, "spool_queue_oldest_available_age_seconds", &queue);
    assert!((0.05..60.0).contains(&age), "oldest available age {age}");
    assert_eq!(
        check_histogram(&samples, "spool_job_queue_wait_seconds", &queue),
        2.0
    );
    assert_eq!(check_histogram(&samples, "spool_job_run_seconds", &queue), 2.0);
    // Completed and dead jobs both reached their end.
    assert_eq!(
        check_histogram(&samples, "spool_job_end_to_end_seconds", &queue),
        2.0
    );

    // In OpenMetrics each histogram has one exemplar: the traced job's
    // observation, in its bucket, with the job's trace id.
    let answer = scrape::request(
        server.admin_addr.unwrap(),
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    let open_metrics = parse(&answer.body);
    for name in [
        "spool_job_queue_wait_seconds_bucket",
        "spool_job_run_seconds_bucket",
        "spool_job_end_to_end_seconds_bucket",
    ] {
        let exemplars: Vec<&Sample> = matching(&open_metrics, name, &queue)
            .filter(|sample| sample.exemplar.is_some())
            .collect();
        assert_eq!(exemplars.len(), 1, "{name}: {exemplars:?}");
        assert!(
            exemplars[0]
                .exemplar
                .as_deref()
                .unwrap()
                .starts_with("{trace_id=\"0af7651916cd43dd8448eb211c80319c\"} "),
            "{name}: {exemplars:?}"
        );
    }
    assert_eq!(
        check_histogram(&open_metrics, "spool_job_run_seconds", &queue),
        2.0,
        "the same counts in OpenMetrics"
    );
}
