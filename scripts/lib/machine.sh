# shellcheck shell=bash
# The machine section shared by the bench scripts: what the machine is, and
# what its disk and memory do under dd, so that every figure a bench prints
# can be compared with the physical limits measured in the same run.
#
# Source it, then:
#
#   bench_section TITLE              prints "== TITLE"
#   bench_machine SCRATCH TARGET_DIR prints cores, CPU, memory, kernel, file
#                                    system, dirty page limits, toolchain,
#                                    commit and load
#   bench_dd SCRATCH [WRITE_MIB [DSYNC_WRITES [COPY_MIB]]]
#       runs three dd measurements in SCRATCH (defaults 1024, 2000, 20000):
#         dd if=/dev/zero of=SCRATCH/dd.bin bs=1M count=WRITE_MIB conv=fdatasync
#         dd if=/dev/zero of=SCRATCH/dd-dsync.bin bs=4k count=DSYNC_WRITES oflag=dsync
#         dd if=/dev/zero of=/dev/null bs=1M count=COPY_MIB
#       prints each command, dd's summary and the derived figure, and sets
#         DD_WRITE_MBPS DD_WRITE_COMMAND
#         DD_DSYNC_PER_S DD_DSYNC_MS DD_DSYNC_COMMAND
#         DD_COPY_GBPS DD_COPY_COMMAND
#       (commands with $SCRATCH left symbolic, as printed).
#   bench_load                       prints the load average
#   bench_children_cpu_s VAR         VAR = CPU seconds of the shell's finished children
#   bench_pid_cpu_s PID              CPU seconds process PID has taken
#   bench_quiet                      syncs, waits (at most 60 s) until the
#                                    kernel has written back what earlier
#                                    phases left dirty, and prints how much
#                                    was dirty and how long it took: a
#                                    latency phase then does not share the
#                                    disk and the CPU with gigabytes of
#                                    writeback
#
# Needs LC_ALL=C (decimal points in dd's and awk's output).

bench_section() { printf '\n== %s\n' "$*"; }

bench_load() { echo "$(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"; }

# bench_cpu_ticks: "TOTAL STEAL" CPU ticks since boot, from /proc/stat.
bench_cpu_ticks() { awk '/^cpu / {total = 0; for (i = 2; i <= NF; i++) total += $i; print total, $9}' /proc/stat; }

# bench_steal_since "TOTAL STEAL": the percentage of CPU time the host took
# from this virtual machine since that reading, as "N.N".
bench_steal_since() {
  local before="$1"
  awk -v b="$before" -v n="$(bench_cpu_ticks)" 'BEGIN {
    split(b, x, " "); split(n, y, " ");
    printf "%.1f", (y[1] > x[1]) ? 100 * (y[2] - x[2]) / (y[1] - x[1]) : 0 }'
}

# bench_children_cpu_s VAR: sets VAR to the CPU seconds (user + system) of
# this shell's waited-for children so far, from the `times` builtin (run in
# this shell, not a subshell, whose children would be its own); two readings
# around a command give the CPU the command and everything it ran took.
bench_children_cpu_s() {
  local file
  file="$(mktemp)"
  times >"$file"
  printf -v "$1" '%s' "$(awk 'NR == 2 {
    total = 0
    for (i = 1; i <= 2; i++) { split($i, t, "m"); sub("s", "", t[2]); total += t[1] * 60 + t[2] }
    printf "%.3f", total }' "$file")"
  rm -f "$file"
}

# bench_pid_cpu_s PID: CPU seconds (user + system) process PID has taken so far.
bench_pid_cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat"
}

_bench_dirty_kib() { awk '/^(Dirty|Writeback):/ {kib += $2} END {print kib + 0}' /proc/meminfo; }

bench_quiet() {
  local before started waited
  before="$(_bench_dirty_kib)"
  started="$(date +%s%N)"
  sync
  for _ in $(seq 60); do
    [ "$(_bench_dirty_kib)" -lt 4096 ] && break
    sleep 1
  done
  sleep 1
  waited="$((($(date +%s%N) - started) / 1000000))"
  echo "quiet:       $((before / 1024)) MiB dirty or under writeback, settled in ${waited} ms; load $(bench_load)"
}

