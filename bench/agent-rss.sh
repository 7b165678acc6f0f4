#!/usr/bin/env bash
# Agent idle RSS, with where it is resident.
#
#   bench/agent-rss.sh                       # the static release agent (see below)
#   AGENT=target/release/outpost-agent bench/agent-rss.sh
#
# Starts a fresh controller (`outpost-controller init` + `serve` on loopback),
# enrols one real outpost-agent with a one-use token, leaves it alone for
# IDLE_SECS (30: three housekeeping rounds; the Docker engine on the box is
# reachable, so the runtime probe and image listing run too), then records
# VmRSS, VmHWM and the thread count from /proc/PID/status, the totals of
# /proc/PID/smaps_rollup, and the resident KiB per kind of mapping from
# /proc/PID/smaps: the binary's own pages, [heap] (the main malloc arena),
# other anonymous mappings (thread stacks, glibc's per-thread arenas, large
# allocations) and [stack]. Results go to OUT (target/bench/agent-rss-<UTC>).
#
# AGENT defaults to the static release agent, the one the images and the
# flash bundle ship:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p outpost-agent \
#       --target x86_64-unknown-linux-gnu
# CONTROLLER and OUTPOSTCTL default to target/release, else target/debug
# (the controller's build does not change the agent's footprint).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=${AGENT:-$TARGET/x86_64-unknown-linux-gnu/release/outpost-agent}
pick() { if [ -x "$TARGET/release/$1" ]; then echo "$TARGET/release/$1"; else echo "$TARGET/debug/$1"; fi; }
CONTROLLER=${CONTROLLER:-$(pick outpost-controller)}
OUTPOSTCTL=${OUTPOSTCTL:-$(pick outpostctl)}
IDLE_SECS=${IDLE_SECS:-30}
OUT=${OUT:-$TARGET/bench/agent-rss-$(date -u +%Y%m%dT%H%M%SZ)}
for b in "$AGENT" "$CONTROLLER" "$OUTPOSTCTL"; do
    [ -x "$b" ] || { echo "$b is missing; build it first (see the top of $0)" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outpost-agent-rss.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local proto=$1 port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        ss -Hl"${proto:0:1}"n "sport = :$port" | grep -q . || { echo "$port"; return; }
    done
    echo "no free $proto port found" >&2
    return 1
}

QPORT=$(free_port udp)
MPORT=$(free_port tcp)
CONF=$WORK/admin.conf
"$CONTROLLER" init --data-dir "$WORK/controller" --admin-config "$CONF" \
    --advertise "127.0.0.1:$QPORT" >"$OUT/init.log" 2>&1
"$CONTROLLER" serve --data-dir "$WORK/controller" --listen "127.0.0.1:$QPORT" \
    --metrics-listen "127.0.0.1:$MPORT" >"$OUT/controller.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
    curl -fsS --max-time 1 "http://127.0.0.1:$MPORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
tok=$("$OUTPOSTCTL" --config "$CONF" token create --uses 1 -o json)
TOKEN=$(sed -n 's/^  "token": "\(.*\)",\{0,1\}$/\1/p' <<<"$tok")
CA_HASH=$(sed -n 's/^  "caHash": "\(.*\)",\{0,1\}$/\1/p' <<<"$tok")
[ -n "$TOKEN" ] && [ -n "$CA_HASH" ] || { echo "could not read the token: $tok" >&2; exit 1; }
"$AGENT" --controller "127.0.0.1:$QPORT" --token "$TOKEN" --ca-hash "$CA_HASH" \
    --data-dir "$WORK/agent-data" --name bench-agent >"$OUT/agent.log" 2>&1 &
PID=$!
PIDS+=("$PID")
sleep "$IDLE_SECS"
kill -0 "$PID" 2>/dev/null || { echo "the agent exited:" >&2; tail -n 20 "$OUT/agent.log" >&2; exit 1; }
status_kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$PID/status"; }
cp "/proc/$PID/smaps" "$OUT/smaps"
cp "/proc/$PID/smaps_rollup" "$OUT/smaps_rollup"
EXE=$(readlink "/proc/$PID/exe")
{
    echo "agent=$AGENT"
    echo "agent_bytes=$(stat -c %s "$AGENT")"
    echo "rss_kib=$(status_kib VmRSS)"
    echo "hwm_kib=$(status_kib VmHWM)"
    echo "threads=$(status_kib Threads)"
    echo "node=$("$OUTPOSTCTL" --config "$CONF" get nodes | awk '$1 == "bench-agent" {print $2}')"
    awk '/^(Rss|Pss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean):/ {print "rollup_" tolower($1) $2}' \
        "$OUT/smaps_rollup" | tr -d ':'
    # Resident KiB per kind of mapping.
    awk -v exe="$EXE" '
        /^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : "[anon]"; kind = (name == exe) ? "binary" : name; next }
        /^Rss:/ { rss[kind] += $2 }
        END { for (k in rss) if (rss[k] > 0) printf "rss_%s_kib=%d\n", k, rss[k] }' "$OUT/smaps" |
        sed 's|rss_\[\(.*\)\]_kib|rss_\1_kib|' | sort
    # The largest anonymous mappings: stacks and arenas show as their sizes.
    echo "largest anonymous mappings (size KiB, rss KiB):"
    awk '/^[0-9a-f]+-[0-9a-f]+ / { anon = (NF < 6) } /^Size:/ { size = $2 } /^Rss:/ && anon && $2 > 0 { printf "  %d %d\n", size, $2 }' \
        "$OUT/smaps" | sort -k2 -n -r | head -12
} | tee "$OUT/results.txt"
