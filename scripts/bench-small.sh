#!/usr/bin/env bash
# Small-request benchmarks of Spool against the targets of issue 15, each
# shape next to its peer (Redis 7 Streams or BullMQ) in the same run on the
# same machine, 100-byte records, one request in flight, client and server
# on the same cores, loopback:
#
#   1. the machine and dd (scripts/lib/machine.sh, as in bench-engine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. spoold on a fresh data directory, and two Redis servers (apt's
#      redis-server, appendonly yes), one with appendfsync everysec and one
#      with appendfsync always, on 127.0.0.1;
#   4. rounds (3; 1 with --quick) of six shapes, each shape's Spool command
#      next to its peer's; the order of the shapes rotates from one round to
#      the next and the peer goes first in every other round:
#      produce1.none   spool bench produce --records-per-request 1 --in-flight 1
#                        --durability none --duration 10s --json
#                      redis-benchmark -c 1 -P 1 -n N XADD bench '*' f <100 bytes>
#                        (appendfsync everysec; XLEN checked)
#      produce1.fsync  the same with --durability fsync / appendfsync always
#      fetch1          spool bench fetch --records-per-request 1 --count N --json
#                      redis_bench.py consume --batch 1 --preload: XREADGROUP
#                        COUNT 1 + XACK per entry, one round trip each
#      enqueue1        spool bench jobs --mode enqueue --single-enqueue
#                        --enqueuers 1 --count N --json (one Enqueue RPC per job)
#                      bullmq_bench.cjs PORT N 1 add: Queue.add, one at a time
#                        awaited (Redis appendfsync everysec)
#      worker.c1       spool bench jobs --mode backlog --worker-runtime
#                        --consumers 1 --claim-batch 1 --count N --json
#                        (the Rust worker runtime at concurrency 1 draining N
#                        no-op jobs enqueued before the clock starts)
#                      bullmq_bench.cjs PORT N 1: a Worker at concurrency 1
#                        draining N jobs added first (process_jobs_per_s)
#      worker.c50      the same at concurrency 50 (--claim-batch 50);
#      batched         spool bench produce --records-per-request 1000
#                        --in-flight 1 --durability none, then spool bench
#                        fetch --records-per-request 1000 (no peer: the
#                        issue's targets are 1.5M and 2.7M records/s)
#      latency         spool bench latency --rate 10000 --duration T
#                      redis_bench.py latency --rate 10000: XADD paced to
#                        XREADGROUP BLOCK (appendfsync everysec)
#      The Spool commands with one request in flight run with --threads 1
#      (one runtime thread in the client; docs/performance.md, "Third pass").
#   5. the median of the rounds for each figure, and each Spool/peer ratio
#      (Redis/Spool for latencies, Spool/target for the batched shapes)
#      against issue 15's target in a summary table; every run's figure
#      carries its command and the CPU steal during it (the share of CPU
#      time the host took from this virtual machine). JSON lines (each
#      figure with the command line that produced it) go to
#      target/bench-small/<timestamp>.jsonl, the whole output to
#      target/bench-small/<timestamp>.log and the servers' logs to
#      target/bench-small/<timestamp>-logs/.
#
#   scripts/bench-small.sh [--quick] [--no-build]
#
# --quick runs one round of 2-second shapes (a smoke test; its figures mean
# little). --no-build uses the release binaries already in target/.
# Installs what it lacks (jq, redis-server and redis-tools with apt; node
# and npm with apt if there is no node; the redis and hiredis Python
# packages with pip into target/bench-venv; bullmq and ioredis with npm into
# target/bench-bullmq; BULLMQ_VERSION and IOREDIS_VERSION override 6.7.0
# and 5.11.1). Scratch data goes to a fresh directory under
# SPOOL_SCRATCH_DIR, else TMPDIR, else /tmp, removed at the end. A full run
# takes about 12 minutes after the build.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup small

