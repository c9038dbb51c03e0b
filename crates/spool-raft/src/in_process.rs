//! An in-process [`Network`]: every replica registers a channel, a request
//! is a message on the target's channel with a oneshot for the answer. For
//! tests: a test can cut a node off ([`InProcessNetwork::isolate`]) and
//! heal it, and a node that is not registered (stopped) is unreachable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::engine::Replica;
use crate::network::{Network, PeerCall, PeerRequest, PeerResponse, Unreachable};

/// Requests queued per node before senders wait.
const QUEUE_DEPTH: usize = 256;

type Delivery = (PeerRequest, oneshot::Sender<PeerResponse>);

/// A switchboard between the replicas of one group in one process.
#[derive(Debug, Clone, Default)]
pub struct InProcessNetwork {
    router: Arc<Mutex<Router>>,
}

#[derive(Debug, Default)]
struct Router {
    nodes: HashMap<u64, mpsc::Sender<Delivery>>,
    isolated: HashSet<u64>,
}

impl InProcessNetwork {
    pub fn new() -> InProcessNetwork {
        InProcessNetwork::default()
    }

    /// Makes `replica` reachable as node `node_id`, replacing a previous
    /// registration. Must be called inside a tokio runtime: a task serves
    /// the node's requests, each in a task of its own so that a slow
    /// append never holds up a vote.
    pub fn register(&self, node_id: u64, replica: Replica) {
        let (sender, mut receiver) = mpsc::channel::<Delivery>(QUEUE_DEPTH);
        tokio::spawn(async move {
            while let Some((request, reply)) = receiver.recv().await {
                let replica = replica.clone();
                tokio::spawn(async move {
                    // The sender may have given up; nothing to do then.
                    let _ = reply.send(replica.handle(request).await);
                });
            }
        });
        self.router().nodes.insert(node_id, sender);
    }

    /// Makes node `node_id` unreachable, as a stopped process is. Its
    /// serving task ends once the requests already queued are answered.
    pub fn unregister(&self, node_id: u64) {
        self.router().nodes.remove(&node_id);
    }

    /// Cuts node `node_id` off: nothing it sends arrives, nothing reaches it.
    pub fn isolate(&self, node_id: u64) {
        self.router().isolated.insert(node_id);
    }

    /// Undoes [`isolate`](Self::isolate).
    pub fn heal(&self, node_id: u64) {
        self.router().isolated.remove(&node_id);
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().expect("router lock")
    }
}

impl Network for InProcessNetwork {
    fn send(&self, from: u64, to: u64, request: PeerRequest) -> PeerCall {
        let unreachable = Unreachable { from, to };
        let target = {
            let router = self.router();
            let cut = router.isolated.contains(&from) || router.isolated.contains(&to);
            router.nodes.get(&to).filter(|_| !cut).cloned()
        };
        let router = self.router.clone();
        Box::pin(async move {
            let target = target.ok_or(unreachable)?;
            let (reply, answer) = oneshot::channel();
            target.send((request, reply)).await.map_err(|_| unreachable)?;
            let response = answer.await.map_err(|_| unreachable)?;
            // A cut made while the request was in flight loses the answer,
            // as a real network would.
            let router = router.lock().expect("router lock");
            if router.isolated.contains(&from) || router.isolated.contains(&to) {
                return Err(unreachable);
            }
            Ok(response)
        })
    }
}
