//! End-to-end tests of the metrics history: a real `spoold` samples its
//! own metrics into `__metrics`; after a known workload the history read
//! over gRPC and over the admin listener's `/api/v1/history` gives that
//! workload's numbers, and the samples outlive a `kill -9`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Spoold, scrape};
use spool_proto::v1::{self, log_client::LogClient, metrics_client::MetricsClient};
use tonic::Code;

const TOPIC: &str = "orders";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn create_topic(server: &Spoold) {
    let mut client = LogClient::connect(server.url()).await.unwrap();
    client
        .create_topic(v1::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn produce(server: &Spoold, count: usize) {
    let mut client = LogClient::connect(server.url()).await.unwrap();
    let records = (0..count)
        .map(|_| v1::Record {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: None,
        })
        .collect();
    client
        .produce(v1::ProduceRequest {
            topic: TOPIC.into(),
            partition: Some(0),
            durability: v1::Durability::Fsync as i32,
            data: Some(v1::produce_request::Data::Records(v1::RecordList { records })),
        })
        .await
        .unwrap();
}

async fn read(
    server: &Spoold,
    series: &[&str],
    from_time_ms: i64,
) -> Result<v1::GetMetricsHistoryResponse, tonic::Status> {
    let mut client = MetricsClient::connect(server.url()).await.unwrap();
    client
        .get_metrics_history(v1::GetMetricsHistoryRequest {
            series: series.iter().map(|s| (*s).to_owned()).collect(),
            from_time_ms,
            to_time_ms: 0,
            step_ms: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The points of the one series of the result at `index`.
fn points(answer: &v1::GetMetricsHistoryResponse, index: usize) -> Vec<(i64, f64)> {
    let result = &answer.results[index];
    match result.series.as_slice() {
        [] => Vec::new(),
        [series] => series.points.iter().map(|p| (p.time_ms, p.value)).collect(),
        more => panic!("{}: {} series", result.expression, more.len()),
    }
}

/// Reads until `done` holds for the answer, or fails after 30 s.
async fn read_until(
    server: &Spoold,
    series: &[&str],
    from_time_ms: i64,
    done: impl Fn(&v1::GetMetricsHistoryResponse) -> bool,
) -> v1::GetMetricsHistoryResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = read(server, series, from_time_ms).await.unwrap();
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "the history never showed it: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last(points: &[(i64, f64)]) -> Option<f64> {
    points.last().map(|&(_, value)| value)
}

#[tokio::test]
async fn a_known_workload_is_in_the_history_and_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &["metrics_history_interval_ms=200ms"]);
    let started = now_ms();
    create_topic(&server).await;
    let mut client = LogClient::connect(server.url()).await.unwrap();
    for _ in 0..3 {
        produce(&server, 100).await;
    }
    client
        .commit_checkpoint(v1::CommitCheckpointRequest {
            consumer: "billing".into(),
            topic: TOPIC.into(),
            partitions: vec![v1::PartitionCheckpoint {
                partition: 0,
                offset: 100,
                commit_time_ms: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap();

    let counter = r#"spool_log_appended_records_total{topic="orders"}"#;
    let increase = r#"increase(spool_log_appended_records_total{topic="orders"})"#;
    let lag = r#"spool_consumer_lag_records{consumer="billing"}"#;
    let answer = read_until(&server, &[counter, increase, lag], started - 1_000, |answer| {
        last(&points(answer, 0)) == Some(300.0) && last(&points(answer, 2)) == Some(200.0)
    })
    .await;
    let increases: f64 = points(&answer, 1).iter().map(|(_, v)| v).sum();
    assert_eq!(increases, 300.0, "{answer:?}");
    assert_eq!(answer.interval_ms, 200);
    assert!(answer.step_ms >= 200);
    assert!(answer.oldest_sample_time_ms >= started - 1_000 && answer.oldest_sample_time_ms <= now_ms());
    assert!(
        answer.results[0].series[0]
            .labels
            .iter()
            .any(|l| l.name == "topic" && l.value == TOPIC)
    );

    // The same read over HTTP, with a relative range and a step.
    let path =
        "/api/v1/history?series=spool_log_appended_records_total%7Btopic%3D%22orders%22%7D&from=-30s&step=1s";
    // Points fall on whole seconds: wait for the first one after the
    // workload's samples.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (http, json) = loop {
        let http = scrape::get(server.admin_addr.unwrap(), path);
        assert_eq!(http.status, 200, "{}", http.body);
        let json: serde_json::Value = serde_json::from_str(&http.body).unwrap();
        if !json["results"][0]["series"].as_array().unwrap().is_empty() {
            break (http, json);
        }
        assert!(Instant::now() < deadline, "{}", http.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(http.headers["content-type"], "application/json");
    assert_eq!(json["step_ms"], 1_000);
    let series = &json["results"][0]["series"][0];
    assert_eq!(series["labels"]["topic"], TOPIC, "{}", http.body);
    let http_points = series["points"].as_array().unwrap();
    assert_eq!(http_points.last().unwrap()[1], 300.0, "{}", http.body);

    // The same through the CLI: a table with a column per series, and JSON.
    let text = server.ok(&[
        "metrics", "history", counter, lag, "--since", "1m", "--step", "1s",
    ]);
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("TIME") && header.contains(counter) && header.contains(lag),
        "{text}"
    );
    let last_row: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(last_row[1..], ["300", "200"], "{text}");
    let lines = server.json_lines(&[
        "metrics", "history", counter, "--since", "1m", "--step", "1s", "--format", "json",
    ]);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["labels"]["topic"], TOPIC);
    assert_eq!(lines[0]["points"].as_array().unwrap().last().unwrap()[1], 300.0);
    let error = server.fails(&["metrics", "history", "rate(spool_log_appended_records_total"]);
    assert!(error.contains("expected ')'"), "{error}");

    // Killed and restarted: what was sampled is still there, and the new
    // process's counts start from zero without breaking the increases.
    server.kill9();
    server.restart();
    produce(&server, 50).await;
    let answer = read_until(&server, &[counter, increase], started - 1_000, |answer| {
        last(&points(answer, 0)) == Some(50.0)
    })
    .await;
    let counter_points = points(&answer, 0);
    assert!(
        counter_points.iter().any(|&(_, v)| v == 300.0),
        "{counter_points:?}"
    );
    let increases: f64 = points(&answer, 1).iter().map(|(_, v)| v).sum();
    assert_eq!(increases, 350.0, "{answer:?}");
}

#[tokio::test]
async fn bad_reads_are_refused_and_a_server_without_history_says_so() {
    let server = Spoold::start_temp(&["metrics_history_interval_ms=200ms"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = read(&server, &["rate(spool_no_such_family_total)"], 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("no recorded family is named"),
        "{refused:?}"
    );
    let refused = read(&server, &["rate(spool_log_appended_records_total"], 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("expected ')'"), "{refused:?}");
    let refused = read(&server, &[], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let http = scrape::get(server.admin_addr.unwrap(), "/api/v1/history?series=x&from=soon");
    assert_eq!(http.status, 400);
    assert!(http.body.contains("parameter from"), "{}", http.body);

    let quiet = Spoold::start_temp(&["metrics_history_interval_ms=0"]);
    let refused = read(&quiet, &["spool_open_connections"], 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("metrics_history_interval_ms = 0"),
        "{refused:?}"
    );
    let http = scrape::get(
        quiet.admin_addr.unwrap(),
        "/api/v1/history?series=spool_open_connections",
    );
    assert_eq!(http.status, 409, "{}", http.body);
}

/// A keyframe of the history is one record larger than a small client
/// record limit: the limit an operator sets for clients' topics must not
/// stop the server from keeping its own history (every sample failed
/// before internal topics were exempt, so the counter never showed).
#[tokio::test]
async fn the_history_is_kept_under_a_record_limit_smaller_than_a_sample() {
    let server = Spoold::start_temp(&["metrics_history_interval_ms=200ms", "record_bytes_max=512B"]);
    let started = now_ms();
    create_topic(&server).await;
    produce(&server, 42).await;
    let counter = r#"spool_log_appended_records_total{topic="orders"}"#;
    read_until(&server, &[counter], started - 1_000, |answer| {
        last(&points(answer, 0)) == Some(42.0)
    })
    .await;
}
