#!/usr/bin/env bash
# End-to-end benchmarks of spoold and the spool CLI against the targets of
# issue 3, with Redis Streams measured the same way in the same run, so
# that every ratio comes from one run on one machine:
#
#   1. the machine and dd (scripts/lib/machine.sh, as in bench-engine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. spoold on a fresh data directory on 127.0.0.1 (port 0), client and
#      server on the same cores, 100-byte records, loopback:
#      a. one producer, batching, NONE durability:
#           spool bench produce --duration 10s --json
#      b. one consumer reading a backlog (preloaded first, not timed):
#           spool bench consume --count 10000000 --json
#      c0. how late a thread wakes from a 1 ms sleep on the idle machine
#         (scripts/lib/wake_probe.py, as long as one latency run): the floor
#         under any latency figure here;
#      c. end-to-end latency at a steady 10,000 records/s, three runs, each
#         after bench_quiet (sync, writeback settled); the median of each
#         percentile is the figure, and each run's CPU steal (the share of
#         CPU time the host took from this virtual machine) is reported:
#           spool bench latency --rate 10000 --duration 30s --json
#      d. 16 producers with FSYNC vs the same with NONE, on 16 partitions
#         (as in the CLI's example) and on 1 partition (all 16 producers
#         sharing one partition's group commit):
#           spool bench produce --producers 16 --partitions P --durability D --duration 10s --json
#      e. server memory, VmRSS and RssAnon from /proc/<pid>/status every
#         100 ms, maximum over: the idle server; a producer flood
#         (16 producers, 16 partitions, 1 MiB batches); a subscriber that
#         stops reading (`spool consume --from earliest --follow` into a
#         pipe nobody reads) while the same flood runs; and every phase
#         above. VmRSS counts the pages of mapped segment files that are
#         resident (page cache the kernel can drop), so RssAnon, the
#         server's own heap and stacks, is reported separately;
#   4. Redis (apt's redis-server) on 127.0.0.1 with appendonly yes and
#      appendfsync everysec, in a fresh directory:
#      a. XADD pipelined 1000 at a time, one connection, 100-byte values:
#           redis-benchmark -c 1 -P 1000 -n 3000000 --csv XADD bench '*' f <100 bytes>
#         (checked afterwards with XLEN and INFO commandstats);
#      b. XREADGROUP COUNT 1000 + XACK of that backlog (scripts/lib/redis_bench.py consume);
#      c. end-to-end latency at 10,000 records/s (scripts/lib/redis_bench.py latency),
#         three runs after bench_quiet as for Spool, the median the figure;
#   5. a summary table with every Spool/Redis ratio, also written as JSON
#      lines (each figure with the command line that produced it) to
#      target/bench-e2e/<timestamp>.jsonl; the whole output goes to
#      target/bench-e2e/<timestamp>.log and the servers' logs to
#      target/bench-e2e/<timestamp>-logs/.
#
#   scripts/bench-e2e.sh [--quick] [--no-build]
#
# --quick shortens every phase to 2-3 s (a smoke test; its figures mean
# little). --no-build uses the release binaries already in target/.
# Installs what it lacks (jq, redis-server and redis-tools with apt; the
# redis and hiredis Python packages with pip into target/bench-venv).
# Scratch data goes to a fresh directory under SPOOL_SCRATCH_DIR, else
# TMPDIR, else /tmp, removed at the end: a full run needs up to about
# 8 GiB there (each bench deletes its topic, but the memory phase keeps its
# flood topic until spoold stops) and takes about 5 minutes after the build.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup e2e

if [ "$quick" = 1 ]; then
  produce_s=2 consume_count=1000000 latency_s=3 fsync_s=2 memory_s=2
  redis_xadd_count=300000 dd_args=(64 200 2000)
else
  produce_s=10 consume_count=10000000 latency_s=30 fsync_s=10 memory_s=10
  redis_xadd_count=3000000 dd_args=(1024 2000 20000)
fi
rate=10000
record_bytes=100
mib=1024 # kB per MiB, for /proc figures

bench_section "machine"
bench_machine "$scratch" "$target_dir"
echo "mode:        $([ "$quick" = 1 ] && echo 'quick (smoke test: figures mean little)' || echo full)"
bench_dd "$scratch" "${dd_args[@]}"

bench_section "tools"
ensure_apt jq jq
ensure_apt redis-server redis-server redis-tools
ensure_apt redis-benchmark redis-tools
ensure_venv "$target_dir/bench-venv" redis=redis hiredis=hiredis
echo "redis-server: $(redis-server --version)"
echo "python:       $("$PYTHON" --version), redis-py $("$PYTHON" -c 'import redis; print(redis.__version__)')," \
  "hiredis $("$PYTHON" -c 'import hiredis; print(hiredis.__version__)')"
