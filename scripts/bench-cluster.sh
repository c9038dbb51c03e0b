#!/usr/bin/env bash
# Cluster benchmarks against the targets of issue 13, next to the single
# node in the same run, 100-byte records, client and servers on the same
# cores, loopback:
#
#   1. the machine and dd (scripts/lib/machine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. one spoold, FSYNC: spool bench produce --records-per-request 1000
#      --durability fsync --count N, then, once the kernel has written back
#      what that left dirty, spool bench latency --rate 10000
#      --durability fsync --duration 20s;
#   4. three spoold processes as a cluster (node ids 1 to 3, one data
#      directory each, peer and client listeners on 127.0.0.1), a topic of
#      one partition with three replicas, and the same two commands at
#      --durability quorum against the partition's leader;
#   4b. jobs end to end through the Rust worker runtime, no-op handler, on
#      the single node (step 3's server, started again) and on the cluster
#      (where `__jobs` is replicated over the three nodes; the client is
#      sent to its leader): spool bench jobs --count J --worker-runtime
#      --consumers 2 --claim-batch 500;
#   5. failover, KILLS times (50; 5 with --quick): kill -9 the partition's
#      leader and time until a produce at QUORUM through another node is
#      acknowledged (one `spool produce` per attempt, every 20 ms; each
#      attempt costs a process start of a few ms, counted in the figure),
#      then restart the killed node and wait until every replica has caught
#      up before the next kill. p50, p99 and max of the KILLS times.
#
#   scripts/bench-cluster.sh [--quick] [--no-build]
#
# Environment (not SPOOL_*, which spoold refuses when unknown):
# BENCH_CLUSTER_KILLS=N sets KILLS; BENCH_CLUSTER_ONLY=1 skips step 3 and
# the single node's part of 4b (for comparisons of cluster builds,
# scripts/bench-openraft-versions.sh). With --no-build the binaries are
# those under CARGO_TARGET_DIR (default target).
#
# Output: the whole log in target/bench-cluster/<timestamp>.log, JSON lines
# (each figure with its command) in target/bench-cluster/<timestamp>.jsonl,
# servers' logs in target/bench-cluster/<timestamp>-logs/. Installs jq with
# apt if missing. A full run takes about 5 minutes after the build.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup cluster

produce_count=2000000
latency_s=20
kills=50
jobs_count=300000
if [ "$quick" = 1 ]; then
  produce_count=200000 latency_s=3 kills=5 jobs_count=30000
fi
kills="${BENCH_CLUSTER_KILLS:-$kills}"
cluster_only="${BENCH_CLUSTER_ONLY:-0}"

bench_section "machine"
bench_machine "$scratch" "$target_dir"
bench_dd "$scratch"
ensure_apt jq jq
report_init "$jsonl" cluster
report_machine

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"

# produce_and_latency KEY DURABILITY PRODUCE_TARGET LATENCY_TARGET [ARGS...]:
# the throughput and latency shapes against $SPOOLD_URL, ARGS added to both.
produce_and_latency() {
  local key="$1" durability="$2" produce_target="$3" latency_target="$4"
  shift 4
  if spool_bench "$key.produce1000" bench produce "$@" --record-bytes 100 --records-per-request 1000 \
    --durability "$durability" --count "$produce_count" --json; then
    report "$key.produce1000" "$(jq -r .records_per_s <<<"$RUN_JSON")" records/s "$produce_target" "$RUN_COMMAND" \
      "1,000 x 100-byte records per request; steal $RUN_STEAL%"
  fi
  # The produce phase leaves hundreds of MB for the kernel to write back;
  # latency is measured once that is done.
  bench_quiet
  if spool_bench "$key.latency" bench latency "$@" --rate 10000 --durability "$durability" \
    --duration "${latency_s}s" --json; then
    report "$key.latency.p50" "$(jq -r '.latency_us.p50 / 1000' <<<"$RUN_JSON")" ms "" "$RUN_COMMAND" \
      "end to end at 10,000 records/s; steal $RUN_STEAL%"
    report "$key.latency.p99" "$(jq -r '.latency_us.p99 / 1000' <<<"$RUN_JSON")" ms "$latency_target" "$RUN_COMMAND" \
      "end to end at 10,000 records/s; steal $RUN_STEAL%"
  fi
}

# jobs_end_to_end KEY TARGET: no-op jobs through the worker runtime against
# $SPOOLD_URL.
jobs_end_to_end() {
  local key="$1" target="$2"
  if spool_bench "$key.jobs" bench jobs --count "$jobs_count" --worker-runtime --consumers 2 --claim-batch 500 \
    --queue "bench-$key" --json; then
    report "$key.jobs" "$(jq -r .completed_per_s <<<"$RUN_JSON")" jobs/s "$target" "$RUN_COMMAND" \
      "no-op jobs: enqueue, claim, complete; 2 workers of concurrency 500; steal $RUN_STEAL%"
  fi
}

if [ "$cluster_only" != 1 ]; then
  bench_section "single node, FSYNC"
  spoold_start single "$scratch/single" --admin-listen off
  produce_and_latency single fsync "" ""
  bench_quiet
  jobs_end_to_end single ""
  spoold_stop TERM
