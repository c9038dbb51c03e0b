#!/usr/bin/env bash
# Benchmarks of Spool's job layer against the targets of issue 4, with
# BullMQ's own enqueue-and-process workload on a local Redis in the same
# run, so that every ratio comes from one run on one machine:
#
#   1. the machine and dd (scripts/lib/machine.sh, as in bench-engine.sh);
#   2. cargo build --release -p spool-server -p spool-cli (and -p spool-worker
#      once that crate exists);
#   3. spoold on a fresh data directory on 127.0.0.1 (port 0):
#      a. no-op jobs end to end (enqueue, claim, complete) with batched
#         claims and FinishBatch: spool bench jobs --duration 10s --json
#         (options taken from its --help);
#      a2. the same through the Rust worker runtime, three runs of
#         spool bench jobs --count 300000 --worker-runtime --consumers 2
#           --claim-batch 500 --json
#         on fresh queues; the median is the figure;
#      b. the exec worker's per-job overhead: 5,000 jobs enqueued first
#         (scripts/lib/spool_jobs.py enqueue, EnqueueBatch of 1000), then
#           spool-worker --queue bench-exec --concurrency 4 --exec true
#         timed from its start until QueueStats shows every job finished
#         (polled every 10 ms); jobs/s and ms per job, next to the cost of
#         spawning `true` from a shell loop (skipped while spool-worker does
#         not exist);
#   4. restart with 1,000,000 live jobs, on a fresh data directory: enqueue
#      them (EnqueueBatch of 1000, 4 requests in flight, from Python), then
#      kill -9 spoold and start it again, then SIGTERM it and start it again.
#      For each start: seconds from exec to the "listening on" line, and the
#      server's own figures from its JSON log (RUST_LOG=info): the "job
#      table rebuilt" event's elapsed_ms, replayed_events and jobs, and
#      startup_ms of "spoold serving"; QueueStats checks that every job is
#      still available;
#   5. BullMQ 6.7.0 with ioredis 5.11.1 (npm, installed under
#      target/bench-bullmq; BULLMQ_VERSION and IOREDIS_VERSION override) on Redis
#      (apt's redis-server, appendonly yes, appendfsync everysec):
#      addBulk of 1000 no-op jobs, then a Worker with concurrency 50 running
#      them (and the same with concurrency 1 on fewer jobs):
#        node scripts/lib/bullmq_bench.cjs PORT 100000 50
#   6. a summary table with the Spool/BullMQ ratios, also written as JSON
#      lines (each figure with the command line that produced it) to
#      target/bench-jobs/<timestamp>.jsonl; the whole output goes to
#      target/bench-jobs/<timestamp>.log and the servers' logs to
#      target/bench-jobs/<timestamp>-logs/.
#
#   scripts/bench-jobs.sh [--quick] [--no-build]
#
# --quick shortens every phase to a few seconds (20,000 jobs for the restart;
# a smoke test, its figures mean little). --no-build uses the release
# binaries already in target/. Installs what it lacks (jq, redis-server,
# redis-tools and, if there is no node, nodejs and npm with apt; grpcio and
# grpcio-tools with pip into target/bench-venv; bullmq with npm).
# Scratch data goes to a fresh directory under SPOOL_SCRATCH_DIR, else
# TMPDIR, else /tmp, removed at the end. A full run takes about 2 minutes
# after the build.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup jobs

if [ "$quick" = 1 ]; then
  jobs_s=2 worker_runtime_jobs=20000 exec_jobs=300 restart_jobs=20000 bullmq_jobs=5000 bullmq_c1_jobs=1000 dd_args=(64 200 2000)
else
  jobs_s=10 worker_runtime_jobs=300000 exec_jobs=5000 restart_jobs=1000000 bullmq_jobs=100000 bullmq_c1_jobs=20000 dd_args=(1024 2000 20000)
fi
# BullMQ 6.7 (as in shared/anchors.md) leaves its Redis client to the
# user; ioredis 5.11.1 is the one its own package develops against.
bullmq_version="${BULLMQ_VERSION:-6.7.0}"
ioredis_version="${IOREDIS_VERSION:-5.11.1}"

bench_section "machine"
bench_machine "$scratch" "$target_dir"
echo "mode:        $([ "$quick" = 1 ] && echo 'quick (smoke test: figures mean little)' || echo full)"
bench_dd "$scratch" "${dd_args[@]}"

