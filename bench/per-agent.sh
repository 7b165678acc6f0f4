#!/usr/bin/env bash
# Controller memory and CPU per connected agent (docs/BENCHMARKS.md,
# "Controller memory per connected agent").
#
#   bench/per-agent.sh                 # 10,000 loadgen agents
#   SIZES="10000 20000 50000" bench/per-agent.sh
#   HEAPTRACK=1 SIZES=2000 bench/per-agent.sh   # where the bytes are
#
# For each size N: a fresh controller (`init` + `serve` on loopback), its
# VmRSS before any agent, N loadgen sessions (heartbeat 5 s, the
# controller's default), then after HOLD_SECS (30) of steady state VmRSS
# and VmHWM, and the controller's CPU over the next CPU_SECS (20). Per
# agent = (steady - before) / N. One line per size goes to OUT/results.txt.
#
# HEAPTRACK=1 runs the controller under heaptrack (Debian's `heaptrack`
# package) and prints its peak consumers; build it with symbols for that:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none ...
#
# Binaries: BIN (target/release), built as docs/BENCHMARKS.md says:
#   CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo build \
#       --release -p outpost-controller --bin outpost-controller -p outpost-tests --bin outpost-loadgen
#
# Every wait is bounded; the EXIT trap stops what this script started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-10000}
HOLD_SECS=${HOLD_SECS:-30}
CPU_SECS=${CPU_SECS:-20}
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/per-agent-$(date -u +%Y%m%dT%H%M%SZ)}
for b in outpost-controller outpost-loadgen; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing; see the top of $0 for the build" >&2; exit 1; }
done
if [ -n "${HEAPTRACK:-}" ]; then
    command -v heaptrack >/dev/null || { echo "HEAPTRACK=1 needs heaptrack (apt-get install heaptrack)" >&2; exit 1; }
fi
mkdir -p "$OUT"
PIDS=()
WORKS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for w in "${WORKS[@]}"; do rm -rf "$w"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[per-agent %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

free_udp_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        ss -Hlun "sport = :$port" | grep -q . || ss -Hltn "sport = :$((port + 1))" | grep -q . || { echo "$port"; return; }
    done
    echo "no free port found" >&2
    return 1
}

HZ=$(getconf CLK_TCK)
for n in $SIZES; do
    work=$(mktemp -d "${TMPDIR:-/tmp}/outpost-per-agent.XXXXXX")
    WORKS+=("$work")
    q=$(free_udp_port)
    m=$((q + 1))
    "$BIN/outpost-controller" init --data-dir "$work/data" --admin-config "$work/admin.conf" \
        --advertise "127.0.0.1:$q" >"$OUT/init-$n.log" 2>&1
    if [ -n "${HEAPTRACK:-}" ]; then
        heaptrack -o "$OUT/heaptrack-$n" "$BIN/outpost-controller" serve --data-dir "$work/data" \
            --listen "127.0.0.1:$q" --metrics-listen "127.0.0.1:$m" >"$OUT/controller-$n.log" 2>&1 &
    else
        "$BIN/outpost-controller" serve --data-dir "$work/data" \
            --listen "127.0.0.1:$q" --metrics-listen "127.0.0.1:$m" >"$OUT/controller-$n.log" 2>&1 &
    fi
    launcher=$!
    PIDS+=("$launcher")
    ctl=""
    for _ in $(seq 300); do
        if curl -fsS --max-time 1 "http://127.0.0.1:$m/healthz" >/dev/null 2>&1; then
            ctl=$(pgrep -f "outpost-controller serve --data-dir $work/data" | tail -n1)
            break
        fi
        sleep 0.1
    done
    [ -n "$ctl" ] || { echo "controller not healthy after 30 s; see $OUT/controller-$n.log" >&2; exit 1; }
    before=$(status "$ctl" VmRSS)
    log "N=$n: controller up ($before KiB); connecting"
    "$BIN/outpost-loadgen" --config "$work/admin.conf" --agents "$n" --name-prefix pa \
        --duration "$((HOLD_SECS + CPU_SECS + 30))s" --ready-file "$work/ready" \
        >"$OUT/loadgen-$n.txt" 2>"$OUT/loadgen-$n.err" &
    lg=$!
    PIDS+=("$lg")
    deadline=$((SECONDS + 1800))
    until [ -e "$work/ready" ]; do
        kill -0 "$lg" 2>/dev/null || { echo "loadgen exited early:" >&2; tail -n 20 "$OUT/loadgen-$n.err" >&2; exit 1; }
        [ $SECONDS -lt $deadline ] || { echo "sessions not up within 30 min" >&2; exit 1; }
        sleep 1
    done
    sleep "$HOLD_SECS"
    steady=$(status "$ctl" VmRSS)
    t0=$(ticks "$ctl")
    sleep "$CPU_SECS"
    t1=$(ticks "$ctl")
    hwm=$(status "$ctl" VmHWM)
    line=$(awk -v n="$n" -v b="$before" -v s="$steady" -v h="$hwm" -v t="$((t1 - t0))" -v hz="$HZ" -v secs="$CPU_SECS" \
        'BEGIN { printf "agents=%d before_kib=%d steady_kib=%d peak_kib=%d per_agent_kib=%.1f cpu_pct=%.1f", n, b, s, h, (s - b) / n, 100 * t / hz / secs }')
    echo "$line" | tee -a "$OUT/results.txt"
    wait "$lg" || true
    grep -E "dropped|failed" "$OUT/loadgen-$n.txt" | sed 's/^/    /' || true
    kill -TERM "$ctl" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$ctl" 2>/dev/null || break; sleep 0.1; done
    wait "$launcher" 2>/dev/null || true
    if [ -n "${HEAPTRACK:-}" ]; then
        heaptrack_print -f "$OUT"/heaptrack-"$n".*zst --print-peaks 1 --print-allocators 0 \
            --print-temporary 0 --print-leaks 0 -n 40 >"$OUT/heaptrack-$n.txt" 2>/dev/null || true
        log "heaptrack's peak consumers: $OUT/heaptrack-$n.txt"
    fi
done
log "results in $OUT/results.txt"
