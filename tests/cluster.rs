//! Cluster mode with three real `spoold` processes on 127.0.0.1: a
//! replicated topic, produces at QUORUM through the Rust client (which
//! follows leader hints), `kill -9` of the partition's leader, a new
//! leader serving, the killed node restarted and catching up. Afterwards
//! every acknowledged record is at its acknowledged offset in every
//! node's committed log, offsets are dense, and the three logs are the
//! same (`TestCluster::check`).

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::Spoold;
use common::cluster::{TestCluster, runtime};
use spool_client::{Client, Durability, Error, Record};

const TOPIC: &str = "replicated";

#[test]
fn a_killed_partition_leader_is_replaced_and_every_acknowledged_record_survives() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = TestCluster::start(3);
    runtime.block_on(async {
        let admin = cluster.client(2).await?;
        let created = admin
            .create_topic(spool_client::NewTopic::new(TOPIC, 1))
            .await
            .context("creating the topic through node 2")?;
        ensure!(created.partitions == 1);
        // Every node knows the topic, whichever node created it.
        for id in cluster.ids() {
            let topics = cluster.client(id).await?.list_topics(false).await?;
            ensure!(
                topics.iter().any(|t| t.name == TOPIC),
                "node {id} lacks the topic"
            );
        }

        // Through every node: the followers send the client to the leader.
        for id in [1, 2, 3] {
            cluster
                .produce_through(id, TOPIC, &format!("before-{id}"), 5)
                .await?;
        }
        let old = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        cluster.check(&cluster.ids()).await?;

        cluster.kill9(old);
        let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
        let new = cluster.agreed_leader(&alive, TOPIC, 0).await?;
        ensure!(new != old);
        cluster.produce_through(alive[0], TOPIC, "during", 10).await?;
        cluster
            .produce_through(alive[1], TOPIC, "during-other", 5)
            .await?;

        cluster.restart(old);
        cluster.produce_through(old, TOPIC, "after", 5).await?;
        cluster.check(&cluster.ids()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

#[test]
fn quorum_durability_is_refused_by_a_single_node_server() -> Result<()> {
    let server = Spoold::start_temp(&[]);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = Client::connect(server.url()).await?;
        client
            .create_topic(spool_client::NewTopic::new("plain", 1))
            .await?;
        let refused = client
            .produce_records("plain", Some(0), vec![Record::new("x")], Durability::Quorum)
            .await;
        match refused {
            Err(Error::InvalidArgument { status }) if status.message().contains("cluster mode") => Ok(()),
            other => bail!("QUORUM on a single node answered {other:?}"),
        }
    })
}