bench_section "tools"
ensure_apt jq jq
ensure_apt redis-server redis-server redis-tools
ensure_apt node nodejs npm
ensure_apt npm npm
ensure_venv "$target_dir/bench-venv" grpc=grpcio grpc_tools=grpcio-tools
stubs="$(cd "$target_dir" && pwd)/bench-venv/spool-stubs"
if [ ! -f "$stubs/spool/v1/jobs_pb2_grpc.py" ] || [ proto/spool/v1/jobs.proto -nt "$stubs/spool/v1/jobs_pb2_grpc.py" ]; then
  mkdir -p "$stubs"
  echo "\$ python -m grpc_tools.protoc -I proto --python_out=$stubs --grpc_python_out=$stubs proto/spool/v1/jobs.proto"
  "$PYTHON" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" proto/spool/v1/jobs.proto
fi
jobs_py=("$PYTHON" scripts/lib/spool_jobs.py --stubs "$stubs")
# An absolute CARGO_TARGET_DIR must not be put under the working directory.
bullmq_dir="$(cd "$target_dir" && pwd)/bench-bullmq"
ensure_bullmq "$bullmq_dir" "$bullmq_version" "$ioredis_version"
echo "redis-server: $(redis-server --version)"
echo "node:         $(node --version), bullmq $(jq -r .version "$bullmq_dir/node_modules/bullmq/package.json")," \
  "ioredis $(jq -r .version "$bullmq_dir/node_modules/ioredis/package.json")"
echo "python:       $("$PYTHON" --version), grpcio $("$PYTHON" -c 'import grpc; print(grpc.__version__)')"
report_init "$jsonl" jobs
report_machine

bench_section "build"
packages=(spool-server spool-cli)
have_worker=0
if spool_has_package spool-worker; then
  packages+=(spool-worker)
  have_worker=1
else
  echo "(no spool-worker crate yet: its part will be skipped)"
fi
spool_build "$build" "${packages[@]}"
spool_binaries "$target_dir"
WORKER="$target_dir/release/spool-worker"
[ "$have_worker" = 1 ] && [ ! -x "$WORKER" ] && { echo "(no $WORKER binary: its part will be skipped)"; have_worker=0; }

# ---------------------------------------------------------------------------
bench_section "spoold"
spoold_start jobs "$scratch/jobs-data" --log-format json
server="$SPOOLD_ADDR"

bench_section "a. no-op jobs end to end: spool bench jobs"
if help="$("$SPOOL" bench jobs --help 2>/dev/null)"; then
  args=(bench jobs)
  if grep -q -- '--duration' <<<"$help"; then
    args+=(--duration "${jobs_s}s")
  elif grep -q -- '--count' <<<"$help"; then
    args+=(--count "$((jobs_s * 50000))")
  fi
  grep -q -- '--json' <<<"$help" && args+=(--json)
  if spool_bench spool.jobs "${args[@]}"; then
    # Field names are whatever `spool bench jobs --json` prints: take the
    # completion rate and, if there is one, the enqueue rate.
    completed="$(jq -r '[paths(numbers) as $p | {k: ($p | map(tostring) | join(".")), v: getpath($p)}]
      | (map(select(.k | test("complet.*per_s|per_s.*complet"))) + map(select(.k | test("^(jobs|records)_per_s$"))))
      | first | .v // empty' <<<"$RUN_JSON")"
    enqueued="$(jq -r '[paths(numbers) as $p | {k: ($p | map(tostring) | join(".")), v: getpath($p)}]
      | map(select(.k | test("enqueue.*per_s"))) | first | .v // empty' <<<"$RUN_JSON")"
    report spool.jobs.completed_per_s "$completed" jobs/s ">= 50000" "$RUN_COMMAND" "no-op jobs: enqueue, claim, complete"
    [ -n "$enqueued" ] && report spool.jobs.enqueued_per_s "$enqueued" jobs/s "" "$RUN_COMMAND"
  fi
else
  report_skip spool.jobs "'spool bench jobs' does not exist yet in $SPOOL"
fi

bench_section "a2. no-op jobs through the Rust worker runtime (spool_client::worker)"
# Three runs on fresh queues: on 2 shared cores a single run swings by
# about 15%, so the median is the figure and every run is shown.
runtime_rates=()
for run in 1 2 3; do
  if spool_bench "spool.jobs.worker_runtime.run$run" bench jobs --count "$worker_runtime_jobs" --worker-runtime \
    --consumers 2 --claim-batch 500 --queue "bench-runtime-$run" --json; then
    rate="$(jq -r .completed_per_s <<<"$RUN_JSON")"
    runtime_rates+=("$rate")
    report "spool.jobs.worker_runtime.run$run" "$rate" jobs/s "" "$RUN_COMMAND" \
      "claims $(jq -r .claims <<<"$RUN_JSON"), FinishBatch calls $(jq -r .finish_batches <<<"$RUN_JSON")"
  fi