if [ "$quick" = 1 ]; then
  rounds=1 produce_s=2 xadd_count=10000 xadd_always_count=1000 fetch_count=3000
  enqueue_count=2000 worker_c1_count=2000 worker_c50_count=10000 dd_args=(64 200 2000)
  batched_fetch_requests=300 latency_s=2
else
  rounds=3 produce_s=10 xadd_count=100000 xadd_always_count=20000 fetch_count=30000
  enqueue_count=20000 worker_c1_count=20000 worker_c50_count=100000 dd_args=(1024 2000 20000)
  batched_fetch_requests=3000 latency_s=10
fi
record_bytes=100
bullmq_version="${BULLMQ_VERSION:-6.7.0}"
ioredis_version="${IOREDIS_VERSION:-5.11.1}"

bench_section "machine"
bench_machine "$scratch" "$target_dir"
echo "mode:        $([ "$quick" = 1 ] && echo 'quick (smoke test: figures mean little)' || echo full)"
bench_dd "$scratch" "${dd_args[@]}"

bench_section "tools"
ensure_apt jq jq
ensure_apt redis-server redis-server redis-tools
ensure_apt redis-benchmark redis-tools
ensure_apt node nodejs npm
ensure_apt npm npm
ensure_venv "$target_dir/bench-venv" redis=redis hiredis=hiredis
# An absolute CARGO_TARGET_DIR must not be put under the working directory.
bullmq_dir="$(cd "$target_dir" && pwd)/bench-bullmq"
ensure_bullmq "$bullmq_dir" "$bullmq_version" "$ioredis_version"
echo "redis-server: $(redis-server --version)"
echo "python:       $("$PYTHON" --version), redis-py $("$PYTHON" -c 'import redis; print(redis.__version__)')," \
  "hiredis $("$PYTHON" -c 'import hiredis; print(hiredis.__version__)')"
echo "node:         $(node --version), bullmq $(jq -r .version "$bullmq_dir/node_modules/bullmq/package.json")," \
  "ioredis $(jq -r .version "$bullmq_dir/node_modules/ioredis/package.json")"
report_init "$jsonl" small
report_machine

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"

bench_section "servers"
spoold_start small "$scratch/spool-data"
redis_start redis-everysec "$scratch/redis-everysec" --appendonly yes --appendfsync everysec
redis_everysec_port="$REDIS_PORT"
redis_start redis-always "$scratch/redis-always" --appendonly yes --appendfsync always
redis_always_port="$REDIS_PORT"
value="$(head -c "$record_bytes" /dev/zero | tr '\0' v)"

# Every run's figure, per key: "value value ...", for the medians.
declare -A runs=()
# The command of each key, for the median's line.
declare -A commands=()
steals=()

# record KEY ROUND VALUE UNIT COMMAND NOTE: one run's figure, with the CPU
# steal of the command in its note.
record() {
  local key="$1" round="$2" value="$3" unit="$4" command="$5" note="$6"
  report "$key.run$round" "$value" "$unit" "" "$command" "$note; steal $RUN_STEAL%"
  if [ -n "${REPORT_VALUES[$key.run$round]:-}" ]; then
    runs[$key]+="$value "
    commands[$key]="$command"
    steals+=("$RUN_STEAL")
  fi
}

# latency_note JSON PATH: "p50 X µs, p99 Y µs" of the percentiles at PATH.
latency_note() {
  jq -r "$2 | \"round trip p50 \(.p50) µs, p99 \(.p99) µs, p99.9 \(.p99_9) µs (\(.samples) samples)\"" <<<"$1"
}

