#!/usr/bin/env bash
# Rollout figure for docs/BENCHMARKS.md: a rolling update of REPLICAS
# replicas over AGENTS real agents (separate outpost-agent processes on
# loopback, one node each, all on the local Docker engine), against the
# lower bound its strategy allows.
#
#   bench/rollout.sh                       # build release, 20 replicas, 10 agents, 3 rollouts
#   RUNS=5 SKIP_BUILD=1 bench/rollout.sh
#
# The Deployment runs the workload HTTP image with a readiness probe
# (GET /healthz every second) and the default strategy (maxSurge 25%,
# maxUnavailable 25%: 5 and 5 of 20). Each run changes its image between
# two tags of that image (the same bytes, so no pull is timed) and measures
#   took   from the apply to `outpostctl rollout status` returning
#          "successfully rolled out";
#   pod    each new pod's start+ready time: its creation to its Ready
#          condition (median and max over the run's new pods);
#   split  apply -> first new pod created / -> last new pod ready / ->
#          rollout status returning;
#   bound  waves x pod, where waves = ceil(replicas / (maxSurge +
#          maxUnavailable)): a wave starts maxSurge + maxUnavailable new
#          pods at once, and the next cannot start before they are ready;
# and reports took / bound (1.0 would be no overhead at all).
#
# Knobs: REPLICAS (20), AGENTS (10), RUNS (3), OUT (results dir),
# SKIP_BUILD=1. Every wait is bounded; the EXIT trap stops every process it
# started (by PID) and removes its pods' containers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPLICAS=${REPLICAS:-20}
AGENTS=${AGENTS:-10}
RUNS=${RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
OUT=${OUT:-$TARGET/bench/rollout-$(date -u +%Y%m%dT%H%M%SZ)}
BASE=outpost/workload-http:dev
TAGS=(outpost/workload-http:bench-rollout-1 outpost/workload-http:bench-rollout-2)
PREFIX=bench-roll
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outpost-rollbench.XXXXXX")
PIDS=()
log() { printf '[rollbench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    local i
    for i in $(seq "$AGENTS"); do
        docker ps -aq --filter "label=dev.outpost.node=$PREFIX-$i" | xargs -r docker rm -f >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --workspace --bins >&2)
fi
log "building the workload images"
bash "$ROOT/images/workloads/build-images.sh" >&2
for t in "${TAGS[@]}"; do docker tag "$BASE" "$t"; done

ctl() { HOME=$WORK "$BIN/outpostctl" --config "$WORK/data/admin.conf" "$@"; }
now_ms() { date +%s%3N; }
wait_until() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || { log "timed out waiting for $what"; exit 1; }
        sleep 0.2
    done
}
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }

LISTEN=127.0.0.1:$(free_port SOCK_DGRAM)
log "controller on $LISTEN"
HOME=$WORK "$BIN/outpost-controller" init --data-dir "$WORK/data" --advertise "$LISTEN" \
    --admin-config "$WORK/admin-default.conf" >"$OUT/init.log" 2>&1
HOME=$WORK "$BIN/outpost-controller" serve --data-dir "$WORK/data" --listen "$LISTEN" \
    --metrics-listen "127.0.0.1:$(free_port SOCK_STREAM)" >"$OUT/controller.log" 2>&1 &
PIDS+=($!)
wait_until 30 "the controller to answer" ctl get nodes

TOKEN_JSON=$(ctl token create -o json)
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$TOKEN_JSON")
CA_HASH=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["caHash"])' <<<"$TOKEN_JSON")
# The box's disk and memory are shared: thresholds far below anything a
# healthy box reaches, so pressure never takes part (as the scenario tests).
EVICTION="memory.available<1Mi,nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%,pid.available<1%"
log "starting $AGENTS agents"
for i in $(seq "$AGENTS"); do
    "$BIN/outpost-agent" --controller "$LISTEN" --data-dir "$WORK/agent-$i" --name "$PREFIX-$i" \
        --token "$TOKEN" --ca-hash "$CA_HASH" --labels "site=s$((i % 2))" --no-service-routing \
        --eviction-hard "$EVICTION" >"$OUT/agent-$i.log" 2>&1 &
    PIDS+=($!)
