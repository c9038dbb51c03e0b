#!/usr/bin/env bash
# What observability costs, with it off and on in one run, and how long a
# scrape and a history sample take on a large server (issue 10):
#
#   1. the machine (scripts/lib/machine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. ROUNDS rounds (5; 2 with --quick), each with a fresh data directory
#      and server per setting, the order of the settings rotating from
#      round to round so none always runs first. "off": --admin-listen off,
#      no metrics history (metrics_history_interval_ms=0), no trace export.
#      "metrics": the admin listener scraped every second by curl
#      (Prometheus scrapes every 15 s by default) and the metrics history
#      at its default 5 s. "traces": that, and --otlp-endpoint to a port
#      where nothing listens (every span is recorded and queued; exports
#      fail). Counting on request paths is always on; its cost is measured
#      by the criterion benches (docs/performance.md). Besides each bench's
#      own figures, spoold's CPU time (utime + stime of /proc/PID/stat)
#      during the single-record and latency benches is divided by the
#      records they moved: CPU per record resolves a cost that
#      throughput on a shared 2-core host cannot. Each server runs, after
#      bench_quiet:
#        a. one 100-byte record per request, one in flight:
#             spool bench produce --record-bytes 100 --batch-bytes 100 --linger-ms 0 --in-flight 1 --duration 10s --json
#        b. 100-byte records in 256 KiB batches, 16 in flight:
#             spool bench produce --record-bytes 100 --duration 10s --json
#        c. no-op jobs:
#             spool bench jobs --duration 10s --json
#        d. end-to-end latency at 10,000 records/s:
#             spool bench latency --rate 10000 --duration 10s --json
#      The medians of each setting are compared: throughput within 3%,
#      end-to-end p99 within 0.1 ms (the issue's budget);
#   4. a large server (10 topics of 100 partitions with a record and a
#      checkpoint each, 100 queues with a waiting job each, history every
#      second): 20 scrapes of /metrics timed by curl (median, target under
#      50 ms), and the time and size of its history samples from its debug
#      log ("metrics history sampled", elapsed_us and bytes).
#
#   scripts/bench-observability.sh [--quick] [--no-build]
#
# Output goes to target/bench-observability/<timestamp>.log and .jsonl.
# Needs jq and curl (installed with apt when missing). Takes about 20
# minutes after the build (5 minutes with --quick).
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup observability
ensure_apt jq jq
ensure_apt curl curl

if [ "$quick" = 1 ]; then rounds=2 seconds=3; else rounds=5 seconds=10; fi

bench_section "machine"
bench_machine "$scratch" "$target_dir"
report_init "$jsonl" observability

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"

declare -A values=()

# scrape_loop ADDR: GET /metrics every second until killed.
scrape_loop() {
  while true; do
    curl -s -o /dev/null "http://$1/metrics" || true
    sleep 1
  done
}

# cpu_ticks PID: utime + stime of PID, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

# cpu_us_per_record TICKS_BEFORE RECORDS: spoold's CPU microseconds per
# record since TICKS_BEFORE.
cpu_us_per_record() {
  awk -v a="$1" -v b="$(cpu_ticks "$SPOOLD_PID")" -v n="$2" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) * 1e6 / hz / n}'
}

# one_setting SETTING ROUND: a fresh server in that setting and the four benches.
one_setting() {
  local setting="$1" round="$2" args=() scraper="" ticks
  case "$setting" in
  off) args=(--admin-listen off --set metrics_history_interval_ms=0) ;;
  metrics) args=() ;;
  traces) args=(--otlp-endpoint "http://127.0.0.1:$(free_port)") ;;
  esac
  rm -rf "$scratch/data"
  bench_quiet
  spoold_start "$setting-$round" "$scratch/data" "${args[@]}"
  if [ "$setting" != off ]; then
    scrape_loop "$SPOOLD_ADMIN_ADDR" &
    scraper=$!
    track "$scraper"
  fi
  ticks="$(cpu_ticks "$SPOOLD_PID")"
  if spool_bench "$setting.$round.single" bench produce --record-bytes 100 --batch-bytes 100 --linger-ms 0 \
    --in-flight 1 --duration "${seconds}s" --json; then
    values[$setting.single]+="$(jq -r .records_per_s <<<"$RUN_JSON") "
    values[$setting.single_cpu_us]+="$(cpu_us_per_record "$ticks" "$(jq -r .records <<<"$RUN_JSON")") "
  fi
  if spool_bench "$setting.$round.batched" bench produce --record-bytes 100 --duration "${seconds}s" --json; then
    values[$setting.batched]+="$(jq -r .records_per_s <<<"$RUN_JSON") "
  fi
  if spool_bench "$setting.$round.jobs" bench jobs --duration "${seconds}s" --json; then
    values[$setting.jobs]+="$(jq -r .completed_per_s <<<"$RUN_JSON") "
  fi
  ticks="$(cpu_ticks "$SPOOLD_PID")"
  if spool_bench "$setting.$round.latency" bench latency --rate 10000 --duration "${seconds}s" --json; then
    values[$setting.latency_cpu_us]+="$(cpu_us_per_record "$ticks" "$(jq -r .records <<<"$RUN_JSON")") "
    values[$setting.p99_ms]+="$(jq -r '.latency_us.p99 / 1000' <<<"$RUN_JSON") "
    values[$setting.p50_ms]+="$(jq -r '.latency_us.p50 / 1000' <<<"$RUN_JSON") "
  fi
  if [ -n "$scraper" ]; then
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
    untrack "$scraper"
  fi
  spoold_stop
}

