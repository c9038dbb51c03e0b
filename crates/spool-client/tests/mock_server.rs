//! The producer and consumer against an in-process mock of the Log service:
//! batching, acknowledgements, order, retries, backpressure and decoding,
//! without a real `spoold`. The mock keeps each partition as a list of the
//! encoded batches it accepted, stamped with their base offsets, as the
//! real server stores them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use spool_client::proto::log_server::{Log, LogServer};
use spool_client::proto::{self as v1};
use spool_client::{
    Client, ConsumedRecord, Durability, Error, ProducerConfig, Record, SizeLimit, StartPosition, Target,
    decode_batches,
};
use spool_format::batch::{self, BatchLimits};
use spool_proto::partitioner::partition_for_key;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct State {
    partitions: u32,
    /// Per partition: stored batches, base offset stamped.
    logs: Vec<Vec<Bytes>>,
    high_watermarks: Vec<u64>,
    produce_calls: u32,
    /// The next produce calls answer UNAVAILABLE (without appending).
    unavailable_next: u32,
    /// Every produce call answers INVALID_ARGUMENT.
    refuse_all: bool,
    /// What GetServerInfo answers; `None` answers UNIMPLEMENTED, as a
    /// server older than the call does.
    server_info: Option<v1::GetServerInfoResponse>,
}

#[derive(Debug, Clone)]
struct Mock {
    state: Arc<Mutex<State>>,
    /// Produce waits for a permit when set: lets a test hold requests.
    gate: Option<Arc<Semaphore>>,
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in the mock"))
}

#[tonic::async_trait]
impl Log for Mock {
    async fn create_topic(
        &self,
        _: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        unimplemented()
    }

    async fn delete_topic(
        &self,
        _: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        unimplemented()
    }

    async fn list_topics(
        &self,
        _: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        unimplemented()
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        let state = self.state.lock().unwrap();
        Ok(Response::new(v1::DescribeTopicResponse {
            topic: Some(v1::TopicConfig {
                name: request.into_inner().name,
                partitions: state.partitions,
                ..Default::default()
            }),
            partitions: Vec::new(),
        }))
    }

    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.produce_calls += 1;
        if state.refuse_all {
            return Err(Status::invalid_argument("refused by the mock"));
        }
        if state.unavailable_next > 0 {
            state.unavailable_next -= 1;
            return Err(Status::unavailable("the mock is restarting"));
        }
        let partition = request.partition.expect("the producer names the partition");
        let Some(v1::produce_request::Data::EncodedBatch(encoded)) = request.data else {
            panic!("the producer sends encoded batches");
        };
        let limits = BatchLimits {
            record_bytes_max: 1 << 20,
            batch_bytes_max: 8 << 20,
        };
        let header =
            batch::validate_encoded(&encoded, limits).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let base_offset = state.high_watermarks[partition as usize];
        let mut stored = encoded.to_vec();
        batch::stamp_base_offset(&mut stored, base_offset);
        state.logs[partition as usize].push(Bytes::from(stored));
        state.high_watermarks[partition as usize] += u64::from(header.record_count);
        Ok(Response::new(v1::ProduceResponse {
            results: vec![v1::ProducePartitionResult {
                partition,
                base_offset,
                last_offset: base_offset + u64::from(header.record_count) - 1,
                durability: match request.durability {
                    2 => v1::Durability::Fsync as i32,
                    _ => v1::Durability::None as i32,
                },
                log_append_time_ms: 0,
                record_indexes: Vec::new(),
                duplicate: false,
            }],
        }))
    }

    async fn fetch(&self, _: Request<v1::FetchRequest>) -> Result<Response<v1::FetchResponse>, Status> {
        unimplemented()
    }

    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let state = self.state.lock().unwrap();
        let partition = request.partition;
        let high_watermark = state.high_watermarks[partition as usize];
        // One chunk per stored batch that holds offsets at or after the one
        // asked for, whole batches as the real server sends them; then the
        // stream stays open, like a subscription following the tail.
        let chunks: Vec<Result<v1::SubscribeResponse, Status>> = state.logs[partition as usize]
            .iter()
            .filter_map(|stored| {
                let header = batch::BatchHeader::parse(stored).unwrap();
                (header.next_offset() > request.offset).then(|| {
                    Ok(v1::SubscribeResponse {
                        partition,
                        records: Vec::new(),
                        encoded_batches: vec![stored.clone()],
                        next_offset: header.next_offset(),
                        high_watermark,
                        log_start_offset: 0,
                    })
                })
            })
            .collect();
        Ok(Response::new(Box::pin(
            tokio_stream::iter(chunks).chain(tokio_stream::pending()),
        )))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let state = self.state.lock().unwrap();
        let latest = request.spec == v1::OffsetSpec::Latest as i32;
        Ok(Response::new(v1::ListOffsetsResponse {
            offsets: (0..state.partitions)
                .map(|partition| v1::PartitionOffset {
                    partition,
                    offset: if latest {
                        state.high_watermarks[partition as usize]
                    } else {
                        0
                    },
                    timestamp_ms: None,
                })
                .collect(),
        }))
    }

    async fn commit_checkpoint(
        &self,
        _: Request<v1::CommitCheckpointRequest>,
    ) -> Result<Response<v1::CommitCheckpointResponse>, Status> {
        unimplemented()
    }

    async fn get_checkpoint(
        &self,
        _: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        unimplemented()
    }

    async fn get_server_info(
        &self,
        _: Request<v1::GetServerInfoRequest>,
    ) -> Result<Response<v1::GetServerInfoResponse>, Status> {
        match self.state.lock().unwrap().server_info.clone() {
            Some(info) => Ok(Response::new(info)),
            None => unimplemented(),
        }
    }

    async fn init_producer(
        &self,
        _: Request<v1::InitProducerRequest>,
    ) -> Result<Response<v1::InitProducerResponse>, Status> {
        unimplemented()
    }
}

