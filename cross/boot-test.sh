#!/usr/bin/env bash
# Boots Debian's arm64 kernel under qemu-system-aarch64 (or, with --arch
# armv7, Debian's armmp kernel under qemu-system-arm; software emulation)
# with an initramfs holding the static outpost-agent of that architecture,
# and checks that the agent enrols with a real controller on this host and
# reports itself correctly. See cross/README.md.
#
#   cross/build.sh --targets aarch64 --bins outpost-agent   # first: the agent under test
#   cross/boot-test.sh                 # then: the arm64 boot test (bounded in time)
#   cross/build.sh --targets armv7 --bins outpost-agent
#   cross/boot-test.sh --arch armv7    # the armv7 boot test
#
# The guest reaches the host only through QEMU's user-mode network: guest
# 10.0.2.15/24, gateway 10.0.2.2 = the host's loopback, where the controller
# listens. Passes when `outpostctl get node` shows the VM's node Ready with
# architecture arm64 (armv7: arm), its pressure conditions, its runtime unavailable (no
# Docker in the VM) and the runtime-unavailable taint. Prints the
# boot-to-Ready time and the agent's VmRSS inside the VM.
#
# Environment: BOOT_TEST_TIMEOUT (seconds from the start of the boot to the
# end of the checks, default 180), BOOT_TEST_KEEP=1 keeps the work dir,
# BOOT_TEST_NO_INSTALL=1 never calls apt-get.
#
# The controller and outpostctl on the host: the x86_64 release build of
# cross/build.sh, else target/release, else target/debug (built by
# `cargo test`), else a release build made here.
set -euo pipefail

ARCH=arm64
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="${2:?--arch needs arm64 or armv7}"; shift 2 ;;
    --arch=*) ARCH="${1#--arch=}"; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "boot-test: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

TIMEOUT="${BOOT_TEST_TIMEOUT:-180}"
GUEST_MEM=512M
# Debian's ARM kernels build virtio-net and virtio-pci as modules; these
# and their dependencies (read from each module's modinfo) go into the
# initramfs, in load order.
WANT_MODULES=(virtio_pci virtio_net)
case "$ARCH" in
  arm64|aarch64)
    ARCH=arm64
    TRIPLE=aarch64-unknown-linux-gnu
    DPKG_ARCH=arm64
    # The cloud flavour: virtio and little else, the smallest download.
    KERNEL_META=linux-image-cloud-arm64
    KERNEL_GLOB="linux-image-*-cloud-arm64_*_arm64.deb"
    QEMU=qemu-system-aarch64
    QEMU_MACHINE=virt
    QEMU_CPU=cortex-a57
    GO_ARCH=arm64
    ;;
  armv7|armhf|arm)
    ARCH=armv7
    TRIPLE=armv7-unknown-linux-gnueabihf
    DPKG_ARCH=armhf
    # ARMv7 multiplatform (Debian has no cloud flavour for armhf); the
    # virt machine's PL011 UART, PL031 RTC and generic PCI host are built in.
    KERNEL_META=linux-image-armmp
    KERNEL_GLOB="linux-image-*-armmp_*_armhf.deb"
    QEMU=qemu-system-arm
    # highmem=off: otherwise QEMU puts the PCIe ECAM window above 4 GiB,
    # which the non-LPAE armmp kernel cannot reach (no PCI, so no eth0).
    QEMU_MACHINE=virt,highmem=off
    QEMU_CPU=cortex-a15
    GO_ARCH=arm
    ;;
  *) echo "boot-test: unknown --arch $ARCH (arm64, armv7)" >&2; exit 2 ;;
esac
NODE_NAME="outpost-$ARCH-vm"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/target/boot-test-cache"   # downloaded kernel and busybox packages
AGENT_BIN="$ROOT/target/$TRIPLE/release/outpost-agent"

