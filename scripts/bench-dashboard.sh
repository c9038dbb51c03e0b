#!/usr/bin/env bash
# What the dashboard costs on a large server (issue 11): every page drawn
# in under 300 ms with 1,000 partitions, 100 queues and 1,000,000 jobs, and
# an open tab costing spoold under 1% of a core.
#
#   1. the machine (scripts/lib/machine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. a server with 10 topics of 100 partitions (100 records and a
#      checkpoint each), 100 queues of 10,000 jobs each (1,000,000 available
#      jobs; EnqueueBatch of 1000 from Python with numbered JSON payloads),
#      and the metrics history every 5 s (the default);
#   4. each JSON endpoint a page calls, 10 times with curl: median and
#      largest time to the whole answer;
#   5. each page 5 times in headless Chromium (chromedriver, driven with
#      curl): milliseconds from the navigation's start to the page drawn
#      with its data (`#main[data-ready-ms]`, set by the page itself):
#      median and largest; target under 300 ms;
#   6. spoold's CPU (utime + stime from /proc) over 60 s with no tab, then
#      60 s with the Overview open, then 60 s with the Queues page open
#      (each polls once a second; Overview's charts read the history every
#      5 s): the tab's cost in percent of one core; target under 1%.
#
#   scripts/bench-dashboard.sh [--quick] [--no-build]
#
# --quick: 100,000 jobs, 2 page loads, 20 s CPU windows. Output goes to
# target/bench-dashboard/<timestamp>.log and .jsonl. Needs jq, curl,
# chromium and chromium-driver (installed with apt when missing), and
# python3 with grpcio (a venv under target/). Takes about 10 minutes after
# the build.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup dashboard
ensure_apt jq jq
ensure_apt curl curl
ensure_apt chromium chromium
ensure_apt chromedriver chromium-driver

if [ "$quick" = 1 ]; then jobs_per_queue=1000 loads=2 window_s=20; else jobs_per_queue=10000 loads=5 window_s=60; fi

bench_section "machine"
bench_machine "$scratch" "$target_dir"
report_init "$jsonl" dashboard

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"
ensure_venv "$target_dir/bench-venv" grpc=grpcio grpc_tools=grpcio-tools
stubs="$(cd "$target_dir" && pwd)/bench-venv/spool-stubs"
if [ ! -f "$stubs/spool/v1/jobs_pb2_grpc.py" ] || [ proto/spool/v1/jobs.proto -nt "$stubs/spool/v1/jobs_pb2_grpc.py" ]; then
  mkdir -p "$stubs"
  "$PYTHON" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" proto/spool/v1/jobs.proto
fi

bench_section "a large server: 1,000 partitions, 100 queues, $((jobs_per_queue * 100)) jobs"
spoold_start large "$scratch/data" --set preallocate_bytes=4KiB
spool_topics_with_checkpoints
started="$(now_us)"
for q in $(seq 1 100); do
  "$PYTHON" scripts/lib/spool_jobs.py --stubs "$stubs" enqueue --server "$SPOOLD_ADDR" --queue "q$q" \
    --count "$jobs_per_queue" --numbered >/dev/null
done
echo "enqueued $((jobs_per_queue * 100)) jobs in $(awk -v a="$started" -v b="$(now_us)" 'BEGIN {printf "%.1f", (b - a) / 1e6}') s"
ADMIN="http://$SPOOLD_ADMIN_ADDR"
overview_jobs="$(curl -s "$ADMIN/api/v1/overview" | jq '.jobs.available')"
echo "the overview counts $overview_jobs available jobs; rss $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$SPOOLD_PID/status")"
job_id="$(curl -s "$ADMIN/api/v1/jobs?queue=q50&limit=1" | jq -r '.jobs[0].id')"
needle="q77-$((jobs_per_queue / 2))\""
# Let the history hold a few samples for the charts.
sleep 12

