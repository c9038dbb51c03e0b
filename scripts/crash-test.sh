#!/usr/bin/env bash
# Runs the kill -9 durability test for any number of rounds (default 200):
# a child process appends with Fsync durability from several threads and is
# killed with SIGKILL at a random moment; every acknowledged record must be
# in the log after restart, byte for byte, with no gaps.
#
#   scripts/crash-test.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-200}"
SPOOL_CRASH_ROUNDS="$rounds" cargo test --release -p spool-log --test crash -- --nocapture kill_9
