# shellcheck shell=bash
# Setup shared by the end-to-end bench scripts: where the log and JSON
# lines go, the helper libraries, and a scratch directory removed on exit.
# Sourced by scripts/bench-e2e.sh, scripts/bench-jobs.sh and
# scripts/bench-small.sh; bench_setup runs from the repository root.

# bench_args SCRIPT ARGS...: reads --quick and --no-build into the globals
# quick and build (0 or 1); --help prints SCRIPT's header comment; anything
# else is a usage error (exit 2). Call it before changing directory.
# shellcheck disable=SC2034 # quick and build are read by the scripts
bench_args() {
  local script="$1" arg
  shift
  quick=0
  build=1
  for arg in "$@"; do
    case "$arg" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "usage: $script [--quick] [--no-build]" >&2
      exit 2
      ;;
    esac
  done
}

# bench_setup NAME: sets target_dir, out_dir, stamp, LOG_DIR, log, jsonl and
# scratch (globals the scripts use), sends all output to the log too, and
# sources the other libraries.
bench_setup() {
  local name="$1"
  target_dir="${CARGO_TARGET_DIR:-target}"
  out_dir="$target_dir/bench-$name"
  stamp="$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$out_dir"
  # An absolute CARGO_TARGET_DIR must not be put under the working directory.
  case "$out_dir" in
  /*) LOG_DIR="$out_dir/$stamp-logs" ;;
  *) LOG_DIR="$PWD/$out_dir/$stamp-logs" ;;
  esac
  mkdir -p "$LOG_DIR"
  log="$out_dir/$stamp.log"
  # shellcheck disable=SC2034 # read by report.sh and the scripts
  jsonl="$out_dir/$stamp.jsonl"
  exec > >(tee "$log") 2>&1

  # shellcheck source=scripts/lib/machine.sh
  source scripts/lib/machine.sh
  # shellcheck source=scripts/lib/procs.sh
  source scripts/lib/procs.sh
  # shellcheck source=scripts/lib/report.sh
  source scripts/lib/report.sh
  # shellcheck source=scripts/lib/spool.sh
  source scripts/lib/spool.sh

  local scratch_parent="${SPOOL_SCRATCH_DIR:-${TMPDIR:-/tmp}}"
  scratch="$(mktemp -d "$scratch_parent/spool-bench-$name.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  stop_tracked
  rm -rf "$scratch"
}
