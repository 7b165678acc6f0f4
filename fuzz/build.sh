#!/usr/bin/env bash
# Builds every fuzz target as a plain libFuzzer binary with cargo alone (no
# cargo-fuzz, no nightly, no RUSTC_BOOTSTRAP): the coverage instrumentation
# `cargo fuzz build -s none` asks rustc for, with the `fuzz` profile of
# fuzz/Cargo.toml. Prints the directory holding the binaries on its last line.
#
#   fuzz/build.sh            # all targets
#   fuzz/build.sh frame      # some
#
# The binaries are libFuzzer's own command line: BIN CORPUS_DIR... -runs=N
# -max_total_time=S ... (see fuzz/run.sh). No sanitizer: Rust code here is
# safe code (proto forbids unsafe), so panics, overflows, hangs and memory
# growth are what the fuzzer looks for; FUZZ_SANITIZER=address in
# fuzz/run.sh uses cargo-fuzz's ASan build instead.
set -euo pipefail
cd "$(dirname "$0")"
triple="$(rustc -vV | sed -n 's/^host: //p')"
# The flags cargo-fuzz 0.13 passes for `-s none` on Linux.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" --cfg fuzzing -Clink-dead-code"
sel=(--bins)
if [ $# -gt 0 ]; then sel=(); for t in "$@"; do sel+=(--bin "$t"); done; fi
# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="$flags ${RUSTFLAGS:-}" cargo build --locked --profile fuzz \
  --target "$triple" "${sel[@]}" >&2
echo "$PWD/target/$triple/fuzz"
