//! When a replica may start elections: paused during a leadership transfer
//! (`transfer.rs`), and for a fresh random time after each election this
//! replica starts, so that two candidates that keep timing out together
//! fall apart; and when a replica restarts a failed election itself (not
//! when a peer with a longer log turned it down: only that peer can win).
//!
//! Why the second: openraft 0.9 draws a replica's election timeout once,
//! when the replica starts, and checks it only on its tick (every 1.5
//! heartbeats). Two replicas whose timeouts round to the same tick, and
//! whose ticks happen to line up, become candidates together in the same
//! term, each votes for itself, neither gets a majority, and they do it
//! again one timeout later, and again: with two of three replicas left
//! after a leader's death, there was no leader for three to five seconds
//! in 3 of 50 kills (`scripts/bench-cluster.sh`), and up to 7.7 s in the
//! test `candidates_that_time_out_together_still_elect_a_leader_soon`
//! (at most 1.7 s over 30 failovers with this). Raft's answer is a fresh
//! random timeout per election; this gives each election one by keeping
//! the replica's next election off for a random time after each one it
//! starts, and starting that next one itself at a fresh random time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use openraft::{Raft, ServerState};

use super::TypeConfig;

/// What decides whether this replica starts elections: the reasons they
/// are off (they run only at zero), and the last term in which a peer
/// turned this replica's vote request down for having a longer log.
#[derive(Debug, Default)]
pub(super) struct Elections {
    pauses: AtomicUsize,
    outlogged_in_term: AtomicU64,
}

impl Elections {
    /// Keeps `raft` from starting elections until the guard is dropped.
    pub(super) fn pause(self: &Arc<Self>, raft: &Raft<TypeConfig>) -> Paused {
        self.pauses.fetch_add(1, Ordering::SeqCst);
        raft.runtime_config().elect(false);
        Paused {
            elections: Arc::clone(self),
            raft: raft.clone(),
        }
    }

    /// Notes the answer to this replica's vote request for `term`: a
    /// refusal from a peer whose log is longer than the request's means
    /// this replica cannot win that election, nor the next while the peer
    /// is up.
    pub(super) fn answered(&self, term: u64, refused_for_longer_log: bool) {
        if refused_for_longer_log {
            self.outlogged_in_term.fetch_max(term, Ordering::SeqCst);
        }
    }

    fn outlogged_in(&self, term: u64) -> bool {
        self.outlogged_in_term.load(Ordering::SeqCst) == term
    }
}

/// Elections stay off while this lives (and no other pause does).
pub(super) struct Paused {
    elections: Arc<Elections>,
    raft: Raft<TypeConfig>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.elections.pauses.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.raft.runtime_config().elect(true);
        }
    }
}

/// Runs until `raft` stops: each time this replica becomes a candidate in
/// a new term, its own elections go off, and should it still be a
/// candidate of that term after a fresh random time between `timeout_min`
/// and twice it (the election failed: a split vote, or no majority
/// answered), it runs the next election itself, then. Two replicas whose
/// fixed timeouts fall on the same tick therefore no longer run together
/// every time, and a failed election costs 1.5 timeouts on average.
///
/// Except when a peer refused the vote for having a longer log: then the
/// next election is left to openraft's timer, which waits longer after
/// such a refusal. Running it here at once would raise this replica's
/// term again and again, and a peer that refuses a vote for the log does
/// not take on the requester's term: the one replica that can win would
/// keep asking in terms this one had already voted in (seen: no leader
/// for over 10 s between two survivors, one a few entries behind).
pub(super) async fn break_ties(raft: Raft<TypeConfig>, elections: Arc<Elections>, timeout_min: Duration) {
    let mut metrics = raft.metrics();
    let mut candidate_term = None;
    loop {
        let (state, term) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term)
        };
        if state == ServerState::Candidate && candidate_term != Some(term) {
            candidate_term = Some(term);
            let paused = elections.pause(&raft);
            let retry_in = timeout_min + jitter(timeout_min);
            let failed = tokio::time::timeout(
                retry_in,
                metrics.wait_for(|m| m.state != ServerState::Candidate || m.current_term != term),
            )
            .await
            .is_err();
            // Still a candidate of this term, not outdone by a longer log,
            // and nothing else (a leadership transfer) holds elections
            // off: run the next one.
            if failed
                && !elections.outlogged_in(term)
                && elections.pauses.load(Ordering::SeqCst) == 1
                && raft.trigger().elect().await.is_err()
            {
                return;
            }
            drop(paused);
            continue;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A pseudo-random duration below `max`, from the standard library's
/// per-process random hash keys and the clock.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(hasher.finish() % max_ms)
}
