#!/usr/bin/env bash
# Throughput over TLS against plaintext, in the same run (issue 12's target:
# TLS at least 70% of plaintext), and what authentication adds:
#
#   1. the machine (scripts/lib/machine.sh);
#   2. cargo build --release -p spool-server -p spool-cli;
#   3. `spool init-security` makes a CA, a server certificate and an admin
#      token in the scratch directory;
#   4. rounds of three servers, each on a fresh data directory on
#      127.0.0.1, the order rotating each round so none always runs first:
#        plain:  spoold
#        tls:    spoold --tls-cert server.pem --tls-key server.key
#        tls+auth: the same with --tokens-file tokens.toml (every call
#                  carries the admin token and is checked)
#      and against each, 100-byte records, client and server on the same
#      cores:
#        spool bench produce --record-bytes 100 --duration Ns --json
#        spool bench consume --topic backlog --keep --count C  (the preload)
#        spool bench consume --topic backlog --count C --json  (measured,
#          after the preload's writeback has settled)
#      with the CPU the server and the client took in each measured run;
#   5. medians per setting, the ratios tls/plain and tls+auth/plain, and
#      the same ratio from CPU per record (server + client), which is what
#      the throughput ratio is when neither run shares the cores with a
#      neighbour or the host (throughput on two busy cores is the inverse
#      of CPU per record).
#
#   [ROUNDS=N] scripts/bench-tls.sh [--quick] [--no-build]
#
# --quick: one round of 3 s (a smoke test). Output in
# target/bench-tls/<timestamp>.{log,jsonl}.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/run.sh
source "$(dirname "$0")/lib/run.sh"
bench_args "$0" "$@"
cd "$(dirname "$0")/.."
bench_setup tls
ensure_apt jq jq

if [ "$quick" = 1 ]; then rounds=1 seconds=3 count=1000000; else rounds="${ROUNDS:-3}" seconds=10 count=5000000; fi

bench_section "machine"
bench_machine "$scratch" "$target_dir"
report_init "$jsonl" tls

bench_section "build"
spool_build "$build" spool-server spool-cli
spool_binaries "$target_dir"

bench_section "certificates and a token"
pki="$scratch/pki"
"$SPOOL" init-security --dir "$pki" >/dev/null
token="$(cat "$pki/admin.token")"
echo "files in $pki: $(ls "$pki" | tr '\n' ' ')"

# cpu_per_record SERVER_CPU_BEFORE CLIENT_CPU RECORDS: microseconds of CPU
# (server since the reading, plus the client's) per record.
cpu_per_record() {
  awk -v a="$1" -v b="$(bench_pid_cpu_s "$SPOOLD_PID")" -v c="$2" -v n="$3" \
    'BEGIN {printf "%.3f", (b - a + c) * 1e6 / n}'
}