T0=$(date +%s)
step() { printf '==> [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { echo "boot-test: FAIL: $*" >&2; exit 1; }

[ -x "$AGENT_BIN" ] || die "$AGENT_BIN is missing; run cross/build.sh --targets ${ARCH/arm64/aarch64} --bins outpost-agent first"
if readelf -l "$AGENT_BIN" | grep -q 'program interpreter'; then
  die "$AGENT_BIN is dynamically linked; the initramfs has no libc (build it with cross/build.sh)"
fi

# Host-side controller and CLI: the x86_64 cross build, else the normal
# release build, else the debug build `cargo test` leaves.
HOST_BIN=""
for d in "$ROOT/target/x86_64-unknown-linux-gnu/release" "$ROOT/target/release" "$ROOT/target/debug"; do
  if [ -x "$d/outpost-controller" ] && [ -x "$d/outpostctl" ]; then HOST_BIN="$d"; break; fi
done
if [ -z "$HOST_BIN" ]; then
  step "building the host controller (cargo build --release -p outpost-controller)"
  cargo build --release --locked -p outpost-controller
  HOST_BIN="$ROOT/target/release"
fi
CTL="$HOST_BIN/outpostctl"
echo "host controller and outpostctl: $HOST_BIN"

# --- packages -----------------------------------------------------------------

APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  [ "${BOOT_TEST_NO_INSTALL:-0}" = 1 ] && die "missing packages and BOOT_TEST_NO_INSTALL=1: $*"
  [ "$(id -u)" = 0 ] || die "missing packages (run as root to install them): $*"
  step "apt-get update"
  apt-get update > "$ROOT/target/boot-test-apt.log" 2>&1 || true
  APT_UPDATED=1
}
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
    >> "$ROOT/target/boot-test-apt.log" 2>&1 \
    || { tail -20 "$ROOT/target/boot-test-apt.log" >&2; die "apt-get install $* failed"; }
}
mkdir -p "$CACHE"

if ! command -v cpio >/dev/null; then apt_update cpio; apt_install cpio; fi
if ! command -v "$QEMU" >/dev/null; then
  # bookworm's own qemu-system-arm (7.2) conflicts with the installed
  # qemu-utils from backports, so take qemu-system-arm from backports too.
  if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The Debian mirror already configured (not its -security sibling).
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                /etc/apt/sources.list.d/*.sources 2>/dev/null \
              | sed -nE 's#^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^[:space:]]*/debian)/?([[:space:]].*)?$#\3#p' \
              | head -1 || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    step "adding bookworm-backports from ${mirror%/} to apt sources"
    echo "deb ${mirror%/} bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
    APT_UPDATED=0
  fi
  apt_update qemu-system-arm
  step "installing qemu-system-arm from bookworm-backports"
  apt_install -t bookworm-backports qemu-system-arm
fi

if ! dpkg --print-foreign-architectures | grep -qx "$DPKG_ARCH"; then
  [ "$(id -u)" = 0 ] || die "dpkg architecture $DPKG_ARCH is not enabled (run as root)"
  dpkg --add-architecture "$DPKG_ARCH"
  APT_UPDATED=0
  apt_update "$DPKG_ARCH package lists"
fi

# Kernel: the one the newest $KERNEL_META depends on (virtio-net as a module).
kernel_deb="$(ls "$CACHE"/$KERNEL_GLOB 2>/dev/null | sort -V | tail -1 || true)"
busybox_deb="$(ls "$CACHE"/busybox-static_*_"$DPKG_ARCH".deb 2>/dev/null | tail -1 || true)"
if [ -z "$kernel_deb" ] || [ -z "$busybox_deb" ]; then
  kernel_pkg() { apt-cache depends "$KERNEL_META:$DPKG_ARCH" 2>/dev/null | sed -n 's/^ *Depends: //p' | grep -E '^linux-image-' | head -1 || true; }
  kpkg="$(kernel_pkg)"
  if [ -z "$kpkg" ]; then apt_update "$DPKG_ARCH kernel package"; kpkg="$(kernel_pkg)"; fi
  [ -n "$kpkg" ] || die "no kernel package behind $KERNEL_META:$DPKG_ARCH found in apt's lists"
  step "downloading $kpkg and busybox-static:$DPKG_ARCH (cached in target/boot-test-cache)"
  (cd "$CACHE" && apt-get download "${kpkg%:"$DPKG_ARCH"}:$DPKG_ARCH" "busybox-static:$DPKG_ARCH") \
    > "$ROOT/target/boot-test-apt.log" 2>&1 || { cat "$ROOT/target/boot-test-apt.log" >&2; die "apt-get download failed"; }
  kernel_deb="$(ls "$CACHE"/$KERNEL_GLOB | sort -V | tail -1)"
  busybox_deb="$(ls "$CACHE"/busybox-static_*_"$DPKG_ARCH".deb | tail -1)"