fi

bench_section "three nodes, QUORUM"
declare -a peer_ports client_ports node_pids
for id in 1 2 3; do
  peer_ports[id]="$(free_port)"
  client_ports[id]="$(free_port)"
done
peers="1=127.0.0.1:${peer_ports[1]},2=127.0.0.1:${peer_ports[2]},3=127.0.0.1:${peer_ports[3]}"
echo "peers: $peers"

node_url() { echo "http://127.0.0.1:${client_ports[$1]}"; }

node_start() {
  local id="$1"
  RUST_LOG="${RUST_LOG:-info}" "$SPOOLD" --node-id "$id" --peers "$peers" --data-dir "$scratch/n$id" \
    --listen "127.0.0.1:${client_ports[id]}" --admin-listen off \
    >>"$LOG_DIR/node$id.out" 2>>"$LOG_DIR/node$id.err" </dev/null &
  node_pids[id]=$!
  track "${node_pids[id]}"
}

# status_json ID: the cluster status as node ID sees it ("" if it does not answer).
status_json() { "$SPOOL" --server "$(node_url "$1")" cluster status --json 2>/dev/null || true; }

# leader_of ID: the leader of bench/0 as node ID sees it (empty if none).
leader_of() {
  status_json "$1" | jq -r '.groups[]? | select(.topic == "bench" and .partition == 0) | .leader_id // empty'
}

# caught_up ID: every replica of every group answers, and none lags.
caught_up() {
  status_json "$1" |
    jq -e '([.nodes[].reachable] | all) and ([.groups[].replicas[] | .lag_entries == 0 and .role != "unreachable"] | all)' \
      >/dev/null 2>&1
}

wait_until() {
  local what="$1" deadline=$((SECONDS + 60))
  shift
  until "$@"; do
    if ((SECONDS > deadline)); then
      echo "error: $what did not happen within 60 s" >&2
      exit 1
    fi
    sleep 0.1
  done
}

for id in 1 2 3; do node_start "$id"; done
wait_until "node 1 answering" "$SPOOL" --server "$(node_url 1)" cluster status >/dev/null 2>&1
wait_until "creating the topic" "$SPOOL" --server "$(node_url 1)" topic create bench --partitions 1 --replication-factor 3
leader=""
find_leader() { leader="$(leader_of 1)"; [ -n "$leader" ]; }
wait_until "a leader for bench/0" find_leader
echo "leader of bench/0: node $leader"
SPOOLD_URL="$(node_url "$leader")"
produce_and_latency cluster quorum ">= 300000" "< 10" --topic bench --keep
bench_quiet
jobs_end_to_end cluster ">= 20000"

bench_section "failover: kill -9 of the partition's leader, $kills times"
times_ms=()
for round in $(seq 1 "$kills"); do
  wait_until "every replica caught up" caught_up 1
  find_leader || { echo "error: no leader before round $round" >&2; exit 1; }
  other=$((leader % 3 + 1))
  killed="$leader"
  started="$(now_us)"
  kill -9 "${node_pids[killed]}"
  untrack "${node_pids[killed]}"
  attempts=0
  until echo "failover $round" | "$SPOOL" --server "$(node_url "$other")" produce bench --durability quorum >/dev/null 2>&1; do
    attempts=$((attempts + 1))
    if ((attempts > 1500)); then
      echo "error: no produce acknowledged within 30 s of killing node $killed" >&2
      exit 1
    fi
    sleep 0.02
  done
  elapsed_ms="$(awk -v a="$started" -v b="$(now_us)" 'BEGIN {printf "%.0f", (b - a) / 1000}')"
  times_ms+=("$elapsed_ms")
  echo "round $round: killed node $killed; a produce through node $other acknowledged after $elapsed_ms ms ($attempts failed attempts)"
  wait "${node_pids[killed]}" 2>/dev/null || true
  node_start "$killed"
  wait_until "node $killed answering" "$SPOOL" --server "$(node_url "$killed")" cluster status >/dev/null 2>&1
done
sorted="$(printf '%s\n' "${times_ms[@]}" | sort -n)"
percentile() { awk -v p="$1" '{v[NR] = $1} END {i = int((NR * p + 99) / 100); if (i < 1) i = 1; print v[i]}' <<<"$sorted"; }
failover_command="kill -9 of the leader; until echo ... | spool produce bench --durability quorum (via another node) succeeds"
report cluster.failover.p50 "$(percentile 50)" ms "" "$failover_command" "$kills kills"
report cluster.failover.p99 "$(percentile 99)" ms "< 2000" "$failover_command" "$kills kills"
report cluster.failover.max "$(percentile 100)" ms "" "$failover_command" "$kills kills"
report_ratio cluster.produce1000.vs_single cluster.produce1000 single.produce1000 "" \
  "QUORUM on three nodes against FSYNC on one, same run"
report_ratio cluster.jobs.vs_single cluster.jobs single.jobs "" \
  "jobs with __jobs replicated on three nodes against one node, same run"

bench_section "summary"
report_table
