//! A known workload for the dashboard's tests, and HTTP calls of its JSON
//! API: a topic with keyed records and headers, a named checkpoint behind
//! it, queues with available, succeeded and dead jobs whose errors fall in
//! two fingerprint groups, and one job to find by its payload text.

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;
use spool_proto::v1::{self, jobs_client::JobsClient, log_client::LogClient};

use super::Spoold;
use super::scrape;

pub const TOPIC: &str = "orders";
pub const PARTITIONS: u32 = 3;
pub const RECORDS: usize = 30;
pub const CONSUMER: &str = "billing";
pub const QUEUE: &str = "emails";
/// Text only the invoice job's payload holds.
pub const INVOICE_TEXT: &str = "ACME-4242";
pub const INVOICE_KEY: &str = "invoice-4242";
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Errors of the dead jobs: three in one fingerprint group, two in another.
pub const SMTP_FINGERPRINT: &str = "SMTP #: mailbox # unavailable";
pub const SMTP_DEAD: usize = 3;
pub const RESET_DEAD: usize = 2;
pub const SUCCEEDED: usize = 2;
/// Jobs enqueued to the queue: ten welcome mails and the invoice.
pub const ENQUEUED: usize = 11;

/// What the workload made.
#[derive(Debug)]
pub struct Workload {
    pub invoice_id: String,
    pub dead_ids: Vec<String>,
}

fn job(payload: &str) -> v1::EnqueueRequest {
    v1::EnqueueRequest {
        queue: QUEUE.into(),
        payload: Bytes::from(payload.to_owned()),
        content_type: "application/json".into(),
        attempts_max: Some(1),
        ..Default::default()
    }
}

/// Builds the workload on `server`.
pub async fn build(server: &Spoold) -> Workload {
    let mut log = LogClient::connect(server.url()).await.unwrap();
    log.create_topic(v1::CreateTopicRequest {
        name: TOPIC.into(),
        partitions: PARTITIONS,
        ..Default::default()
    })
    .await
    .unwrap();
    let records = (0..RECORDS)
        .map(|i| v1::Record {
            key: Some(Bytes::from(format!("customer-{}", i % 5))),
            value: Some(Bytes::from(format!("{{\"order\":{i},\"total\":{}}}", i * 10))),
            headers: vec![v1::Header {
                key: "region".into(),
                value: Some(Bytes::from(if i % 2 == 0 { "eu" } else { "us" })),
            }],
            timestamp_ms: None,
        })
        .collect();
    log.produce(v1::ProduceRequest {
        topic: TOPIC.into(),
        partition: None,
        durability: v1::Durability::Fsync as i32,
        data: Some(v1::produce_request::Data::Records(v1::RecordList { records })),
    })
    .await
    .unwrap();
    log.commit_checkpoint(v1::CommitCheckpointRequest {
        consumer: CONSUMER.into(),
        topic: TOPIC.into(),
        partitions: (0..PARTITIONS)
            .map(|partition| v1::PartitionCheckpoint {
                partition,
                offset: u64::from(partition == 0),
                commit_time_ms: 0,
            })
            .collect(),
        durability: v1::Durability::Fsync as i32,
    })
    .await
    .unwrap();

    let mut jobs = JobsClient::connect(server.url()).await.unwrap();
    // The failing and completing jobs first: claims take the oldest.
    let mut batch: Vec<v1::EnqueueRequest> = (0..10)
        .map(|i| {
            job(&format!(
                "{{\"to\":\"user{i}@example.com\",\"template\":\"welcome\"}}"
            ))
        })
        .collect();
    let mut invoice = job(&format!("{{\"invoice\":\"{INVOICE_TEXT}\",\"amount\":99}}"));
    invoice.idempotency_key = Some(INVOICE_KEY.into());
    invoice
        .headers
        .insert("traceparent".into(), format!("00-{TRACE_ID}-00f067aa0ba902b7-01"));
    batch.push(invoice);
    let enqueued = jobs
        .enqueue_batch(v1::EnqueueBatchRequest { jobs: batch })
        .await
        .unwrap()
        .into_inner()
        .results;
    let invoice_id = enqueued.last().unwrap().job_id.clone();
    let claimed = jobs
        .claim(v1::ClaimRequest {
            queues: vec![QUEUE.into()],
            max_jobs: (SMTP_DEAD + RESET_DEAD + SUCCEEDED) as u32,
            lease_ms: 60_000,
            max_wait_ms: 0,
            worker_id: "test-worker".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(claimed.len(), SMTP_DEAD + RESET_DEAD + SUCCEEDED);
    let mut dead_ids = Vec::new();
    for (i, job) in claimed.iter().enumerate() {
        if i < SMTP_DEAD + RESET_DEAD {
            let error = if i < SMTP_DEAD {
                format!("SMTP 550: mailbox user{i}@example.com unavailable")
            } else {
                "connection reset by peer".to_owned()
            };
            jobs.fail(v1::FailRequest {
                job_id: job.job_id.clone(),
                lease_token: job.lease_token.clone(),
                error,
                retryable: Some(false),
                retry_delay_ms: None,
            })
            .await
            .unwrap();
            dead_ids.push(job.job_id.clone());
        } else {
            jobs.complete(v1::CompleteRequest {
                job_id: job.job_id.clone(),
                lease_token: job.lease_token.clone(),
                result: Bytes::from_static(b"{\"sent\":true}"),
            })
            .await
            .unwrap();
        }
    }
    Workload { invoice_id, dead_ids }
}

/// Enqueues `count` more jobs to the queue.
pub async fn enqueue(server: &Spoold, count: usize) {
    let mut jobs = JobsClient::connect(server.url()).await.unwrap();
    let batch = (0..count).map(|i| job(&format!("{{\"extra\":{i}}}"))).collect();
    jobs.enqueue_batch(v1::EnqueueBatchRequest { jobs: batch })
        .await
        .unwrap();
}

/// Claims and completes every available job of the queue, as a worker
/// would; returns how many ran.
pub async fn run_available(server: &Spoold) -> usize {
    let mut jobs = JobsClient::connect(server.url()).await.unwrap();
    let mut ran = 0;
    loop {
        let claimed = jobs
            .claim(v1::ClaimRequest {
                queues: vec![QUEUE.into()],
                max_jobs: 100,
                lease_ms: 60_000,
                max_wait_ms: 0,
                worker_id: "test-worker".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        if claimed.is_empty() {
            return ran;
        }
        for job in claimed {
            jobs.complete(v1::CompleteRequest {
                job_id: job.job_id,
                lease_token: job.lease_token,
                result: Bytes::new(),
            })
            .await
            .unwrap();
            ran += 1;
        }
    }
}

/// `GET path` on the admin listener, as JSON; panics unless it is 200.
pub fn get(addr: SocketAddr, path: &str) -> Value {
    let answer = scrape::get(addr, path);
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", answer.body))
}

/// `POST path` with a JSON body; the status and the JSON answer.
pub fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let answer = scrape::send(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json"), ("X-Spool-User", "tester")],
        body.to_string().as_bytes(),
    );
    let value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, value)
}
