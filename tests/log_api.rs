//! End-to-end tests of `spool.v1.Log` against real `spoold` processes,
//! through the generated gRPC client, the way any client sees the server.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Spoold;
use common::small_fs::SmallFs;
use spool_proto::v1::{self, log_client::LogClient};
use tonic::Code;
use tonic::transport::Channel;

async fn connect(server: &Spoold) -> LogClient<Channel> {
    LogClient::connect(server.url())
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

async fn create(client: &mut LogClient<Channel>, name: &str, partitions: u32) {
    client
        .create_topic(v1::CreateTopicRequest {
            name: name.into(),
            partitions,
            ..Default::default()
        })
        .await
        .expect("create topic");
}

fn record(key: Option<&str>, value: &str) -> v1::Record {
    v1::Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![],
        timestamp_ms: None,
    }
}

fn produce_request(
    topic: &str,
    partition: Option<u32>,
    records: Vec<v1::Record>,
    fsync: bool,
) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        partition,
        durability: if fsync {
            v1::Durability::Fsync
        } else {
            v1::Durability::None
        } as i32,
        data: Some(v1::produce_request::Data::Records(v1::RecordList { records })),
    }
}

async fn fetch_all(client: &mut LogClient<Channel>, topic: &str, partition: u32) -> Vec<v1::FetchedRecord> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let response = client
            .fetch(v1::FetchRequest {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 64 * 1024,
                ..Default::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        if response.records.is_empty() {
            return out;
        }
        offset = response.next_offset;
        out.extend(response.records);
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("expected an error").code()
}

#[tokio::test]
async fn produce_and_fetch_across_partitions_with_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "orders", 3).await;
    let records: Vec<_> = (0..30)
        .map(|i| record(Some(&format!("customer-{}", i % 5)), &format!("order-{i}")))
        .collect();
    let response = client
        .produce(produce_request("orders", None, records, true))
        .await
        .unwrap()
        .into_inner();
    assert!(response.results.len() > 1, "keys spread over partitions");
    let mut total = 0;
    for result in &response.results {
        assert_eq!(result.durability, v1::Durability::Fsync as i32);
        let fetched = fetch_all(&mut client, "orders", result.partition).await;
        assert_eq!(fetched.len(), result.record_indexes.len());
        for (record, index) in fetched.iter().zip(&result.record_indexes) {
            assert_eq!(record.value.as_deref(), Some(format!("order-{index}").as_bytes()));
            let key = format!("customer-{}", index % 5);
            assert_eq!(
                spool_proto::partitioner::partition_for_key(key.as_bytes(), 3),
                result.partition,
                "the server uses the shared partitioner"
            );
        }
        total += fetched.len();
    }
    assert_eq!(total, 30);
}

