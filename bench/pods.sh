#!/usr/bin/env bash
# Pod figures for docs/BENCHMARKS.md, on the local Docker engine:
#
#   bench/pods.sh                 # build release, start overhead (N=10), RSS with 20 pods
#   RUNS=20 PODS=20 bench/pods.sh
#
# 1. Pod start overhead against `docker run` of the same image on the same
#    engine, side by side. Each round, alternating which goes first:
#      docker:  t0 = now; `docker run -d IMAGE`; latency = State.StartedAt - t0
#      outpost: t0 = now; `outpostctl run ... --node N`; latency =
#               StartedAt of the pod's app container - t0
#    Both are measured from the same host clock to the engine's own start
#    timestamp, so polling adds nothing. Outpost's figure includes the CLI
#    call, the controller, the push over QUIC, the agent's local save and its
#    containers (the pod's network-namespace holder, then the app).
#    Reported: medians and their ratio.
# 2. A 10-replica Deployment against 10 sequential `docker run`s of the same
#    image, side by side, DEPLOY_RUNS rounds alternating which goes first:
#      docker:  t0 = now; `docker run -d IMAGE` ten times, one after another;
#               latency = the last container's State.StartedAt - t0
#      outpost: t0 = now; `outpostctl apply -f` a Deployment of 10 replicas
#               (no nodeName: the scheduler places them); latency = the
#               latest StartedAt of the 10 app containers - t0
#    Outpost's figure includes the apply, the Deployment and ReplicaSet
#    controllers, the scheduler, the push over QUIC and the agent starting
#    the ten containers. Reported: medians and their ratio.
# 3. Agent RSS with PODS pods running (outpost/workload-http:dev), sampled
#    from /proc/PID/status every second for SAMPLE_SECS once all are Running:
#    VmRSS average and max, and VmHWM.
#
# Knobs: RUNS (10), DEPLOY_RUNS (5; 0 skips part 2), PODS (20), SAMPLE_SECS
# (30), OUT (results dir), SKIP_BUILD=1. Every wait is bounded; the EXIT trap stops what it started
# and removes its pods' containers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-10}
DEPLOY_RUNS=${DEPLOY_RUNS:-5}
PODS=${PODS:-20}
SAMPLE_SECS=${SAMPLE_SECS:-30}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
OUT=${OUT:-$TARGET/bench/pods-$(date -u +%Y%m%dT%H%M%SZ)}
IMAGE=outpost/workload-http:dev
NODE=bench-pods
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outpost-podbench.XXXXXX")
CTRL_PID=
log() { printf '[podbench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
    if [ -n "$CTRL_PID" ] && kill -0 "$CTRL_PID" 2>/dev/null; then
        kill -TERM "$CTRL_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$CTRL_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$CTRL_PID" 2>/dev/null || true
    fi
    docker ps -aq --filter "label=dev.outpost.node=$NODE" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker ps -aq --filter "label=dev.outpost.bench=docker-run" | xargs -r docker rm -f >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --workspace --bins >&2)
fi
log "building the workload images"
bash "$ROOT/images/workloads/build-images.sh" >&2

ctl() { "$BIN/outpostctl" --config "$WORK/data/admin.conf" "$@"; }
now_ms() { date +%s%3N; }
started_ms() { # container -> StartedAt in ms since the epoch
    date -d "$(docker inspect -f '{{.State.StartedAt}}' "$1")" +%s%3N
}
wait_until() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || { log "timed out waiting for $what"; exit 1; }
        sleep 0.2
    done
}

log "starting a single-box cluster (outpost-controller up)"
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
"$BIN/outpost-controller" up --data-dir "$WORK/data" --listen "127.0.0.1:$(free_port SOCK_DGRAM)" \
    --metrics-listen "127.0.0.1:$(free_port SOCK_STREAM)" --node-name "$NODE" >"$OUT/controller.log" 2>&1 &
CTRL_PID=$!
wait_until 60 "the node to be Ready" bash -c "'$BIN/outpostctl' --config '$WORK/data/admin.conf' get nodes | grep -q ' Ready'"
AGENT_PID=$(pgrep -f "outpost-agent .*$WORK/data" | head -1)
[ -n "$AGENT_PID" ] || { log "agent process not found"; exit 1; }

app_container() { # pod -> id of its running app container
    docker ps -q --no-trunc --filter "label=dev.outpost.pod=$1" \
        --filter "label=dev.outpost.container=$1" --filter status=running | head -1
}

# Warm up: the pause image is imported once per engine, and the first
# container start on an engine is slower; neither is what we measure.
ctl run warm --image "$IMAGE" --node "$NODE" >/dev/null
has_app() { [ -n "$(app_container "$1")" ]; }
wait_until 60 "the warm-up pod" has_app warm
docker rm -f "$(docker run -d --label dev.outpost.bench=docker-run "$IMAGE")" >/dev/null
ctl delete pod warm >/dev/null

