#!/usr/bin/env bash
# Reconnect storm (docs/BENCHMARKS.md, "Reconnect storm after a controller
# restart"): N loadgen agents hold sessions to a controller; the controller
# is killed with SIGKILL and restarted on the same data directory and port;
# every session reconnects as the agent does (its back-off and jitter,
# `outpost-loadgen --reconnect`). Measures the time from the restart until
# every session is back, the reconnect attempts and how many failed, and
# the controller's handshake admission counters.
#
#   bench/storm.sh                         # 10,000 agents, default admission
#   HANDSHAKE_LIMIT=0 bench/storm.sh       # admission off (the "before")
#
# Knobs (environment): N (10000), HANDSHAKE_LIMIT (unset: the controller's
# default; passed as serve --handshake-limit), SETTLE (20: seconds held
# before the kill), DOWN (5: seconds the controller stays down), BIN
# (target/release), OUT (results dir), NICE (19: niceness of everything
# started here).
#
# Every wait is bounded; the EXIT trap stops every process this script
# started (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-10000}
SETTLE=${SETTLE:-20}
DOWN=${DOWN:-5}
NICE=${NICE:-19}
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/storm-$(date -u +%Y%m%dT%H%M%SZ)}
for b in outpost-controller outpost-loadgen; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing; cargo build --release -p outpost-controller -p outpost-tests" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outpost-storm.XXXXXX")
PIDS=()

log() { printf '[storm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

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
        if [ "$proto" = udp ]; then
            ss -Hlun "sport = :$port" | grep -q . || { echo "$port"; return; }
        else
            ss -Hltn "sport = :$port" | grep -q . || { echo "$port"; return; }
        fi
    done
    echo "no free $proto port found" >&2
    return 1
}

metric() {
    curl -fsS --max-time 5 "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

wait_healthy() {
    for _ in $(seq 300); do
        kill -0 "$CTL_PID" 2>/dev/null || { echo "controller exited; see $OUT/controller-*.log" >&2; return 1; }
        curl -fsS --max-time 1 "http://127.0.0.1:$MPORT/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "controller not healthy after 30s" >&2
    return 1
}

limit_args=()
[ -n "${HANDSHAKE_LIMIT:-}" ] && limit_args=(--handshake-limit "$HANDSHAKE_LIMIT")
serve() {
    nice -n "$NICE" "$BIN/outpost-controller" serve --data-dir "$WORK/controller" \
        --listen "127.0.0.1:$QPORT" --metrics-listen "127.0.0.1:$MPORT" "${limit_args[@]}" \
        >"$OUT/controller-$1.log" 2>&1 &
    CTL_PID=$!
    PIDS+=("$CTL_PID")
    wait_healthy
}

QPORT=$(free_port udp)
MPORT=$(free_port tcp)
"$BIN/outpost-controller" init --data-dir "$WORK/controller" --admin-config "$WORK/admin.conf" \
    --advertise "127.0.0.1:$QPORT" >"$OUT/init.log" 2>&1
serve first
log "controller on 127.0.0.1:$QPORT (limit: ${HANDSHAKE_LIMIT:-default}); starting $N agents"

READY=$WORK/ready
nice -n "$NICE" "$BIN/outpost-loadgen" --config "$WORK/admin.conf" --agents "$N" \
    --name-prefix storm --reconnect --until-reconnected --duration 20m \
    --ready-file "$READY" --summary-json "$OUT/loadgen.json" \
    >"$OUT/loadgen.txt" 2>"$OUT/loadgen.err" &
LG_PID=$!
PIDS+=("$LG_PID")
deadline=$((SECONDS + 1800))
until [ -e "$READY" ]; do
    kill -0 "$LG_PID" 2>/dev/null || { echo "loadgen exited early:" >&2; tail -n 20 "$OUT/loadgen.err" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "sessions not up within 30 min" >&2; exit 1; }
    sleep 1
done
log "$(cat "$READY" | tr -d '\n') sessions up; holding ${SETTLE}s"
sleep "$SETTLE"

log "kill -9 the controller"
kill -KILL "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
sleep "$DOWN"
restart_ms=$(date +%s%3N)
serve second
log "restarted; waiting for every session to come back"
deadline=$((SECONDS + 1200))
while kill -0 "$LG_PID" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "loadgen still running after 20 min; stopping it" >&2; break; }
    sleep 1
done
wait "$LG_PID" 2>/dev/null || true

all_back=$(sed -n 's/^ *"allBackUnixMs": \([0-9]*\).*/\1/p' "$OUT/loadgen.json" | head -n1)
{
    echo "agents=$N handshake_limit=${HANDSHAKE_LIMIT:-default} settle=${SETTLE}s down=${DOWN}s"
    if [ -n "$all_back" ]; then
        echo "all_back_after_restart_s=$(awk "BEGIN { printf \"%.1f\", ($all_back - $restart_ms) / 1000 }")"
    else
        echo "all_back_after_restart_s=not all back"
    fi
    for m in outpost_handshakes_refused_total outpost_handshakes_retried_total \
        outpost_handshakes_queued_total outpost_handshakes_failed_total; do
        echo "$m=$(metric "$m" || echo n/a)"
    done
    echo "controller_peak_rss_kib=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$CTL_PID/status")"
    # The restarted controller's session setup times by stage (bucket
    # upper bounds: p50 <= x means half the setups took at most x).
    curl -fsS --max-time 5 "http://127.0.0.1:$MPORT/metrics" | awk '
        /^outpost_session_setup_seconds_bucket/ {
            match($0, /stage="[a-z_]+"/); st = substr($0, RSTART + 7, RLENGTH - 8)
            match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            n[st]++; les[st, n[st]] = le; cum[st, n[st]] = $2
        }
        END {
            for (st in n) {
                total = cum[st, n[st]]; line = "session_setup_" st "_s: n=" total
                split("0.5 0.9 0.99 1", qs, " ")
                for (q = 1; q <= 4; q++) {
                    for (i = 1; i <= n[st]; i++) if (cum[st, i] >= qs[q] * total) break
                    line = line sprintf(" %s<=%s", (qs[q] == 1 ? "max" : "p" qs[q] * 100), les[st, i])
                }
                for (i = 1; i <= n[st]; i++) if (les[st, i] == "10") over = total - cum[st, i]
                print line " over_10s=" over
            }
        }' || echo "session_setup: n/a"
} | tee "$OUT/storm.txt"
sed -n '/reconnect:/,/per session (drop/p;/failed attempts/,$p' "$OUT/loadgen.txt"
log "results in $OUT"
