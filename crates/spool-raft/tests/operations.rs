//! Operations on a running group of three replicas in one process (the
//! in-process network): what each replica reports of the group
//! (`Replica::status`), and moving the leadership to a chosen replica
//! (`Replica::transfer_leadership`) while writes keep coming, and changing
//! the group's voters (`Replica::change_voters`: a replica moved from one
//! node to another), with every acknowledged write afterwards at its
//! acknowledged offsets on every replica.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Ack, committed_batches, encoded_batch, store_config};
use spool_log::{Store, TopicConfig};
use spool_raft::{Error, GroupConfig, InProcessNetwork, Network, Replica, Role};

const WAIT: Duration = Duration::from_secs(10);

struct Group {
    _dir: tempfile::TempDir,
    _stores: Vec<Store>,
    replicas: BTreeMap<u64, Replica>,
}

impl Group {
    /// Replicas 1 to 3, a group of three voters.
    async fn start() -> Result<Group> {
        Group::start_with(3).await
    }

    /// Replicas 1 to `count`, the first three the group's voters and the
    /// others outside it (nodes that may join).
    async fn start_with(count: u64) -> Result<Group> {
        let dir = tempfile::tempdir()?;
        let network = InProcessNetwork::new();
        let mut stores = Vec::new();
        let mut replicas = BTreeMap::new();
        for id in 1..=count {
            let (store, _) = Store::open(dir.path().join(format!("node-{id}")), store_config())?;
            let config = TopicConfig {
                partitions: 1,
                segment_bytes_max: 64 * 1024,
                retention_ms: None,
                ..TopicConfig::default()
            };
            let partition = store.create_topic("ops", config)?.partitions()[0].clone();
            let mut group_config = GroupConfig::new(id);
            group_config.heartbeat_interval_ms = 50;
            group_config.election_timeout_min_ms = 300;
            group_config.election_timeout_max_ms = 600;
            let shared: Arc<dyn Network> = Arc::new(network.clone());
            let replica = Replica::open(&group_config, partition, shared).await?;
            network.register(id, replica.clone());
            stores.push(store);
            replicas.insert(id, replica);
        }
        let members = (1..=3).map(|id| (id, format!("node-{id}"))).collect();
        replicas[&1].initialize(&members).await?;
        Ok(Group {
            _dir: dir,
            _stores: stores,
            replicas,
        })
    }

