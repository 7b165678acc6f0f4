#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for SECONDS (default 20).
# Exits non-zero on any crash, OOM (-rss_limit_mb=512) or hang (-timeout=10).
# Stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz passes.
# FUZZ_SANITIZER=none skips AddressSanitizer (default: address).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
san="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
nice -n 19 cargo fuzz build -s "$san"
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== fuzz $t (${secs}s)"
  nice -n 19 cargo fuzz run -s "$san" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -timeout=10 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1
done
echo "fuzz: all targets ran ${secs}s without a crash"
