# shellcheck shell=bash
# Processes for the bench scripts: installing what they need, building and
# starting spoold and Redis on 127.0.0.1, sampling a process's memory, and
# stopping every process a script started (by pid, never by name).
#
#   now_us                           microseconds since the epoch
#   ensure_apt COMMAND PACKAGE...    apt-get install PACKAGE... if COMMAND is missing
#   ensure_venv DIR MODULE=PIP_SPEC...
#                                    a Python venv at DIR with each MODULE importable
#                                    (pip install PIP_SPEC where it is not); sets PYTHON
#   ensure_bullmq DIR BULLMQ_VERSION IOREDIS_VERSION
#                                    npm install of exactly those versions of bullmq and
#                                    ioredis under DIR (needs jq and npm), unless there
#                                    already; run scripts with NODE_PATH=DIR/node_modules
#   free_port                        a free TCP port on 127.0.0.1
#   track PID / untrack PID          processes to stop at exit
#   stop_tracked                     SIGTERM each tracked process, SIGKILL after 5 s
#   stop_pid PID [SIGNAL]            SIGNAL (default TERM), wait up to 10 s, then SIGKILL
#   spoold_start NAME DATA_DIR [SPOOLD ARGS...]
#       starts $SPOOLD with RUST_LOG=${RUST_LOG:-info} on 127.0.0.1 port 0
#       (and its admin listener on another free port unless ARGS give
#       --admin-listen), stdout to $LOG_DIR/NAME.out and stderr to
#       $LOG_DIR/NAME.err, waits for its "listening on ADDR" line and sets
#       SPOOLD_PID, SPOOLD_ADDR, SPOOLD_URL, SPOOLD_ADMIN_ADDR (empty when
#       the admin listener is off), SPOOLD_OUT, SPOOLD_ERR and
#       SPOOLD_READY_S (seconds from exec to the line, polled every 10 ms)
#   spoold_stop [SIGNAL]             SIGNAL (default TERM) to the spoold started last;
#                                    sets SPOOLD_STOP_S (seconds until it exited)
#   redis_start NAME DIR [REDIS ARGS...]
#       starts redis-server on 127.0.0.1:<free port> in DIR (no RDB
#       snapshots; ARGS add to that), waits for PING, sets REDIS_PID and REDIS_PORT
#   mem_sampler_start PID FILE       appends "epoch_us VmRSS_kB RssAnon_kB" to FILE
#                                    every 100 ms while PID lives; sets SAMPLER_PID
#   mem_sampler_stop
#   mem_window FILE FROM_US TO_US    prints "max_VmRSS_kB max_RssAnon_kB samples" of
#                                    the samples taken between FROM_US and TO_US
#
# Expects LOG_DIR (per-process logs) and, for spoold_start, SPOOLD.

now_us() { local t="$EPOCHREALTIME"; echo "${t/./}"; }

ensure_apt() {
  local command="$1"
  shift
  command -v "$command" >/dev/null 2>&1 && return 0
  echo "installing $* (apt) for $command"
  compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || apt-get update -qq
  # RUNLEVEL=1 keeps invoke-rc.d from starting a system service (redis-server's) at install.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
  command -v "$command" >/dev/null 2>&1 || { echo "error: $command still missing after apt-get install $*" >&2; return 1; }
}