report_init "$jsonl" e2e
report_machine

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"

# ---------------------------------------------------------------------------
bench_section "spoold"
spoold_start e2e "$scratch/spool-data"
memory_file="$LOG_DIR/spoold-memory.txt"
mem_sampler_start "$SPOOLD_PID" "$memory_file"
spool_start_us="$(now_us)"
sleep 0.5

# report_memory PHASE FROM_US TO_US [TARGET]: the maximum VmRSS and RssAnon
# sampled in the window.
report_memory() {
  local phase="$1" from="$2" to="$3" rss anon samples note
  read -r rss anon samples < <(mem_window "$memory_file" "$from" "$to")
  if [ "$samples" = 0 ]; then
    report_skip "spool.memory.$phase" "no memory sample in the window"
    return 0
  fi
  note="max of $samples samples every 100 ms of /proc/$SPOOLD_PID/status"
  report "spool.memory.$phase.rss_anon_mib" "$(awk -v k="$anon" -v m="$mib" 'BEGIN {printf "%.1f", k / m}')" MiB \
    "< 256" "sample /proc/<spoold>/status RssAnon during: $phase" "$note; RssAnon: the server's own memory"
  report "spool.memory.$phase.vm_rss_mib" "$(awk -v k="$rss" -v m="$mib" 'BEGIN {printf "%.1f", k / m}')" MiB \
    "< 256" "sample /proc/<spoold>/status VmRSS during: $phase" \
    "$note; VmRSS includes resident pages of mapped segment files (page cache), not only the server's memory"
}

report_memory idle "$spool_start_us" "$(now_us)"

bench_section "a. one producer, batching, NONE durability, ${record_bytes}-byte records"
if spool_bench spool.produce bench produce --record-bytes "$record_bytes" --duration "${produce_s}s" --json; then
  report spool.produce.records_per_s "$(jq -r .records_per_s <<<"$RUN_JSON")" records/s ">= 1000000" "$RUN_COMMAND"
  report spool.produce.mb_per_s "$(jq -r .mb_per_s <<<"$RUN_JSON")" MB/s "" "$RUN_COMMAND" "record values, MB = 10^6 bytes"
fi

bench_section "b. one consumer reading a backlog of ${consume_count} records"
if spool_bench spool.consume bench consume --record-bytes "$record_bytes" --count "$consume_count" --json; then
  report spool.consume.records_per_s "$(jq -r .records_per_s <<<"$RUN_JSON")" records/s ">= 2000000" "$RUN_COMMAND" \
    "backlog preloaded first (not timed)"
  report spool.consume.mb_per_s "$(jq -r .mb_per_s <<<"$RUN_JSON")" MB/s "" "$RUN_COMMAND"
fi

# Reports PREFIX.{p50,p99,p99_9}_ms as the medians of the runs collected in
# the associative array named ARRAY (percentile -> space-separated values);
# TARGET applies to p99.
report_latency_medians() {
  local prefix="$1" target="$2" command="$4" q values
  local -n collected="$3"
  for q in p50 p99 p99_9; do
    [ -n "${collected[$q]:-}" ] || continue
    read -ra values <<<"${collected[$q]}"
    report "$prefix.${q}_ms" "$(median "${values[@]}")" ms "$([ "$q" = p99 ] && echo "$target")" \
      "$command (median of runs: ${values[*]})" "median of the runs above"
  done
}

bench_section "c0. machine: how late a thread wakes from a 1 ms sleep (no load but the idle server)"
# The floor under end-to-end latency on this machine: every record crosses
# several thread wake-ups, and each can be this late.
bench_quiet
if run_json machine.wake "$PYTHON" scripts/lib/wake_probe.py "$latency_s"; then
  for q in p50 p99 p99_9; do
    report "machine.wake.${q}_ms" "$(jq -r ".${q}_ms" <<<"$RUN_JSON")" ms "" "$RUN_COMMAND" \
      "lateness of a 1 ms sleep on an idle machine; $(jq -r .samples <<<"$RUN_JSON") samples"
  done
fi

