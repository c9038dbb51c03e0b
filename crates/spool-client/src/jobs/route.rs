//! Cluster mode: where job requests go. Only the node that leads the job
//! layer's group (`__jobs`) takes them; another node answers with the
//! leader's address (FAILED_PRECONDITION, or UNAVAILABLE while there is no
//! leader, with a `LeaderHint` in the details). A [`JobsRoute`] remembers
//! the leader it was sent to, shared by every clone of the
//! [`Client`](crate::Client) it came from, and goes back to the node it
//! connected to when that leader fails. On a single node nothing of this
//! happens: every request goes to the node connected to.

use std::future::Future;
use std::sync::{Arc, Mutex};

use spool_proto::v1::jobs_client::JobsClient;
use tonic::{Request, Response, Status};

use crate::client::{Client, Transport};

/// How many leader hints one call follows before it gives up and answers
/// the last refusal (a leadership that moves while the call follows it).
const HINTS_FOLLOWED_MAX: usize = 3;

/// How long the worker waits before it sends a refused request again to
/// the leader named: a hint can be stale (the leadership moved on), and two
/// nodes naming each other must not make a busy loop.
pub(crate) const FOLLOW_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Where this client sends job requests.
#[derive(Debug, Clone)]
pub(crate) struct JobsRoute {
    /// The node this client connected to.
    home: Client,
    /// The leader it was last sent to, shared with `home`'s clones.
    leader: Arc<Mutex<Option<Client>>>,
}

impl JobsRoute {
    pub(crate) fn new(home: &Client, leader: Arc<Mutex<Option<Client>>>) -> JobsRoute {
        JobsRoute {
            home: home.clone(),
            leader,
        }
    }

    /// The Jobs client of the node requests go to now: the leader last
    /// named, else the node connected to.
    pub(crate) fn target(&self) -> JobsClient<Transport> {
        match &*self.leader.lock().expect("jobs leader lock") {
            Some(leader) => leader.jobs_client(),
            None => self.home.jobs_client(),
        }
    }

    /// After a failed call: true when `status` named the leader's address,
    /// which later calls now go to (send the request again at once). A
    /// refusal without an address, or any failure of the leader itself,
    /// sends later calls to the node connected to again.
    pub(crate) fn follow(&self, status: &Status) -> bool {
        let hint = spool_proto::leader_hint::decode(status.details()).filter(|_| {
            matches!(
                status.code(),
                tonic::Code::FailedPrecondition | tonic::Code::Unavailable
            )
        });
        // The node did not answer, or not in time (killed, paused, cut
        // off): the next call asks the node connected to, which names the
        // leader it knows.
        let lost = matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
        );
        if hint.is_none() && !lost {
            // An answer about the request itself: the route is right.
            return false;
        }
        let address = hint
            .map(|hint| hint.leader_address)
            .filter(|address| !address.is_empty());
        let mut leader = self.leader.lock().expect("jobs leader lock");
        match address.map(|address| self.home.to_node(&address)) {
            Some(Ok(node)) => {
                tracing::debug!(leader = %node.url(), "following the job layer's leader");
                *leader = Some(node);
                true
            }
            _ => {
                *leader = None;
                false
            }
        }
    }

    /// Sends `message` (made into a request by `prepare`) with `send`, and
    /// again to the leader a refusal names, up to [`HINTS_FOLLOWED_MAX`]
    /// times. A request refused for not reaching the leader was not acted
    /// on, so sending it again is safe.
    pub(crate) async fn call<T, R, Fut>(
        &self,
        message: T,
        prepare: impl Fn(T) -> Request<T>,
        send: impl Fn(JobsClient<Transport>, Request<T>) -> Fut,
    ) -> Result<Response<R>, Status>
    where
        T: Clone,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut followed = 0;
        loop {
            match send(self.target(), prepare(message.clone())).await {
                Err(status) if followed < HINTS_FOLLOWED_MAX && self.follow(&status) => followed += 1,
                answer => return answer,
            }
        }
    }
}