done
if [ "${#runtime_rates[@]}" -gt 0 ]; then
  median="$(median "${runtime_rates[@]}")"
  report spool.jobs.worker_runtime.completed_per_s "$median" jobs/s ">= 50000" \
    "$SPOOL bench jobs --count $worker_runtime_jobs --worker-runtime --consumers 2 --claim-batch 500 (median of ${#runtime_rates[@]})" \
    "2 workers, concurrency 500 each, handler completes at once; enqueue runs alongside"
fi

bench_section "b. exec worker: per-job overhead"
if [ "$have_worker" = 1 ]; then
  worker=("$WORKER")
  "$WORKER" --help 2>/dev/null | grep -q -- '--server' && worker+=(--server "$SPOOLD_URL")
  worker+=(--queue bench-exec --concurrency 4 --exec true)
  if run_json spool.exec.enqueue "${jobs_py[@]}" enqueue --server "$server" --queue bench-exec --count "$exec_jobs" &&
    SPOOL_SERVER="$SPOOLD_URL" run_json spool.exec "${jobs_py[@]}" run-worker --server "$server" --queue bench-exec \
      --count "$exec_jobs" --log "$LOG_DIR/spool-worker.log" -- "${worker[@]}"; then
    echo "(the worker's log: $LOG_DIR/spool-worker.log)"
    report spool.exec.jobs_per_s "$(jq -r .jobs_per_s <<<"$RUN_JSON")" jobs/s "" "$RUN_COMMAND" \
      "$exec_jobs jobs, concurrency 4, handler 'true'; from the worker's start to every job finished"
    report spool.exec.ms_per_job "$(jq -r .ms_per_job <<<"$RUN_JSON")" ms "" "$RUN_COMMAND" \
      "wall time / jobs at concurrency 4 (x4 for the time each job holds a slot)"
  fi
else
  report_skip spool.exec "no spool-worker yet (crates/spool-worker, cargo build --release -p spool-worker)"
fi
spawns=$((exec_jobs < 2000 ? exec_jobs : 2000))
started="$(now_us)"
for ((i = 0; i < spawns; i++)); do /bin/true; done
report spool.exec.reference_spawn_ms \
  "$(awk -v a="$started" -v b="$(now_us)" -v n="$spawns" 'BEGIN {printf "%.3f", (b - a) / 1000 / n}')" ms "" \
  "for ((i = 0; i < $spawns; i++)); do /bin/true; done" "reference: fork and exec of true from bash, one at a time"
spoold_stop TERM

# ---------------------------------------------------------------------------
bench_section "restart with $restart_jobs live jobs"
restart_dir="$scratch/restart-data"
spoold_start restart-0 "$restart_dir" --log-format json
server="$SPOOLD_ADDR"
if run_json spool.restart.enqueue "${jobs_py[@]}" enqueue --server "$server" --queue bench-restart \
  --count "$restart_jobs" --batch 1000 --in-flight 4; then
  report spool.restart.enqueue_per_s "$(jq -r .jobs_per_s <<<"$RUN_JSON")" jobs/s "" "$RUN_COMMAND" \
    "Python gRPC client, EnqueueBatch of 1000, 4 in flight (the client is a bound too)"
  enqueued_ok=1
else
  enqueued_ok=0
fi