settings=(off metrics traces)
for round in $(seq 1 "$rounds"); do
  bench_section "round $round of $rounds"
  # Rotate the order: off, metrics, traces; then metrics, traces, off; ...
  shift_by=$(((round - 1) % 3))
  order=("${settings[@]:$shift_by}" "${settings[@]:0:$shift_by}")
  for setting in "${order[@]}"; do one_setting "$setting" "$round"; done
done

bench_section "off against metrics and traces"
for shape in single batched jobs p50_ms p99_ms single_cpu_us latency_cpu_us; do
  for setting in "${settings[@]}"; do
    # shellcheck disable=SC2086 # a list of numbers
    m="$(median ${values[$setting.$shape]:-})"
    echo "$shape $setting: ${values[$setting.$shape]:-} -> median $m"
    report "median.$setting.$shape" "$m" "" "" "scripts/bench-observability.sh ($rounds rounds)" "runs: ${values[$setting.$shape]:-}"
  done
done
for setting in metrics traces; do
  for shape in single batched jobs; do
    report_ratio "ratio.$setting.$shape" "median.$setting.$shape" "median.off.$shape" ">= 0.97" \
      "throughput with $setting on / off"
  done
  for shape in single_cpu_us latency_cpu_us; do
    report_ratio "ratio.$setting.$shape" "median.$setting.$shape" "median.off.$shape" "<= 1.03" \
      "spoold CPU per record with $setting on / off"
  done
  off_p99="$(report_value median.off.p99_ms)"
  on_p99="$(report_value "median.$setting.p99_ms")"
  if [ -n "$off_p99" ] && [ -n "$on_p99" ]; then
    report "p99_rise_ms.$setting" "$(awk -v a="$on_p99" -v b="$off_p99" 'BEGIN {printf "%.3f", a - b}')" ms "<= 0.1" \
      "spool bench latency --rate 10000 (medians of $rounds runs per setting)"
  fi
done

bench_section "a large server: 1,000 partitions, 100 queues"
rm -rf "$scratch/data"
bench_quiet
RUST_LOG="info,spool_server::history=debug" spoold_start large "$scratch/data" \
  --set metrics_history_interval_ms=1s --set preallocate_bytes=4KiB
spool_topics_with_checkpoints
for q in $(seq 1 100); do "$SPOOL" --server "$SPOOLD_URL" job enqueue "q$q" '{}' >/dev/null; done
sleep 12
lines="$(curl -s "http://$SPOOLD_ADMIN_ADDR/metrics" | wc -l)"
times=()
for _ in $(seq 1 20); do
  times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://$SPOOLD_ADMIN_ADDR/metrics" | awk '{printf "%.1f", $1 * 1000}')")
done
echo "scrape ms: ${times[*]} ($lines lines)"
report scrape.median_ms "$(median "${times[@]}")" ms "< 50" "curl -w %{time_total} http://ADMIN/metrics (20 times)" \
  "10 topics x 100 partitions, 10 consumers x 100 partitions, 100 queues; $lines lines; runs: ${times[*]}"
spoold_stop
sampled="$(grep 'metrics history sampled' "$SPOOLD_ERR" | tail -n +8 || true)"
if [ -n "$sampled" ]; then
  sample_us="$(sed -n 's/.*elapsed_us=\([0-9]*\).*/\1/p' <<<"$sampled" | tr '\n' ' ')"
  sample_bytes="$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$sampled" | tr '\n' ' ')"
  # shellcheck disable=SC2086 # lists of numbers
  report sample.median_us "$(median $sample_us)" us "" "spoold debug log: metrics history sampled elapsed_us" "runs: $sample_us"
  # shellcheck disable=SC2086
  report sample.median_bytes "$(median $sample_bytes)" bytes "" "spoold debug log: metrics history sampled bytes" "runs: $sample_bytes"
else
  report_skip sample.median_us "no 'metrics history sampled' line in $SPOOLD_ERR"
fi

bench_section "summary"
report_table
