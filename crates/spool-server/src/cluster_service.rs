//! `spool.v1.Cluster`: a cluster's status, leadership transfers and
//! membership changes (nodes added and removed, replicas moved), for
//! cluster admins, on the client listener of every node (the work is in
//! `cluster/operations.rs`). A single-node server serves it too, and
//! answers FAILED_PRECONDITION: there is no cluster to describe. Each
//! change is recorded in the audit trail.

use std::sync::Arc;

use spool_auth::Action;
use spool_proto::v1::{self, cluster_server};
use spool_raft::GroupId;
use tonic::{Request, Response, Status};

use crate::access::{Access, Caller, caller};
use crate::audit::Audit;
use crate::cluster::Cluster;

#[derive(Debug, Clone)]
pub struct ClusterService {
    access: Arc<Access>,
    audit: Audit,
    /// `None` on a single-node server.
    cluster: Option<Arc<Cluster>>,
}

impl ClusterService {
    pub fn new(access: Arc<Access>, audit: Audit, cluster: Option<Arc<Cluster>>) -> Self {
        ClusterService {
            access,
            audit,
            cluster,
        }
    }

    fn cluster(&self) -> Result<&Arc<Cluster>, Status> {
        self.cluster.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this server is not a cluster node (start it with --node-id and --peers)",
            )
        })
    }

    /// A change's request, admitted: its caller (a cluster admin), this
    /// node's cluster, and the message.
    fn admit<T>(&self, request: Request<T>) -> Result<(Option<Caller>, &Arc<Cluster>, T), Status> {
        let caller = caller(&request).cloned();
        self.access.check(caller.as_ref(), Action::CLUSTER_ADMIN, "")?;
        Ok((caller, self.cluster()?, request.into_inner()))
    }

    /// Records a change that was made (`action` on `target`) in the audit
    /// trail, and answers `done`.
    async fn recorded<R>(
        &self,
        caller: Option<&Caller>,
        action: &str,
        target: serde_json::Value,
        done: R,
    ) -> Result<Response<R>, Status> {
        self.audit.record_call(caller, action, target, 1).await?;
        Ok(Response::new(done))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterService {
    async fn cluster_status(
        &self,
        request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        self.access.check(caller(&request), Action::CLUSTER_ADMIN, "")?;
        Ok(Response::new(self.cluster()?.status().await))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        let (caller, cluster, request) = self.admit(request)?;
        let group = GroupId::new(request.topic, request.partition);
        let done = cluster.transfer_leader(&group, request.to_node_id).await?;
        let target = serde_json::json!({
            "topic": group.topic,
            "partition": group.partition,
            "to": done.leader_id,
            "term": done.term,
        });
        self.recorded(caller.as_ref(), "transfer_leader", target, done)
            .await
    }

    async fn add_node(
        &self,
        request: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::AddNodeResponse>, Status> {
        let (caller, cluster, request) = self.admit(request)?;
        let done = cluster.add_node(request.node_id, &request.peer_address).await?;
        let target = serde_json::json!({
            "node_id": request.node_id,
            "peer_address": request.peer_address,
        });
        self.recorded(caller.as_ref(), "add_node", target, done).await
    }

    async fn remove_node(
        &self,
        request: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::RemoveNodeResponse>, Status> {
        let (caller, cluster, request) = self.admit(request)?;
        let done = cluster.remove_node(request.node_id).await?;
        let target = serde_json::json!({ "node_id": request.node_id });
        self.recorded(caller.as_ref(), "remove_node", target, done).await
    }

    async fn move_replica(
        &self,
        request: Request<v1::MoveReplicaRequest>,
    ) -> Result<Response<v1::MoveReplicaResponse>, Status> {
        let (caller, cluster, request) = self.admit(request)?;
        let done = cluster
            .move_replica(
                &request.topic,
                request.partition,
                request.from_node_id,
                request.to_node_id,
            )
            .await?;
        let target = serde_json::json!({
            "topic": request.topic,
            "partition": request.partition,
            "from": request.from_node_id,
            "to": request.to_node_id,
            "replicas": done.replicas,
        });
        self.recorded(caller.as_ref(), "move_replica", target, done).await
    }
}
