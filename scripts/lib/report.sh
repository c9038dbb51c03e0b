# shellcheck shell=bash
# shellcheck disable=SC2016 # jq programs, with jq variables, in single quotes
# Results of a bench script: one JSON line per figure in a .jsonl file, and
# a summary table at the end. Needs jq.
#
#   report_init FILE SUITE
#   report_machine                   one "machine" line with the dd figures
#                                    (call after bench_dd)
#   report KEY VALUE UNIT TARGET COMMAND [NOTE]
#       one figure. TARGET is empty or "OP NUMBER" with OP one of >= > <= <
#       (e.g. ">= 1000000"); the verdict is met/missed accordingly.
#       COMMAND is the command line that produced the number.
#   report_ratio KEY NUM_KEY DEN_KEY TARGET NOTE
#       NUM/DEN of two figures reported earlier (skipped if either is missing)
#   report_skip KEY REASON           prints "skipped: REASON" and records it
#   report_raw KEY COMMAND TEXT      the raw output of a command (a JSON value
#                                    if TEXT parses as JSON, else a string)
#   report_value KEY                 prints a figure reported earlier
#   report_table                     prints the summary table
#   median NUMBER...                 prints the middle one (of an even
#                                    count, the lower of the two middle)
#
# Every line carries "run" (the timestamp of the run) and "suite".

declare -gA REPORT_VALUES=()
REPORT_FILE=""
REPORT_SUITE=""
REPORT_RUN=""

report_init() {
  REPORT_FILE="$1"
  REPORT_SUITE="$2"
  REPORT_RUN="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  : >"$REPORT_FILE"
}

_report_line() { jq -nc --arg run "$REPORT_RUN" --arg suite "$REPORT_SUITE" "$@" >>"$REPORT_FILE"; }

