#!/usr/bin/env bash
# Runs the storage engine's criterion benchmarks together with the figures
# they are judged against, in one go, so every ratio in docs/performance.md
# comes from a single run on a single machine:
#
#   1. the machine: cores, CPU model, memory, kernel, file system, load;
#   2. dd: sequential write with one fdatasync at the end (1 GiB), 4 KiB
#      writes each followed by a sync (oflag=dsync), and a memory copy
#      to /dev/null (20,000 MiB);
#      (1 and 2 come from scripts/lib/machine.sh, shared with bench-e2e.sh
#      and bench-jobs.sh);
#   3. cargo bench --bench engine, with any arguments passed on to
#      criterion (e.g. a filter: scripts/bench-engine.sh append);
#
# and prints where criterion wrote its results. The whole output is also
# kept in target/bench-engine/<timestamp>.log.
#
# Scratch files (dd's and the benchmarks') go to a fresh directory under
# SPOOL_SCRATCH_DIR, else TMPDIR, else /tmp, removed at the end. Needs about
# 4 GiB free there. Takes about 10 minutes.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir/bench-engine"
log="$target_dir/bench-engine/$(date +%Y%m%d-%H%M%S).log"
exec > >(tee "$log") 2>&1

scratch_parent="${SPOOL_SCRATCH_DIR:-${TMPDIR:-/tmp}}"
scratch="$(mktemp -d "$scratch_parent/spool-bench.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export SPOOL_SCRATCH_DIR="$scratch"
touch "$scratch/start-stamp"

# shellcheck source=scripts/lib/machine.sh
source scripts/lib/machine.sh
section() { bench_section "$@"; }

section "machine"
bench_machine "$scratch" "$target_dir"
bench_dd "$scratch" 1024 2000 20000

section "cargo bench --bench engine -- $*"
cargo bench --bench engine -- "$@"

section "done"
echo "load:     $(bench_load)"
echo "criterion results: $target_dir/criterion/<group>/<benchmark>/new/estimates.json"
echo "  (and report/index.html when criterion's HTML reports are enabled)"
find "$target_dir/criterion" -path '*/new/estimates.json' -newer "$scratch/start-stamp" 2>/dev/null |
  sed "s|^$target_dir/criterion/||; s|/new/estimates.json$||" | sort | sed 's/^/  /'
echo "this log: $log"
