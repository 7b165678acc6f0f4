#!/usr/bin/env bash
# Reproduces the figures in docs/BENCHMARKS.md.
#
#   bench/run.sh                      # everything: build, N=1000, N=5000, agent RSS, sizes
#   SIZES=5000 bench/run.sh           # only one fleet size
#   SIZES= bench/run.sh               # only agent idle RSS and binary sizes
#
# For each fleet size it builds nothing new, inits a controller in a fresh
# temporary data dir, serves it on free loopback ports, runs outpost-loadgen
# with N simulated agents, and samples the controller over the steady-state
# window (all sessions up): CPU from /proc/PID/stat (utime+stime), RSS from
# /proc/PID/status (VmRSS; VmHWM is the peak over the whole run, enrolment
# and handshakes included), heartbeats handled from the controller's
# /metrics counter outpost_heartbeats_total. Then it starts one real
# outpost-agent, lets it idle, and reads its RSS; and records the stripped
# release binary sizes.
#
# Knobs (environment): SIZES ("1000 5000"), HOLD (60s: whole seconds, at
# least 10s; loadgen --duration),
# AGENT_IDLE_SECS (30; 0 skips the agent), UDP_BUFFER (loadgen --udp-buffer, default 4Mi; 0 =
# OS default; capped by net.core.rmem_max), RMEM_MAX (if set and we are root, net.core.rmem_max/wmem_max are
# raised to it for the run and restored afterwards), OUT (results dir),
# SKIP_BUILD=1, DEPLOY (0: none; N: once the fleet is up, the loadgen applies
# Deployments with N replicas in all over agents spread across 20 sites,
# acknowledges and runs them, and times placement end to end; the steady
# window then holds N pods placed and heartbeating).
#
# Every wait is bounded; the EXIT trap stops every process this script
# started (by PID) and restores any sysctl it changed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES-"1000 5000"}
HOLD=${HOLD:-60s}
AGENT_IDLE_SECS=${AGENT_IDLE_SECS:-30}
UDP_BUFFER=${UDP_BUFFER:-4Mi}
RMEM_MAX=${RMEM_MAX:-}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
OUT=${OUT:-$TARGET/bench/$(date -u +%Y%m%dT%H%M%SZ)}
HZ=$(getconf CLK_TCK)
[[ $HOLD =~ ^[0-9]+s$ ]] && [ "${HOLD%s}" -ge 10 ] ||
    { echo "HOLD must be whole seconds, at least 10s (e.g. 60s); got $HOLD" >&2; exit 2; }

mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outpost-bench.XXXXXX")
PIDS=()
SYSCTL_RESTORE=()

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        # Give each process a few seconds to leave, then insist.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    local kv
    for kv in "${SYSCTL_RESTORE[@]}"; do sysctl -q -w "$kv" >/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started and waits for it, bounded.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

# A free loopback port for the given protocol (udp|tcp). Another process
# could take it before we bind it; the bind error would then say so.
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

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Busy ticks of the whole machine (all cores): everything but idle and iowait.
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }

