//! `spool cluster status|transfer-leader|add-node|remove-node|move-replica`:
//! a cluster's nodes and Raft groups as any node sees them, moving a
//! group's leadership, and membership changes (`spool.v1.Cluster`,
//! `docs/cluster.md`).

use serde_json::{Value, json};
use spool_client::{ClusterStatus, JOBS_GROUP_TOPIC, METADATA_GROUP_TOPIC, ReplicaProgress};

use crate::args::ClusterCommand;
use crate::args::jobs::OutputFormat;
use crate::output::{errln, outln};
use crate::table::Table;
use crate::{Context, Explain};

pub async fn run(context: &Context, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { format, json } => {
            let status = context.client.cluster_status().await.explain(context.subject())?;
            match (format, json) {
                (OutputFormat::Json, _) | (_, true) => outln!("{}", status_json(&status))?,
                (OutputFormat::Human, false) => crate::output::out!("{}", render(&status))?,
            }
            Ok(())
        }
        ClusterCommand::TransferLeader {
            topic,
            partition,
            metadata,
            jobs,
            to,
        } => {
            let (topic, partition) = match (metadata, jobs, topic) {
                (true, _, _) => (METADATA_GROUP_TOPIC.to_owned(), 0),
                (false, true, _) => (JOBS_GROUP_TOPIC.to_owned(), 0),
                (false, false, Some(topic)) => (topic, partition),
                (false, false, None) => anyhow::bail!("name a --topic (or --metadata, or --jobs)"),
            };
            let term = context
                .client
                .transfer_leader(&topic, partition, to)
                .await
                .explain(context.about(&topic))?;
            errln!("node {to} leads {topic}/{partition} (term {term})");
            Ok(())
        }
        ClusterCommand::AddNode {
            node_id,
            peer_address,
        } => {
            let nodes = context
                .client
                .add_node(node_id, &peer_address)
                .await
                .explain(context.subject())?;
            errln!("node {node_id} joined the cluster; nodes: {}", ids(&nodes));
            Ok(())
        }
        ClusterCommand::RemoveNode { node_id } => {
            let nodes = context
                .client
                .remove_node(node_id)
                .await
                .explain(context.subject())?;
            errln!(
                "node {node_id} left the cluster (stop it now); nodes: {}",
                ids(&nodes)
            );
            Ok(())
        }
        ClusterCommand::MoveReplica {
            topic,
            partition,
            from,
            to,
        } => {
            let replicas = context
                .client
                .move_replica(&topic, partition, from, to)
                .await
                .explain(context.about(&topic))?;
            errln!("{topic}/{partition} is on nodes {}", ids(&replicas));
            Ok(())
        }
    }
}

/// `1, 2, 4`.
fn ids(nodes: &[u64]) -> String {
    nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// `2=leader 1=follower(lag 0) 3=unreachable(lag 4)`.
fn replicas_cell(replicas: &[ReplicaProgress]) -> String {
    replicas
        .iter()
        .map(|r| match (r.role.as_str(), r.lag_entries) {
            ("leader", _) | (_, None) => format!("{}={}", r.node_id, r.role),
            (role, Some(lag)) => format!("{}={role}(lag {lag})", r.node_id),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn render(status: &ClusterStatus) -> String {
    let mut nodes = Table::new(&["NODE>", "PEER ADDRESS", "CLIENT ADDRESS", "REACHABLE"]);
    for node in &status.nodes {
        nodes.row(vec![
            node.node_id.to_string(),
            node.peer_address.clone(),
            match node.client_address.as_str() {
                "" => "-".to_owned(),
                address => address.to_owned(),
            },
            if node.reachable { "yes" } else { "no" }.to_owned(),
        ]);
    }
    let mut groups = Table::new(&["GROUP", "LEADER>", "TERM>", "COMMITTED>", "REPLICAS"]);
    for group in &status.groups {
        groups.row(vec![
            format!("{}/{}", group.topic, group.partition),
            optional(group.leader_id),
            group.term.to_string(),
            optional(group.committed_index),
            replicas_cell(&group.replicas),
        ]);
    }
    format!(
        "{}\n{}\nas seen by node {}; lag in Raft entries behind the leader\n",
        nodes.render(),
        groups.render(),
        status.node_id
    )
}

fn status_json(status: &ClusterStatus) -> Value {
    json!({
        "node_id": status.node_id,
        "nodes": status.nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "peer_address": n.peer_address,
            "client_address": n.client_address,
            "reachable": n.reachable,
        })).collect::<Vec<_>>(),
        "groups": status.groups.iter().map(|g| json!({
            "topic": g.topic,
            "partition": g.partition,
            "leader_id": g.leader_id,
            "term": g.term,
            "committed_index": g.committed_index,
            "replicas": g.replicas.iter().map(|r| json!({
                "node_id": r.node_id,
                "role": r.role,
                "matched_index": r.matched_index,
                "lag_entries": r.lag_entries,
                "last_log_index": r.last_log_index,
                "applied_index": r.applied_index,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use spool_client::{GroupStatus, NodeStatus};

    use super::*;

    #[test]
    fn the_table_names_each_replica_with_its_role_and_lag() {
        let replica = |node_id, role: &str, lag| ReplicaProgress {
            node_id,
            role: role.to_owned(),
            matched_index: None,
            lag_entries: lag,
            last_log_index: None,
            applied_index: None,
        };
        let status = ClusterStatus {
            node_id: 1,
            nodes: vec![NodeStatus {
                node_id: 3,
                peer_address: "127.0.0.1:7082".into(),
                client_address: String::new(),
                reachable: false,
            }],
            groups: vec![GroupStatus {
                topic: "orders".into(),
                partition: 0,
                leader_id: Some(2),
                term: 4,
                committed_index: Some(17),
                replicas: vec![
                    replica(2, "leader", Some(0)),
                    replica(1, "follower", Some(0)),
                    replica(3, "unreachable", Some(5)),
                ],
            }],
        };
        let text = render(&status);
        assert!(
            text.contains("2=leader 1=follower(lag 0) 3=unreachable(lag 5)"),
            "{text}"
        );
        assert!(text.contains("orders/0"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("127.0.0.1:7082") && l.ends_with("no")),
            "{text}"
        );
        let value = status_json(&status);
        assert_eq!(value["groups"][0]["replicas"][2]["lag_entries"], 5);
        assert_eq!(value["nodes"][0]["reachable"], false);
    }
}