/// Starts a mock with `partitions` partitions on a loopback port.
async fn start(partitions: u32, gate: Option<Arc<Semaphore>>) -> (Client, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State {
        partitions,
        logs: vec![Vec::new(); partitions as usize],
        high_watermarks: vec![0; partitions as usize],
        ..State::default()
    }));
    let mock = Mock {
        state: state.clone(),
        gate,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogServer::new(mock))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = Client::connect_retrying(format!("http://{address}"), Duration::from_secs(5))
        .await
        .unwrap();
    (client, state)
}

/// Every record stored in `partition`, in offset order.
fn stored_records(state: &Mutex<State>, partition: u32) -> Vec<ConsumedRecord> {
    let state = state.lock().unwrap();
    let mut records = Vec::new();
    decode_batches(
        partition,
        state.logs[partition as usize].clone(),
        0,
        None,
        &mut records,
    )
    .unwrap();
    records
}

#[tokio::test]
async fn the_producer_batches_acknowledges_and_keeps_each_partition_in_order() {
    let (client, state) = start(3, None).await;
    let producer = client
        .producer("orders", ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    let mut sent = Vec::new();
    for i in 0..10_000u32 {
        let record = if i % 2 == 0 {
            Record::new(format!("keyed {i}")).with_key(format!("customer-{}", i % 7))
        } else {
            Record::new(format!("unkeyed {i}"))
        };
        sent.push(record.clone());
        deliveries.push(producer.enqueue(record).await.unwrap());
    }
    let mut acks = Vec::new();
    for delivery in deliveries {
        acks.push(delivery.await.unwrap());
    }
    producer.close().await.unwrap();

    for (record, ack) in sent.iter().zip(&acks) {
        if let Some(key) = &record.key {
            assert_eq!(
                ack.partition,
                partition_for_key(key, 3),
                "keyed records go where the server puts them"
            );
        }
    }
    // Each ack names the record stored at that offset, and each partition
    // holds its records in the order they were enqueued.
    for partition in 0..3 {
        let stored = stored_records(&state, partition);
        let expected: Vec<&Record> = sent
            .iter()
            .zip(&acks)
            .filter(|(_, ack)| ack.partition == partition)
            .map(|(record, _)| record)
            .collect();
        assert_eq!(stored.len(), expected.len());
        for (offset, (stored, expected)) in stored.iter().zip(expected).enumerate() {
            assert_eq!(stored.offset, offset as u64);
            assert_eq!(stored.value, expected.value);
            assert_eq!(stored.key, expected.key);
        }
    }
    let calls = state.lock().unwrap().produce_calls;
    assert!(
        calls < 100,
        "10,000 small records took {calls} requests: not batched"
    );
}

#[tokio::test]
async fn unavailable_is_retried_and_other_errors_fail_the_records() {
    let (client, state) = start(1, None).await;
    state.lock().unwrap().unavailable_next = 2;
    let producer = client
        .producer(
            "orders",
            ProducerConfig {
                retry_backoff_ms: 1,
                durability: Durability::Fsync,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    let ack = producer.send(Record::new("survives a restart")).await.unwrap();
    assert_eq!((ack.partition, ack.offset), (0, 0));
    assert_eq!(state.lock().unwrap().produce_calls, 3);

    let batch = producer
        .send_batch(Target::Partition(0), &[Record::new("a"), Record::new("b")])
        .await
        .unwrap();
    assert_eq!(
        (batch.base_offset, batch.last_offset, batch.durability),
        (1, 2, Durability::Fsync)
    );

    state.lock().unwrap().refuse_all = true;
    let delivery = producer.enqueue(Record::new("refused")).await.unwrap();
    assert!(matches!(delivery.await, Err(Error::InvalidArgument { .. })));
    let dropped = producer.enqueue(Record::new("refused, unwatched")).await.unwrap();
    drop(dropped);
    assert!(
        matches!(producer.flush().await, Err(Error::InvalidArgument { .. })),
        "flush reports failures of records nobody awaited"
    );
    assert!(matches!(
        producer.enqueue_to(5, Record::new("x")).await,
        Err(Error::UnknownPartition {
            partition: 5,
            partitions: 1,
            ..
        })
    ));
}

#[tokio::test]
async fn a_full_queue_holds_the_caller_until_the_server_answers() {
    let gate = Arc::new(Semaphore::new(0));
    let (client, state) = start(1, Some(gate.clone())).await;
    let producer = client
        .producer(
            "orders",
            ProducerConfig {
                batch_bytes_max: 1024,
                queued_batches_max: 1,
                linger_ms: 0,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    // One batch in flight (held by the gate), one closed in the queue, one
    // open: after that, enqueue must wait.
    let mut accepted = 0;
    let mut deliveries = Vec::new();
    loop {
        let record = Record::new(vec![b'x'; 200]);
        match tokio::time::timeout(Duration::from_millis(200), producer.enqueue(record)).await {
            Ok(delivery) => {
                deliveries.push(delivery.unwrap());
                accepted += 1;
                assert!(accepted < 100, "enqueue never waited");
            }
            Err(_) => break,
        }
    }
    assert!(accepted >= 5, "accepted only {accepted} records before waiting");
    gate.add_permits(1000);
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await.unwrap();
    assert_eq!(stored_records(&state, 0).len(), accepted);
}

#[tokio::test]
async fn the_consumer_decodes_batches_from_an_offset_to_the_end() {
    let (client, state) = start(2, None).await;
    let producer = client
        .producer("orders", ProducerConfig::default())
        .await
        .unwrap();
    for chunk in 0..3 {
        let records: Vec<Record> = (0..4)
            .map(|i| Record::new(format!("p0-{}", chunk * 4 + i)))
            .collect();
        producer.send_batch(Target::Partition(0), &records).await.unwrap();
    }
    producer
        .send_batch(
            Target::Partition(1),
            &[Record::new("p1-0").with_header("trace", "t")],
        )
        .await
        .unwrap();
    assert_eq!(state.lock().unwrap().high_watermarks, [12, 1]);

    // From offset 5 of partition 0: the first batch is skipped, the second
    // one is cut, and the stream ends at the high watermark seen at start.
    let consumer = client
        .consumer("orders")
        .partition(0)
        .start(StartPosition::Offset(5))
        .follow(false)
        .build()
        .await
        .unwrap();
    let records: Vec<ConsumedRecord> = consumer.map(Result::unwrap).collect().await;
    let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
    assert_eq!(offsets, (5..12).collect::<Vec<_>>());
    assert_eq!(records[0].value.as_deref(), Some(&b"p0-5"[..]));

    // Every partition from the earliest: positions end at the watermarks.
    let mut consumer = client.consumer("orders").follow(false).build().await.unwrap();
    let mut count = 0;
    while let Some(chunk) = consumer.next_chunk().await {
        count += chunk.unwrap().len();
    }
    assert_eq!(count, 13);
    assert_eq!(consumer.positions(), [(0, 12), (1, 1)]);
    assert_eq!(consumer.remaining(), Some(0));

    let out_of_range = client
        .consumer("orders")
        .start(StartPosition::Offset(13))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            out_of_range,
            Error::OffsetOutOfRange {
                offset: 13,
                latest: 12,
                ..
            }
        ),
        "{out_of_range:?}"
    );
}

#[tokio::test]
async fn a_record_over_the_server_s_limits_is_refused_before_it_is_sent() {
    let (client, state) = start(1, None).await;
    state.lock().unwrap().server_info = Some(v1::GetServerInfoResponse {
        version: "mock".into(),
        request_bytes_max: 16 << 20,
        record_bytes_max: 1 << 10,
        batch_bytes_max: 8 << 10,
        fetch_bytes_max: 3 << 20,
        job_payload_bytes_max: 512,
        default_durability: v1::Durability::Fsync as i32,
    });
    let config = ProducerConfig {
        batch_bytes_max: 1 << 20,
        linger_ms: 0,
        ..ProducerConfig::default()
    };
    let producer = client.producer("orders", config).await.unwrap();
    assert_eq!(
        producer.limits().batch_bytes_max(),
        8 << 10,
        "batches held to the server's limit"
    );

    let error = producer
        .enqueue(Record::new(vec![0u8; 2 << 10]))
        .await
        .unwrap_err();
    match &error {
        Error::RecordTooLarge { exceeded } => {
            assert_eq!(exceeded.len(), 1, "{error}");
            assert_eq!(exceeded[0].limit, SizeLimit::RecordBytesMax);
            assert_eq!(exceeded[0].limit.server_key(), Some("record_bytes_max"));
            assert_eq!(exceeded[0].max_bytes, 1 << 10);
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(
        error.to_string().contains("the server's record_bytes_max"),
        "{error}"
    );
    let too_many = vec![Record::new(vec![0u8; 900]); 10];
    assert!(matches!(
        producer.send_batch(Target::Partition(0), &too_many).await,
        Err(Error::Encode { .. })
    ));

    // Records within the limits still go, in batches the server takes.
    let mut deliveries = Vec::new();
    for _ in 0..50 {
        deliveries.push(producer.enqueue(Record::new(vec![1u8; 900])).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await.unwrap();
    let state = state.lock().unwrap();
    assert!(state.logs[0].iter().all(|batch| batch.len() <= 8 << 10));
    assert_eq!(state.high_watermarks[0], 50, "the refused record was never sent");
}
