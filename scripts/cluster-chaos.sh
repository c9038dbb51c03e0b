#!/usr/bin/env bash
# Runs the cluster fault campaign for any number of rounds (default 200):
# three spoold processes on 127.0.0.1, a producer at QUORUM through the
# nodes that do not lead, a job load (enqueues, claims, completions), and
# per round one fault on the leader of the partition (first cycle of five
# rounds) or of the job layer's group `__jobs` (next cycle), in turn:
# kill -9 and restart it, pause it (SIGSTOP) past the election timeout and
# resume it, move its leadership to another node,
# restart every node at once, and restart every node in turn (SIGTERM,
# which hands the node's leaderships over). After each round every acknowledged
# record must be at its acknowledged offset in every node's committed log,
# and the three logs must be the same; every acknowledged job must exist,
# every acknowledged completion must hold, and no job whose completion was
# acknowledged may be handed out again (tests/cluster_ops.rs, chaos_rounds;
# every_fault_once runs one round of each in CI, and a kill of the
# job layer's leader).
#
#   scripts/cluster-chaos.sh [ROUNDS]
#   scripts/cluster-chaos.sh --membership [ROUNDS]
#
# With --membership it runs the membership campaign instead
# (tests/cluster_membership.rs, membership_rounds): four nodes, a
# partition of three replicas and a spare node, and each round one
# replica moved to the spare under a QUORUM produce load through every
# node, the move meeting in turn nothing, a kill -9 of the partition's
# leader, a pause of a replica that stays, and a kill -9 of the node
# running the move; a move that fails is run again through a live node
# until it ends. After each round every acknowledged record must be at its
# offset on each replica, the logs the same, and the status must place the
# partition where the move said (every_move_fault_once runs one round of
# each in CI).
#
# Builds and runs in release mode; CHAOS_PROFILE=debug uses the debug
# build instead (faster to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
campaign=(--test cluster_ops -- --ignored --nocapture chaos_rounds)
if [ "${1:-}" = "--membership" ]; then
  campaign=(--test cluster_membership -- --ignored --nocapture membership_rounds)
  shift
fi
rounds="${1:-200}"
profile=(--release)
if [ "${CHAOS_PROFILE:-release}" = "debug" ]; then
  profile=()
fi
cargo build "${profile[@]}" -p spool-server -p spool-cli
CHAOS_ROUNDS="$rounds" cargo test "${profile[@]}" "${campaign[@]}"