bench_section "JSON endpoints: time to the whole answer (curl, 10 times)"
endpoints=(
  "overview /api/v1/overview"
  "topics /api/v1/topics"
  "topic /api/v1/topics/t0"
  "messages /api/v1/topics/t0/messages?partition=0&limit=50"
  "consumers /api/v1/consumers"
  "queues /api/v1/queues"
  "jobs /api/v1/jobs?queue=q50&limit=50"
  "job /api/v1/jobs/$job_id"
  "search_payload /api/v1/search?q=$(jq -rn --arg v "$needle" '$v|@uri')&field=payload"
  "search_any /api/v1/search?q=gift%20wrap"
  "dead /api/v1/dead"
  "history_overview /api/v1/history?series=sum(rate(spool_jobs_enqueued_total))&series=rate(spool_rpc_duration_seconds)&series=quantile(0.99,sum(spool_job_run_seconds))&from=-1h&step=30s"
)
for entry in "${endpoints[@]}"; do
  name="${entry%% *}"
  path="${entry#* }"
  times=()
  for _ in $(seq 1 10); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$ADMIN$path" | awk '{printf "%.1f", $1 * 1000}')")
  done
  largest="$(printf '%s\n' "${times[@]}" | sort -g | tail -1)"
  report "api.$name.median_ms" "$(median "${times[@]}")" ms "< 300" "curl -w %{time_total} $path (10 times)" \
    "largest $largest ms; runs: ${times[*]}"
done

bench_section "pages in headless Chromium: navigation start to drawn"
wd_port="$(free_port)"
chromedriver --port="$wd_port" >"$LOG_DIR/chromedriver.log" 2>&1 &
track $!
WD="http://127.0.0.1:$wd_port"
for _ in $(seq 1 200); do curl -s "$WD/status" | jq -e .value.ready >/dev/null 2>&1 && break; sleep 0.05; done
session="$(curl -s -X POST -H 'Content-Type: application/json' "$WD/session" -d "$(jq -nc --arg bin "$(command -v chromium)" \
  '{capabilities: {alwaysMatch: {browserName: "chrome", "goog:chromeOptions": {binary: $bin,
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}}}}')" |
  jq -r .value.sessionId)"
[ -n "$session" ] && [ "$session" != null ] || { echo "error: chromedriver gave no session" >&2; exit 1; }
wd() { curl -s -X "$1" -H 'Content-Type: application/json' "$WD/session/$session$2" ${3:+-d "$3"}; }
open_page() {
  wd POST /url "$(jq -nc --arg url "$ADMIN$1" '{url: $url}')" >/dev/null
  local ms=""
  for _ in $(seq 1 600); do
    ms="$(wd POST /execute/sync '{"script": "return document.getElementById(\"main\").dataset.readyMs || null", "args": []}' | jq -r .value)"
    [ "$ms" != null ] && [ -n "$ms" ] && break
    sleep 0.05
  done
  echo "$ms"
}
pages=(
  "overview /"
  "topics /topics"
  "topic /topics/t0"
  "consumers /consumers"
  "queues /queues"
  "jobs_list /jobs?queue=q50"
  "jobs_search /jobs?q=$(jq -rn --arg v "$needle" '$v|@uri')&field=payload"
  "job /jobs/$job_id"
  "dead /dead"
  "audit /audit"
)
for entry in "${pages[@]}"; do
  name="${entry%% *}"
  path="${entry#* }"
  times=()
  for _ in $(seq 1 "$loads"); do times+=("$(open_page "$path")"); done
  largest="$(printf '%s\n' "${times[@]}" | sort -g | tail -1)"
  report "page.$name.median_ms" "$(median "${times[@]}")" ms "< 300" \
    "headless Chromium: navigation start to #main[data-ready-ms] on $path ($loads loads)" "largest $largest ms; runs: ${times[*]}"
done

bench_section "an open tab: spoold's CPU, ${window_s} s windows"
ticks() { awk '{print $14 + $15}' "/proc/$SPOOLD_PID/stat"; }
hz="$(getconf CLK_TCK)"
cpu_window() {
  local before after
  before="$(ticks)"
  sleep "$window_s"
  after="$(ticks)"
  awk -v a="$before" -v b="$after" -v hz="$hz" -v s="$window_s" 'BEGIN {printf "%.3f", (b - a) / hz / s * 100}'
}
wd POST /url '{"url": "about:blank"}' >/dev/null
idle="$(cpu_window)"
report "cpu.idle_percent" "$idle" "% of a core" "" "spoold utime+stime over ${window_s} s, no tab open" ""
for entry in "overview /" "queues /queues"; do
  name="${entry%% *}"
  open_page "${entry#* }" >/dev/null
  busy="$(cpu_window)"
  report "cpu.$name.percent" "$busy" "% of a core" "" "spoold utime+stime over ${window_s} s with $name open" ""
  report "cpu.$name.tab_percent" "$(awk -v a="$busy" -v b="$idle" 'BEGIN {printf "%.3f", a - b}')" "% of a core" "< 1" \
    "the same minus the idle window" "idle $idle%, with the tab $busy%"
done
wd DELETE "" >/dev/null || true
spoold_stop

bench_section "summary"
report_table