bench_section "c. end-to-end latency at ${rate} records/s"
# Three runs, each after the writeback of the phases before it has settled:
# on 2 shared vCPUs one run's p99 swings by 2x or more, so the median of
# each percentile is the figure, and every run is shown.
declare -A spool_latency=()
for run in 1 2 3; do
  bench_quiet
  if spool_bench "spool.latency.run$run" bench latency --record-bytes "$record_bytes" --rate "$rate" \
    --duration "${latency_s}s" --json; then
    received="$(jq -r .records <<<"$RUN_JSON")"
    expected=$((rate * latency_s))
    [ "$received" = "$expected" ] || echo "warning: $received of $expected records arrived"
    for q in p50 p99 p99_9; do
      spool_latency[$q]+="$(jq -r ".latency_us.$q / 1000" <<<"$RUN_JSON") "
      report "spool.latency.run$run.${q}_ms" "$(jq -r ".latency_us.$q / 1000" <<<"$RUN_JSON")" ms "" "$RUN_COMMAND" \
        "from scheduled send to consumer; $received of $expected records"
    done
    report "spool.latency.run$run.steal_pct" "$RUN_STEAL" % "" "$RUN_COMMAND" \
      "CPU time the host took from this virtual machine during the run (/proc/stat steal)"
  fi
done
report_latency_medians spool.latency "<= 5" spool_latency \
  "$SPOOL bench latency --record-bytes $record_bytes --rate $rate --duration ${latency_s}s"

bench_section "d. 16 producers: FSYNC vs NONE"
for partitions in 16 1; do
  for durability in none fsync; do
    if spool_bench "spool.produce16.p$partitions.$durability" bench produce --record-bytes "$record_bytes" \
      --producers 16 --partitions "$partitions" --durability "$durability" --duration "${fsync_s}s" --json; then
      report "spool.produce16.p$partitions.$durability.records_per_s" "$(jq -r .records_per_s <<<"$RUN_JSON")" \
        records/s "" "$RUN_COMMAND"
    fi
  done
  report_ratio "spool.fsync_slowdown.p$partitions" "spool.produce16.p$partitions.none.records_per_s" \
    "spool.produce16.p$partitions.fsync.records_per_s" "<= 2" \
    "NONE records/s / FSYNC records/s, 16 producers on $partitions partition(s); target: FSYNC within 2x of NONE"
done

bench_section "e. server memory: producer flood, then a subscriber that stops reading"
flood=(bench produce --topic mem-flood --keep --record-bytes "$record_bytes" --producers 16 --partitions 16
  --batch-bytes 1MiB --duration "${memory_s}s" --json)
from="$(now_us)"
spool_bench spool.memory.flood "${flood[@]}" || true
report_memory flood "$from" "$(now_us)"

fifo="$scratch/stalled-subscriber.fifo"
mkfifo "$fifo"
# The reader opens the pipe and never reads it: once the pipe and the CLI's
# output buffer are full, the CLI stops reading its subscriptions.
# shellcheck disable=SC2217 # the point: hold the pipe open and never read it
sleep 86400 <"$fifo" &
reader_pid=$!
track "$reader_pid"
subscriber=("$SPOOL" --server "$SPOOLD_URL" consume mem-flood --from earliest --follow)
echo "\$ $(printf '%q ' "${subscriber[@]}")> \$FIFO   # a reader that never reads: sleep 86400 < \$FIFO"
"${subscriber[@]}" >"$fifo" 2>"$LOG_DIR/stalled-subscriber.err" &
subscriber_pid=$!
track "$subscriber_pid"
sleep 1
from="$(now_us)"
spool_bench spool.memory.stalled_subscriber "${flood[@]}" || true
sleep 1
to="$(now_us)"
if kill -0 "$subscriber_pid" 2>/dev/null; then
  report_memory stalled_subscriber "$from" "$to"
else
  report_skip spool.memory.stalled_subscriber "the stalled subscriber exited early; see $LOG_DIR/stalled-subscriber.err"
fi
stop_pid "$subscriber_pid"
stop_pid "$reader_pid"

report_memory all_phases "$spool_start_us" "$(now_us)"
spoold_stop TERM
mem_sampler_stop
echo "spoold stopped (SIGTERM) in $SPOOLD_STOP_S s; memory samples: $memory_file"

# ---------------------------------------------------------------------------
bench_section "Redis Streams"
redis_start redis-e2e "$scratch/redis" --appendonly yes --appendfsync everysec
rcli=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")
value="$(head -c "$record_bytes" /dev/zero | tr '\0' v)"

