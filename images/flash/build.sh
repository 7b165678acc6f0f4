#!/usr/bin/env bash
# Builds the flash bundle for edge devices: per architecture, a root file
# system overlay with the static agent, its systemd unit (enabled) and
# /etc/outpost/agent.toml for first-boot enrolment, plus a tarball of it.
# See images/README.md for putting it on a Raspberry Pi OS or Debian image.
#
#   cross/build.sh --targets aarch64
#   images/flash/build.sh --arch arm64 --controller 10.0.0.5:7443 \
#       --token abcdef.0123456789abcdef --ca-hash sha256:... [--server-name NAME] [--labels site=shop-12]
#
# Output: target/flash/<arch>/rootfs/ and target/flash/outpost-agent-<arch>.tar.gz
# (arch: arm64, arm, amd64). Without --controller/--token/--ca-hash the
# agent.toml is a template whose REPLACE_ME values must be filled in before
# the first boot.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/images/flash"
ARCH=arm64 CONTROLLER="" TOKEN="" CA_HASH="" SERVER_NAME="" LABELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --controller) CONTROLLER="$2"; shift 2 ;;
    --token) TOKEN="$2"; shift 2 ;;
    --ca-hash) CA_HASH="$2"; shift 2 ;;
    --server-name) SERVER_NAME="$2"; shift 2 ;;
    --labels) LABELS="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "images/flash/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ARCH" in
  amd64) triple=x86_64-unknown-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu ;;
  arm|armhf|armv7) ARCH=arm; triple=armv7-unknown-linux-gnueabihf ;;
  *) echo "images/flash/build.sh: unknown --arch $ARCH (arm64, arm, amd64)" >&2; exit 2 ;;
esac
AGENT="$ROOT/target/$triple/release/outpost-agent"
[ -x "$AGENT" ] || { echo "images/flash/build.sh: $AGENT is missing; run cross/build.sh first" >&2; exit 1; }

OUT="$ROOT/target/flash/$ARCH"
RFS="$OUT/rootfs"
rm -rf "$OUT"
install -d -m 0755 "$RFS/usr/local/bin" "$RFS/etc/systemd/system/multi-user.target.wants"
install -d -m 0700 "$RFS/etc/outpost"
install -m 0755 "$AGENT" "$RFS/usr/local/bin/outpost-agent"
install -m 0644 "$HERE/outpost-agent.service" "$RFS/etc/systemd/system/outpost-agent.service"
# What `systemctl enable outpost-agent` would create.
ln -s ../outpost-agent.service "$RFS/etc/systemd/system/multi-user.target.wants/outpost-agent.service"

toml_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
  echo "# Outpost agent: first-boot enrolment. The token is a secret (file mode 0600)."
  echo "# After enrolment the agent keeps its key and certificate in data_dir;"
  echo "# the token is not needed again and can be removed from this file."
  echo "controller = $(toml_str "${CONTROLLER:-REPLACE_ME:7443}")"
  [ -n "$SERVER_NAME" ] && echo "server_name = $(toml_str "$SERVER_NAME")"
  echo "token = $(toml_str "${TOKEN:-REPLACE_ME}")"
  echo "ca_hash = $(toml_str "${CA_HASH:-sha256:REPLACE_ME}")"
  echo 'data_dir = "/var/lib/outpost"'
  if [ -n "$LABELS" ]; then
    echo
    echo "[labels]"
    IFS=',' read -ra kvs <<<"$LABELS"
    for kv in "${kvs[@]}"; do echo "$(toml_str "${kv%%=*}") = $(toml_str "${kv#*=}")"; done
  fi
} > "$RFS/etc/outpost/agent.toml"
chmod 0600 "$RFS/etc/outpost/agent.toml"

if command -v systemd-analyze >/dev/null; then
  # Checked in a root made of this host's systemd units plus the overlay, so
  # ExecStart's binary is the one shipped.
  VROOT="$(mktemp -d)"
  trap 'rm -rf "$VROOT"' EXIT
  mkdir -p "$VROOT/usr/lib/systemd" "$VROOT/etc"
  cp -a "$(readlink -f /lib/systemd/system)" "$VROOT/usr/lib/systemd/system"
  cp -a "$RFS/." "$VROOT/"
  systemd-analyze verify --root="$VROOT" /etc/systemd/system/outpost-agent.service
  echo "systemd-analyze verify: ok"
fi
tar -C "$RFS" --owner=0 --group=0 --numeric-owner -czf "$ROOT/target/flash/outpost-agent-$ARCH.tar.gz" .
if [ -z "$TOKEN" ] || [ -z "$CONTROLLER" ] || [ -z "$CA_HASH" ]; then
  echo "note: agent.toml is a template: fill in the REPLACE_ME values before the first boot"
fi
echo "flash bundle: $RFS"
echo "tarball:      $ROOT/target/flash/outpost-agent-$ARCH.tar.gz ($(stat -c %s "$ROOT/target/flash/outpost-agent-$ARCH.tar.gz") bytes)"