bench_machine() {
  local scratch="$1" target_dir="$2"
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cores:       $(nproc)"
  echo "cpu:         $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory:      $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel:      $(uname -srm)"
  echo "scratch:     $scratch"
  echo "file system: $(findmnt -n -o FSTYPE,SOURCE,OPTIONS -T "$scratch" 2>/dev/null || df -T "$scratch" | tail -1)"
  echo "free space:  $(df -h --output=avail "$scratch" | tail -1 | tr -d ' ')"
  echo "target dir:  $target_dir ($(findmnt -n -o FSTYPE,SOURCE -T "$target_dir" 2>/dev/null || echo unknown))"
  echo "dirty pages: vm.dirty_background_ratio=$(cat /proc/sys/vm/dirty_background_ratio)" \
    "vm.dirty_ratio=$(cat /proc/sys/vm/dirty_ratio)"
  echo "rustc:       $(rustc --version)"
  echo "commit:      $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(
    [ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' (with uncommitted changes)')"
  echo "load:        $(bench_load)"
}

# dd prints its summary last on stderr: "N bytes (...) copied, S s, R MB/s".
_bench_dd_summary() { "$@" 2>&1 | tail -1; }
_bench_seconds_of() { sed -E 's/.* copied, ([0-9.e+-]+) s, .*/\1/' <<<"$1"; }
# 20000 -> 20,000
_bench_thousands() { sed -E ':a; s/^([0-9]+)([0-9]{3})/\1,\2/; ta' <<<"$1"; }
# 1024 -> "1 GiB", 256 -> "256 MiB"
_bench_mib_words() {
  if (($1 % 1024 == 0)); then echo "$(($1 / 1024)) GiB"; else echo "$(_bench_thousands "$1") MiB"; fi
}

bench_dd() {
  local scratch="$1" write_mib="${2:-1024}" dsync_writes="${3:-2000}" copy_mib="${4:-20000}" line seconds

  bench_section "dd: $(_bench_mib_words "$write_mib") sequential write, one fdatasync at the end"
  DD_WRITE_COMMAND="dd if=/dev/zero of=\$SCRATCH/dd.bin bs=1M count=$write_mib conv=fdatasync"
  echo "\$ $DD_WRITE_COMMAND"
  line="$(_bench_dd_summary dd if=/dev/zero of="$scratch/dd.bin" bs=1M count="$write_mib" conv=fdatasync)"
  rm -f "$scratch/dd.bin"
  echo "$line"
  seconds="$(_bench_seconds_of "$line")"
  awk -v s="$seconds" -v m="$write_mib" 'BEGIN {printf "=> %.1f MB/s (%.1f MiB/s)\n", m * 1048576 / s / 1e6, m / s}'
  DD_WRITE_MBPS="$(awk -v s="$seconds" -v m="$write_mib" 'BEGIN {printf "%.1f", m * 1048576 / s / 1e6}')"

  bench_section "dd: $dsync_writes writes of 4 KiB, each synced (oflag=dsync)"
  DD_DSYNC_COMMAND="dd if=/dev/zero of=\$SCRATCH/dd-dsync.bin bs=4k count=$dsync_writes oflag=dsync"
  echo "\$ $DD_DSYNC_COMMAND"
  line="$(_bench_dd_summary dd if=/dev/zero of="$scratch/dd-dsync.bin" bs=4k count="$dsync_writes" oflag=dsync)"
  rm -f "$scratch/dd-dsync.bin"
  echo "$line"
  seconds="$(_bench_seconds_of "$line")"
  awk -v s="$seconds" -v n="$dsync_writes" \
    'BEGIN {printf "=> %.0f synced writes/s, %.3f ms per write\n", n / s, s / n * 1000}'
  DD_DSYNC_PER_S="$(awk -v s="$seconds" -v n="$dsync_writes" 'BEGIN {printf "%.0f", n / s}')"
  DD_DSYNC_MS="$(awk -v s="$seconds" -v n="$dsync_writes" 'BEGIN {printf "%.3f", s / n * 1000}')"

  bench_section "dd: memory copy, $(_bench_thousands "$copy_mib") MiB to /dev/null"
  DD_COPY_COMMAND="dd if=/dev/zero of=/dev/null bs=1M count=$copy_mib"
  echo "\$ $DD_COPY_COMMAND"
  line="$(_bench_dd_summary dd if=/dev/zero of=/dev/null bs=1M count="$copy_mib")"
  echo "$line"
  seconds="$(_bench_seconds_of "$line")"
  awk -v s="$seconds" -v m="$copy_mib" 'BEGIN {printf "=> %.1f GB/s\n", m * 1048576 / s / 1e9}'
  DD_COPY_GBPS="$(awk -v s="$seconds" -v m="$copy_mib" 'BEGIN {printf "%.1f", m * 1048576 / s / 1e9}')"

  export DD_WRITE_MBPS DD_WRITE_COMMAND DD_DSYNC_PER_S DD_DSYNC_MS DD_DSYNC_COMMAND DD_COPY_GBPS DD_COPY_COMMAND
}