#[tokio::test]
async fn encoded_batches_go_in_and_come_out_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "raw", 1).await;
    let limits = spool_format::batch::BatchLimits {
        record_bytes_max: 1 << 20,
        batch_bytes_max: 1 << 20,
    };
    let values: Vec<Vec<u8>> = (0..100).map(|i| format!("value-{i}").into_bytes()).collect();
    let records: Vec<_> = values.iter().map(|v| spool_format::Record::value(v)).collect();
    let encoded = spool_format::batch::encode_to_vec(&records, 1_700_000_000_000, limits).unwrap();
    for round in 0..2u64 {
        let response = client
            .produce(v1::ProduceRequest {
                topic: "raw".into(),
                partition: Some(0),
                durability: v1::Durability::None as i32,
                data: Some(v1::produce_request::Data::EncodedBatch(Bytes::from(
                    encoded.clone(),
                ))),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.results[0].base_offset, round * 100);
        assert_eq!(response.results[0].last_offset, round * 100 + 99);
    }
    let response = client
        .fetch(v1::FetchRequest {
            topic: "raw".into(),
            partition: 0,
            offset: 150,
            return_encoded_batches: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.records.is_empty());
    let batch = spool_format::Batch::new(response.encoded_batches[0].clone()).unwrap();
    assert_eq!(batch.base_offset(), 100, "whole batches come back");
    assert_eq!(
        &batch.bytes()[12..],
        &encoded[12..],
        "only the base offset was stamped"
    );
    assert_eq!(response.next_offset, 200);

    // A damaged batch is refused and leaves no trace.
    let mut damaged = encoded.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let result = client
        .produce(v1::ProduceRequest {
            topic: "raw".into(),
            partition: Some(0),
            durability: 0,
            data: Some(v1::produce_request::Data::EncodedBatch(Bytes::from(damaged))),
        })
        .await;
    assert_eq!(code_of(result), Code::InvalidArgument);
    let offsets = latest(&mut client, "raw").await;
    assert_eq!(offsets, vec![200]);
}

async fn latest(client: &mut LogClient<Channel>, topic: &str) -> Vec<u64> {
    client
        .list_offsets(v1::ListOffsetsRequest {
            topic: topic.into(),
            partition: None,
            spec: v1::OffsetSpec::Latest as i32,
            timestamp_ms: None,
        })
        .await
        .unwrap()
        .into_inner()
        .offsets
        .iter()
        .map(|o| o.offset)
        .collect()
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    let mut poller = client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        poller
            .fetch(v1::FetchRequest {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 20_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .produce(produce_request("t", Some(0), vec![record(None, "hello")], false))
        .await
        .unwrap();
    let response = poll.await.unwrap();
    assert_eq!(response.records.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the append, not the timeout"
    );

    // With nothing new the poll ends at its deadline with no records.
    let started = Instant::now();
    let response = client
        .fetch(v1::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            max_wait_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.records.is_empty());
    assert_eq!(response.next_offset, 1);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn subscribe_follows_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    client
        .produce(produce_request(
            "t",
            Some(0),
            (0..5).map(|i| record(None, &format!("v{i}"))).collect(),
            false,
        ))
        .await
        .unwrap();
    let mut stream = client
        .subscribe(v1::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            offset: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut producer = client.clone();
    tokio::spawn(async move {
        for i in 5..10 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            producer
                .produce(produce_request(
                    "t",
                    Some(0),
                    vec![record(None, &format!("v{i}"))],
                    false,
                ))
                .await
                .unwrap();
        }
    });
    while seen.len() < 8 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("subscription stalled")
            .unwrap()
            .expect("stream open");
        for record in chunk.records {
            seen.push((
                record.offset,
                String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    let expected: Vec<_> = (2..10).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(seen, expected);
}

/// The client's consumer across a server restart: every partition's
/// subscription fails with UNAVAILABLE, resubscribes from its next offset
/// once the server is back, and no record is lost or repeated.
// Multi-threaded: the client's connections must keep running while the test
// blocks on the server's exit, or the server waits out its shutdown grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_consumer_resubscribes_across_a_restart() {
    use spool_client::{Client, Durability, ProducerConfig, Record, StartPosition};

    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &[]);
    let mut admin = connect(&server).await;
    create(&mut admin, "t", 2).await;
    drop(admin);
    let client = Client::connect(server.url()).await.unwrap();
    let mut consumer = client
        .consumer("t")
        .start(StartPosition::Earliest)
        .follow(true)
        .build()
        .await
        .unwrap();
    let config = ProducerConfig {
        durability: Durability::Fsync,
        ..ProducerConfig::default()
    };
    let produce = |client: Client, range: std::ops::Range<u32>| {
        let config = config.clone();
        async move {
            let producer = client.producer("t", config).await.unwrap();
            for i in range {
                let record = Record {
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(format!("v{i}"))),
                    ..Record::default()
                };
                drop(producer.enqueue(record).await.unwrap());
            }
            producer.close().await.unwrap();
        }
    };
    let mut seen = Vec::new();
    let take = async |consumer: &mut spool_client::Consumer, seen: &mut Vec<String>, until: usize| {
        while seen.len() < until {
            let records = tokio::time::timeout(Duration::from_secs(20), consumer.next_chunk())
                .await
                .expect("the consumer stalled")
                .expect("the stream ended")
                .expect("records");
            for record in records {
                seen.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
    };
    produce(client.clone(), 0..100).await;
    take(&mut consumer, &mut seen, 100).await;

    server.terminate();
    server.restart_on_same_address();
    let client = Client::connect(server.url()).await.unwrap();
    produce(client, 100..200).await;
    take(&mut consumer, &mut seen, 200).await;

    seen.sort_by_key(|value| value[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
    assert_eq!(seen, expected, "every record exactly once");
    let mut positions = consumer.positions();
    positions.sort();
    let total: u64 = positions.iter().map(|&(_, offset)| offset).sum();
    assert_eq!(total, 200);
}

#[tokio::test]
async fn offsets_by_earliest_latest_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    let records: Vec<_> = (0..10)
        .map(|i| v1::Record {
            timestamp_ms: Some(1_000 + i * 100),
            ..record(None, &format!("v{i}"))
        })
        .collect();
    client
        .produce(produce_request("t", Some(0), records, false))
        .await
        .unwrap();
    let ask = |spec: v1::OffsetSpec, timestamp_ms: Option<i64>| v1::ListOffsetsRequest {
        topic: "t".into(),
        partition: Some(0),
        spec: spec as i32,
        timestamp_ms,
    };
    let offset = |r: v1::ListOffsetsResponse| r.offsets[0];
    let earliest = offset(
        client
            .list_offsets(ask(v1::OffsetSpec::Earliest, None))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(earliest.offset, 0);
    let latest = offset(
        client
            .list_offsets(ask(v1::OffsetSpec::Latest, None))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(latest.offset, 10);
    let at = offset(
        client
            .list_offsets(ask(v1::OffsetSpec::Timestamp, Some(1_450)))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!((at.offset, at.timestamp_ms), (5, Some(1_500)));
    let past = offset(
        client
            .list_offsets(ask(v1::OffsetSpec::Timestamp, Some(99_999)))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!((past.offset, past.timestamp_ms), (10, None));
    let missing = client.list_offsets(ask(v1::OffsetSpec::Timestamp, None)).await;
    assert_eq!(code_of(missing), Code::InvalidArgument);
}

#[tokio::test]
async fn checkpoints_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 2).await;
    let commit = |partition, offset| v1::CommitCheckpointRequest {
        consumer: "billing".into(),
        topic: "t".into(),
        partitions: vec![v1::PartitionCheckpoint {
            partition,
            offset,
            commit_time_ms: 0,
        }],
        durability: v1::Durability::Fsync as i32,
    };
    for partition in 0..2 {
        let records = (0..10).map(|i| record(None, &format!("v{i}"))).collect();
        client
            .produce(produce_request("t", Some(partition), records, false))
            .await
            .unwrap();
    }
    client.commit_checkpoint(commit(0, 5)).await.unwrap();
    client.commit_checkpoint(commit(1, 7)).await.unwrap();
    client.commit_checkpoint(commit(0, 6)).await.unwrap();
    server.kill9();
    server.restart();
    let mut client = connect(&server).await;
    let positions = client
        .get_checkpoint(v1::GetCheckpointRequest {
            consumer: "billing".into(),
            topic: "t".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .partitions;
    let positions: Vec<_> = positions.iter().map(|p| (p.partition, p.offset)).collect();
    assert_eq!(positions, vec![(0, 6), (1, 7)]);
    assert_eq!(
        code_of(client.commit_checkpoint(commit(9, 1)).await),
        Code::NotFound
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &["record_bytes_max=1KiB"]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 2).await;
    let create_request = |name: &str| v1::CreateTopicRequest {
        name: name.into(),
        partitions: 1,
        ..Default::default()
    };
    assert_eq!(
        code_of(client.create_topic(create_request("t")).await),
        Code::AlreadyExists
    );
    for name in ["../x", "..", "a/b", "", "__jobs"] {
        assert_eq!(
            code_of(client.create_topic(create_request(name)).await),
            Code::InvalidArgument,
            "{name}"
        );
    }
    assert_eq!(
        code_of(
            client
                .create_topic(v1::CreateTopicRequest {
                    retention_ms: -5,
                    ..create_request("r")
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            client
                .produce(produce_request("nope", None, vec![record(None, "x")], false))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code_of(
            client
                .produce(produce_request("t", Some(7), vec![record(None, "x")], false))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code_of(
            client
                .produce(produce_request(
                    "__checkpoints",
                    None,
                    vec![record(None, "x")],
                    false
                ))
                .await
        ),
        Code::InvalidArgument
    );
    let big = "x".repeat(2000);
    assert_eq!(
        code_of(
            client
                .produce(produce_request("t", Some(0), vec![record(None, &big)], false))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(client.produce(produce_request("t", Some(0), vec![], false)).await),
        Code::InvalidArgument
    );
    let no_data = v1::ProduceRequest {
        topic: "t".into(),
        ..Default::default()
    };
    assert_eq!(code_of(client.produce(no_data).await), Code::InvalidArgument);
    let garbage = v1::ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        durability: 0,
        data: Some(v1::produce_request::Data::EncodedBatch(Bytes::from_static(
            b"not a batch at all",
        ))),
    };
    assert_eq!(code_of(client.produce(garbage).await), Code::InvalidArgument);
    assert_eq!(
        latest(&mut client, "t").await,
        vec![0, 0],
        "nothing was written by bad requests"
    );

    client
        .produce(produce_request("t", Some(0), vec![record(None, "a")], false))
        .await
        .unwrap();
    let fetch = |offset| v1::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset,
        ..Default::default()
    };
    let status = client.fetch(fetch(5)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(status.metadata().get("spool-log-start-offset").unwrap(), "0");
    assert_eq!(status.metadata().get("spool-high-watermark").unwrap(), "1");
    assert_eq!(
        code_of(
            client
                .fetch(v1::FetchRequest {
                    topic: "../etc".into(),
                    ..fetch(0)
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            client
                .fetch(v1::FetchRequest {
                    partition: 3,
                    ..fetch(0)
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code_of(
            client
                .describe_topic(v1::DescribeTopicRequest { name: "nope".into() })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code_of(
            client
                .delete_topic(v1::DeleteTopicRequest {
                    name: "__checkpoints".into()
                })
                .await
        ),
        Code::InvalidArgument
    );
    let subscribe = client
        .subscribe(v1::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            offset: 9,
            ..Default::default()
        })
        .await;
    assert_eq!(code_of(subscribe), Code::OutOfRange);
    // The server is still healthy after all of that.
    client
        .produce(produce_request("t", Some(0), vec![record(None, "b")], true))
        .await
        .unwrap();
}

#[tokio::test]
async fn kill_9_under_fsync_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &["segment_bytes=64KiB"]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 2).await;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut producers = Vec::new();
    for p in 0..4u32 {
        let mut client = client.clone();
        let acked_tx = acked_tx.clone();
        producers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let value = format!("p{p}-{i}-{}", "x".repeat((i % 200) as usize));
                let request = produce_request("t", Some(p % 2), vec![record(None, &value)], true);
                match client.produce(request).await {
                    Ok(response) => {
                        let result = &response.into_inner().results[0];
                        assert_eq!(result.durability, v1::Durability::Fsync as i32);
                        let _ = acked_tx.send((result.partition, result.base_offset, value));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.kill9();
    for producer in producers {
        let _ = producer.await;
    }
    drop(acked_tx);
    let mut acked = Vec::new();
    while let Some(ack) = acked_rx.recv().await {
        acked.push(ack);
    }
    assert!(acked.len() > 10, "the load produced too little: {}", acked.len());

    server.restart();
    let mut client = connect(&server).await;
    for partition in 0..2 {
        let fetched = fetch_all(&mut client, "t", partition).await;
        for (i, record) in fetched.iter().enumerate() {
            assert_eq!(record.offset, i as u64, "gap in partition {partition}");
        }
        for (_, offset, value) in acked.iter().filter(|(p, _, _)| *p == partition) {
            let stored = &fetched[*offset as usize];
            assert_eq!(
                stored.value.as_deref(),
                Some(value.as_bytes()),
                "acknowledged record changed"
            );
        }
    }
}

// Multi-threaded: the test blocks a thread waiting for the process to exit
// while the client's connection task must keep running to see it go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    client
        .produce(produce_request("t", Some(0), vec![record(None, "kept")], false))
        .await
        .unwrap();
    // A subscriber must not hold the shutdown up.
    let mut stream = client
        .subscribe(v1::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(
        dir.path().join("clean-shutdown").exists(),
        "the clean-shutdown marker is written"
    );
    let end = stream.message().await;
    assert!(end.is_err() || end.unwrap().is_none(), "the subscription ended");
    server.restart();
    let mut client = connect(&server).await;
    let fetched = fetch_all(&mut client, "t", 0).await;
    assert_eq!(fetched[0].value.as_deref(), Some(&b"kept"[..]));
}

#[tokio::test]
async fn a_slow_subscriber_does_not_grow_server_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spoold::start(dir.path(), &[]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    // A backlog of about 160 MB.
    let value = "v".repeat(1000);
    for _ in 0..40 {
        let records: Vec<_> = (0..4000).map(|_| record(None, &value)).collect();
        client
            .produce(produce_request("t", Some(0), records, false))
            .await
            .unwrap();
    }
    let before = server.anonymous_rss_bytes();
    // Subscribe and read one chunk, then stop reading.
    let mut stream = client
        .subscribe(v1::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.anonymous_rss_bytes();
    assert!(
        after < before + (64 << 20),
        "server memory grew from {} MiB to {} MiB with a stalled subscriber",
        before >> 20,
        after >> 20
    );
    drop(stream);
}

/// A server whose batches may be `batch` large, with `inflight` bytes of
/// produce room in total and per connection, waited for at most `wait`.
fn server_with_inflight(dir: &std::path::Path, batch: &str, inflight: &str, wait: &str) -> Spoold {
    Spoold::start(
        dir,
        &[
            &format!("batch_bytes_max={batch}"),
            &format!("inflight_bytes_max={inflight}"),
            &format!("connection_inflight_bytes_max={inflight}"),
            &format!("inflight_wait_ms={wait}"),
        ],
    )
}

/// Sends `count` FSYNC produce requests of four records of `value_bytes` to
/// partition 0 of "t" at once on one connection; their answers.
async fn produce_at_once(
    client: &LogClient<Channel>,
    count: usize,
    value_bytes: usize,
) -> Vec<Result<tonic::Response<v1::ProduceResponse>, tonic::Status>> {
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let requests: Vec<_> = (0..count)
        .map(|_| {
            let mut client = client.clone();
            let record = v1::Record {
                value: Some(value.clone()),
                ..Default::default()
            };
            let records = vec![record; 4];
            tokio::spawn(async move { client.produce(produce_request("t", Some(0), records, true)).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(count);
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

/// Produce requests waiting for in-flight room wait before the server reads
/// them: 64 requests of 4 MiB at once on one connection, against an 8 MiB
/// in-flight limit, all answered, while the server's memory grows by far
/// less than the 256 MiB they carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_requests_waiting_for_room_are_not_read_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_inflight(dir.path(), "4MiB", "8MiB", "120s");
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    let before = server.anonymous_rss_bytes();
    let pid = server.pid();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = std::sync::Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(common::anonymous_rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    for answer in produce_at_once(&client, 64, (1 << 20) - 64).await {
        answer.expect("every request is admitted in time");
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(latest(&mut client, "t").await, vec![256]);
    assert!(
        peak < before + (64 << 20),
        "server memory went from {} MiB to {} MiB with 256 MiB of requests waiting",
        before >> 20,
        peak >> 20
    );
}

/// A producer faster than the server's in-flight limit hears
/// RESOURCE_EXHAUSTED once its wait for room runs out, and a refused request
/// appends nothing: the log holds exactly the records of the answered ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_in_flight_room_are_refused_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_inflight(dir.path(), "1MiB", "1MiB", "1ms");
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    let (mut answered, mut refused) = (0u64, 0u64);
    for answer in produce_at_once(&client, 32, 200 << 10).await {
        match answer {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("no room"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "32 requests of 800 KiB at once fit a 1 MiB limit");
    assert!(answered > 0);
    assert_eq!(latest(&mut client, "t").await, vec![answered * 4]);
}

/// Needs root, to mount a small file system to fill (CI runs as root);
/// without it the test fails and says so.
#[tokio::test]
async fn a_full_disk_is_resource_exhausted_and_loses_nothing() {
    let small = SmallFs::mount(24);
    let data = small.path().to_owned();
    let server = Spoold::start(&data, &["segment_bytes=4MiB", "preallocate_bytes=1MiB"]);
    let mut client = connect(&server).await;
    create(&mut client, "t", 1).await;
    let value = "d".repeat(50_000);
    let mut acked = 0u64;
    let status = loop {
        let records: Vec<_> = (0..10).map(|_| record(None, &value)).collect();
        match client.produce(produce_request("t", Some(0), records, true)).await {
            Ok(_) => acked += 10,
            Err(status) => break status,
        }
        assert!(acked < 10_000, "the disk never filled");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let fetched = fetch_all(&mut client, "t", 0).await;
    assert_eq!(
        fetched.len() as u64,
        acked,
        "every acknowledged record is readable"
    );
    assert!(
        fetched
            .iter()
            .all(|r| r.value.as_deref() == Some(value.as_bytes()))
    );
}