# redis_xadd KEY ROUND PORT COUNT FSYNC: redis-benchmark sends COUNT XADDs,
# one at a time (-c 1 -P 1), to a fresh stream.
redis_xadd() {
  local key="$1" round="$2" port="$3" count="$4" fsync="$5" out rps p50 p99 length ticks command
  local xadd=(redis-benchmark -h 127.0.0.1 -p "$port" -c 1 -P 1 -n "$count" --csv XADD bench '*' f "$value")
  redis-cli -h 127.0.0.1 -p "$port" del bench >/dev/null
  command="$(printf '%q ' "${xadd[@]:0:${#xadd[@]}-1}")<${record_bytes}-byte value>"
  echo "\$ $command"
  ticks="$(bench_cpu_ticks)"
  if ! out="$("${xadd[@]}")"; then
    report_skip "$key.run$round" "failed: $command"
    return 0
  fi
  RUN_STEAL="$(bench_steal_since "$ticks")"
  echo "$out" | cut -c1-200
  echo "steal:       $RUN_STEAL% of the CPU time taken by the host during this command"
  report_raw "$key.run$round" "$command" "$out"
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  read -r rps p50 p99 < <(awk -F'","' 'NR > 1 && /^"XADD/ {print $2, $5, $7; exit}' <<<"$out") || true
  length="$(redis-cli -h 127.0.0.1 -p "$port" xlen bench)"
  if [ "$length" != "$count" ]; then
    report_skip "$key.run$round" "XLEN bench is $length after $count XADDs"
    return 0
  fi
  record "$key" "$round" "$rps" requests/s "$command" \
    "one XADD per round trip, appendonly yes, appendfsync $fsync; XLEN checked; latency p50 $p50 ms, p99 $p99 ms"
}

shape_produce1() {
  local durability="$1" round="$2" peer_first="$3" port fsync count
  if [ "$durability" = none ]; then
    port="$redis_everysec_port" fsync=everysec count="$xadd_count"
  else
    port="$redis_always_port" fsync=always count="$xadd_always_count"
  fi
  bench_section "round $round: produce, one record per request, $durability (Redis: appendfsync $fsync)"
  [ "$peer_first" = 1 ] && redis_xadd "redis.xadd.$fsync" "$round" "$port" "$count" "$fsync"
  if spool_bench "spool.produce1.$durability.run$round" --threads 1 bench produce --records-per-request 1 --in-flight 1 \
    --durability "$durability" --record-bytes "$record_bytes" --duration "${produce_s}s" --json; then
    record "spool.produce1.$durability" "$round" "$(jq -r .requests_per_s <<<"$RUN_JSON")" requests/s "$RUN_COMMAND" \
      "one record per Produce, one in flight; $(latency_note "$RUN_JSON" .latency_us)"
  fi
  [ "$peer_first" = 1 ] || redis_xadd "redis.xadd.$fsync" "$round" "$port" "$count" "$fsync"
}

redis_fetch1() {
  local round="$1"
  if run_json "redis.xreadgroup1.run$round" "$PYTHON" scripts/lib/redis_bench.py consume --port "$redis_everysec_port" \
    --stream "fetch$round" --count "$fetch_count" --batch 1 --preload --record-bytes "$record_bytes"; then
    record redis.xreadgroup1 "$round" "$(jq -r .requests_per_s <<<"$RUN_JSON")" requests/s "$RUN_COMMAND" \
      "XREADGROUP COUNT 1 + XACK per entry, one round trip each (redis-py); pending after $(jq -r .pending_after <<<"$RUN_JSON"); $(latency_note "$RUN_JSON" .round_trip_us)"
  fi
}

shape_fetch1() {
  local round="$1" peer_first="$2"
  bench_section "round $round: fetch, one record per request (Redis: XREADGROUP COUNT 1 + XACK)"
  [ "$peer_first" = 1 ] && redis_fetch1 "$round"
  if spool_bench "spool.fetch1.run$round" --threads 1 bench fetch --records-per-request 1 --count "$fetch_count" \
    --record-bytes "$record_bytes" --json; then
    record spool.fetch1 "$round" "$(jq -r .requests_per_s <<<"$RUN_JSON")" requests/s "$RUN_COMMAND" \
      "one Fetch per record, backlog preloaded untimed; $(latency_note "$RUN_JSON" .latency_us)"
  fi
  [ "$peer_first" = 1 ] || redis_fetch1 "$round"
}

# bullmq ROUND ARGS...: runs bullmq_bench.cjs against the everysec Redis.
bullmq() {
  local key="$1"
  shift
  NODE_PATH="$bullmq_dir/node_modules" run_json "$key" node scripts/lib/bullmq_bench.cjs "$redis_everysec_port" "$@"
}

bullmq_add() {
  local round="$1"
  if bullmq "bullmq.add.run$round" "$enqueue_count" 1 add; then
    record bullmq.add "$round" "$(jq -r .add_jobs_per_s <<<"$RUN_JSON")" jobs/s "NODE_PATH=target/bench-bullmq/node_modules $RUN_COMMAND" \
      "Queue.add one at a time, awaited; appendfsync everysec; $(latency_note "$RUN_JSON" .round_trip_us)"
  fi
}

shape_enqueue1() {
  local round="$1" peer_first="$2"
  bench_section "round $round: one job enqueued per request (BullMQ: Queue.add awaited)"
  [ "$peer_first" = 1 ] && bullmq_add "$round"
  if spool_bench "spool.enqueue1.run$round" --threads 1 bench jobs --mode enqueue --single-enqueue --enqueuers 1 \
    --count "$enqueue_count" --payload-bytes "$record_bytes" --json; then
    record spool.enqueue1 "$round" "$(jq -r .jobs_per_s <<<"$RUN_JSON")" jobs/s "$RUN_COMMAND" \
      "one Enqueue RPC per job, durable (fsynced), one in flight; $(latency_note "$RUN_JSON" .enqueue_round_trip_us)"
  fi
  [ "$peer_first" = 1 ] || bullmq_add "$round"
}

bullmq_worker() {
  local concurrency="$1" round="$2" count="$3"
  if bullmq "bullmq.worker.c$concurrency.run$round" "$count" "$concurrency"; then
    record "bullmq.worker.c$concurrency" "$round" "$(jq -r .process_jobs_per_s <<<"$RUN_JSON")" jobs/s \
      "NODE_PATH=target/bench-bullmq/node_modules $RUN_COMMAND" \
      "Worker concurrency $concurrency, no-op handler, $count jobs added first (addBulk, untimed); appendfsync everysec"
  fi
}

shape_worker() {
  local concurrency="$1" round="$2" peer_first="$3" count
  count="$([ "$concurrency" = 1 ] && echo "$worker_c1_count" || echo "$worker_c50_count")"
  bench_section "round $round: worker at concurrency $concurrency on a preloaded backlog of $count no-op jobs"
  [ "$peer_first" = 1 ] && bullmq_worker "$concurrency" "$round" "$count"
  # One job in flight needs one client thread (`--threads`, docs/performance.md).
  local threads=()
  [ "$concurrency" = 1 ] && threads=(--threads 1)
  if spool_bench "spool.worker.c$concurrency.run$round" "${threads[@]}" bench jobs --mode backlog --worker-runtime --consumers 1 \
    --claim-batch "$concurrency" --count "$count" --payload-bytes "$record_bytes" --json; then
    record "spool.worker.c$concurrency" "$round" "$(jq -r .jobs_per_s <<<"$RUN_JSON")" jobs/s "$RUN_COMMAND" \
      "Rust worker runtime, concurrency $concurrency, no-op handler, backlog enqueued first (untimed); claims $(jq -r .claims <<<"$RUN_JSON"), FinishBatch calls $(jq -r .finish_batches <<<"$RUN_JSON"); completion interval p50 $(jq -r .latency_us.p50 <<<"$RUN_JSON") µs, p99 $(jq -r .latency_us.p99 <<<"$RUN_JSON") µs"
  fi
  [ "$peer_first" = 1 ] || bullmq_worker "$concurrency" "$round" "$count"
}

# The batched shapes of issue 15 (one request of 1,000 records in flight,
# NONE), whose targets are figures, not a peer run here (Apache Iggy, the
# issue's peer for them, is not in any registry this machine reaches).
shape_batched() {
  local round="$1" fetch_batched_count
  fetch_batched_count=$((batched_fetch_requests * 1000))
  bench_section "round $round: batches of 1,000 records, one request in flight, NONE (no peer: targets 1.5M produce, 2.7M fetch)"
  if spool_bench "spool.produce1000.run$round" --threads 1 bench produce --records-per-request 1000 --in-flight 1 \
    --durability none --record-bytes "$record_bytes" --duration "${produce_s}s" --json; then
    record spool.produce1000 "$round" "$(jq -r .records_per_s <<<"$RUN_JSON")" records/s "$RUN_COMMAND" \
      "1,000 records per Produce, one in flight; $(latency_note "$RUN_JSON" .latency_us)"
  fi
  if spool_bench "spool.fetch1000.run$round" --threads 1 bench fetch --records-per-request 1000 \
    --count "$fetch_batched_count" --record-bytes "$record_bytes" --json; then
    record spool.fetch1000 "$round" "$(jq -r .records_per_s <<<"$RUN_JSON")" records/s "$RUN_COMMAND" \
      "one Fetch per stored batch of 1,000 records, backlog preloaded untimed; $(latency_note "$RUN_JSON" .latency_us)"
  fi
}

# End-to-end latency at 10,000 records/s: Spool's producer to its
# subscriber beside Redis XADD to XREADGROUP BLOCK (redis-py, everysec).
redis_latency() {
  local round="$1"
  if run_json "redis.latency.run$round" "$PYTHON" scripts/lib/redis_bench.py latency --port "$redis_everysec_port" \
    --stream "latency$round" --rate 10000 --seconds "$latency_s" --record-bytes "$record_bytes"; then
    record redis.latency.p50 "$round" "$(jq -r '.latency_ms.p50 * 1000' <<<"$RUN_JSON")" µs "$RUN_COMMAND" \
      "XADD paced at 10,000/s to XREADGROUP BLOCK (redis-py); p99 $(jq -r .latency_ms.p99 <<<"$RUN_JSON") ms"
    record redis.latency.p99 "$round" "$(jq -r '.latency_ms.p99 * 1000' <<<"$RUN_JSON")" µs "$RUN_COMMAND" \
      "XADD paced at 10,000/s to XREADGROUP BLOCK (redis-py)"
  fi
}

shape_latency() {
  local round="$1" peer_first="$2"
  bench_section "round $round: end to end at 10,000 records/s (Redis: XADD to XREADGROUP BLOCK)"
  [ "$peer_first" = 1 ] && redis_latency "$round"
  if spool_bench "spool.latency.run$round" bench latency --rate 10000 --duration "${latency_s}s" \
    --record-bytes "$record_bytes" --json; then
    record spool.latency.p50 "$round" "$(jq -r .latency_us.p50 <<<"$RUN_JSON")" µs "$RUN_COMMAND" \
      "producer paced at 10,000 records/s to a subscriber; p99 $(jq -r .latency_us.p99 <<<"$RUN_JSON") µs"
    record spool.latency.p99 "$round" "$(jq -r .latency_us.p99 <<<"$RUN_JSON")" µs "$RUN_COMMAND" \
      "producer paced at 10,000 records/s to a subscriber"
  fi
  [ "$peer_first" = 1 ] || redis_latency "$round"
}

shapes=("produce1 none" "produce1 fsync" "fetch1" "enqueue1" "worker 1" "worker 50" "batched" "latency")
for ((round = 1; round <= rounds; round++)); do
  peer_first=$((round % 2 == 0 ? 1 : 0))
  for ((i = 0; i < ${#shapes[@]}; i++)); do
    read -ra shape <<<"${shapes[$(((i + round - 1) % ${#shapes[@]}))]}"
    case "${shape[0]}" in
    produce1) shape_produce1 "${shape[1]}" "$round" "$peer_first" ;;
    fetch1) shape_fetch1 "$round" "$peer_first" ;;
    enqueue1) shape_enqueue1 "$round" "$peer_first" ;;
    worker) shape_worker "${shape[1]}" "$round" "$peer_first" ;;
    batched) shape_batched "$round" ;;
    latency) shape_latency "$round" "$peer_first" ;;
    esac
  done
