//! What the job state machine is asked and what it answers.

use bytes::Bytes;

use crate::event::Event;
use crate::job::{Job, JobId, JobSpec, JobState};
use crate::queue::{QueueConfig, QueueConfigChange};

/// Identifies a request so its reply can be matched up later (a parked
/// claim is answered by a later step).
pub type RequestId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSpec {
    pub queues: Vec<String>,
    /// 0 means 1; above `claim_jobs_max` is refused.
    pub max_jobs: u32,
    /// 0 takes the default lease; above `lease_ms_max` is refused.
    pub lease_ms: u64,
    /// How long to wait when no job is available (long poll).
    pub wait_ms: u64,
    pub worker: String,
}

/// Selects dead jobs of one queue; the queue is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadFilter {
    pub queue: String,
    pub error_contains: String,
    /// Only jobs whose last error has this [`crate::fingerprint`]; empty
    /// means any.
    pub error_fingerprint: String,
    pub dead_since_ms: Option<i64>,
    pub dead_before_ms: Option<i64>,
    /// Most jobs to act on; 0 means, and larger values are capped at,
    /// `DEAD_JOBS_PER_CALL_MAX`.
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Job(JobId),
    Filter(DeadFilter),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Enqueue(Vec<JobSpec>),
    Claim(ClaimSpec),
    Heartbeat {
        id: JobId,
        token: u64,
        extend_ms: u64,
        progress: Option<String>,
    },
    Complete {
        id: JobId,
        token: u64,
        result: Bytes,
    },
    Fail {
        id: JobId,
        token: u64,
        error: String,
        retryable: bool,
        retry_delay_ms: Option<u64>,
    },
    /// Give a claimed job back unrun (worker shutdown).
    Release {
        id: JobId,
        token: u64,
    },
    Cancel {
        id: JobId,
    },
    RetryDead(Target),
    PurgeDead(Target),
    /// Pauses (`paused`) or resumes a known queue.
    PauseQueue {
        queue: String,
        paused: bool,
    },
    /// Changes a queue's configuration; a queue not yet known becomes
    /// known, so limits can be set before the first job arrives.
    ConfigureQueue {
        queue: String,
        change: QueueConfigChange,
    },
    /// Deletes a known queue and purges its jobs; refused while some run
    /// unless `force` (their workers' acknowledgements are then refused).
    DeleteQueue {
        queue: String,
        force: bool,
    },
    /// How many dead jobs a RetryDead or PurgeDead of this target would act
    /// on now (a dry run): decides nothing, appends nothing.
    CountDead(Target),
    /// Several requests decided in order in one step, each with its own
    /// reply (`Reply::Batch`): acknowledgements of many jobs at once. A
    /// claim cannot be part of a batch (it may have to wait).
    Batch(Vec<Request>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueResult {
    pub id: JobId,
    pub deduplicated: bool,
    /// `None` when a deduplicated job has already left memory.
    pub state: Option<JobState>,
}

/// A job handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job: Job,
    pub token: u64,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Enqueued(Vec<EnqueueResult>),
    Claimed(Vec<ClaimedJob>),
    Heartbeat {
        cancel_requested: bool,
        lease_ms: u64,
    },
    Completed,
    Failed {
        state: JobState,
        retry_delay_ms: Option<u64>,
    },
    Released,
    Cancel {
        state: JobState,
        cancel_requested: bool,
    },
    Count(u64),
    /// The queue's pause state after a PauseQueue, and whether the call
    /// changed it.
    QueuePaused {
        paused: bool,
        changed: bool,
    },
    /// A queue's configuration after a ConfigureQueue.
    QueueConfigured(QueueConfig),
    /// A DeleteQueue purged this many jobs.
    QueueDeleted {
        purged: u64,
    },
    /// The replies to a `Request::Batch`, in its order.
    Batch(Vec<Result<Reply, JobError>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error(
        "job {id} is not in the job table: it never existed, or it finished and left memory (GetJob and History still read it from the log)"
    )]
    UnknownJob { id: JobId },
    #[error("queue {queue:?} does not exist: no job was ever enqueued to it, or it was deleted")]
    UnknownQueue { queue: String },
    #[error(
        "queue {queue:?} has {running} running jobs: delete it once they finish, or force the deletion (their workers' acknowledgements will then be refused)"
    )]
    QueueBusy { queue: String, running: u64 },
    #[error(
        "job {id} is not held under this lease (it is {state}; the lease may have expired and the job gone to another worker)",
        state = state.name()
    )]
    StaleLease { id: JobId, state: JobState },
    #[error("job {id} is {state}, not dead", state = state.name())]
    NotDead { id: JobId, state: JobState },
    #[error("job {id} already finished: it is {state}", state = state.name())]
    Finished { id: JobId, state: JobState },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{limit} reached ({max})")]
    LimitExceeded { limit: &'static str, max: u64 },
    #[error("the job service is unavailable: {reason}")]
    Unavailable { reason: String },
    /// Cluster mode: this node does not lead `__jobs` (or has not applied
    /// its term's first entry yet); the leader it knows of, with its client
    /// address when known.
    #[error("{}", match leader_id {
        Some(id) => format!("this node does not lead the job layer; node {id} does"),
        None => "the job layer has no leader yet".to_owned(),
    })]
    NotLeader {
        leader_id: Option<u64>,
        leader_address: String,
    },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> JobError {
    JobError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// What a step decided.
#[derive(Debug, Default)]
pub struct Step {
    /// To append to the log, in order, before any reply is sent.
    pub events: Vec<Event>,
    pub replies: Vec<(RequestId, Result<Reply, JobError>)>,
}
