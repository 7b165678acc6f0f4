#!/usr/bin/env bash
# Long fuzz runs: each target (or the ones named) for RUNS executions
# (default 10,000,000) or MAX_SECS seconds (default 900), whichever comes
# first, one after the other under nice; then a table of executions, exec/s,
# crashes, hangs, out-of-memory inputs, peak RSS and time. Exits non-zero if
# any target found anything (the inputs are in fuzz/artifacts/<target>/).
#
#   bench/fuzz.sh [TARGET...]      RUNS=N MAX_SECS=S FUZZ_SANITIZER=none|address
#
# Builds like fuzz/run.sh (fuzz/build.sh; FUZZ_SANITIZER=address: cargo-fuzz
# with ASan). Limits: -rss_limit_mb=512 (an input above it is an OOM),
# -timeout=10 (one input running longer is a hang).
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
runs="${RUNS:-10000000}"
max_secs="${MAX_SECS:-900}"
san="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz_targets/*.rs; do t="${f##*/}"; targets+=("${t%.rs}"); done
fi
if [ "$san" = none ]; then
  bin="$(nice -n 19 ./build.sh "${targets[@]}" | tail -1)" || exit 1
else
  export RUSTC_BOOTSTRAP=1
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
  nice -n 19 cargo fuzz build -s "$san" || exit 1
  bin="$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release"
fi
# Inputs this run wrote (older ones from earlier runs are not counted).
count() { find "artifacts/$1" -maxdepth 1 -name "$2-*" -newermt "@$3" | wc -l; }
rows=()
fail=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t.bench.log"
  start=$(date +%s)
  nice -n 19 "$bin/$t" -runs="$runs" -max_total_time="$max_secs" \
    -rss_limit_mb=512 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  eps=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  rss=$(awk '/stat::peak_rss_mb/ {print $2}' "$log")
  crashes=$(count "$t" crash "$start"); hangs=$(count "$t" timeout "$start"); ooms=$(count "$t" oom "$start")
  if [ "$rc" -ne 0 ] || [ $((crashes + hangs + ooms)) -ne 0 ]; then fail=1; tail -30 "$log"; fi
  rows+=("$(printf '| %-12s | %12s | %8s | %7s | %5s | %4s | %8s | %6ss |' \
    "$t" "${execs:-?}" "${eps:-?}" "$crashes" "$hangs" "$ooms" "${rss:-?}" "$secs")")
  echo "${rows[-1]}"
done
echo
printf '| %-12s | %12s | %8s | %7s | %5s | %4s | %8s | %7s |\n' \
  target executions exec/s crashes hangs OOMs "peak MB" time
echo '|--------------|--------------|----------|---------|-------|------|----------|---------|'
printf '%s\n' "${rows[@]}"
exit "$fail"