done
ready_nodes() { [ "$(ctl get nodes | grep -c " Ready")" -ge "$AGENTS" ]; }
wait_until 120 "$AGENTS nodes Ready" ready_nodes

manifest() { # image
    cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: $REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: http
        image: $1
        ports: [{containerPort: 8080, name: http}]
        resources: {requests: {cpu: 10m, memory: 16Mi}}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
          failureThreshold: 1
EOF
}

apply() { manifest "$1" >"$WORK/web.yaml"; ctl apply -f "$WORK/web.yaml" >/dev/null; }

log "first version: $REPLICAS replicas"
apply "${TAGS[0]}"
ctl rollout status deployment/web --timeout 300s >"$OUT/initial-status.txt"

# Start+ready of the ready pods running IMAGE, in ms: "median max count
# first-created last-ready" (the last two since the epoch).
pod_times() { # image
    ctl get pods -l app=web -o json | python3 -c '
import json, sys, datetime
image = sys.argv[1]
def ms(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000
ts, created, readied = [], [], []
for p in json.load(sys.stdin)["items"]:
    if p["spec"]["containers"][0]["image"] != image or p["metadata"].get("deletionTimestamp"):
        continue
    ready = [c for c in p["status"].get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"]
    if ready:
        c, r = ms(p["metadata"]["creationTimestamp"]), ms(ready[0]["lastTransitionTime"])
        ts.append(r - c)
        created.append(c)
        readied.append(r)
ts.sort()
n = len(ts)
med = (ts[n // 2] if n % 2 else (ts[n // 2 - 1] + ts[n // 2]) / 2) if n else 0
print("%d %d %d %d %d" % (med, ts[-1] if n else 0, n, min(created or [0]), max(readied or [0])))
' "$1"
}

# maxSurge rounds up, maxUnavailable down (25% each).
SURGE=$(( (REPLICAS * 25 + 99) / 100 ))
UNAVAILABLE=$(( REPLICAS * 25 / 100 ))
STEP=$(( SURGE + UNAVAILABLE ))
WAVES=$(( (REPLICAS + STEP - 1) / STEP ))
log "strategy: maxSurge $SURGE, maxUnavailable $UNAVAILABLE: $WAVES waves of $STEP"

: >"$OUT/runs.tsv"
for r in $(seq "$RUNS"); do
    image=${TAGS[$((r % 2))]}
    t0=$(now_ms)
    apply "$image"
    ctl rollout status deployment/web --timeout 300s >"$OUT/status-$r.txt"
    t1=$(now_ms)
    read -r med max n first last < <(pod_times "$image")
    [ "$n" -eq "$REPLICAS" ] || { log "run $r: $n new pods ready, want $REPLICAS"; exit 1; }
    bound=$(( WAVES * med ))
    took=$(( t1 - t0 ))
    ratio=$(awk -v t="$took" -v b="$bound" 'BEGIN{printf "%.2f", t/b}')
    # Where the time went: apply to the first new pod, first new pod to
    # the last one ready, last ready to `rollout status` returning.
    split="$((first - t0))/$((last - first))/$((t1 - last))"
    log "run $r: took ${took} ms (${split}); pod start+ready median ${med} ms (max ${max}); bound ${WAVES} x ${med} = ${bound} ms; ratio ${ratio}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$took" "$med" "$max" "$bound" "$ratio" "$split" >>"$OUT/runs.tsv"
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
TOOK=$(cut -f2 "$OUT/runs.tsv" | median)
POD=$(cut -f3 "$OUT/runs.tsv" | median)
BOUND=$(cut -f5 "$OUT/runs.tsv" | median)
RATIO=$(cut -f6 "$OUT/runs.tsv" | median)
{
    echo "rollout of $REPLICAS replicas over $AGENTS agents (maxSurge $SURGE, maxUnavailable $UNAVAILABLE, $WAVES waves), median of $RUNS:"
    echo "  took ${TOOK} ms; pod start+ready ${POD} ms; lower bound ${BOUND} ms; took/bound ${RATIO}"
} | tee "$OUT/summary.txt"
