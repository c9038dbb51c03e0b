//! A topic's replication factor in cluster mode, with three real `spoold`
//! processes: the default (min(3, nodes)), a chosen factor below the node
//! count placing each partition on that many nodes, and a factor above it
//! refused; a topic created while a node is down; one deleted and
//! created again while a node is down; a single-node server refusing
//! any factor above 1; and named checkpoints, stored by the metadata
//! group, the same through every node and across the death of the
//! metadata leader.

mod common;

use std::collections::BTreeMap;

use anyhow::{Result, bail, ensure};
use common::Spoold;
use common::cluster::{Extra, TestCluster, produce, runtime};
use common::dashboard;
use spool_client::{Client, Error, NewTopic};

fn topic(name: &str, partitions: u32, replication_factor: u32) -> NewTopic {
    NewTopic {
        replication_factor,
        ..NewTopic::new(name, partitions)
    }
}

/// The nodes that hold a replica of each partition of `name`: those whose
/// partition directory has the replica's `raft-commit` file, which every
/// replica creates when it opens (a node holding no replica keeps at most
/// an empty local partition).
fn replica_nodes(nodes: &TestCluster, name: &str, partitions: u32) -> BTreeMap<u32, Vec<u64>> {
    (0..partitions)
        .map(|p| {
            let holders = nodes
                .ids()
                .into_iter()
                .filter(|id| {
                    let dir = nodes.data_dir(*id).join("topics").join(name).join(p.to_string());
                    dir.join("raft-commit").exists()
                })
                .collect();
            (p, holders)
        })
        .collect()
}

#[test]
fn a_topic_has_the_replication_factor_it_was_created_with() -> Result<()> {
    let runtime = runtime()?;
    let nodes = TestCluster::start(3);
    runtime.block_on(async {
        let client = nodes.client(1).await?;
        match client.create_topic(topic("too-many", 1, 4)).await {
            Err(Error::InvalidArgument { status }) if status.message().contains("3 nodes") => {}
            other => bail!("a factor above the node count answered {other:?}"),
        }

        client.create_topic(topic("two-copies", 3, 2)).await?;
        client.create_topic(topic("default", 1, 0)).await?;
        // Every replica opens once the creation is answered; a record
        // through each partition's group shows it works with two copies.
        for p in 0..3u32 {
            let via = nodes.client(u64::from(p) + 1).await?;
            let offset = produce(&via, "two-copies", p, "r").await?;
            ensure!(offset == 0, "partition {p}'s first record at {offset}");
        }
        produce(&nodes.client(2).await?, "default", 0, "x").await?;

        let placed = replica_nodes(&nodes, "two-copies", 3);
        for (p, holders) in &placed {
            ensure!(holders.len() == 2, "partition {p} is on {holders:?}");
        }
        // Spread over the nodes: each holds two of the six replicas.
        for id in nodes.ids() {
            let held = placed.values().filter(|h| h.contains(&id)).count();
            ensure!(held == 2, "node {id} holds {held} replicas");
        }
        ensure!(replica_nodes(&nodes, "default", 1)[&0] == [1, 2, 3]);
        Ok(())
    })
}

