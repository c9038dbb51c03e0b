#!/usr/bin/env bash
# openraft 0.9.25 (the tree as committed) against the 0.10 alpha (the same
# tree with scripts/openraft-0.10/engine.patch applied), on the cluster
# figures of scripts/bench-cluster.sh (issue 13), in one time window:
#
#   1. two temporary git worktrees of the commit the patch was made
#      against (707fa87; --at REV for another, once the patch is made
#      again there); the patch applied to one;
#   2. cargo build --release -p spool-server -p spool-cli in each, one after
#      the other, into TARGET/openraft-versions/target-0.9 and
#      target-0.10 (kept, so the next run builds incrementally);
#   3. RUNS rounds, each running, for both builds and in alternating order
#      (0.9 first in odd rounds, 0.10 first in even ones):
#        BENCH_CLUSTER_ONLY=1 BENCH_CLUSTER_KILLS=KILLS \
#          CARGO_TARGET_DIR=<that build> scripts/bench-cluster.sh --no-build
#      that is three spoold processes on 127.0.0.1, QUORUM produce of
#      100-byte records in requests of 1,000, latency at 10,000 records/s,
#      replicated jobs through the worker runtime, and KILLS kill -9s of
#      the partition's leader timed until a QUORUM produce through another
#      node is acknowledged;
#   4. a table of every figure per run and the median per version, the
#      exact commands, and where each run's log is.
#
#   scripts/bench-openraft-versions.sh [--runs N] [--kills N | --full]
#       [--wait-load L] [--at REV] [--no-build --target-0.9 DIR --target-0.10 DIR]
#
#   --runs N     rounds (default 2)
#   --kills N    kills per run (default 10); --full: 50, as bench-cluster.sh
#   --wait-load L  before each run, wait (10 minutes at most) until the
#                one-minute load average is below L: on a shared machine,
#                so that no run starts in the middle of another's work;
#                the table shows the load each run started at
#   --no-build   use release binaries already built: DIR/release/spoold and
#                DIR/release/spool of each version (no worktrees are made)
#
# Output: the whole log in TARGET/bench-openraft-versions/<timestamp>.log,
# each run's own log and JSON lines under its build's bench-cluster/.
# TARGET is CARGO_TARGET_DIR, default target. A run of 2 rounds of 10 kills
# takes about 15 minutes after the builds (about 8 minutes each on 2 cores).
set -euo pipefail
export LC_ALL=C

script="$0"
runs=2
kills=10
build=1
wait_load=""
# The commit engine.patch is the diff against (scripts/openraft-0.10/README.md).
base=707fa87
target_09=""
target_010=""
usage() {
  echo "usage: $script [--runs N] [--kills N | --full] [--wait-load L] [--at REV] [--no-build --target-0.9 DIR --target-0.10 DIR]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
  --runs) runs="${2:?}" && shift ;;
  --kills) kills="${2:?}" && shift ;;
  --full) kills=50 ;;
  --wait-load) wait_load="${2:?}" && shift ;;
  --no-build) build=0 ;;
  --target-0.9) target_09="${2:?}" && shift ;;
  --target-0.10) target_010="${2:?}" && shift ;;
  --at) base="${2:?}" && shift ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *) usage ;;
  esac
  shift
done
[[ "$runs" =~ ^[1-9][0-9]*$ && "$kills" =~ ^[1-9][0-9]*$ && "$wait_load" =~ ^([0-9]+([.][0-9]+)?)?$ ]] || usage
if [ "$build" = 0 ] && { [ -z "$target_09" ] || [ -z "$target_010" ]; }; then usage; fi

cd "$(dirname "$0")/.."
repo="$PWD"
patch="$repo/scripts/openraft-0.10/engine.patch"

# shellcheck source=scripts/lib/run.sh
source scripts/lib/run.sh
bench_setup openraft-versions

worktrees=()
remove_worktrees() {
  local tree
  for tree in "${worktrees[@]}"; do
    git -C "$repo" worktree remove --force "$tree" 2>/dev/null || true
  done
  git -C "$repo" worktree prune
}
trap 'remove_worktrees; bench_cleanup' EXIT

bench_section "machine"
bench_machine "$scratch" "$target_dir"
ensure_apt jq jq

# build VERSION TREE TARGET: the release binaries of TREE into TARGET.
build_version() {
  local version="$1" tree="$2" target="$3"
  bench_section "build: openraft $version"
  echo "\$ (cd $tree && CARGO_TARGET_DIR=$target cargo build --release -p spool-server -p spool-cli)"
  (cd "$tree" && CARGO_TARGET_DIR="$target" cargo build --release -p spool-server -p spool-cli)
}

