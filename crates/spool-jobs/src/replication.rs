//! Cluster mode: the job layer over a replicated `__jobs`
//! (`docs/cluster.md`, "The job layer").
//!
//! In a cluster `__jobs` is one Raft group over every node, and its log is
//! the partition's own segments, as for any replicated partition. The job
//! table runs on every replica: the leader's takes requests and proposes
//! their events; a follower's applies the committed events as they come,
//! so it is a warm standby. [`Replication`] is what the runtime needs of
//! the group (it knows nothing of Raft: `spool-server` implements it over
//! a `spool-raft` replica); [`Ticket`] is what an answer waits for before
//! it is handed out: the fsync of its events on a single node, their
//! commit in a cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spool_log::Partition;
use tokio::sync::watch;

use crate::core::JobError;

/// Reports whether one proposed batch was committed: the offset after its
/// last record, or why not.
pub type Proposed = Box<dyn FnOnce(Result<u64, String>) + Send>;

/// The replicated `__jobs` as the job layer sees it.
pub trait Replication: Send + Sync + 'static {
    /// The term this node leads `__jobs` in, once it has applied that
    /// term's first entry (so every event an earlier leader committed is
    /// in the log it replays); `None` otherwise.
    fn serving_term(&self) -> Option<u64>;

    /// The leader this node knows of, with its client address (empty when
    /// not known yet), for the answer to a request sent to a follower.
    fn leader(&self) -> (Option<u64>, String);

    /// Queues one encoded batch behind every batch queued before it, and
    /// calls `done` once it is committed or cannot be. Called from the job
    /// thread, which must not block: the batch is proposed elsewhere.
    fn propose(&self, encoded: Vec<u8>, done: Proposed);

    /// This node's job table cannot serve (it could not be rebuilt from
    /// the log): keep this node from leading `__jobs` until it restarts,
    /// and hand the leadership to another node if it has it, so that the
    /// job layer stays available on the others. Must not block.
    fn step_aside(&self) {}
}

/// How far one leadership's proposals are committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Confirmed {
    /// Offsets below this are committed.
    offset: u64,
    /// A proposal was refused: this leadership is over, and its later
    /// events will not commit.
    failed: bool,
}

/// One leadership of `__jobs` on this node: the events it proposed and how
/// far they are committed. An answer of this leadership waits for its own
/// events here, never for the committed offset of the partition: after a
/// failover another leader's events may reach the same offsets.
#[derive(Debug)]
pub(crate) struct Epoch {
    confirmed: watch::Sender<Confirmed>,
}

impl Epoch {
    /// A leadership whose log is committed up to `offset`.
    pub(crate) fn new(offset: u64) -> Arc<Epoch> {
        Arc::new(Epoch {
            confirmed: watch::Sender::new(Confirmed {
                offset,
                failed: false,
            }),
        })
    }

    /// Records the outcome of one proposal. Entries commit in log order, so
    /// a later batch's commit covers every earlier one.
    pub(crate) fn settle(&self, outcome: &Result<u64, String>) {
        self.confirmed.send_modify(|confirmed| match outcome {
            Ok(next_offset) => confirmed.offset = confirmed.offset.max(*next_offset),
            Err(_) => confirmed.failed = true,
        });
    }

    /// Offsets below this are committed.
    pub(crate) fn committed(&self) -> u64 {
        self.confirmed.borrow().offset
    }

    pub(crate) fn failed(&self) -> bool {
        self.confirmed.borrow().failed
    }

    /// Waits until the events below `offset` are committed. Fails once a
    /// proposal before them was refused: their outcome is then unknown to
    /// this node (they may still be committed by the next leader).
    async fn wait(&self, offset: u64) -> Result<(), JobError> {
        let mut confirmed = self.confirmed.subscribe();
        let settled = confirmed
            .wait_for(|confirmed| confirmed.offset >= offset || confirmed.failed)
            .await
            .map(|confirmed| confirmed.offset >= offset);
        match settled {
            Ok(true) => Ok(()),
            _ => Err(JobError::Unavailable {
                reason: "this node lost the leadership of __jobs before the request's events were \
                         committed; they may or may not take effect: check before retrying"
                    .to_owned(),
            }),
        }
    }

    /// [`wait`](Self::wait) from a thread that may block, for at most
    /// `timeout`; true when committed.
    pub(crate) fn wait_blocking(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let confirmed = *self.confirmed.borrow();
            if confirmed.offset >= offset {
                return true;
            }
            if confirmed.failed || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What an answer waits for before it is handed out: the log offset its
/// events (and every event it depends on) reach, and what makes them safe
/// there.
#[derive(Debug, Clone)]
pub struct Ticket {
    offset: u64,
    wait: Wait,
}

#[derive(Debug, Clone)]
enum Wait {
    /// Nothing: the answer changed nothing (or is an error).
    Nothing,
    /// The fsync of the local `__jobs`.
    Durable(Partition),
    /// The commit of one leadership's events.
    Committed(Arc<Epoch>),
}

impl Ticket {
    /// A ticket that waits for nothing.
    pub(crate) fn ready() -> Ticket {
        Ticket {
            offset: 0,
            wait: Wait::Nothing,
        }
    }

    pub(crate) fn durable(partition: &Partition, offset: u64) -> Ticket {
        Ticket {
            offset,
            wait: Wait::Durable(partition.clone()),
        }
    }

    pub(crate) fn committed(epoch: &Arc<Epoch>, offset: u64) -> Ticket {
        Ticket {
            offset,
            wait: Wait::Committed(Arc::clone(epoch)),
        }
    }

    /// The `__jobs` offset this answer waits for.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Waits until the events below [`offset`](Self::offset) are safe: on
    /// disk on a single node, committed in a cluster.
    pub async fn wait(&self) -> Result<(), JobError> {
        match &self.wait {
            Wait::Nothing => Ok(()),
            Wait::Durable(partition) => {
                if partition.durable_offset() >= self.offset {
                    return Ok(());
                }
                partition
                    .wait_durable(self.offset)
                    .await
                    .map(|_| ())
                    .map_err(|error| JobError::Unavailable {
                        reason: format!("writing job events failed ({error}); restart the server"),
                    })
            }
            Wait::Committed(epoch) => epoch.wait(self.offset).await,
        }
    }
}
