#!/usr/bin/env bash
# Builds the controller and agent container images, FROM scratch with the
# static binaries of cross/build.sh, for amd64 and arm64, into the local
# Docker engine (no registry needed or used):
#
#   cross/build.sh --targets x86_64,aarch64
#   images/build.sh                      # outpost-{controller,agent}:<version>-{amd64,arm64}
#   images/build.sh amd64                # one architecture
#
# The host's architecture also gets the plain tags outpost-controller:latest
# and outpost-agent:latest. The classic builder is used: copying into an
# empty image runs nothing, so a foreign-architecture image needs no emulator.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC2206  # word splitting of the architecture list is intended
ARCHS=(${*:-amd64 arm64})
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || uname -m)"
command -v docker >/dev/null || { echo "images/build.sh: docker is not installed" >&2; exit 1; }

triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    arm) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "images/build.sh: unknown architecture $1 (amd64, arm64, arm)" >&2; exit 2 ;;
  esac
}

CTX="$(mktemp -d)"
LOG="$(mktemp)"
trap 'rm -rf "$CTX" "$LOG"' EXIT
for arch in "${ARCHS[@]}"; do
  triple="$(triple_of "$arch")"
  bin="target/$triple/release"
  for b in outpost-controller outpostctl outpost-agent; do
    [ -x "$bin/$b" ] || { echo "images/build.sh: $bin/$b is missing; run cross/build.sh first" >&2; exit 1; }
    if readelf -l "$bin/$b" | grep -q 'program interpreter'; then
      echo "images/build.sh: $bin/$b is dynamically linked; a scratch image needs the static build of cross/build.sh" >&2
      exit 1
    fi
  done
  for image in controller agent; do
    rm -rf "${CTX:?}"/*
    cp "images/$image/Dockerfile" "$CTX/"
    case "$image" in
      controller) cp "$bin/outpost-controller" "$bin/outpostctl" "$CTX/" ;;
      agent) cp "$bin/outpost-agent" "$CTX/" ;;
    esac
    tag="outpost-$image:$VERSION-$arch"
    extra=()
    [ "$arch" = "$HOST_ARCH" ] && extra=(-t "outpost-$image:latest")
    echo "==> $tag"
    # The classic builder warns that it is deprecated; show its output only on failure.
    DOCKER_BUILDKIT=0 docker build -q --platform "linux/$arch" -t "$tag" "${extra[@]}" "$CTX" \
      > "$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
    docker image inspect "$tag" --format "    {{.Os}}/{{.Architecture}}, {{.Size}} bytes"
  done
done
