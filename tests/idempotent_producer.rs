//! The idempotent producer against real `spoold` processes: a batch resent
//! after the server was killed with SIGKILL is answered with its original
//! offsets and stored once; a sequence gap and malformed producer fields
//! are refused with clear errors; the Rust producer numbers its batches.

mod common;

use bytes::Bytes;
use common::Spoold;
use spool_format::batch::{self, BatchLimits, ProducerFields, Record};
use spool_proto::v1::{self, log_client::LogClient};
use tonic::Code;
use tonic::transport::Channel;

const LIMITS: BatchLimits = BatchLimits {
    record_bytes_max: 1 << 20,
    batch_bytes_max: 1 << 20,
};

async fn connect(server: &Spoold) -> LogClient<Channel> {
    LogClient::connect(server.url()).await.expect("connect")
}

async fn create(client: &mut LogClient<Channel>, name: &str) {
    client
        .create_topic(v1::CreateTopicRequest {
            name: name.into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .expect("create topic");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A batch of `count` records numbered by `fields`.
fn numbered_batch(tag: &str, count: usize, fields: ProducerFields) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count).map(|i| format!("{tag}/{i}").into_bytes()).collect();
    let records: Vec<Record<'_>> = values.iter().map(|v| Record::value(v)).collect();
    let mut bytes = batch::encode_to_vec(&records, now_ms(), LIMITS).expect("encode");
    batch::stamp_producer(&mut bytes, fields);
    Bytes::from(bytes)
}

fn produce(topic: &str, encoded: Bytes) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        durability: v1::Durability::Fsync as i32,
        data: Some(v1::produce_request::Data::EncodedBatch(encoded)),
    }
}

async fn init_producer(client: &mut LogClient<Channel>, topic: &str) -> ProducerFields {
    let answer = client
        .init_producer(v1::InitProducerRequest { topic: topic.into() })
        .await
        .expect("init producer")
        .into_inner();
    assert!(answer.producer_id >= 1, "{answer:?}");
    assert_eq!(answer.producer_epoch, 0);
    ProducerFields {
        producer_id: answer.producer_id,
        producer_epoch: 0,
        base_sequence: 0,
    }
}

/// Every stored batch of partition 0, as stored.
async fn stored_batches(client: &mut LogClient<Channel>, topic: &str) -> Vec<batch::Batch> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let response = client
            .fetch(v1::FetchRequest {
                topic: topic.into(),
                partition: 0,
                offset,
                max_bytes: 1 << 20,
                return_encoded_batches: true,
                ..Default::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        if response.encoded_batches.is_empty() {
            return out;
        }
        offset = response.next_offset;
        for bytes in response.encoded_batches {
            out.push(batch::Batch::new(bytes).expect("a stored batch"));
        }
    }
}

#[tokio::test]
async fn a_batch_resent_after_a_kill_9_gets_its_original_offsets_and_is_stored_once() {
    let mut server = Spoold::start_temp(&[]);
    let mut client = connect(&server).await;
    create(&mut client, "orders").await;
    let producer = init_producer(&mut client, "orders").await;
    let plain = batch::encode_to_vec(&[Record::value(b"plain")], now_ms(), LIMITS).expect("encode");
    client
        .produce(produce("orders", plain.into()))
        .await
        .expect("plain batch");

    let first = numbered_batch("first", 3, producer);
    let answer = client
        .produce(produce("orders", first.clone()))
        .await
        .expect("produce")
        .into_inner();
    let original = &answer.results[0];
    assert_eq!(
        (original.base_offset, original.last_offset, original.duplicate),
        (1, 3, false)
    );

    // The answer reached the client; the server dies right after it. The
    // producer cannot know that, and sends the batch again.
    server.kill9();
    server.restart();
    let mut client = connect(&server).await;
    let answer = client
        .produce(produce("orders", first.clone()))
        .await
        .expect("resend")
        .into_inner();
    let resent = &answer.results[0];
    assert!(resent.duplicate, "{resent:?}");
    assert_eq!((resent.base_offset, resent.last_offset), (1, 3));

    // The producer goes on where it was.
    let next = numbered_batch(
        "next",
        1,
        ProducerFields {
            base_sequence: 3,
            ..producer
        },
    );
    let answer = client
        .produce(produce("orders", next))
        .await
        .expect("next")
        .into_inner();
    assert_eq!(
        (answer.results[0].base_offset, answer.results[0].duplicate),
        (4, false)
    );

    let stored = stored_batches(&mut client, "orders").await;
    let copies = stored
        .iter()
        .filter(|b| b.header().producer_id == producer.producer_id && b.header().base_sequence == 0)
        .count();
    assert_eq!(copies, 1, "the batch is stored once");
    assert_eq!(stored.iter().map(|b| b.record_count()).sum::<u32>(), 5);
}

