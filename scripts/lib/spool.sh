# shellcheck shell=bash
# Building Spool and running commands that print a JSON line, for the bench
# scripts.
#
#   spool_build BUILD PACKAGE...     with BUILD=1: cargo build --release -p PACKAGE...
#                                    (prints the command); with 0: only checks
#                                    that the binaries are there
#   spool_binaries TARGET_DIR        sets SPOOLD and SPOOL to the release binaries
#                                    under TARGET_DIR; exits when one is missing
#   spool_topics_with_checkpoints    10 topics t0..t9 of 100 partitions, a record
#                                    in each partition and a checkpoint c0..c9 at
#                                    offset 0 of every partition (needs SPOOL and
#                                    SPOOLD_URL)
#   spool_has_package NAME           true if the workspace has that package
#   run_json KEY COMMAND...          prints and runs COMMAND, echoes its output,
#                                    sets RUN_COMMAND (the command line) and
#                                    RUN_JSON (its last stdout line starting
#                                    with "{"), records the output with
#                                    report_raw; on failure or no JSON records
#                                    "skipped" for KEY and returns 1; prints
#                                    and sets RUN_STEAL, the percentage of CPU
#                                    time the host stole meanwhile, and
#                                    RUN_CPU_S, the CPU seconds (user +
#                                    system) the command itself took
#   spool_bench KEY ARGS...          run_json KEY $SPOOL --server $SPOOLD_URL ARGS...

spool_has_package() {
  [ -f "crates/$1/Cargo.toml" ] && grep -q "^name = \"$1\"" "crates/$1/Cargo.toml" && return 0
  cargo metadata --no-deps --format-version 1 2>/dev/null | jq -e --arg n "$1" '.packages | any(.name == $n)' >/dev/null
}

spool_build() {
  local build="$1" package args=()
  shift
  for package in "$@"; do args+=(-p "$package"); done
  if [ "$build" = 1 ]; then
    echo "\$ cargo build --release ${args[*]}"
    cargo build --release "${args[@]}"
  else
    echo "(--no-build: using the release binaries already in ${CARGO_TARGET_DIR:-target}/release)"
  fi
}

spool_binaries() {
  SPOOLD="$1/release/spoold"
  SPOOL="$1/release/spool"
  local binary
  for binary in "$SPOOLD" "$SPOOL"; do
    [ -x "$binary" ] || { echo "error: $binary is missing (build it, or run without --no-build)" >&2; exit 1; }
  done
}

spool_topics_with_checkpoints() {
  local t p
  for t in $(seq 0 9); do
    "$SPOOL" --server "$SPOOLD_URL" topic create "t$t" --partitions 100 >/dev/null
    for p in $(seq 0 99); do echo "{\"order\":$p}"; done | "$SPOOL" --server "$SPOOLD_URL" produce "t$t" >/dev/null 2>&1
    for p in $(seq 0 99); do echo "$p=0"; done | xargs "$SPOOL" --server "$SPOOLD_URL" checkpoint set "c$t" "t$t" >/dev/null
  done
}

run_json() {
  local key="$1" rc=0 out ticks cpu
  shift
  RUN_COMMAND="$(printf '%q ' "$@")"
  RUN_COMMAND="${RUN_COMMAND% }"
  RUN_JSON=""
  echo "\$ $RUN_COMMAND"
  ticks="$(bench_cpu_ticks)"
  bench_children_cpu_s cpu
  out="$("$@")" || rc=$?
  bench_children_cpu_s RUN_CPU_S
  RUN_CPU_S="$(awk -v a="$cpu" -v b="$RUN_CPU_S" 'BEGIN {printf "%.3f", b - a}')"
  [ -n "$out" ] && echo "$out"
  RUN_STEAL="$(bench_steal_since "$ticks")"
  echo "steal:       $RUN_STEAL% of the CPU time taken by the host during this command"
  RUN_JSON="$(grep '^{' <<<"$out" | tail -1 || true)"
  report_raw "$key" "$RUN_COMMAND" "${out:-}"
  if [ "$rc" != 0 ] || [ -z "$RUN_JSON" ]; then
    report_skip "$key" "failed (exit status $rc, $([ -n "$RUN_JSON" ] && echo 'JSON printed' || echo 'no JSON line')): $RUN_COMMAND"
    return 1
  fi
}

spool_bench() {
  local key="$1"
  shift
  run_json "$key" "$SPOOL" --server "$SPOOLD_URL" "$@"
}
