//! When a replica runs for leader. openraft's own election timer is off
//! (`Config::enable_elect`); [`drive`] decides instead, and starts each
//! election with `Raft::trigger().elect()`.
//!
//! Why not openraft 0.9's timer:
//!
//! - It draws a replica's election timeout once, when the replica starts,
//!   and checks it on a tick of 1.5 heartbeats. Two replicas whose
//!   timeouts fall on the same tick, and that heard the last heartbeat
//!   together, become candidates in the same term, each votes for itself,
//!   and they do it again one timeout later, and again: with two of three
//!   replicas left after a leader's death there was no leader for three to
//!   five seconds in 3 of 50 kills (`scripts/bench-cluster.sh`), and up to
//!   7.7 s in the test
//!   `candidates_that_time_out_together_still_elect_a_leader_soon`. Raft's
//!   answer is a fresh random timeout for every wait; this draws one.
//! - After a peer refuses a vote because its log is longer, openraft waits
//!   twice the longest timeout more before the replica's next election,
//!   rightly (only the peer with the longer log can win, and a peer that
//!   refuses a vote for the log does not take on the requester's term, so
//!   a shorter log that keeps raising the term keeps the other asking in
//!   terms it has already voted in: no leader for over 10 s in 5 of 25
//!   runs of `offsets_stay_dense_across_leader_changes_and_restarts` when
//!   this module once ignored it). But it keeps that flag until its own
//!   timer has run an election, even long after the replica caught up, so
//!   that a replica once behind waited up to a second longer after the
//!   next leader's death. Here the extra wait lasts until a leader is heard
//!   from again.
//!
//! The rules, with `T` the shortest election timeout and the lease the
//! longest (a voter refuses other candidates while its leader's lease
//! runs, openraft's `leader_lease`):
//!
//! - a follower that has had a leader in its term runs after the lease
//!   plus a fresh random `T` to `2T` without hearing from it; one without
//!   (it voted for a candidate that did not win, or never heard of any)
//!   after a random `T` to `2T`;
//! - a candidate runs again after a random `T` to `2T` if its election
//!   has not ended;
//! - every wait counts from the last message of a leader (an
//!   append-entries or snapshot request this replica accepted), the last
//!   vote it granted, or the moment it became a candidate, whichever is
//!   last; after a refusal for a shorter log it is twice the lease longer;
//! - a replica that is the group's only voter runs at once; a learner or a
//!   replica outside the membership never;
//! - nobody runs while elections are paused on this replica (a leadership
//!   transfer, `transfer.rs`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Raft, ServerState};
use tokio::time::Instant;

use super::TypeConfig;

/// What decides whether this replica starts an election: the reasons
/// elections are off (they run only at zero), when it last heard from a
/// leader, and whether a peer has refused it for a shorter log since.
#[derive(Debug)]
pub(super) struct Elections {
    pauses: AtomicUsize,
    retired: AtomicBool,
    last_contact: Mutex<Instant>,
    outlogged: AtomicBool,
}

impl Default for Elections {
    fn default() -> Self {
        Elections {
            pauses: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            last_contact: Mutex::new(Instant::now()),
            outlogged: AtomicBool::new(false),
        }
    }
}

impl Elections {
    /// Keeps this replica from starting elections until the guard is
    /// dropped.
    pub(super) fn pause(self: &Arc<Self>) -> Paused {
        self.pauses.fetch_add(1, Ordering::SeqCst);
        Paused {
            elections: Arc::clone(self),
        }
    }

    /// Keeps this replica from starting elections for as long as it runs
    /// (a pause without a guard).
    pub(super) fn retire(&self) {
        if !self.retired.swap(true, Ordering::SeqCst) {
            self.pauses.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether [`retire`](Self::retire) was called: a leadership transfer
    /// to this replica is refused too.
    pub(super) fn retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    fn paused(&self) -> bool {
        self.pauses.load(Ordering::SeqCst) > 0
    }

    /// Notes a message this replica accepted from its leader, or a vote it
    /// granted: the wait before its next election starts again, without
    /// the extra wait of a refusal for a shorter log when `from_leader`.
    pub(super) fn heard(&self, from_leader: bool) {
        *self.last_contact.lock().expect("contact lock") = Instant::now();
        if from_leader {
            self.outlogged.store(false, Ordering::SeqCst);
        }
    }

    fn last_contact(&self) -> Instant {
        *self.last_contact.lock().expect("contact lock")
    }

    /// Notes the answer to one of this replica's vote requests: refused by
    /// a peer whose log is longer than the request's means this replica
    /// cannot win while that peer is up.
    pub(super) fn answered(&self, refused_for_longer_log: bool) {
        if refused_for_longer_log {
            self.outlogged.store(true, Ordering::SeqCst);
        }
    }
}

/// Elections stay off while this lives (and no other pause does).
pub(super) struct Paused {
    elections: Arc<Elections>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.elections.pauses.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A group's election timing: the shortest timeout `T` and the leader
/// lease (the longest timeout).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) timeout_min: Duration,
    pub(super) lease: Duration,
}

/// Runs until `raft` stops, starting this replica's elections by the rules
/// in the module's documentation.
pub(super) async fn drive(raft: Raft<TypeConfig>, elections: Arc<Elections>, timing: Timing) {
    let mut metrics = raft.metrics();
    // When this replica entered its current (state, term).
    let mut entered = (ServerState::Follower, 0, Instant::now());
    loop {
        let (state, term, had_leader, voter, sole_voter) = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            let voters = membership.voter_ids().count();
            let voter = membership.voter_ids().any(|id| id == m.id);
            (
                m.state,
                m.current_term,
                m.vote.committed,
                voter,
                voter && voters == 1,
            )
        };
        if (entered.0, entered.1) != (state, term) {
            entered = (state, term, Instant::now());
        }
        let campaigning = matches!(state, ServerState::Follower | ServerState::Candidate) && voter;
        if !campaigning || (sole_voter && state == ServerState::Candidate) {
            if metrics.changed().await.is_err() {
                return;
            }
            continue;
        }
        let contact = elections.last_contact();
        let since = contact.max(entered.2);
        let mut wait = if sole_voter {
            Duration::ZERO
        } else {
            timing.timeout_min + jitter(timing.timeout_min)
        };
        if state == ServerState::Follower && had_leader && !sole_voter {
            wait += timing.lease;
        }
        if elections.outlogged.load(Ordering::SeqCst) {
            wait += 2 * timing.lease;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(since + wait) => {
                if elections.last_contact() != contact {
                    // Heard from a leader (or voted) meanwhile: wait anew.
                    continue;
                }
                if elections.paused() {
                    tokio::time::sleep(timing.timeout_min).await;
                    continue;
                }
                if raft.trigger().elect().await.is_err() {
                    return;
                }
                // The next wait counts from this election.
                entered.2 = Instant::now();
                if state == ServerState::Follower {
                    // Becoming a candidate changes the metrics; until it
                    // shows, do not start another.
                    let _ = tokio::time::timeout(
                        timing.timeout_min,
                        metrics.wait_for(|m| m.state != ServerState::Follower || m.current_term != term),
                    )
                    .await;
                }
            }
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
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
