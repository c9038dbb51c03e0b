#!/usr/bin/env bash
# Runs the storage engine's criterion benchmarks together with the figures
# they are judged against, in one go, so every ratio in docs/performance.md
# comes from a single run on a single machine:
#
#   1. the machine: cores, CPU model, memory, kernel, file system, load;
#   2. dd: sequential write with one fdatasync at the end (1 GiB), 4 KiB
#      writes each followed by a sync (oflag=dsync), and a memory copy
#      to /dev/null (20,000 MiB);
#   3. cargo bench --bench engine, with any arguments passed on to
#      criterion (e.g. a filter: scripts/bench-engine.sh append);
#
# and prints where criterion wrote its results. The whole output is also
# kept in target/bench-engine/<timestamp>.log.
#
# Scratch files (dd's and the benchmarks') go to a fresh directory under
# SPOOL_SCRATCH_DIR, else TMPDIR, else /tmp, removed at the end. Needs about
# 4 GiB free there. Takes about 10 minutes.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir/bench-engine"
log="$target_dir/bench-engine/$(date +%Y%m%d-%H%M%S).log"
exec > >(tee "$log") 2>&1

scratch_parent="${SPOOL_SCRATCH_DIR:-${TMPDIR:-/tmp}}"
scratch="$(mktemp -d "$scratch_parent/spool-bench.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export SPOOL_SCRATCH_DIR="$scratch"
touch "$scratch/start-stamp"

section() { printf '\n== %s\n' "$*"; }

section "machine"
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
echo "load:        $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"

# dd prints its summary last on stderr: "N bytes (...) copied, S s, R MB/s".
dd_summary() { "$@" 2>&1 | tail -1; }
seconds_of() { sed -E 's/.* copied, ([0-9.e+-]+) s, .*/\1/' <<<"$1"; }

section "dd: 1 GiB sequential write, one fdatasync at the end"
echo "\$ dd if=/dev/zero of=\$SCRATCH/dd.bin bs=1M count=1024 conv=fdatasync"
line="$(dd_summary dd if=/dev/zero of="$scratch/dd.bin" bs=1M count=1024 conv=fdatasync)"
rm -f "$scratch/dd.bin"
echo "$line"
awk -v s="$(seconds_of "$line")" 'BEGIN {printf "=> %.1f MB/s (%.1f MiB/s)\n", 1073741824 / s / 1e6, 1024 / s}'

section "dd: 2000 writes of 4 KiB, each synced (oflag=dsync)"
echo "\$ dd if=/dev/zero of=\$SCRATCH/dd-dsync.bin bs=4k count=2000 oflag=dsync"
line="$(dd_summary dd if=/dev/zero of="$scratch/dd-dsync.bin" bs=4k count=2000 oflag=dsync)"
rm -f "$scratch/dd-dsync.bin"
echo "$line"
awk -v s="$(seconds_of "$line")" \
  'BEGIN {printf "=> %.0f synced writes/s, %.3f ms per write\n", 2000 / s, s / 2000 * 1000}'

section "dd: memory copy, 20,000 MiB to /dev/null"
echo "\$ dd if=/dev/zero of=/dev/null bs=1M count=20000"
line="$(dd_summary dd if=/dev/zero of=/dev/null bs=1M count=20000)"
echo "$line"
awk -v s="$(seconds_of "$line")" 'BEGIN {printf "=> %.1f GB/s\n", 20000 * 1048576 / s / 1e9}'

section "cargo bench --bench engine -- $*"
cargo bench --bench engine -- "$@"

section "done"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "criterion results: $target_dir/criterion/<group>/<benchmark>/new/estimates.json"
echo "  (and report/index.html when criterion's HTML reports are enabled)"
find "$target_dir/criterion" -path '*/new/estimates.json' -newer "$scratch/start-stamp" 2>/dev/null |
  sed "s|^$target_dir/criterion/||; s|/new/estimates.json$||" | sort | sed 's/^/  /'
echo "this log: $log"