ensure_venv() {
  local dir="$1" spec module missing=()
  shift
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  PYTHON="$dir/bin/python"
  for spec in "$@"; do
    module="${spec%%=*}"
    "$PYTHON" -c "import $module" 2>/dev/null || missing+=("${spec#*=}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (pip) into $dir"
    "$PYTHON" -m pip install -q --disable-pip-version-check "${missing[@]}"
  fi
}

ensure_bullmq() {
  local dir="$1" bullmq="$2" ioredis="$3"
  if [ "$(jq -r .version "$dir/node_modules/bullmq/package.json" 2>/dev/null)" != "$bullmq" ] ||
    [ "$(jq -r .version "$dir/node_modules/ioredis/package.json" 2>/dev/null)" != "$ioredis" ]; then
    mkdir -p "$dir"
    echo "\$ npm install --prefix $dir bullmq@$bullmq ioredis@$ioredis"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "bullmq@$bullmq" "ioredis@$ioredis" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

declare -ga TRACKED_PIDS=()
track() { TRACKED_PIDS+=("$1"); }
untrack() {
  local pid kept=()
  for pid in "${TRACKED_PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  TRACKED_PIDS=("${kept[@]}")
}

stop_pid() {
  local pid="$1" signal="${2:-TERM}" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; untrack "$pid"; return 0; }
  kill -s "$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < 1000; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  untrack "$pid"
}

stop_tracked() {
  local pid i alive
  for pid in "${TRACKED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    alive=0
    for pid in "${TRACKED_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  for pid in "${TRACKED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  TRACKED_PIDS=()
}

spoold_start() {
  local name="$1" data_dir="$2" started line deadline admin=(--admin-listen 127.0.0.1:0)
  shift 2
  [[ " $* " == *" --admin-listen "* ]] && admin=()
  SPOOLD_OUT="$LOG_DIR/$name.out"
  SPOOLD_ERR="$LOG_DIR/$name.err"
  : >"$SPOOLD_OUT"
  started="$(now_us)"
  RUST_LOG="${RUST_LOG:-info}" "$SPOOLD" --data-dir "$data_dir" --listen 127.0.0.1:0 "${admin[@]}" "$@" \
    >"$SPOOLD_OUT" 2>"$SPOOLD_ERR" </dev/null &
  SPOOLD_PID=$!
  track "$SPOOLD_PID"
  deadline=$((started + ${SPOOLD_START_TIMEOUT_S:-600} * 1000000))
  line=""
  while :; do
    # The first line of stdout; read by the shell itself, no process per poll.
    if [ -s "$SPOOLD_OUT" ]; then
      IFS= read -r line <"$SPOOLD_OUT" || true
      [[ "$line" == "listening on "* ]] && break
    fi
    if ! kill -0 "$SPOOLD_PID" 2>/dev/null; then
      echo "error: spoold exited before listening; its stderr ($SPOOLD_ERR) ends with:" >&2
      tail -20 "$SPOOLD_ERR" >&2
      return 1
    fi
    if (($(now_us) > deadline)); then
      echo "error: spoold did not print 'listening on' within ${SPOOLD_START_TIMEOUT_S:-600} s" >&2
      return 1
    fi
    sleep 0.01
  done
  SPOOLD_READY_S="$(awk -v a="$started" -v b="$(now_us)" 'BEGIN {printf "%.3f", (b - a) / 1e6}')"
  SPOOLD_ADDR="${line#listening on }"
  # The admin line follows the first at once (one flush), when there is one.
  SPOOLD_ADMIN_ADDR="$(sed -n 's/^admin listening on //p' "$SPOOLD_OUT")"
  # shellcheck disable=SC2034 # for the caller
  SPOOLD_URL="http://$SPOOLD_ADDR"
  echo "spoold ($name) pid $SPOOLD_PID listening on $SPOOLD_ADDR after $SPOOLD_READY_S s; log $SPOOLD_ERR"
}

spoold_stop() {
  local signal="${1:-TERM}" started i
  started="$(now_us)"
  kill -s "$signal" "$SPOOLD_PID" 2>/dev/null || true
  for ((i = 0; i < 60000; i++)); do
    kill -0 "$SPOOLD_PID" 2>/dev/null || break
    sleep 0.01
  done
  if kill -0 "$SPOOLD_PID" 2>/dev/null; then
    echo "warning: spoold did not exit within 600 s of SIG$signal; killing it" >&2
    kill -KILL "$SPOOLD_PID" 2>/dev/null || true
  fi
  wait "$SPOOLD_PID" 2>/dev/null || true
  untrack "$SPOOLD_PID"
  # shellcheck disable=SC2034 # for the caller
  SPOOLD_STOP_S="$(awk -v a="$started" -v b="$(now_us)" 'BEGIN {printf "%.3f", (b - a) / 1e6}')"
}

redis_start() {
  local name="$1" dir="$2" i
  shift 2
  mkdir -p "$dir"
  REDIS_PORT="$(free_port)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --save '' \
    --daemonize no --logfile "$LOG_DIR/$name.log" "$@" </dev/null >/dev/null 2>&1 &
  REDIS_PID=$!
  track "$REDIS_PID"
  for ((i = 0; i < 500; i++)); do
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    kill -0 "$REDIS_PID" 2>/dev/null || { echo "error: redis-server exited; see $LOG_DIR/$name.log" >&2; return 1; }
    sleep 0.02
  done
  echo "redis ($name) pid $REDIS_PID on 127.0.0.1:$REDIS_PORT, $(redis-server --version | cut -d' ' -f1-3), dir $dir"
}

_mem_sampler() {
  local pid="$1" key value rss anon
  while [ -r "/proc/$pid/status" ]; do
    rss="" anon=""
    while read -r key value _; do
      case "$key" in
      VmRSS:) rss="$value" ;;
      RssAnon:) anon="$value" ;;
      esac
    done <"/proc/$pid/status" 2>/dev/null || break
    [ -n "$rss" ] && printf '%s %s %s\n' "$(now_us)" "$rss" "${anon:-0}"
    sleep 0.1
  done
}

mem_sampler_start() {
  _mem_sampler "$1" >>"$2" 2>/dev/null &
  SAMPLER_PID=$!
  track "$SAMPLER_PID"
}

mem_sampler_stop() {
  [ -n "${SAMPLER_PID:-}" ] && stop_pid "$SAMPLER_PID"
  SAMPLER_PID=""
}

mem_window() {
  awk -v a="$2" -v b="$3" '$1 >= a && $1 <= b {
      n++; if ($2 > rss) rss = $2; if ($3 > anon) anon = $3
    } END { printf "%d %d %d\n", rss, anon, n }' "$1"
}