fi

# --- work dir, cleanup ----------------------------------------------------------

WORK="$(mktemp -d /tmp/outpost-boot-test.XXXXXX)"
QEMU_PID=""
CTL_PID=""
cleanup() {
  local rc=$?
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
  [ -n "$CTL_PID" ] && kill "$CTL_PID" 2>/dev/null && wait "$CTL_PID" 2>/dev/null
  if [ "$rc" != 0 ]; then
    echo "---- guest console (last 60 lines) ----" >&2
    tail -60 "$WORK/console.log" >&2 2>/dev/null || true
    echo "---- controller log (last 20 lines) ----" >&2
    tail -20 "$WORK/controller.log" >&2 2>/dev/null || true
  fi
  if [ "${BOOT_TEST_KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "unpacking $(basename "$kernel_deb") and $(basename "$busybox_deb")"
dpkg -x "$kernel_deb" "$WORK/kernel"
dpkg -x "$busybox_deb" "$WORK/busybox"
VMLINUZ="$(ls "$WORK"/kernel/boot/vmlinuz-* | head -1)"
KVER="${VMLINUZ##*/vmlinuz-}"

# --- controller on the host -----------------------------------------------------

free_udp_port() {
  local p
  for _ in $(seq 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    if ! ss -Hlnu "sport = :$p" 2>/dev/null | grep -q . && ! ss -Hlnt "sport = :$p" 2>/dev/null | grep -q .; then
      echo "$p"; return 0
    fi
  done
  return 1
}
PORT="$(free_udp_port)"
METRICS_PORT="$(free_udp_port)"
step "starting outpost-controller on 127.0.0.1:$PORT (UDP), metrics on 127.0.0.1:$METRICS_PORT"
"$HOST_BIN/outpost-controller" init --data-dir "$WORK/controller" \
  --advertise "127.0.0.1:$PORT" --admin-config "$WORK/admin.conf" > "$WORK/init.log" 2>&1 \
  || { cat "$WORK/init.log" >&2; die "outpost-controller init failed"; }
"$HOST_BIN/outpost-controller" serve --data-dir "$WORK/controller" \
  --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" > "$WORK/controller.log" 2>&1 &
CTL_PID=$!

token_json=""
for _ in $(seq 50); do
  if token_json="$("$CTL" --config "$WORK/admin.conf" token create --ttl 1h --labels site=qemu -o json 2>/dev/null)"; then break; fi
  kill -0 "$CTL_PID" 2>/dev/null || die "outpost-controller serve exited"
  sleep 0.2
done
[ -n "$token_json" ] || die "could not create a bootstrap token"
TOKEN="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$token_json")"
CA_HASH="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["caHash"])' <<<"$token_json")"

# --- initramfs --------------------------------------------------------------------

step "building the initramfs (agent $(stat -c %s "$AGENT_BIN") bytes, kernel $KVER)"
IRD="$WORK/initramfs"
mkdir -p "$IRD"/{bin,sbin,usr/bin,usr/sbin,etc/outpost,proc,sys,dev,tmp,run,var/lib/outpost,lib/modules}
cp "$WORK/busybox/bin/busybox" "$IRD/bin/busybox"
install -m 0755 "$AGENT_BIN" "$IRD/usr/bin/outpost-agent"
MODULES=()
add_module() {   # add_module NAME: its dependencies first, then itself
  local m="$1" f dep
  [[ " ${MODULES[*]} " == *" $m "* ]] && return 0
  f="$(find "$WORK/kernel/lib/modules/$KVER" -name "$m.ko" | head -1)"
  [ -n "$f" ] || return 0   # built in, or absent from this kernel
  for dep in $(strings "$f" | sed -n 's/^depends=//p' | tr ',' ' '); do add_module "$dep"; done
  MODULES+=("$m")
  cp "$f" "$IRD/lib/modules/"
}
for m in "${WANT_MODULES[@]}"; do add_module "$m"; done
echo "modules: ${MODULES[*]}"
cat > "$IRD/etc/outpost/agent.toml" <<EOF
# Written by cross/boot-test.sh: enrol with the controller on the host's loopback.
controller = "10.0.2.2:$PORT"
server_name = "localhost"
token = "$TOKEN"
ca_hash = "$CA_HASH"
data_dir = "/var/lib/outpost"
name = "$NODE_NAME"
housekeeping_interval = "5s"

[labels]
site = "qemu"
EOF
echo "$NODE_NAME" > "$IRD/etc/hostname"
printf 'PRETTY_NAME="Outpost boot test (Debian %s kernel, busybox initramfs)"\nID=outpost-boot-test\n' "$KVER" > "$IRD/etc/os-release"
echo "127.0.0.1 localhost $NODE_NAME" > "$IRD/etc/hosts"
cat > "$IRD/init" <<EOF
#!/bin/busybox sh
# Minimal init for the Outpost boot test: filesystems, network, the agent.
/bin/busybox --install -s 2>/dev/null
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0700,size=64m tmpfs /var/lib/outpost
hostname $NODE_NAME
# The host's wall clock, in case the guest RTC is not readable.
for arg in \$(cat /proc/cmdline); do
  case "\$arg" in outpost.epoch=*) [ "\$(date +%Y)" -lt 2024 ] && date -s "@\${arg#outpost.epoch=}" >/dev/null ;; esac
done
for m in ${MODULES[*]}; do
  insmod /lib/modules/\$m.ko || echo "OUTPOST-INIT: insmod \$m failed"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "OUTPOST-INIT: network up at uptime \$(cut -d' ' -f1 /proc/uptime)s: \$(ip -o -4 addr show eth0)"
echo "OUTPOST-INIT: starting outpost-agent at uptime \$(cut -d' ' -f1 /proc/uptime)s"
RUST_LOG=info /usr/bin/outpost-agent --config /etc/outpost/agent.toml &
AGENT=\$!
n=0
while :; do
  sleep 5
  n=\$((n + 5))
  if ! kill -0 \$AGENT 2>/dev/null; then
    wait \$AGENT; echo "OUTPOST-INIT: agent exited with status \$?"
    break
  fi
  if [ \$n -ge 20 ]; then
    echo "OUTPOST-INIT: after \${n}s agent \$(grep -E '^VmRSS' /proc/\$AGENT/status | tr -s ' \t' ' ') MemAvailable \$(grep MemAvailable /proc/meminfo | tr -s ' ' ' ' | cut -d' ' -f2-)"
  fi
done
sleep 3600
EOF
chmod 0755 "$IRD/init"
(cd "$IRD" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initramfs.cpio.gz"

# --- boot -------------------------------------------------------------------------

step "booting $KVER under $QEMU -M $QEMU_MACHINE -cpu $QEMU_CPU ($GUEST_MEM, TCG)"
BOOT_START=$(date +%s.%N)
"$QEMU" -M "$QEMU_MACHINE" -cpu "$QEMU_CPU" -smp 2 -m "$GUEST_MEM" -nographic -no-reboot \
  -kernel "$VMLINUZ" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyAMA0 rdinit=/init panic=-1 quiet loglevel=4 outpost.epoch=$(date +%s)" \
  -netdev user,id=n0,net=10.0.2.0/24,host=10.0.2.2 -device virtio-net-pci,netdev=n0,romfile= \
  -monitor none -serial "file:$WORK/console.log" < /dev/null > "$WORK/qemu.log" 2>&1 &
QEMU_PID=$!

# --- wait for the node ---------------------------------------------------------------

check_node() {
  python3 - "$1" "$GO_ARCH" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
want_arch = sys.argv[2]
st = d.get("status", {})
problems = []
arch = st.get("nodeInfo", {}).get("architecture")
if arch != want_arch:
    problems.append(f"architecture is {arch!r}, want {want_arch!r}")
conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
for c in ("MemoryPressure", "DiskPressure", "PIDPressure"):
    if c not in conds:
        problems.append(f"condition {c} missing")
if conds.get("Ready") != "True":
    problems.append(f"Ready is {conds.get('Ready')!r}")
rt = st.get("runtime", {})
if rt.get("available") is not False:
    problems.append(f"runtime.available is {rt.get('available')!r}, want false")
taints = [t.get("key") for t in d.get("spec", {}).get("taints", [])]
if "node.outpost.dev/runtime-unavailable" not in taints:
    problems.append(f"taint node.outpost.dev/runtime-unavailable missing (taints: {taints})")
if problems:
    print("; ".join(problems))
    sys.exit(1)
EOF
}

DEADLINE=$(( ${BOOT_START%.*} + TIMEOUT ))
step "waiting for node $NODE_NAME (gives up ${TIMEOUT}s after the boot started)"
READY_AT=""
last=""
while :; do
  now=$(date +%s)
  [ "$now" -lt "$DEADLINE" ] || die "node $NODE_NAME not as expected within ${TIMEOUT}s of the boot: ${last:-never listed}"
  kill -0 "$QEMU_PID" 2>/dev/null || { QEMU_PID=""; cat "$WORK/qemu.log" >&2; die "qemu exited"; }
  kill -0 "$CTL_PID" 2>/dev/null || { CTL_PID=""; die "the controller exited"; }
  grep -q 'OUTPOST-INIT: agent exited' "$WORK/console.log" 2>/dev/null && die "the agent exited inside the VM"
  if "$CTL" --config "$WORK/admin.conf" get node "$NODE_NAME" -o json > "$WORK/node.json" 2>"$WORK/get.err"; then
    if last="$(check_node "$WORK/node.json")"; then
      READY_AT=$(date +%s.%N)
      break
    fi
  else
    last="not listed yet ($(head -c 200 "$WORK/get.err"))"
  fi
  sleep 1
done
BOOT_TO_READY="$(awk -v a="$BOOT_START" -v b="$READY_AT" 'BEGIN{printf "%.1f", b-a}')"
step "node $NODE_NAME is Ready: $GO_ARCH, conditions reported, runtime unavailable and tainted"

"$CTL" --config "$WORK/admin.conf" get nodes
python3 - "$WORK/node.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
st = d["status"]
print("nodeInfo:", json.dumps(st["nodeInfo"]))
print("runtime:", json.dumps(st["runtime"]))
print("conditions:", ", ".join(f'{c["type"]}={c["status"]}' for c in st["conditions"]))
print("taints:", ", ".join(f'{t.get("key")}:{t.get("effect")}' for t in d["spec"]["taints"]))
print("signals:", json.dumps(st.get("signals"))[:400])
EOF

step "waiting for the agent's VmRSS on the guest console"
RSS_LINE=""
while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  RSS_LINE="$(grep -a 'OUTPOST-INIT: after' "$WORK/console.log" | tail -1 || true)"
  [ -n "$RSS_LINE" ] && break
  kill -0 "$QEMU_PID" 2>/dev/null || break
  sleep 1
done
[ -n "$RSS_LINE" ] || die "no VmRSS line on the guest console within ${TIMEOUT}s"
grep -a 'OUTPOST-INIT: \(network\|starting\)' "$WORK/console.log"
echo "$RSS_LINE"
# Still up after the RSS sample: nothing crashed without Docker.
"$CTL" --config "$WORK/admin.conf" get node "$NODE_NAME" -o json > "$WORK/node.json"
check_node "$WORK/node.json" > /dev/null || die "node no longer as expected: $(check_node "$WORK/node.json")"
grep -qa 'OUTPOST-INIT: agent exited' "$WORK/console.log" && die "the agent exited inside the VM"

RSS_KB="$(sed -n 's/.*VmRSS: *\([0-9]*\) kB.*/\1/p' <<<"$RSS_LINE")"
echo
echo "boot test PASSED ($ARCH): boot-to-Ready ${BOOT_TO_READY}s (qemu start to node Ready, TCG emulation), agent VmRSS ${RSS_KB} kB in the VM, total $(( $(date +%s) - T0 ))s"