declare -A produce=() consume=() produce_cpu=() consume_cpu=()
settings=(plain tls tls+auth)
for round in $(seq 1 "$rounds"); do
  # Rotate the order: round 1 plain first, round 2 tls first, ...
  order=("${settings[@]:$(((round - 1) % 3))}" "${settings[@]:0:$(((round - 1) % 3))}")
  for setting in "${order[@]}"; do
    bench_section "round $round: $setting"
    bench_quiet
    server_args=()
    client_args=()
    case "$setting" in
    tls | tls+auth)
      server_args=(--tls-cert "$pki/server.pem" --tls-key "$pki/server.key")
      client_args=(--tls-ca "$pki/ca.pem")
      ;;
    esac
    # The token goes in the environment, not on the command lines the
    # report keeps.
    unset SPOOL_TOKEN
    if [ "$setting" = tls+auth ]; then
      server_args+=(--tokens-file "$pki/tokens.toml")
      export SPOOL_TOKEN="$token"
    fi
    spoold_start "$setting-$round" "$scratch/data-$round-${setting/+/-}" "${server_args[@]}"
    url="$SPOOLD_URL"
    [ "$setting" != plain ] && url="https://$SPOOLD_ADDR"
    key="${setting/+/_}"
    server_cpu="$(bench_pid_cpu_s "$SPOOLD_PID")"
    if run_json "produce.$key.$round" "$SPOOL" --server "$url" "${client_args[@]}" \
      bench produce --record-bytes 100 --duration "${seconds}s" --json; then
      records="$(jq -r .records <<<"$RUN_JSON")"
      produce[$setting]+="$(jq -r .records_per_s <<<"$RUN_JSON") "
      produce_cpu[$setting]+="$(cpu_per_record "$server_cpu" "$RUN_CPU_S" "$records") "
      produce_command="$RUN_COMMAND"
    fi
    # The backlog is written and settled first, so that the read measured
    # does not share the machine with its own preload's writeback.
    run_json "preload.$key.$round" "$SPOOL" --server "$url" "${client_args[@]}" \
      bench consume --topic backlog --keep --record-bytes 100 --count "$count" --json >/dev/null || true
    bench_quiet
    server_cpu="$(bench_pid_cpu_s "$SPOOLD_PID")"
    if run_json "consume.$key.$round" "$SPOOL" --server "$url" "${client_args[@]}" \
      bench consume --topic backlog --record-bytes 100 --count "$count" --json; then
      consume[$setting]+="$(jq -r .records_per_s <<<"$RUN_JSON") "
      consume_cpu[$setting]+="$(cpu_per_record "$server_cpu" "$RUN_CPU_S" "$count") "
      consume_command="$RUN_COMMAND"
    fi
    spoold_stop
    rm -rf "$scratch/data-$round-${setting/+/-}"
  done
done

bench_section "summary (medians of $rounds rounds)"
for setting in "${settings[@]}"; do
  key="${setting/+/_}"
  # shellcheck disable=SC2086 # lists of numbers
  report "produce.$key.records_per_s" "$(median ${produce[$setting]:-x})" records/s "" \
    "${produce_command:-spool bench produce}" "runs: ${produce[$setting]:-none}"
  # shellcheck disable=SC2086
  report "consume.$key.records_per_s" "$(median ${consume[$setting]:-x})" records/s "" \
    "${consume_command:-spool bench consume}" "runs: ${consume[$setting]:-none}"
  # shellcheck disable=SC2086
  report "produce.$key.cpu_us_per_record" "$(median ${produce_cpu[$setting]:-x})" "µs CPU" "" \
    "${produce_command:-spool bench produce}" "server + client CPU per record; runs: ${produce_cpu[$setting]:-none}"
  # shellcheck disable=SC2086
  report "consume.$key.cpu_us_per_record" "$(median ${consume_cpu[$setting]:-x})" "µs CPU" "" \
    "${consume_command:-spool bench consume}" "server + client CPU per record; runs: ${consume_cpu[$setting]:-none}"
done
report_ratio produce.tls_over_plain produce.tls.records_per_s produce.plain.records_per_s ">= 0.7" "TLS produce / plaintext produce"
report_ratio consume.tls_over_plain consume.tls.records_per_s consume.plain.records_per_s ">= 0.7" "TLS consume / plaintext consume"
report_ratio produce.tls_auth_over_plain produce.tls_auth.records_per_s produce.plain.records_per_s "" "TLS with a checked token / plaintext"
report_ratio consume.tls_auth_over_plain consume.tls_auth.records_per_s consume.plain.records_per_s "" "TLS with a checked token / plaintext"
# The same ratios from CPU cost: what the throughput ratio is when both
# runs have the cores to themselves (no steal, no neighbour), since on two
# shared cores throughput is the inverse of CPU per record.
report_ratio produce.cpu_plain_over_tls produce.plain.cpu_us_per_record produce.tls.cpu_us_per_record "" "plaintext CPU per record / TLS CPU per record"
report_ratio consume.cpu_plain_over_tls consume.plain.cpu_us_per_record consume.tls.cpu_us_per_record "" "plaintext CPU per record / TLS CPU per record"
report_table
echo "log: $log; JSON lines: $jsonl"
