#!/usr/bin/env bash
# Long fuzz runs: each target (or the ones named) for RUNS executions
# (default 10,000,000), then a table of executions, exec/s, crashes, time.
#   bench/fuzz.sh [TARGET...]      RUNS=N FUZZ_SANITIZER=none|address
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
runs="${RUNS:-10000000}"
san="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
nice -n 19 cargo fuzz build -s "$san" || exit 1
targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo fuzz list)
rows=()
fail=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$(mktemp)"
  start=$(date +%s)
  nice -n 19 cargo fuzz run -s "$san" "$t" "corpus/$t" -- \
    -runs="$runs" -rss_limit_mb=512 -timeout=10 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  eps=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  crashes=$(ls "artifacts/$t" | wc -l)
  [ "$rc" -ne 0 ] && fail=1 && tail -20 "$log"
  rows+=("$(printf '| %-12s | %12s | %8s | %7s | %6ss |' "$t" "${execs:-?}" "${eps:-?}" "$crashes" "$secs")")
  rm -f "$log"
done
printf '| %-12s | %12s | %8s | %7s | %7s |\n' target executions exec/s crashes time
echo '|--------------|--------------|----------|---------|---------|'
printf '%s\n' "${rows[@]}"
exit "$fail"