bench_section "Redis a. XADD pipelined 1000 at a time, one connection"
xadd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c 1 -P 1000 -n "$redis_xadd_count" --csv XADD bench '*' f "$value")
RUN_COMMAND="$(printf '%q ' "${xadd[@]:0:${#xadd[@]}-1}")<${record_bytes}-byte value>"
echo "\$ $RUN_COMMAND"
if out="$("${xadd[@]}")"; then
  echo "$out" | cut -c1-200
  rps="$(awk -F'","' 'NR > 1 && /^"XADD/ {print $2; exit}' <<<"$out")"
  length="$("${rcli[@]}" xlen bench)"
  calls="$("${rcli[@]}" info commandstats | sed -n 's/^cmdstat_xadd:calls=\([0-9]*\),.*/\1/p')"
  echo "check: XLEN bench = $length, INFO commandstats cmdstat_xadd calls = $calls (sent $redis_xadd_count)"
  report_raw redis.produce "$RUN_COMMAND" "$out"
  if [ "$length" = "$redis_xadd_count" ] && [ "$calls" = "$redis_xadd_count" ]; then
    report redis.produce.records_per_s "$rps" records/s "" "$RUN_COMMAND" "appendonly yes, appendfsync everysec; XLEN checked"
    report redis.produce.mb_per_s "$(awk -v r="$rps" -v b="$record_bytes" 'BEGIN {printf "%.3f", r * b / 1e6}')" MB/s "" \
      "$RUN_COMMAND" "record values, MB = 10^6 bytes"
  else
    report_skip redis.produce "redis-benchmark did not add $redis_xadd_count entries (XLEN $length, XADD calls $calls)"
  fi
else
  report_skip redis.produce "failed: $RUN_COMMAND"
fi

bench_section "Redis b. XREADGROUP COUNT 1000 + XACK of the backlog"
if run_json redis.consume "$PYTHON" scripts/lib/redis_bench.py consume --port "$REDIS_PORT" --stream bench \
  --count "$redis_xadd_count" --batch 1000; then
  report redis.consume.records_per_s "$(jq -r .records_per_s <<<"$RUN_JSON")" records/s "" "$RUN_COMMAND" \
    "XACK pipelined with the next XREADGROUP; pending after: $(jq -r .pending_after <<<"$RUN_JSON")"
fi

bench_section "Redis c. end-to-end latency at ${rate} records/s"
declare -A redis_latency=()
for run in 1 2 3; do
  bench_quiet
  if run_json "redis.latency.run$run" "$PYTHON" scripts/lib/redis_bench.py latency --port "$REDIS_PORT" \
    --stream "lat$run" --rate "$rate" --seconds "$latency_s" --record-bytes "$record_bytes"; then
    for q in p50 p99 p99_9; do
      redis_latency[$q]+="$(jq -r ".latency_ms.$q" <<<"$RUN_JSON") "
      report "redis.latency.run$run.${q}_ms" "$(jq -r ".latency_ms.$q" <<<"$RUN_JSON")" ms "" "$RUN_COMMAND" \
        "XADD (paced, due entries pipelined) -> XREADGROUP BLOCK + XACK; $(jq -r .records <<<"$RUN_JSON") of $(jq -r .expected <<<"$RUN_JSON") records"
    done
    report "redis.latency.run$run.steal_pct" "$RUN_STEAL" % "" "$RUN_COMMAND" \
      "CPU time the host took from this virtual machine during the run (/proc/stat steal)"
  fi
done
report_latency_medians redis.latency "" redis_latency \
  "scripts/lib/redis_bench.py latency --rate $rate --seconds $latency_s"
echo "redis memory: $("${rcli[@]}" info memory | sed -n 's/^used_memory_human:\(.*\)\r*$/\1/p' | tr -d '\r')"
stop_pid "$REDIS_PID"

# ---------------------------------------------------------------------------
bench_section "Spool / Redis"
report_ratio ratio.produce spool.produce.records_per_s redis.produce.records_per_s "" \
  "Spool one producer (batching, NONE) / Redis XADD pipelined 1000 (AOF everysec); higher is better for Spool"
report_ratio ratio.consume spool.consume.records_per_s redis.consume.records_per_s "" \
  "Spool one consumer / Redis XREADGROUP 1000 + XACK; higher is better for Spool"
for q in p50 p99 p99_9; do
  report_ratio "ratio.latency_$q" "spool.latency.${q}_ms" "redis.latency.${q}_ms" "" \
    "Spool / Redis end-to-end latency at $rate records/s; lower is better for Spool"
done

bench_section "summary ($([ "$quick" = 1 ] && echo 'quick run: a smoke test, not a measurement' || echo 'full run'))"
report_table
echo "load:  $(bench_load)"
echo "log:   $log"
echo "logs:  $LOG_DIR"