done

spoold_stop TERM
stop_tracked

# ---------------------------------------------------------------------------
bench_section "medians of $rounds round(s)"
for key in spool.produce1.none redis.xadd.everysec spool.produce1.fsync redis.xadd.always spool.fetch1 \
  redis.xreadgroup1 spool.enqueue1 bullmq.add spool.worker.c1 bullmq.worker.c1 spool.worker.c50 bullmq.worker.c50 \
  spool.produce1000 spool.fetch1000 spool.latency.p50 redis.latency.p50 spool.latency.p99 redis.latency.p99; do
  if [ -z "${runs[$key]:-}" ]; then
    report_skip "$key" "no successful run"
    continue
  fi
  read -ra values <<<"${runs[$key]}"
  case "$key" in
  spool.enqueue1 | spool.worker.* | bullmq.*) unit=jobs/s ;;
  *.latency.*) unit=µs ;;
  spool.produce1000 | spool.fetch1000) unit=records/s ;;
  *) unit=requests/s ;;
  esac
  report "$key" "$(median "${values[@]}")" "$unit" "" "${commands[$key]} (median of runs: ${values[*]})" \
    "median of ${#values[@]} run(s)"
done
if [ "${#steals[@]}" -gt 0 ]; then
  report machine.steal_pct.max "$(printf '%s\n' "${steals[@]}" | sort -g | tail -1)" % "" "/proc/stat steal during each command" \
    "the largest share of CPU time the host took from this virtual machine during any one command"
