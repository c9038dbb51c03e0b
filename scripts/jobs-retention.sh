#!/usr/bin/env bash
# Disk use of the internal topic __jobs under its history retention: the
# figures in docs/operations.md ("Disk use of __jobs") come from this script.
#
#   1. the machine (scripts/lib/machine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. a million jobs through a 4 MiB history retention at the job runtime's
#      level (enqueue, claim, complete in batches of 1,000, one in a hundred
#      dead), then a simulated crash:
#        cargo test --release -p spool-jobs --test retention -- --ignored \
#          --nocapture a_million_jobs_through_a_small_retention_keep_the_log_bounded
#      it prints the bytes appended per job and the size of __jobs and of the
#      snapshot every 50,000 jobs, and checks that the size levels off, that
#      the table comes back whole and that history reads are whole or marked
#      trimmed (--quick: the 200,000-job version);
#   4. spoold with the default settings on a fresh data directory, at 1,000
#      jobs a second, enqueued one per request (the costliest case: a batch
#      header for few events) and claimed ten at a time:
#        spool bench jobs --rate 1000 --duration 60s --enqueuers 8 \
#          --enqueue-batch 1 --claim-batch 10 --consumers 2 --json
#      then the bytes __jobs appended per job, from /metrics
#      (spool_log_appended_bytes_total{topic="__jobs"}), and from them the
#      steady-state size of __jobs with the default retention (7 days, 16 GiB);
#   5. the same load for 4 minutes against a retention scaled down so that
#      it binds within the run (job_history_retention_bytes=32MiB,
#      internal_segment_bytes=8MiB, retention_check_interval_ms=1s): the size
#      of __jobs every 10 s (spool_partition_size_bytes), which levels off;
#      then kill -9 and a start, with the events that start replayed.
#
#   scripts/jobs-retention.sh [--quick] [--no-build]
#
# --quick shortens the runs (20 s and 60 s; figures mean little). --no-build
# uses the release binaries already in target/. Output goes to
# target/bench-retention/<timestamp>.log, the servers' logs to
# target/bench-retention/<timestamp>-logs/. Scratch data goes to a fresh
# directory under SPOOL_SCRATCH_DIR, else TMPDIR, else /tmp, removed at the
# end. A full run takes about 7 minutes after the build.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup retention

if [ "$quick" = 1 ]; then
  rate_s=20 level_s=60 runtime_test=many_jobs_through_a_small_retention_keep_the_log_bounded
else
  rate_s=60 level_s=240 runtime_test=a_million_jobs_through_a_small_retention_keep_the_log_bounded
fi

bench_section "machine"
bench_machine "$scratch" "$target_dir"
echo "mode:        $([ "$quick" = 1 ] && echo 'quick (smoke test: figures mean little)' || echo full)"

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"

# metric NAME TOPIC: the value of the series NAME{topic="TOPIC",...} on the
# running server's /metrics (summed over partitions).
metric() {
  curl -fsS "http://$SPOOLD_ADMIN_ADDR/metrics" |
    awk -v name="$1" -v topic="topic=\"$2\"" '$1 ~ "^" name "[{]" && index($1, topic) {sum += $2} END {printf "%.0f\n", sum}'
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

bench_section "3. job runtime: $([ "$quick" = 1 ] && echo '200,000' || echo 'a million') jobs through a 4 MiB history retention"
cmd=(cargo test --release -p spool-jobs --test retention -- --ignored --exact --nocapture "$runtime_test")
[ "$quick" = 1 ] && cmd=(cargo test --release -p spool-jobs --test retention -- --exact --nocapture "$runtime_test")
echo "\$ ${cmd[*]}"
"${cmd[@]}" 2>&1 | grep -E '^[0-9]+ jobs in |^test |test result'

bench_section "4. spoold, default settings, 1,000 jobs a second for ${rate_s} s"
spoold_start defaults "$scratch/defaults" --log-format json
before="$(metric spool_log_appended_bytes_total __jobs)"
bench=("$SPOOL" --server "$SPOOLD_URL" bench jobs --rate 1000 --duration "${rate_s}s" --enqueuers 8 --enqueue-batch 1 --claim-batch 10 --consumers 2 --json)
echo "\$ ${bench[*]}"
report_json="$("${bench[@]}")"
echo "$report_json"
appended="$(($(metric spool_log_appended_bytes_total __jobs) - before))"
jobs="$(jq -r .jobs <<<"$report_json")"
per_job="$((appended / jobs))"
spoold_stop TERM
day_bytes="$((per_job * 1000 * 86400))"
awk -v per_job="$per_job" -v jobs="$jobs" -v appended="$appended" -v day="$day_bytes" 'BEGIN {
  cap = 16 * 2^30; week = 7 * day; segment = 64 * 2^20
  printf "__jobs appended %d bytes for %d jobs: %d bytes per job\n", appended, jobs, per_job
  printf "at 1,000 jobs/s: %.1f GiB a day; 7 days would be %.0f GiB\n", day / 2^30, week / 2^30
  if (week > cap) {
    printf "steady state with the defaults: the 16 GiB size limit binds first: 16 GiB to 16 GiB + one 64 MiB segment,\n"
    printf "holding the last %.1f hours of history\n", cap / (per_job * 1000) / 3600
  } else {
    printf "steady state with the defaults: the 7-day limit binds: %.1f GiB\n", week / 2^30
  }
}'

bench_section "5. spoold, history retention scaled to 32 MiB, 1,000 jobs a second for ${level_s} s"
scaled=(--set job_history_retention_bytes=32MiB --set internal_segment_bytes=8MiB --set retention_check_interval_ms=1s)
spoold_start scaled "$scratch/scaled" --log-format json "${scaled[@]}"
echo "spoold settings: ${scaled[*]}"
bench=("$SPOOL" --server "$SPOOLD_URL" bench jobs --rate 1000 --duration "${level_s}s" --enqueuers 8 --enqueue-batch 1 --claim-batch 10 --consumers 2 --json)
echo "\$ ${bench[*]} &"
"${bench[@]}" >"$LOG_DIR/scaled-bench.json" &
bench_pid=$!
track "$bench_pid"
echo "seconds  __jobs size  appended so far"
for ((t = 10; t <= level_s; t += 10)); do
  sleep 10
  printf '%7d  %11s  %s\n' "$t" "$(mib "$(metric spool_partition_size_bytes __jobs)")" \
    "$(mib "$(metric spool_log_appended_bytes_total __jobs)")"
done
wait "$bench_pid" || true
untrack "$bench_pid"
jq -c '{jobs, enqueued_per_s, completed_per_s}' "$LOG_DIR/scaled-bench.json"
spoold_stop KILL
echo "killed spoold with SIGKILL; starting it again"
spoold_start scaled-restart "$scratch/scaled" --log-format json "${scaled[@]}"
jq -c 'select(.fields.message? == "job table rebuilt") | .fields | {snapshot_offset, replayed_events, jobs, elapsed_ms}' "$SPOOLD_ERR"
echo "__jobs size after the start: $(mib "$(metric spool_partition_size_bytes __jobs)")"
spoold_stop TERM