/// A new group's first membership is made by its lowest node at once and
/// by the others only if no leader shows up: with that node down when the
/// topic is created, the others make it and elect a leader, and the node
/// joins when it comes back.
#[test]
fn a_topic_created_while_its_lowest_node_is_down_gets_leaders_from_the_others() -> Result<()> {
    let runtime = runtime()?;
    let mut nodes = TestCluster::start(3);
    nodes.kill9(1);
    runtime.block_on(async {
        // It may wait for a new metadata leader first: the patient client.
        let via = nodes.patient_client(2).await?;
        via.create_topic(topic("late", 2, 3)).await?;
        for p in 0..2u32 {
            let offset = produce(&via, "late", p, "while node 1 is down").await?;
            ensure!(offset == 0, "partition {p}'s first record at {offset}");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    nodes.restart(1);
    runtime.block_on(async {
        let via = nodes.patient_client(1).await?;
        for p in 0..2u32 {
            let offset = produce(&via, "late", p, "after node 1 is back").await?;
            ensure!(offset == 1, "partition {p}'s second record at {offset}");
            ensure!(nodes.agreed_leader(&nodes.ids(), "late", p).await? != 0);
        }
        Ok(())
    })
}

/// A node down while a topic is deleted and created again still holds the
/// first topic's log when it comes back. It must not join the new
/// topic's group with it: the new group's first entries have the same
/// indexes and terms as the old ones, so Raft would take the old records
/// for the new group's entries (and the old stored commit for its own).
/// The node drops its old copy; reads through it never see the old
/// records, not even right after its start; led by it, the topic holds
/// only the new records.
#[test]
fn a_topic_deleted_and_created_again_while_a_node_is_down_holds_only_the_new_topics_records() -> Result<()> {
    const NAME: &str = "reborn";
    let runtime = runtime()?;
    let mut nodes = TestCluster::start(3);
    runtime.block_on(async {
        nodes.create_topic(NAME, 1).await?;
        nodes.produce_through(1, NAME, "old", 30).await?;
        for id in nodes.ids() {
            nodes.committed_log(id, NAME, 0, 30).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    nodes.kill9(3);
    runtime.block_on(async {
        let via = nodes.patient_client(1).await?;
        via.delete_topic(NAME).await?;
        nodes.acked.lock().expect("acks").clear();
        via.create_topic(topic(NAME, 1, 3)).await?;
        nodes.agreed_leader(&[1, 2], NAME, 0).await?;
        nodes.produce_through(1, NAME, "new", 5).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    nodes.restart(3);
    runtime.block_on(async {
        // Read through node 3 from its start: never the old records, even
        // before it has caught up on the metadata.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(client) = nodes.client(3).await
                && let Ok((records, _)) = client.fetch_records(NAME, 0, 0, 1 << 20, 100).await
                && !records.is_empty()
            {
                let values: Vec<String> = records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
                    .collect();
                ensure!(
                    values.iter().all(|v| v.starts_with("new-")),
                    "node 3 served {values:?} right after its start"
                );
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "node 3 served nothing");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        nodes.agreed_leader(&nodes.ids(), NAME, 0).await?;
        nodes.patient_client(1).await?.transfer_leader(NAME, 0, 3).await?;
        ensure!(nodes.agreed_leader(&nodes.ids(), NAME, 0).await? == 3);
        nodes.produce_through(1, NAME, "after", 2).await?;
        nodes.check(&nodes.ids()).await?;
        let end = nodes.latest(3, NAME, 0).await?;
        let log = nodes.committed_log(3, NAME, 0, end).await?;
        let values: Vec<&str> = log.values().map(String::as_str).collect();
        let expected: Vec<String> = (0..5)
            .map(|i| format!("new-{i}"))
            .chain((0..2).map(|i| format!("after-{i}")))
            .collect();
        ensure!(values == expected, "node 3 serves {values:?}");
        Ok(())
    })
}

#[test]
fn a_single_node_server_refuses_more_than_one_copy() -> Result<()> {
    let server = Spoold::start_temp(&[]);
    runtime()?.block_on(async {
        let client = Client::connect(server.url()).await?;
        client.create_topic(topic("one", 1, 1)).await?;
        match client.create_topic(topic("two", 1, 2)).await {
            Err(Error::InvalidArgument { status }) if status.message().contains("cluster mode") => Ok(()),
            other => bail!("a factor of 2 on a single node answered {other:?}"),
        }
    })
}

#[test]
fn checkpoints_are_the_same_through_every_node_and_outlive_the_metadata_leader() -> Result<()> {
    let mut cluster = TestCluster::start(3);
    runtime()?.block_on(async {
        cluster.create_topic("ck", 2).await?;
        let first = cluster.patient_client(1).await?;
        for i in 0..4 {
            produce(&first, "ck", 0, &format!("r{i}")).await?;
        }
        let achieved = first
            .commit_checkpoint(
                "billing",
                "ck",
                &[(0, 3), (1, 0)],
                spool_client::Durability::Fsync,
            )
            .await?;
        ensure!(
            achieved == spool_client::Durability::Quorum,
            "a checkpoint in a cluster is committed by the metadata group: {achieved:?}"
        );
        for id in cluster.ids() {
            let positions = positions(&cluster.patient_client(id).await?).await?;
            ensure!(positions == [(0, 3), (1, 0)], "node {id}: {positions:?}");
        }

        // Bad input is refused, and nothing is stored.
        let refused = first
            .commit_checkpoint("__internal", "ck", &[(0, 1)], spool_client::Durability::Fsync)
            .await;
        ensure!(
            matches!(refused, Err(Error::InvalidArgument { .. })),
            "{refused:?}"
        );
        let refused = first
            .commit_checkpoint("billing", "ck", &[(7, 1)], spool_client::Durability::Fsync)
            .await;
        ensure!(matches!(refused, Err(Error::NotFound { .. })), "{refused:?}");
        let refused = first
            .commit_checkpoint("billing", "nope", &[(0, 1)], spool_client::Durability::Fsync)
            .await;
        ensure!(matches!(refused, Err(Error::NotFound { .. })), "{refused:?}");

        // The metadata leader dies; the others keep and take checkpoints.
        let leader = cluster.agreed_leader(&cluster.ids(), "__cluster", 0).await?;
        cluster.kill9(leader);
        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        cluster.agreed_leader(&alive, "__cluster", 0).await?;
        let survivor = cluster.patient_client(alive[0]).await?;
        ensure!(positions(&survivor).await? == [(0, 3), (1, 0)]);
        survivor
            .commit_checkpoint("billing", "ck", &[(0, 4)], spool_client::Durability::Fsync)
            .await?;

        // Restarted, the old leader has the commit it missed.
        cluster.restart(leader);
        let restarted = cluster.patient_client(leader).await?;
        let deadline = std::time::Instant::now() + common::cluster::WAIT;
        loop {
            match positions(&restarted).await {
                Ok(positions) if positions == [(0, 4), (1, 0)] => break,
                other if std::time::Instant::now() < deadline => {
                    eprintln!("node {leader} not caught up yet: {other:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                other => bail!("node {leader} after its restart: {other:?}"),
            }
        }

        // Deleting the topic drops its checkpoints.
        survivor.delete_topic("ck").await?;
        ensure!(positions(&survivor).await?.is_empty());
        Ok(())
    })
}

/// The `billing` consumer's positions in `ck`, as (partition, offset).
async fn positions(client: &Client) -> Result<Vec<(u32, u64)>> {
    Ok(client
        .get_checkpoint("billing", "ck")
        .await?
        .into_iter()
        .map(|checkpoint| (checkpoint.partition, checkpoint.offset))
        .collect())
}

#[test]
fn the_dashboard_of_any_node_shows_and_resets_the_cluster_s_checkpoints() -> Result<()> {
    let extra = Extra {
        settings: Some(Box::new(|_| vec!["admin_listen=127.0.0.1:0".to_owned()])),
        ..Extra::default()
    };
    let cluster = TestCluster::start_with(3, extra);
    runtime()?.block_on(async {
        cluster.create_topic("ck", 2).await?;
        let first = cluster.patient_client(1).await?;
        for i in 0..4 {
            produce(&first, "ck", 0, &format!("r{i}")).await?;
        }
        first
            .commit_checkpoint(
                "billing",
                "ck",
                &[(0, 1), (1, 0)],
                spool_client::Durability::Fsync,
            )
            .await?;

        // Every node's dashboard lists the checkpoint committed through
        // node 1, with its lag against the committed records.
        for id in cluster.ids() {
            let admin = cluster.nodes[&id].admin_addr.expect("the dashboard is on");
            let consumers =
                tokio::task::spawn_blocking(move || dashboard::get(admin, "/api/v1/consumers")).await?;
            let billing = &consumers["consumers"][0];
            ensure!(
                billing["consumer"] == "billing" && billing["topic"] == "ck" && billing["lag_records"] == 3,
                "node {id}: {consumers}"
            );
        }

        // A reset through node 3's dashboard is the cluster's checkpoint.
        let admin = cluster.nodes[&3].admin_addr.expect("the dashboard is on");
        let (status, answer) = tokio::task::spawn_blocking(move || {
            dashboard::post(
                admin,
                "/api/v1/consumers/billing/ck/reset",
                &serde_json::json!({ "to": "latest" }),
            )
        })
        .await?;
        ensure!(status == 200, "{answer}");
        let through_node_2 = positions(&cluster.patient_client(2).await?).await?;
        ensure!(through_node_2 == [(0, 4), (1, 0)], "{through_node_2:?}");
        Ok(())
    })
}