: >"$OUT/start.tsv"
for i in $(seq "$RUNS"); do
    measure_docker() {
        local t0 id
        t0=$(now_ms)
        id=$(docker run -d --label dev.outpost.bench=docker-run "$IMAGE")
        echo "docker $(( $(started_ms "$id") - t0 ))" >>"$OUT/start.tsv"
        docker rm -f "$id" >/dev/null
    }
    measure_outpost() {
        local t0 pod="start-$i" id
        t0=$(now_ms)
        ctl run "$pod" --image "$IMAGE" --node "$NODE" >/dev/null
        local end=$((SECONDS + 60))
        until id=$(app_container "$pod") && [ -n "$id" ]; do
            [ $SECONDS -lt $end ] || { log "pod $pod did not start"; exit 1; }
            sleep 0.05
        done
        echo "outpost $(( $(started_ms "$id") - t0 ))" >>"$OUT/start.tsv"
        ctl delete pod "$pod" >/dev/null
        wait_until 60 "pod $pod to go" bash -c "[ -z \"\$(docker ps -aq --filter label=dev.outpost.pod=$pod)\" ]"
    }
    if [ $((i % 2)) -eq 0 ]; then measure_docker; measure_outpost; else measure_outpost; measure_docker; fi
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
D=$(awk '$1=="docker"{print $2}' "$OUT/start.tsv" | median)
O=$(awk '$1=="outpost"{print $2}' "$OUT/start.tsv" | median)
RATIO=$(awk -v o="$O" -v d="$D" 'BEGIN{printf "%.2f", o/d}')
log "start: docker run median ${D} ms, outpost run median ${O} ms, ratio ${RATIO}x (${RUNS} rounds)"

# Part 2: a 10-replica Deployment against 10 sequential docker runs.
cat >"$WORK/deploy.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench
spec:
  replicas: 10
  selector:
    matchLabels: {app: bench}
  template:
    metadata:
      labels: {app: bench}
    spec:
      containers:
      - name: app
        image: $IMAGE
YAML
deploy_started() { # -> StartedAt (ms) of each running app container of the Deployment
    local id
    for id in $(docker ps -q --no-trunc --filter "label=dev.outpost.node=$NODE" \
        --filter "label=dev.outpost.container=app" --filter status=running); do
        started_ms "$id"
    done
}
: >"$OUT/deploy.tsv"
for i in $(seq "$DEPLOY_RUNS"); do
    measure_docker10() {
        local t0 id last
        t0=$(now_ms)
        for _ in $(seq 10); do id=$(docker run -d --label dev.outpost.bench=docker-run "$IMAGE"); done
        last=$(started_ms "$id")
        echo "docker $((last - t0))" >>"$OUT/deploy.tsv"
        docker ps -aq --filter "label=dev.outpost.bench=docker-run" | xargs -r docker rm -f >/dev/null
    }
    measure_deploy() {
        local t0 end latest
        t0=$(now_ms)
        ctl apply -f "$WORK/deploy.yaml" >/dev/null
        end=$((SECONDS + 120))
        until [ "$(deploy_started | wc -l)" -ge 10 ]; do
            [ $SECONDS -lt $end ] || { log "the Deployment's 10 replicas did not start"; exit 1; }
            sleep 0.05
        done
        latest=$(deploy_started | sort -n | tail -1)
        echo "outpost $((latest - t0))" >>"$OUT/deploy.tsv"
        ctl delete deployment bench >/dev/null
        wait_until 120 "the Deployment's containers to go" bash -c "[ \"\$(docker ps -aq --filter label=dev.outpost.node=$NODE --filter label=dev.outpost.container=app | wc -l)\" -eq 0 ]"
    }
    if [ $((i % 2)) -eq 0 ]; then measure_docker10; measure_deploy; else measure_deploy; measure_docker10; fi
done
if [ "$DEPLOY_RUNS" -gt 0 ]; then
    DD=$(awk '$1=="docker"{print $2}' "$OUT/deploy.tsv" | median)
    DO=$(awk '$1=="outpost"{print $2}' "$OUT/deploy.tsv" | median)
    DRATIO=$(awk -v o="$DO" -v d="$DD" 'BEGIN{printf "%.2f", o/d}')
    log "deploy: 10 sequential docker runs median ${DD} ms, 10-replica Deployment median ${DO} ms, ratio ${DRATIO}x (${DEPLOY_RUNS} rounds)"
fi

log "starting $PODS pods"
for i in $(seq "$PODS"); do ctl run "rss-$i" --image "$IMAGE" --node "$NODE" >/dev/null; done
running() { [ "$(ctl get pods | grep -c ' Running ')" -ge "$PODS" ]; }
wait_until 180 "$PODS pods Running" running
log "sampling agent $AGENT_PID for ${SAMPLE_SECS}s"
: >"$OUT/rss.txt"
for _ in $(seq "$SAMPLE_SECS"); do
    awk '/^VmRSS/{print $2}' "/proc/$AGENT_PID/status" >>"$OUT/rss.txt"
    sleep 1
done
RSS_AVG=$(awk '{s+=$1} END {printf "%.1f", s/NR/1024}' "$OUT/rss.txt")
RSS_MAX=$(sort -n "$OUT/rss.txt" | tail -1 | awk '{printf "%.1f", $1/1024}')
HWM=$(awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$AGENT_PID/status")
log "agent with $PODS pods: VmRSS avg ${RSS_AVG} MiB, max ${RSS_MAX} MiB, VmHWM ${HWM} MiB"
{
    echo "pod start (median of $RUNS): docker run ${D} ms, outpost ${O} ms, ratio ${RATIO}x"
    [ "$DEPLOY_RUNS" -eq 0 ] || echo "10 replicas (median of $DEPLOY_RUNS): 10 sequential docker runs ${DD} ms, Deployment ${DO} ms, ratio ${DRATIO}x"
    echo "agent RSS with $PODS pods: avg ${RSS_AVG} MiB, max ${RSS_MAX} MiB, VmHWM ${HWM} MiB"
} | tee "$OUT/summary.txt"