report_machine() {
  _report_line \
    --arg cores "$(nproc)" \
    --arg cpu "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    --arg memory_kib "$(awk '/^MemTotal/ {print $2}' /proc/meminfo)" \
    --arg kernel "$(uname -srm)" \
    --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --arg dirty "$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo true || echo false)" \
    --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg dd_write_mbps "${DD_WRITE_MBPS:-}" --arg dd_write_command "${DD_WRITE_COMMAND:-}" \
    --arg dd_dsync_per_s "${DD_DSYNC_PER_S:-}" --arg dd_dsync_ms "${DD_DSYNC_MS:-}" \
    --arg dd_dsync_command "${DD_DSYNC_COMMAND:-}" \
    --arg dd_copy_gbps "${DD_COPY_GBPS:-}" --arg dd_copy_command "${DD_COPY_COMMAND:-}" \
    '{run: $run, suite: $suite, kind: "machine", cores: ($cores | tonumber), cpu: $cpu,
      memory_kib: ($memory_kib | tonumber), kernel: $kernel, commit: $commit,
      uncommitted_changes: ($dirty == "true"), load: $load,
      dd: {fdatasync_write_mb_per_s: ($dd_write_mbps | tonumber? // null), fdatasync_write_command: $dd_write_command,
           dsync_4k_writes_per_s: ($dd_dsync_per_s | tonumber? // null), dsync_4k_ms: ($dd_dsync_ms | tonumber? // null),
           dsync_command: $dd_dsync_command,
           memory_copy_gb_per_s: ($dd_copy_gbps | tonumber? // null), memory_copy_command: $dd_copy_command}}'
}

# verdict VALUE "OP NUMBER" -> met | missed | "" (no target)
_report_verdict() {
  local value="$1" target="$2"
  [ -n "$target" ] && [ -n "$value" ] || return 0
  awk -v v="$value" -v t="$target" 'BEGIN {
    split(t, p, " "); op = p[1]; n = p[2] + 0; v = v + 0
    ok = (op == ">=" && v >= n) || (op == ">" && v > n) || (op == "<=" && v <= n) || (op == "<" && v < n)
    print (ok ? "met" : "missed")
  }'
}

report() {
  local key="$1" value="$2" unit="$3" target="$4" command="$5" note="${6:-}" verdict
  if ! [[ "$value" =~ ^-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
    report_skip "$key" "no number (got '${value}') from: $command"
    return 0
  fi
  verdict="$(_report_verdict "$value" "$target")"
  REPORT_VALUES["$key"]="$value"
  _report_line --arg key "$key" --arg value "$value" --arg unit "$unit" --arg target "$target" \
    --arg verdict "$verdict" --arg command "$command" --arg note "$note" \
    '{run: $run, suite: $suite, kind: "figure", key: $key, value: ($value | tonumber), unit: $unit,
      target: (if $target == "" then null else $target end),
      verdict: (if $verdict == "" then null else $verdict end),
      command: $command, note: (if $note == "" then null else $note end)}'
  printf '  %s = %s %s%s\n' "$key" "$value" "$unit" "${verdict:+ (target $target: $verdict)}"
}

report_value() { printf '%s' "${REPORT_VALUES[$1]:-}"; }

report_ratio() {
  local key="$1" num="$2" den="$3" target="$4" note="$5" a b ratio
  a="${REPORT_VALUES[$num]:-}"
  b="${REPORT_VALUES[$den]:-}"
  if [ -z "$a" ] || [ -z "$b" ] || awk -v b="$b" 'BEGIN {exit !(b == 0)}'; then
    report_skip "$key" "needs both $num and $den"
    return 0
  fi
  ratio="$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')"
  report "$key" "$ratio" "x" "$target" "ratio $num / $den" "$note"
}

report_skip() {
  local key="$1" reason="$2"
  echo "skipped: $key: $reason"
  _report_line --arg key "$key" --arg reason "$reason" \
    '{run: $run, suite: $suite, kind: "skipped", key: $key, reason: $reason}'
}

report_raw() {
  local key="$1" command="$2" text="$3"
  if jq -e . >/dev/null 2>&1 <<<"$text"; then
    _report_line --arg key "$key" --arg command "$command" --argjson output "$(jq -c -s 'if length == 1 then .[0] else . end' <<<"$text")" \
      '{run: $run, suite: $suite, kind: "raw", key: $key, command: $command, output: $output}'
  else
    _report_line --arg key "$key" --arg command "$command" --arg output "$text" \
      '{run: $run, suite: $suite, kind: "raw", key: $key, command: $command, output: $output}'
  fi
}

report_table() {
  jq -r 'select(.kind == "figure" or .kind == "skipped")
    | if .kind == "figure" then [.key, (.value | tostring), .unit, (.target // ""), (.verdict // "")]
      else [.key, "-", "", "", "skipped"] end | @tsv' "$REPORT_FILE" |
    awk -F'\t' '
      function human(v,   a, s, i, n) {
        if (v !~ /^-?[0-9.]+$/) return v
        a = (v < 0 ? -v : v)
        if (a >= 1000 || v == int(v)) { s = sprintf("%.0f", v); n = ""; while (length(s) > 3) { n = "," substr(s, length(s) - 2) n; s = substr(s, 1, length(s) - 3) } return s n }
        if (a >= 100) return sprintf("%.1f", v)
        if (a >= 1) return sprintf("%.2f", v)
        return sprintf("%.3g", v)
      }
      { key[NR] = $1; val[NR] = human($2); unit[NR] = $3; tgt[NR] = $4; ver[NR] = $5
        if (length($1) > w1) w1 = length($1); if (length(val[NR]) > w2) w2 = length(val[NR])
        if (length($3) > w3) w3 = length($3); if (length($4) > w4) w4 = length($4) }
      END {
        if (w1 < 6) w1 = 6; if (w2 < 5) w2 = 5; if (w3 < 4) w3 = 4; if (w4 < 6) w4 = 6
        printf "%-" w1 "s  %" w2 "s  %-" w3 "s  %-" w4 "s  %s\n", "figure", "value", "unit", "target", "verdict"
        for (i = 1; i <= NR; i++)
          printf "%-" w1 "s  %" w2 "s  %-" w3 "s  %-" w4 "s  %s\n", key[i], val[i], unit[i], tgt[i], ver[i]
      }'
  echo "JSON lines (every figure with the command that produced it): $REPORT_FILE"
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
