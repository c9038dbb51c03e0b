//! Cluster mode with three real `spoold` processes: an idempotent Rust
//! producer sends one-record batches while the partition's leader is
//! killed with SIGKILL. Its retries (after lost answers, timeouts and the
//! failover) must store every record once: no value appears twice in the
//! committed log, and every acknowledged record is at its offset.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::cluster::{TestCluster, runtime};
use spool_client::{Durability, ProducerConfig, Record, Target};

const TOPIC: &str = "idempotent";
const RECORDS: usize = 400;

#[test]
fn an_idempotent_producer_stores_each_record_once_across_a_leader_kill() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        let leader = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        // Through a node that survives; the client follows leader hints.
        let via = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("three nodes");
        let client = cluster.client(via).await?;
        let config = ProducerConfig {
            durability: Durability::Quorum,
            retries_max: 100,
            retry_backoff_ms: 20,
            retry_backoff_max_ms: 200,
            ..ProducerConfig::default()
        }
        .idempotent(true);
        let producer = client.producer(TOPIC, config).await?;
        let sending = tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..RECORDS {
                let value = format!("value-{i}");
                let answer = producer
                    .send_batch(Target::Partition(0), &[Record::new(value.clone())])
                    .await;
                acks.push((value, answer.map(|ack| ack.base_offset)));
            }
            acks
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        ensure!(
            !sending.is_finished(),
            "the leader must die while the producer sends"
        );
        cluster.kill9(leader);
        let acks = sending.await?;

        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        let acked: Vec<_> = acks
            .iter()
            .filter_map(|(v, a)| a.as_ref().ok().map(|o| (v, *o)))
            .collect();
        let failed = acks.len() - acked.len();
        ensure!(
            failed == 0,
            "{failed} sends failed for good: {:?}",
            acks.iter().find(|(_, a)| a.is_err())
        );
        for (value, offset) in &acked {
            cluster.record_ack(TOPIC, 0, *offset, value);
        }
        cluster.check(&alive).await?;
        let end = cluster.latest(alive[0], TOPIC, 0).await?;
        let log = cluster.committed_log(alive[0], TOPIC, 0, end).await?;
        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        for value in log.values() {
            *copies.entry(value.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(twice.is_empty(), "records stored more than once: {twice:?}");
        ensure!(
            log.len() == RECORDS,
            "{} records stored, {RECORDS} sent",
            log.len()
        );
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