fi

bench_section "Spool / peer (issue 15 targets)"
report target.produce1000 1500000 records/s "" "issue 15" "1.5 x Apache Iggy's 1.01M in the issue's table"
report target.fetch1000 2700000 records/s "" "issue 15" "1.5 x Apache Iggy's 1.83M in the issue's table"
report_ratio ratio.produce1.none spool.produce1.none redis.xadd.everysec ">= 1" \
  "one record per produce request, NONE / Redis XADD one per round trip (appendfsync everysec): at least Redis"
report_ratio ratio.produce1.fsync spool.produce1.fsync redis.xadd.always ">= 0.5" \
  "one record per produce request, FSYNC / Redis XADD with appendfsync always: within 2x of Redis"
report_ratio ratio.fetch1 spool.fetch1 redis.xreadgroup1 ">= 1" \
  "one record per Fetch / Redis XREADGROUP COUNT 1 + XACK: at least Redis"
report_ratio ratio.enqueue1 spool.enqueue1 bullmq.add ">= 1" \
  "one job per Enqueue, durable / BullMQ Queue.add awaited: at least BullMQ"
report_ratio ratio.worker.c1 spool.worker.c1 bullmq.worker.c1 ">= 1" \
  "worker runtime at concurrency 1 / BullMQ Worker at concurrency 1: at least BullMQ"