# restart_once LABEL SIGNAL: stops spoold with SIGNAL, starts it again on the
# same data, reports what the start took, checks the jobs are there.
restart_once() {
  local label="$1" signal="$2" rebuilt serving available rss_anon command
  spoold_stop "$signal"
  echo "spoold stopped with SIG$signal in $SPOOLD_STOP_S s"
  [ "$signal" = TERM ] && report "spool.restart.$label.shutdown_s" "$SPOOLD_STOP_S" s "" "kill -TERM <spoold>" \
    "from SIGTERM to exit (flush, clean-shutdown marker, job snapshot if any)"
  spoold_start "restart-$label" "$restart_dir" --log-format json
  server="$SPOOLD_ADDR"
  rebuilt="$(jq -c 'select(.fields.message? == "job table rebuilt") | .fields' "$SPOOLD_ERR" 2>/dev/null | tail -1 || true)"
  serving="$(jq -c 'select(.fields.message? == "spoold serving") | .fields' "$SPOOLD_ERR" 2>/dev/null | tail -1 || true)"
  echo "job table rebuilt: ${rebuilt:-(no such log event)}"
  echo "spoold serving:    ${serving:-(no such log event)}"
  command="$(printf '%q ' "$SPOOLD")--data-dir <restart data> --listen 127.0.0.1:0 --log-format json (RUST_LOG=info) after kill -$signal"
  report "spool.restart.$label.ready_s" "$SPOOLD_READY_S" s "" "$command" \
    "from exec to the 'listening on' line, with $restart_jobs live jobs"
  if [ -n "$serving" ]; then
    report "spool.restart.$label.startup_ms" "$(jq -r .startup_ms <<<"$serving")" ms "" "$command" "startup_ms of the 'spoold serving' log event"
  fi
  if [ -n "$rebuilt" ]; then
    report "spool.restart.$label.job_table_ms" "$(jq -r .elapsed_ms <<<"$rebuilt")" ms "" "$command" \
      "elapsed_ms of 'job table rebuilt'; replayed_events $(jq -r .replayed_events <<<"$rebuilt"), jobs $(jq -r .jobs <<<"$rebuilt"), snapshot_offset $(jq -r '.snapshot_offset // "none"' <<<"$rebuilt")"
    report "spool.restart.$label.replayed_events" "$(jq -r .replayed_events <<<"$rebuilt")" events "" "$command"
  else
    report_skip "spool.restart.$label.job_table_ms" "no 'job table rebuilt' event in $SPOOLD_ERR"
  fi
  rss_anon="$(awk '/^RssAnon:/ {print $2}' "/proc/$SPOOLD_PID/status" 2>/dev/null || true)"
  [ -n "$rss_anon" ] && report "spool.restart.$label.rss_anon_mib" "$(awk -v k="$rss_anon" 'BEGIN {printf "%.1f", k / 1024}')" MiB "" \
    "awk '/^RssAnon:/' /proc/<spoold>/status" "right after the start, $restart_jobs live jobs"
  if available="$("${jobs_py[@]}" stats --server "$server" --queue bench-restart 2>/dev/null | jq -r .available)"; then
    echo "QueueStats bench-restart: $available available"
    [ "$available" = "$restart_jobs" ] || echo "warning: expected $restart_jobs available jobs after the restart, found $available"
  else
    echo "warning: QueueStats bench-restart failed after the restart"
  fi
}

if [ "$enqueued_ok" = 1 ]; then
  restart_once kill9 KILL
  restart_once sigterm TERM
else
  report_skip spool.restart "the enqueue of $restart_jobs jobs failed"
fi
spoold_stop TERM

# ---------------------------------------------------------------------------
bench_section "BullMQ $bullmq_version on Redis"
redis_start redis-bullmq "$scratch/redis" --appendonly yes --appendfsync everysec
for run in "50 $bullmq_jobs" "1 $bullmq_c1_jobs"; do
  read -r concurrency count <<<"$run"
  if NODE_PATH="$bullmq_dir/node_modules" run_json "bullmq.c$concurrency" node scripts/lib/bullmq_bench.cjs \
    "$REDIS_PORT" "$count" "$concurrency"; then
    note="bullmq $(jq -r .bullmq <<<"$RUN_JSON"), node $(jq -r .node <<<"$RUN_JSON"), $count jobs; Redis appendonly yes, appendfsync everysec"
    report "bullmq.c$concurrency.enqueue_per_s" "$(jq -r .enqueue_jobs_per_s <<<"$RUN_JSON")" jobs/s "" \
      "NODE_PATH=target/bench-bullmq/node_modules $RUN_COMMAND" "addBulk of 1000, one call at a time; $note"
    report "bullmq.c$concurrency.process_per_s" "$(jq -r .process_jobs_per_s <<<"$RUN_JSON")" jobs/s "" \
      "NODE_PATH=target/bench-bullmq/node_modules $RUN_COMMAND" "Worker concurrency $concurrency, no-op handler; $note"
  fi
done
stop_pid "$REDIS_PID"

# ---------------------------------------------------------------------------
bench_section "Spool / BullMQ"
report_ratio ratio.process spool.jobs.completed_per_s bullmq.c50.process_per_s "" \
  "Spool no-op jobs completed end to end / BullMQ Worker concurrency 50; higher is better for Spool"
report_ratio ratio.enqueue spool.jobs.enqueued_per_s bullmq.c50.enqueue_per_s "" \
  "Spool enqueue (spool bench jobs) / BullMQ addBulk of 1000"
report_ratio ratio.enqueue_batched_script_clients spool.restart.enqueue_per_s bullmq.c50.enqueue_per_s "" \
  "Spool EnqueueBatch of 1000 from Python / BullMQ addBulk of 1000 from Node: both from a scripting-language client"
report_ratio ratio.exec_vs_bullmq_c1 spool.exec.jobs_per_s bullmq.c1.process_per_s "" \
  "Spool exec worker (a process per job, concurrency 4) / BullMQ concurrency 1 (no process per job)"

bench_section "summary ($([ "$quick" = 1 ] && echo 'quick run: a smoke test, not a measurement' || echo 'full run'))"
report_table
echo "load:  $(bench_load)"
echo "log:   $log"
echo "logs:  $LOG_DIR"
