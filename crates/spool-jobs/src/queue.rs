//! Queues: the rule for their names, and what the job table keeps for each
//! known queue.
//!
//! A queue is **known** from the first job ever enqueued to it, and stays
//! known after all its jobs have left memory and across restarts (the
//! snapshot lists every known queue; replaying the log finds them in the
//! enqueue events). Reads that name a queue (stats, listings, bulk
//! re-drives and purges) answer `UnknownQueue` for any other name; a claim
//! waits on an unknown queue as on an empty one, so workers may start
//! before producers. A known queue can be paused: its jobs stay available
//! but claims hand out none of them until it is resumed; the pause is an
//! event in the log and in the snapshot, so it survives restarts. Other
//! per-queue settings, and the deletion of queues, belong here when they
//! come.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use spool_log::names::TOPIC_NAME_BYTES_MAX;
use spool_log::{is_internal_topic, validate_topic_name};

use crate::activity::QueueActivity;
use crate::indexes::Rates;
use crate::job::JobId;
use crate::request::JobError;

/// The one rule for queue names, which is the rule for topic names a
/// client may use: 1 to 249 bytes of `A-Z a-z 0-9 . _ -`, not `.` or `..`,
/// and not starting with `__` (names the server keeps for itself).
/// `field` names the request field in the error.
pub fn validate_queue_name(field: &'static str, name: &str) -> Result<(), JobError> {
    let reason = match validate_topic_name(name) {
        Err(spool_log::Error::InvalidTopicName { reason, .. }) => reason,
        Err(_) => "it is not a valid name",
        Ok(()) if is_internal_topic(name) => {
            "it starts with \"__\", which is reserved for the server's own names"
        }
        Ok(()) => return Ok(()),
    };
    let shown: String = name.chars().take(TOPIC_NAME_BYTES_MAX + 8).collect();
    Err(JobError::Invalid {
        field,
        reason: format!(
            "queue name {shown:?} is refused: {reason} (a queue name follows the rule of topic names: \
             1 to 249 bytes of A-Z a-z 0-9 . _ -, not \".\" or \"..\", not starting with \"__\")"
        ),
    })
}

/// What the table keeps for one known queue.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Paused: claims hand out none of its jobs (they stay available).
    pub(crate) paused: bool,
    /// Available jobs, highest priority first, then oldest.
    pub(crate) ready: BTreeSet<(Reverse<i32>, JobId)>,
    /// Jobs in memory per state, indexed by `JobState::index`.
    pub(crate) counts: [u64; 6],
    pub(crate) rates: Rates,
    /// Succeeded and cancelled jobs of this queue that left memory before
    /// their retention time because `finished_in_memory_max` was reached,
    /// since the table was built.
    pub(crate) finished_evicted_early: u64,
    /// Totals, latency distributions and claimers, since the table was
    /// built.
    pub(crate) activity: QueueActivity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_client_topic_rule() {
        for name in ["emails", "a", "A.b_c-9", "_one", &"x".repeat(249)] {
            validate_queue_name("queue", name).unwrap();
        }
        for name in ["", ".", "..", "a/b", "ümlaut", "__jobs", "__x", &"x".repeat(250)] {
            let error = validate_queue_name("queues", name).unwrap_err();
            let JobError::Invalid { field, reason } = &error else {
                panic!("{error:?}");
            };
            assert_eq!(*field, "queues");
            assert!(reason.contains("rule of topic names"), "{reason}");
        }
        let error = validate_queue_name("queue", "__jobs").unwrap_err().to_string();
        assert!(error.contains("starts with \"__\""), "{error}");
    }
}