# One counter from the controller's /metrics.
metric() {
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

# A top-level number or string from the loadgen's pretty-printed JSON.
jget() {
    sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1" | head -n1
}

# Waits (bounded) until the controller answers /healthz.
wait_healthy() {
    local port=$1 pid=$2
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { echo "controller exited; see its log" >&2; return 1; }
        curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "controller not healthy after 10s" >&2
    return 1
}

# Inits and starts a controller in a fresh data dir. Sets CTL_PID, CTL_CONF,
# QPORT, MPORT.
start_controller() {
    local name=$1 dir=$WORK/$1
    mkdir -p "$dir"
    QPORT=$(free_port udp)
    MPORT=$(free_port tcp)
    CTL_CONF=$dir/admin.conf
    "$BIN/outpost-controller" init --data-dir "$dir/controller" --admin-config "$CTL_CONF" \
        --advertise "127.0.0.1:$QPORT" >"$OUT/$name-init.log" 2>&1
    "$BIN/outpost-controller" serve --data-dir "$dir/controller" \
        --listen "127.0.0.1:$QPORT" --metrics-listen "127.0.0.1:$MPORT" \
        >"$OUT/$name-controller.log" 2>&1 &
    CTL_PID=$!
    PIDS+=("$CTL_PID")
    wait_healthy "$MPORT" "$CTL_PID"
}

# ---- build ----
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries (cargo build --release)"
    (cd "$ROOT" && cargo build --release -p outpost-agent -p outpost-controller -p outpost-tests)
fi
for b in outpost-agent outpost-controller outpostctl outpost-loadgen; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing; build with cargo build --release" >&2; exit 1; }
done

if [ -n "$RMEM_MAX" ]; then
    if [ "$(id -u)" = 0 ]; then
        for k in net.core.rmem_max net.core.wmem_max; do
            SYSCTL_RESTORE+=("$k=$(sysctl -n "$k")")
            sysctl -q -w "$k=$RMEM_MAX"
        done
        log "raised net.core.rmem_max/wmem_max to $RMEM_MAX for this run"
    else
        log "RMEM_MAX ignored: changing sysctls needs root"
    fi
fi

# ---- machine ----
{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "mem_total_gib=$(free -g | awk '/^Mem:/ {print $2}')"
    echo "kernel=$(uname -sr)"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "commit=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "rmem_default=$(sysctl -n net.core.rmem_default) rmem_max=$(sysctl -n net.core.rmem_max)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

RESULTS=$OUT/results.txt
: >"$RESULTS"
result() { printf '%s=%s\n' "$1" "$2" | tee -a "$RESULTS"; }

# ---- fleets ----
for N in $SIZES; do
    log "N=$N: fresh controller"
    start_controller "n$N"
    result "n$N.controller_rss_idle_kib" "$(status_kib "$CTL_PID" VmRSS)"
    READY=$WORK/n$N/ready
    ts=$(now); cs=$(cpu_ticks "$CTL_PID")
    deploy_args=()
    if [ "${DEPLOY:-0}" -gt 0 ]; then deploy_args=(--deploy "$DEPLOY" --sites 20); fi
    "$BIN/outpost-loadgen" --config "$CTL_CONF" --agents "$N" --duration "$HOLD" \
        --name-prefix "load$N" --udp-buffer "$UDP_BUFFER" "${deploy_args[@]}" \
        --ready-file "$READY" --summary-json "$OUT/n$N-loadgen.json" \
        >"$OUT/n$N-loadgen.txt" 2>"$OUT/n$N-loadgen.err" &
    LG_PID=$!
    PIDS+=("$LG_PID")
    # Enrolment and connection are bounded by the loadgen's --phase-timeout
    # (10m each); give up on our side a little later.
    deadline=$((SECONDS + 1900))  # plus the deploy phase (--deploy-timeout 10m)
    until [ -e "$READY" ]; do
        kill -0 "$LG_PID" 2>/dev/null || { echo "loadgen exited early:" >&2; tail -n 20 "$OUT/n$N-loadgen.err" >&2; exit 1; }
        [ $SECONDS -lt $deadline ] || { echo "loadgen never reached steady state" >&2; exit 1; }
        sleep 0.2
    done
    log "N=$N: all sessions up ($(cat "$READY") connected); sampling the steady state"
    result "n$N.controller_rss_after_connect_kib" "$(status_kib "$CTL_PID" VmRSS)"
    # Average over token creation, enrolment and connection of the fleet.
    result "n$N.startup_secs" "$(calc "$(now) - $ts")"
    result "n$N.controller_startup_cpu_pct_of_one_core" \
        "$(calc "($(cpu_ticks "$CTL_PID") - $cs) / $HZ / ($(now) - $ts) * 100")"
    # Skip the first 2 s and stop 3 s before the loadgen does.
    sleep 2
    t0=$(now); c0=$(cpu_ticks "$CTL_PID"); l0=$(cpu_ticks "$LG_PID"); b0=$(busy_ticks)
    h0=$(metric "$MPORT" outpost_heartbeats_total); r0=$(metric "$MPORT" outpost_reports_total)
    window=$((${HOLD%s} - 5))
    rss_max=0
    for _ in $(seq "$window"); do
        sleep 1
        rss=$(status_kib "$CTL_PID" VmRSS)
        [ "$rss" -gt "$rss_max" ] && rss_max=$rss
    done
    t1=$(now); c1=$(cpu_ticks "$CTL_PID"); l1=$(cpu_ticks "$LG_PID"); b1=$(busy_ticks)
    h1=$(metric "$MPORT" outpost_heartbeats_total); r1=$(metric "$MPORT" outpost_reports_total)
    secs=$(calc "$t1 - $t0" 3)
    result "n$N.window_secs" "$secs"
    result "n$N.controller_cpu_pct_of_one_core" "$(calc "($c1 - $c0) / $HZ / $secs * 100")"
    result "n$N.loadgen_cpu_pct_of_one_core" "$(calc "($l1 - $l0) / $HZ / $secs * 100")"
    # Everything else on the box in the same window (other users' builds and
    # tests share these cores and can skew the figures above).
    result "n$N.other_processes_cpu_pct_of_one_core" \
        "$(calc "(($b1 - $b0) - ($c1 - $c0) - ($l1 - $l0)) / $HZ / $secs * 100")"
    result "n$N.controller_rss_steady_kib" "$(status_kib "$CTL_PID" VmRSS)"
    result "n$N.controller_rss_steady_max_kib" "$rss_max"
    result "n$N.controller_heartbeats_per_sec" "$(calc "($h1 - $h0) / $secs")"
    result "n$N.controller_reports_per_sec" "$(calc "($r1 - $r0) / $secs")"
    # Bounded: the loadgen closes its sessions within seconds of the hold.
    for _ in $(seq 600); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$LG_PID" 2>/dev/null && { echo "loadgen did not finish; stopping it" >&2; stop "$LG_PID"; }
    wait "$LG_PID" || { echo "loadgen failed:" >&2; tail -n 20 "$OUT/n$N-loadgen.err" >&2; exit 1; }
    result "n$N.controller_rss_peak_kib" "$(status_kib "$CTL_PID" VmHWM)"
    for k in enrolled connected enrolSeconds connectSeconds liveAtEnd dropped heartbeatsPerSecond loadgenPeakRssKiB tokenUsed deployReplicas deployDeliveredSeconds deployAvailableSeconds deployError; do
        result "n$N.loadgen_$k" "$(jget "$OUT/n$N-loadgen.json" "$k")"
    done
    # The operator's view at this size: does a full node listing still work?
    t0=$(now)
    if nodes=$(timeout 60 "$BIN/outpostctl" --config "$CTL_CONF" get nodes -o json 2>"$OUT/n$N-getnodes.err"); then
        result "n$N.get_nodes" "ok, $(grep -c '"kind": "Node"' <<<"$nodes") nodes in $(calc "$(now) - $t0" 2)s"
    else
        result "n$N.get_nodes" "FAILED: $(head -c 300 "$OUT/n$N-getnodes.err" | tr '\n' ' ')"
    fi
    # Controller warnings grouped by message, node names and ports masked.
    sed 's/\x1b\[[0-9;]*m//g' "$OUT/n$N-controller.log" | grep ' WARN ' |
        sed -E 's/^[^ ]+ +WARN +//; s/load[0-9]+-[0-9]+/NODE/g; s/127\.0\.0\.1:[0-9]+/ADDR/g' |
        cut -c1-200 | sort | uniq -c | sort -rn >"$OUT/n$N-controller-warnings.txt" || true
    result "n$N.controller_warnings" "$(awk '{n += $1} END {print n + 0}' "$OUT/n$N-controller-warnings.txt")"
    cat "$OUT/n$N-loadgen.txt" >&2
    stop "$CTL_PID"
done

# ---- one real agent, idle ----
if [ "$AGENT_IDLE_SECS" -gt 0 ]; then
    log "agent idle RSS: fresh controller and one real outpost-agent for ${AGENT_IDLE_SECS}s"
    start_controller agent
    tok=$("$BIN/outpostctl" --config "$CTL_CONF" token create --uses 1 -o json)
    TOKEN=$(sed -n 's/^  "token": "\(.*\)",\{0,1\}$/\1/p' <<<"$tok")
    CA_HASH=$(sed -n 's/^  "caHash": "\(.*\)",\{0,1\}$/\1/p' <<<"$tok")
    [ -n "$TOKEN" ] && [ -n "$CA_HASH" ] || { echo "could not read the token: $tok" >&2; exit 1; }
    "$BIN/outpost-agent" --controller "127.0.0.1:$QPORT" --token "$TOKEN" --ca-hash "$CA_HASH" \
        --data-dir "$WORK/agent/agent-data" --name bench-agent >"$OUT/agent.log" 2>&1 &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
    sleep "$AGENT_IDLE_SECS"
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "the agent exited:" >&2; tail -n 20 "$OUT/agent.log" >&2; exit 1; }
    result agent.rss_kib "$(status_kib "$AGENT_PID" VmRSS)"
    result agent.rss_peak_kib "$(status_kib "$AGENT_PID" VmHWM)"
    result agent.threads "$(status_kib "$AGENT_PID" Threads)"
    result agent.node_ready "$("$BIN/outpostctl" --config "$CTL_CONF" get nodes | awk '$1 == "bench-agent" {print $2}')"
    stop "$AGENT_PID"
    stop "$CTL_PID"
fi

# ---- binary sizes ----
for b in outpost-agent outpost-controller outpostctl; do
    result "size.$b" "$(stat -c %s "$BIN/$b")"
done

log "done; results in $OUT"
