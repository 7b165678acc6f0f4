#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20) from its
# corpus (fuzz/corpus/<target>/: the committed seed-* files plus what earlier
# runs found). Exits non-zero on any crash, hang (-timeout=10) or
# out-of-memory (-rss_limit_mb=512), with the input in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Default build: fuzz/build.sh, plain libFuzzer binaries made by cargo alone
# (no cargo-fuzz, works on stable; what .ci/run uses). FUZZ_SANITIZER=address
# builds and runs with cargo-fuzz and AddressSanitizer instead (needs
# `cargo install cargo-fuzz --locked`; RUSTC_BOOTSTRAP=1 unlocks its -Z
# flags on the stable toolchain; a cold build takes ~8.5 minutes here).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz_targets/*.rs; do t="${f##*/}"; targets+=("${t%.rs}"); done
fi
san="${FUZZ_SANITIZER:-none}"
opts=(-rss_limit_mb=512 -timeout=10 -print_final_stats=1)
T0=$(date +%s)
if [ "$san" = none ]; then
  bin="$(nice -n 19 ./build.sh "${targets[@]}" | tail -1)"
else
  export RUSTC_BOOTSTRAP=1
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
  nice -n 19 cargo fuzz build -s "$san"
  bin="$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release"
fi
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - T0 ))s (sanitizer: $san)"
fail=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== fuzz $t (${secs}s, $(ls "corpus/$t" | wc -l) inputs in corpus/$t)"
  log="artifacts/$t.log"
  if ! nice -n 19 "$bin/$t" "${opts[@]}" -max_total_time="$secs" \
       -artifact_prefix="artifacts/$t/" "corpus/$t" > "$log" 2>&1; then
    fail=1
    tail -40 "$log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/ (reproduce: $bin/$t fuzz/artifacts/$t/<file>)"
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' '
  echo
done
[ "$fail" = 0 ] || exit 1
echo "fuzz: all ${#targets[@]} targets ran ${secs}s each without a crash, hang or OOM ($(( $(date +%s) - T0 ))s in all)"