report_ratio ratio.worker.c50 spool.worker.c50 bullmq.worker.c50 ">= 5" \
  "worker runtime at concurrency 50 / BullMQ Worker at concurrency 50: at least 5x BullMQ"
report_ratio ratio.latency.p50 redis.latency.p50 spool.latency.p50 ">= 1" \
  "end to end at 10,000 records/s, Redis p50 / Spool p50: Spool's p50 at most Redis's"
report_ratio ratio.latency.p99 redis.latency.p99 spool.latency.p99 ">= 1" \
  "end to end at 10,000 records/s, Redis p99 / Spool p99: Spool's p99 at most Redis's"
report_ratio ratio.produce1000 spool.produce1000 target.produce1000 ">= 1" \
  "batches of 1,000, one in flight, NONE / 1.5M records/s (1.5x the issue's Iggy figure)"
report_ratio ratio.fetch1000 spool.fetch1000 target.fetch1000 ">= 1" \
  "batches of 1,000, one in flight / 2.7M records/s (1.5x the issue's Iggy figure)"

bench_section "summary ($([ "$quick" = 1 ] && echo 'quick run: a smoke test, not a measurement' || echo 'full run'))"
report_table
echo "load:  $(bench_load)"
echo "log:   $log"
echo "logs:  $LOG_DIR"