    /// Waits until every replica names the same leader, and returns it.
    async fn leader(&self) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let voters = self
                .replicas
                .values()
                .filter(|r| r.status().voters.contains(&r.node_id()));
            let leaders: Vec<Option<u64>> = voters.map(Replica::leader_id).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && self.replicas[leader].status().role == Role::Leader
            {
                return Ok(*leader);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writes one batch, following the leader each replica names, until one
/// takes it; returns its ack.
async fn write(replicas: &BTreeMap<u64, Replica>, tag: String) -> Result<Ack> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut via = *replicas.keys().next().expect("a replica");
    loop {
        match replicas[&via].append(encoded_batch(&tag, 2)).await {
            Ok(appended) => {
                return Ok(Ack {
                    tag,
                    count: 2,
                    appended,
                });
            }
            Err(Error::NotLeader {
                leader_id: Some(leader),
            }) if leader != via => via = leader,
            // No leader known, or leadership lost with the write in
            // flight: its outcome is unknown and it is not counted.
            Err(_) => {
                via = replicas
                    .range(via + 1..)
                    .next()
                    .or(replicas.first_key_value())
                    .map_or(via, |(id, _)| *id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        ensure!(tokio::time::Instant::now() < deadline, "nobody took {tag}");
    }
}

/// Every ack's records are at its offsets in every replica's committed log.
async fn check(replicas: &BTreeMap<u64, Replica>, acks: &[Ack]) -> Result<()> {
    let end = acks.iter().map(|a| a.appended.next_offset).max().unwrap_or(0);
    for (id, replica) in replicas {
        let partition = replica.partition();
        tokio::time::timeout(WAIT, partition.wait_committed(end.saturating_sub(1)))
            .await
            .with_context(|| format!("node {id} did not commit {end}"))??;
        let log = committed_batches(partition, end)?;
        for ack in acks {
            let batch = log
                .iter()
                .find(|b| b.base_offset() == ack.appended.base_offset)
                .with_context(|| format!("node {id} lost {}", ack.tag))?;
            let values: Vec<String> = partition
                .records(batch)
                .map(|r| Ok(String::from_utf8(r?.value.unwrap_or_default().to_vec())?))
                .collect::<Result<_>>()?;
            let expected: Vec<String> = (0..ack.count).map(|i| format!("{}/{i}", ack.tag)).collect();
            ensure!(values == expected, "node {id} holds other records at {}", ack.tag);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reports_the_group_and_the_leader_reports_progress() -> Result<()> {
    let group = Group::start().await?;
    let leader = group.leader().await?;
    let mut acks = Vec::new();
    for i in 0..5 {
        acks.push(write(&group.replicas, format!("w{i}")).await?);
    }
    check(&group.replicas, &acks).await?;

    let status = group.replicas[&leader].status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.leader_id, Some(leader));
    assert_eq!(status.voters, vec![1, 2, 3]);
    let last = status.last_log_index.context("the leader has a log")?;
    assert!(status.applied_index <= Some(last));
    // Every follower has answered by now (the writes committed on all).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let matched = group.replicas[&leader].status().matched;
        let others: Vec<Option<u64>> = matched
            .iter()
            .filter(|(id, _)| **id != leader)
            .map(|(_, index)| *index)
            .collect();
        if others.len() == 2 && others.iter().all(|m| *m == Some(last)) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "followers never matched: {matched:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (id, replica) in &group.replicas {
        if *id == leader {
            continue;
        }
        let status = replica.status();
        assert_eq!(status.role, Role::Follower);
        assert_eq!(status.leader_id, Some(leader));
        assert!(status.matched.is_empty(), "only a leader reports progress");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_chosen_replica_while_writes_continue() -> Result<()> {
    let group = Group::start().await?;
    let mut leader = group.leader().await?;
    let replicas = Arc::new(group.replicas.clone());

    // A writer keeps writing through the whole test.
    let writer = {
        let replicas = Arc::clone(&replicas);
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..400 {
                acks.push(write(&replicas, format!("load-{i}")).await?);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, anyhow::Error>(acks)
        })
    };

    // Each of the others in turn, and back.
    for round in 0..3 {
        let target = leader % 3 + 1;
        let term_before = replicas[&leader].term();
        let term = replicas[&leader]
            .transfer_leadership(target, Duration::from_secs(4))
            .await
            .with_context(|| format!("round {round}: {leader} to {target}"))?;
        ensure!(term > term_before, "a new leader leads in a new term");
        leader = group.leader().await?;
        ensure!(leader == target, "round {round}: {leader} leads, not {target}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Asking a follower, or naming a node outside the group, is refused.
    let follower = leader % 3 + 1;
    match replicas[&follower]
        .transfer_leadership(follower, Duration::from_secs(1))
        .await
    {
        Err(Error::NotLeader { leader_id }) => assert_eq!(leader_id, Some(leader)),
        other => bail!("a follower answered {other:?}"),
    }
    match replicas[&leader]
        .transfer_leadership(9, Duration::from_secs(1))
        .await
    {
        Err(Error::NotAVoter { node_id: 9, voters }) => assert_eq!(voters, vec![1, 2, 3]),
        other => bail!("a transfer to a non-member answered {other:?}"),
    }
    // To itself: nothing to do.
    let term = replicas[&leader].term();
    assert_eq!(
        replicas[&leader]
            .transfer_leadership(leader, Duration::from_secs(1))
            .await?,
        term
    );

    let acks = tokio::time::timeout(Duration::from_secs(60), writer).await???;
    check(&replicas, &acks).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_new_node_which_then_counts_for_the_majority() -> Result<()> {
    let group = Group::start_with(4).await?;
    let mut leader = group.leader().await?;
    let voters_of = |ids: &[u64]| -> BTreeMap<u64, Replica> {
        ids.iter().map(|id| (*id, group.replicas[id].clone())).collect()
    };
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(write(&voters_of(&[1, 2, 3]), format!("before-{i}")).await?);
    }

    // Node 3's replica moves to node 4. Node 3 leads: asked to leave
    // itself out, it hands its leadership to a voter that stays, and
    // names it.
    let new_voters: BTreeMap<u64, String> = [1, 2, 4].iter().map(|id| (*id, format!("node-{id}"))).collect();
    if leader != 3 {
        group.replicas[&leader].transfer_leadership(3, WAIT).await?;
    }
    match group.replicas[&3].change_voters(&new_voters, WAIT).await {
        Err(Error::NotLeader {
            leader_id: Some(next @ (1 | 2)),
        }) => leader = next,
        other => bail!("a leaving leader answered {other:?}"),
    }
    let not_leader = if leader == 1 { 2 } else { 1 };
    let refused = group.replicas[&not_leader].change_voters(&new_voters, WAIT).await;
    assert!(matches!(refused, Err(Error::NotLeader { .. })), "{refused:?}");
    group.replicas[&leader].change_voters(&new_voters, WAIT).await?;
    let status = group.replicas[&leader].status();
    assert_eq!(status.voters, vec![1, 2, 4]);
    assert!(status.learners.is_empty(), "{status:?}");
    // Asking again changes nothing.
    group.replicas[&leader].change_voters(&new_voters, WAIT).await?;

    let moved = voters_of(&[1, 2, 4]);
    for i in 0..20 {
        acks.push(write(&moved, format!("after-{i}")).await?);
    }
    check(&moved, &acks).await?;

    // Node 3 is out, node 4 in: with node 3 and the other follower
    // stopped, the leader and node 4 are a majority of the new voters and
    // still commit.
    let other = if leader == 1 { 2 } else { 1 };
    group.replicas[&3].shutdown().await?;
    group.replicas[&other].shutdown().await?;
    let pair = voters_of(&[leader, 4]);
    for i in 0..5 {
        let ack = tokio::time::timeout(WAIT, write(&pair, format!("pair-{i}")))
            .await
            .context("the leader and node 4 did not commit")??;
        acks.push(ack);
    }
    check(&pair, &acks).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stands_aside_hands_over_and_never_leads_again() -> Result<()> {
    let group = Group::start().await?;
    let leader = group.leader().await?;
    let mut acks = Vec::new();
    for i in 0..5 {
        acks.push(write(&group.replicas, format!("before-{i}")).await?);
    }
    let went_to = group.replicas[&leader].stand_aside(WAIT).await?;
    let next = group.leader().await?;
    ensure!(
        went_to == Some(next) && next != leader,
        "{leader} stood aside for {went_to:?}; {next} leads"
    );

    // Even asked to, it does not take the leadership back: the transfer
    // runs out, and a replica that stays leads.
    let asked = group.replicas[&next]
        .transfer_leadership(leader, Duration::from_secs(2))
        .await;
    ensure!(
        asked.is_err(),
        "a replica that stood aside took the leadership: {asked:?}"
    );
    ensure!(group.leader().await? != leader);
    // It still votes and holds the log: with the third replica stopped,
    // the leader and it are a majority.
    let third = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader && *id != next)
        .context("a third")?;
    group.replicas[&third].shutdown().await?;
    let pair: BTreeMap<u64, Replica> = [leader, next]
        .iter()
        .map(|id| (*id, group.replicas[id].clone()))
        .collect();
    for i in 0..5 {
        acks.push(write(&pair, format!("after-{i}")).await?);
    }
    check(&pair, &acks).await?;
    ensure!(group.replicas[&next].status().role == Role::Leader);
    Ok(())
}
