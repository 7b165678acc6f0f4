#!/usr/bin/env bash
# Builds the test workload images into the local Docker engine (no registry is
# needed or used):
#
#   outpost/workload-http:dev   outpost-http  (answers with its pod name, or
#                               calls --upstream and names both)
#   outpost/workload-burn:dev   outpost-burn  (CPU burner)
#   outpost/workload-hog:dev    outpost-hog   (memory/disk/process hog)
#   outpost/workload-exit:dev   outpost-exit  (exits with a chosen code)
#   outpost/workload-web:dev    outpost-http  listening on port 80, for
#                               manifests written for a web server on 80
#
# Each image is FROM scratch with one static x86_64 binary
# (images/workloads/docker/<name>.Dockerfile). Scenario tests run this through
# outpost_workloads::ensure_images(); by hand:
#
#   images/workloads/build-images.sh
#
# Quick when nothing changed: cargo has nothing to do, and an image whose
# dev.outpost.workload.sha256 label matches its binary is left alone.
# The binaries are built in their own target dir (OUTPOST_WORKLOADS_TARGET_DIR,
# default target/workloads) so a test that runs this script never waits for
# the lock of the cargo that runs the test, and the static RUSTFLAGS never
# invalidate anyone else's artifacts. Concurrent runs are serialised by flock.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR="${OUTPOST_WORKLOADS_TARGET_DIR:-$ROOT/target/workloads}"
WORKLOADS=(http burn hog exit web)
SUM_LABEL=dev.outpost.workload.sha256

case "${1:-}" in
  -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
  "") ;;
  *) echo "build-images.sh: unknown argument $1 (it takes none; see --help)" >&2; exit 2 ;;
esac

log() { printf 'build-images: %s\n' "$*"; }
die() { printf 'build-images: ERROR: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"

mkdir -p "$TARGET_DIR"
if command -v flock >/dev/null; then
  exec 9>"$TARGET_DIR/build-images.lock"
  flock 9
fi

log "building static binaries ($TRIPLE, release) in $TARGET_DIR"
# The static flag must be the only one: CARGO_ENCODED_RUSTFLAGS would win
# over RUSTFLAGS, and a caller's flags would change the binaries.
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
  "${CARGO:-cargo}" build --release --bins -p outpost-workloads --target "$TRIPLE" \
  --manifest-path "$ROOT/Cargo.toml"
BIN_DIR="$TARGET_DIR/$TRIPLE/release"

CTX="$(mktemp -d)"
LOG="$(mktemp)"
trap 'rm -rf "$CTX" "$LOG"' EXIT

for w in "${WORKLOADS[@]}"; do
  bin="$BIN_DIR/outpost-${w/#web/http}"
  tag="outpost/workload-$w:dev"
  [ -x "$bin" ] || die "$bin is missing after the build"
  if command -v readelf >/dev/null && readelf -l "$bin" | grep -q 'program interpreter'; then
    die "$bin is dynamically linked; a scratch image needs it static (crt-static)"
  fi
  sum="$(sha256sum "$bin" | cut -d' ' -f1)"
  have="$(docker image inspect --format "{{ index .Config.Labels \"$SUM_LABEL\" }}" "$tag" 2>/dev/null || true)"
  if [ "$have" = "$sum" ]; then
    log "$tag is up to date"
    continue
  fi
  rm -rf "${CTX:?}"/*
  cp "$HERE/docker/$w.Dockerfile" "$CTX/Dockerfile"
  cp "$bin" "$CTX/"
  log "building $tag"
  # The classic builder (as images/build.sh): copying into an empty image
  # needs nothing from BuildKit. Its deprecation notice is shown only on failure.
  DOCKER_BUILDKIT=0 docker build -q --label "$SUM_LABEL=$sum" -t "$tag" "$CTX" >"$LOG" 2>&1 \
    || { cat "$LOG" >&2; die "docker build of $tag failed"; }
  log "built $tag ($(docker image inspect --format '{{.Size}}' "$tag") bytes)"
done
log "done: ${WORKLOADS[*]/#/outpost/workload-}"