if [ "$build" = 1 ]; then
  target_09="$target_dir/openraft-versions/target-0.9"
  target_010="$target_dir/openraft-versions/target-0.10"
  case "$target_09" in /*) ;; *) target_09="$repo/$target_09" target_010="$repo/$target_010" ;; esac
  for version in 0.9 0.10; do
    tree="$scratch/wt-$version"
    git -C "$repo" worktree add --detach "$tree" "$base" >/dev/null
    worktrees+=("$tree")
  done
  echo "\$ git apply $patch (in $scratch/wt-0.10)"
  git -C "$scratch/wt-0.10" apply "$patch"
  grep -m1 '^openraft = ' "$scratch/wt-0.9/Cargo.toml"
  grep -m1 '^openraft = ' "$scratch/wt-0.10/Cargo.toml"
  build_version 0.9 "$scratch/wt-0.9" "$target_09"
  build_version 0.10 "$scratch/wt-0.10" "$target_010"
fi
for target in "$target_09" "$target_010"; do
  spool_binaries "$target"
done

declare -A results=()
commands=()
keys=(cluster.produce1000 cluster.latency.p50 cluster.latency.p99 cluster.jobs
  cluster.failover.p50 cluster.failover.p99 cluster.failover.max load)

# load_below L: true when the one-minute load average is below L.
load_below() { awk -v l="$1" '{exit !($1 < l)}' /proc/loadavg; }

# run_version ROUND VERSION TARGET: one bench-cluster.sh run against the
# build in TARGET; its figures go to results[VERSION,ROUND,KEY].
run_version() {
  local round="$1" version="$2" target="$3" jsonl key value deadline
  bench_section "round $round: openraft $version"
  if [ -n "$wait_load" ]; then
    deadline=$((SECONDS + 600))
    until load_below "$wait_load" || ((SECONDS > deadline)); do sleep 5; done
  fi
  echo "load before: $(bench_load)"
  echo "started:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  results["$version,$round,load"]="$(cut -d' ' -f1 /proc/loadavg)"
  local command="BENCH_CLUSTER_ONLY=1 BENCH_CLUSTER_KILLS=$kills CARGO_TARGET_DIR=$target scripts/bench-cluster.sh --no-build"
  echo "\$ $command"
  commands+=("$command")
  if ! BENCH_CLUSTER_ONLY=1 BENCH_CLUSTER_KILLS="$kills" CARGO_TARGET_DIR="$target" \
    scripts/bench-cluster.sh --no-build; then
    echo "round $round, openraft $version: bench-cluster.sh failed; its figures are missing"
  fi
  echo "finished:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  jsonl="$(find "$target/bench-cluster" -name '*.jsonl' -newer "$scratch/rounds-start" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)"
  [ -n "$jsonl" ] || return 0
  echo "figures: $jsonl"
  for key in "${keys[@]}"; do
    [ "$key" = load ] && continue
    value="$(jq -r --arg k "$key" 'select(.kind == "figure" and .key == $k) | .value' "$jsonl" | tail -1)"
    results["$version,$round,$key"]="$value"
  done
}

touch "$scratch/rounds-start"
for round in $(seq 1 "$runs"); do
  if ((round % 2 == 1)); then
    run_version "$round" 0.9 "$target_09"
    run_version "$round" 0.10 "$target_010"
  else
    run_version "$round" 0.10 "$target_010"
    run_version "$round" 0.9 "$target_09"
  fi
done

bench_section "openraft 0.9.25 against 0.10 ($runs rounds, $kills kills per run)"
units=(records/s ms ms jobs/s ms ms ms "1 min, at start")
{
  header="figure	unit"
  for version in 0.9 0.10; do
    for round in $(seq 1 "$runs"); do header+="	$version#$round"; done
    header+="	$version median"
  done
  echo "$header	0.10/0.9"
  for i in "${!keys[@]}"; do
    key="${keys[i]}"
    line="$key	${units[i]}"
    declare -A medians=()
    for version in 0.9 0.10; do
      values=()
      for round in $(seq 1 "$runs"); do
        value="${results["$version,$round,$key"]:-}"
        line+="	${value:--}"
        [ -n "$value" ] && values+=("$value")
      done
      medians[$version]=""
      [ "${#values[@]}" -gt 0 ] && medians[$version]="$(median "${values[@]}")"
      line+="	${medians[$version]:--}"
    done
    ratio="-"
    if [ -n "${medians[0.9]}" ] && [ -n "${medians[0.10]}" ]; then
      ratio="$(awk -v a="${medians[0.10]}" -v b="${medians[0.9]}" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a / b}')"
    fi
    echo "$line	$ratio"
    unset medians
  done
} | awk -F'\t' '
  { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NF; rows = NR }
  END { for (r = 1; r <= rows; r++) { for (i = 1; i <= n; i++) printf (i <= 2 ? "%-" w[i] "s  " : "%" w[i] "s  "), cell[r, i]; printf "\n" } }'
echo "medians: of an even count, the lower of the two middle values (scripts/lib/report.sh)"
echo
echo "commands, in the order run:"
printf '  %s\n' "${commands[@]}"
echo "inside each run (scripts/bench-cluster.sh): spool bench produce --record-bytes 100 --records-per-request 1000 --durability quorum;"
echo "  spool bench latency --rate 10000 --durability quorum; spool bench jobs --worker-runtime --consumers 2 --claim-batch 500;"
echo "  failover: kill -9 of the leader, then echo ... | spool produce bench --durability quorum through another node every 20 ms until acknowledged"
echo "load after: $(bench_load)"