#[tokio::test]
async fn an_out_of_order_sequence_is_refused_naming_the_expected_one() {
    let server = Spoold::start_temp(&[]);
    let mut client = connect(&server).await;
    create(&mut client, "orders").await;
    let producer = init_producer(&mut client, "orders").await;
    client
        .produce(produce("orders", numbered_batch("a", 2, producer)))
        .await
        .expect("first batch");
    let gap = numbered_batch(
        "b",
        1,
        ProducerFields {
            base_sequence: 5,
            ..producer
        },
    );
    let status = client.produce(produce("orders", gap)).await.expect_err("a gap");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("must send base sequence 2 next, got 5"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("spool-producer-error")
            .and_then(|v| v.to_str().ok()),
        Some("out-of-order-sequence")
    );

    let unknown = ProducerFields {
        producer_id: producer.producer_id + 1,
        base_sequence: 9,
        ..producer
    };
    let status = client
        .produce(produce("orders", numbered_batch("c", 1, unknown)))
        .await
        .expect_err("an unknown producer not at 0");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status
            .metadata()
            .get("spool-producer-error")
            .and_then(|v| v.to_str().ok()),
        Some("unknown-producer")
    );
}

#[tokio::test]
async fn malformed_producer_fields_are_refused() {
    let server = Spoold::start_temp(&[]);
    let mut client = connect(&server).await;
    create(&mut client, "orders").await;
    for (producer_id, producer_epoch, base_sequence) in [(7, -1, 0), (7, 0, -1), (-1, 0, 0), (-5, -1, -1)] {
        let fields = ProducerFields {
            producer_id,
            producer_epoch,
            base_sequence,
        };
        let status = client
            .produce(produce("orders", numbered_batch("x", 1, fields)))
            .await
            .expect_err("mixed producer fields");
        assert_eq!(status.code(), Code::InvalidArgument, "{fields:?}: {status:?}");
        assert!(
            status
                .message()
                .contains("must be all -1 (a plain batch) or all at least 0"),
            "{}",
            status.message()
        );
    }
    assert!(
        stored_batches(&mut client, "orders").await.is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn the_rust_producer_numbers_each_partitions_batches() {
    let server = Spoold::start_temp(&[]);
    let client = spool_client::Client::connect(server.url())
        .await
        .expect("connect");
    let mut raw = connect(&server).await;
    create(&mut raw, "orders").await;
    let config = spool_client::ProducerConfig::default().idempotent(true);
    let producer = client.producer("orders", config).await.expect("producer");
    for round in 0..3 {
        let records: Vec<_> = (0..round + 1)
            .map(|i| spool_client::Record::new(format!("{round}/{i}")))
            .collect();
        let ack = producer
            .send_batch(spool_client::Target::Partition(0), &records)
            .await
            .expect("send");
        assert!(!ack.duplicate);
    }
    producer.close().await.expect("close");
    let stored = stored_batches(&mut raw, "orders").await;
    let headers: Vec<_> = stored.iter().map(|b| *b.header()).collect();
    assert_eq!(headers.len(), 3);
    assert!(
        headers
            .iter()
            .all(|h| h.producer_id >= 1 && h.producer_id == headers[0].producer_id)
    );
    let sequences: Vec<i32> = headers.iter().map(|h| h.base_sequence).collect();
    assert_eq!(sequences, [0, 1, 3]);
}
