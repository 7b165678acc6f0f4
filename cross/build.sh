#!/usr/bin/env bash
# Builds release binaries of outpost-agent, outpost-controller and outpostctl
# for x86_64, aarch64 and armv7 (hard float), statically linked, and checks
# the size budget of the aarch64 agent. See cross/README.md.
#
#   cross/build.sh                     # all targets
#   cross/build.sh --targets aarch64   # a subset: x86_64, aarch64, armv7
#   cross/build.sh --bins outpost-agent  # a subset of the binaries (default: all three)
#   cross/build.sh --no-install        # never call apt-get; fail if something is missing
#
# Output: target/<triple>/release/{outpost-agent,outpost-controller,outpostctl}
# (the ones asked for with --bins)
# for x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu and
# armv7-unknown-linux-gnueabihf.
#
# Toolchains: x86_64 is built by the rustup toolchain first in PATH. The ARM
# targets are built by Debian's rustc-web/cargo-web (/usr/bin/rustc), whose ARM
# standard libraries come as libstd-rust-web-dev:<arch> packages; rustup cannot
# download targets on these machines. A std is only usable by the exact rustc
# version that built it, so a target whose libstd-rust-web-dev version differs
# from rustc-web's is reported as SKIPPED (armv7 lags behind at times); x86_64
# and aarch64 must build, or the script fails.
set -euo pipefail

# The stripped aarch64 outpost-agent must not grow past this (issue 4: <= 8 MiB).
AGENT_SIZE_BUDGET_BYTES=$((8 * 1024 * 1024))
# The same for the stripped armv7 outpost-agent (issue 11: armv7 proven like arm64).
ARMV7_AGENT_SIZE_BUDGET_BYTES=$((8 * 1024 * 1024))

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# Debian-toolchain builds get their own target dir: the rustup and Debian
# compilers would otherwise keep invalidating each other's host artifacts.
# Final binaries are copied to target/<triple>/release/.
DEBIAN_TARGET_DIR="$ROOT/target/debian-rustc"
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_CARGO=/usr/bin/cargo
ALL_BINS=(outpost-agent outpost-controller outpostctl)
BINS=("${ALL_BINS[@]}")
STATIC_FLAGS="-C target-feature=+crt-static"

TARGETS="x86_64 aarch64 armv7"
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) TARGETS="${2:?--targets needs a list}"; shift 2 ;;
    --targets=*) TARGETS="${1#--targets=}"; shift ;;
    --bins) read -r -a BINS <<<"${2:?--bins needs a list}"; shift 2 ;;
    --bins=*) read -r -a BINS <<<"${1#--bins=}"; shift ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "cross/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
TARGETS="${TARGETS//,/ }"
want() { [[ " $TARGETS " == *" $1 "* ]]; }
for t in $TARGETS; do
  case "$t" in x86_64|aarch64|armv7) ;; *) echo "cross/build.sh: unknown target $t (x86_64, aarch64, armv7)" >&2; exit 2 ;; esac
done
read -r -a BINS <<<"${BINS[*]//,/ }"
[ "${#BINS[@]}" -gt 0 ] || { echo "cross/build.sh: --bins needs at least one of ${ALL_BINS[*]}" >&2; exit 2; }
# cargo selection: the package of each binary asked for, and the binary.
CARGO_SEL=()
for b in "${BINS[@]}"; do
  case "$b" in
    outpost-agent) CARGO_SEL+=(-p outpost-agent --bin "$b") ;;
    outpost-controller|outpostctl) CARGO_SEL+=(-p outpost-controller --bin "$b") ;;
    *) echo "cross/build.sh: unknown binary $b (${ALL_BINS[*]})" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { echo "cross/build.sh: ERROR: $*" >&2; exit 1; }

declare -A RESULT=()

# --- Debian packages --------------------------------------------------------

# Installed version of a package, empty when it is not installed.
pkg_version() { { dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$1" 2>/dev/null || true; } | sed -n 's/^ii *//p'; }
candidate() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)' || true; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
    > "$ROOT/target/cross-apt.log" 2>&1 \
    || { tail -20 "$ROOT/target/cross-apt.log" >&2; return 1; }
}

mkdir -p "$ROOT/target"
APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return 0
  step "apt-get update"
  apt-get update > "$ROOT/target/cross-apt-update.log" 2>&1 \
    || { grep -E '^(E|W|Err):' "$ROOT/target/cross-apt-update.log" >&2 || true; }
  APT_UPDATED=1
}
need_root() {
  [ "$INSTALL" = 1 ] || die "missing Debian packages: $* (run without --no-install, as root)"
  [ "$(id -u)" = 0 ] || die "missing Debian packages: $* (run as root, or: sudo apt-get install $*)"
}

# Packages for the x86_64 static build (glibc's static libs are in libc6-dev)
# and the Debian Rust toolchain with the aarch64 std and cross gcc.
BASE_PKGS=(libc6-dev gcc rustc-web cargo-web libstd-rust-web-dev:arm64
           gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu)
ARMV7_PKGS=(libstd-rust-web-dev:armhf gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
            binutils-arm-linux-gnueabihf)

if want aarch64 || want armv7 || want x86_64; then
  step "checking Debian packages"
  missing=()
  for p in "${BASE_PKGS[@]}"; do [ -n "$(pkg_version "$p")" ] || missing+=("$p"); done
  rustc_ver="$(pkg_version rustc-web)"
  std_ver="$(pkg_version libstd-rust-web-dev:arm64)"
  if [ -n "$rustc_ver" ] && [ -n "$std_ver" ] && [ "$rustc_ver" != "$std_ver" ]; then
    missing+=("libstd-rust-web-dev:arm64")
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    need_root "${missing[@]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
      echo "adding dpkg architecture arm64"
      dpkg --add-architecture arm64
    fi
    apt_update_once
    step "installing ${missing[*]}"
    apt_install "${BASE_PKGS[@]}" || die "apt-get install failed (log: target/cross-apt.log)"
    rustc_ver="$(pkg_version rustc-web)"
    std_ver="$(pkg_version libstd-rust-web-dev:arm64)"
    if [ "$rustc_ver" != "$std_ver" ]; then
      apt_install "libstd-rust-web-dev:arm64=$rustc_ver" "libstd-rust-web-dev=$rustc_ver" || true
      std_ver="$(pkg_version libstd-rust-web-dev:arm64)"
    fi
  fi
  echo "rustup toolchain: $(rustc --version)"
  echo "Debian toolchain: $($DEBIAN_RUSTC --version) (rustc-web $rustc_ver, arm64 std $std_ver)"
fi

# armv7: try, and skip with the reason when Debian's armhf std does not match.
ARMV7_SKIP=""
if want armv7; then
  step "checking the armhf standard library for armv7"
  rustc_ver="$(pkg_version rustc-web)"
  armhf_std="$(pkg_version libstd-rust-web-dev:armhf)"
  if [ "$armhf_std" != "$rustc_ver" ] || [ -z "$(pkg_version gcc-arm-linux-gnueabihf)" ] \
     || [ -z "$(pkg_version libc6-dev-armhf-cross)" ]; then
    if [ "$INSTALL" = 0 ] || [ "$(id -u)" != 0 ]; then
      ARMV7_SKIP="libstd-rust-web-dev:armhf ${armhf_std:-not installed} does not match rustc-web $rustc_ver (or the armhf cross gcc is missing), and installing is not allowed here (--no-install or not root)"
    else
      added_armhf=0
      if ! dpkg --print-foreign-architectures | grep -qx armhf; then
        echo "adding dpkg architecture armhf (removed again if armv7 cannot be built)"
        dpkg --add-architecture armhf
        added_armhf=1
      fi
      # A second update: the armhf indexes are fetched only now, so that a
      # broken armhf index cannot take the arm64 one down with it (apt drops
      # every new index of a suite when one of its files fails).
      apt-get update > "$ROOT/target/cross-apt-update-armhf.log" 2>&1 || true
      armhf_err="$(grep -E '^E: .*armhf' "$ROOT/target/cross-apt-update-armhf.log" | head -1 || true)"
      cand="$(candidate libstd-rust-web-dev:armhf)"
      if [ "$cand" = "$rustc_ver" ]; then
        step "installing ${ARMV7_PKGS[*]}"
        apt_install "libstd-rust-web-dev:armhf=$rustc_ver" "${ARMV7_PKGS[@]:1}" \
          || ARMV7_SKIP="apt-get install of the armhf std / cross gcc failed (log: target/cross-apt.log)"
      else
        ARMV7_SKIP="Debian offers libstd-rust-web-dev:armhf ${cand:-(none)} but rustc-web is $rustc_ver; rustc only links a std built by its own exact version (error E0514), and rustup cannot download the armv7 std here"
        if [ -n "$armhf_err" ]; then ARMV7_SKIP+=". apt-get update said: $armhf_err"; fi
      fi
      if [ -n "$ARMV7_SKIP" ] && [ "$added_armhf" = 1 ] \
         && ! { dpkg-query -W -f='${Architecture}\n' 2>/dev/null || true; } | grep -qx armhf; then
        # Leave apt as we found it: a failing armhf index makes apt discard
        # the whole suite's new indexes (arm64 included) on every update.
        dpkg --remove-architecture armhf
        apt-get update > "$ROOT/target/cross-apt-update.log" 2>&1 || true
      fi
    fi
  fi
fi

# --- builds -----------------------------------------------------------------

# build_rustup TRIPLE: the rustup toolchain, output lands in target/TRIPLE/release.
build_rustup() {
  local triple="$1"
  step "building $triple with $(rustc --version) (static; cargo prints progress)"
  RUSTFLAGS="$STATIC_FLAGS" cargo build --release --locked --target "$triple" \
    "${CARGO_SEL[@]}" || return 1
}

# build_debian TRIPLE GCC_PREFIX: Debian's rustc-web, copied to target/TRIPLE/release.
build_debian() {
  local triple="$1" gcc="$2" env_triple
  env_triple="$(echo "$triple" | tr 'a-z-' 'A-Z_')"
  step "building $triple with $($DEBIAN_RUSTC --version) (static; cargo prints progress)"
  env RUSTC="$DEBIAN_RUSTC" RUSTFLAGS="$STATIC_FLAGS" \
    "CARGO_TARGET_${env_triple}_LINKER=${gcc}-gcc" \
    "CC_${triple//-/_}=${gcc}-gcc" "AR_${triple//-/_}=${gcc}-ar" \
    "$DEBIAN_CARGO" build --release --locked --target "$triple" \
    --target-dir "$DEBIAN_TARGET_DIR" "${CARGO_SEL[@]}" || return 1
  mkdir -p "target/$triple/release"
  for b in "${BINS[@]}"; do
    install -m 0755 "$DEBIAN_TARGET_DIR/$triple/release/$b" "target/$triple/release/$b" || return 1
  done
}

if want x86_64; then
  s=$(date +%s)
  build_rustup x86_64-unknown-linux-gnu || die "x86_64 build failed"
  RESULT[x86_64]="built in $(( $(date +%s) - s ))s"
fi
if want aarch64; then
  s=$(date +%s)
  build_debian aarch64-unknown-linux-gnu aarch64-linux-gnu || die "aarch64 build failed"
  RESULT[aarch64]="built in $(( $(date +%s) - s ))s"
fi
if want armv7; then
  if [ -n "$ARMV7_SKIP" ]; then
    RESULT[armv7]="SKIPPED: $ARMV7_SKIP"
  else
    s=$(date +%s)
    if build_debian armv7-unknown-linux-gnueabihf arm-linux-gnueabihf; then
      RESULT[armv7]="built in $(( $(date +%s) - s ))s"
    else
      # Its std is installed, so this is a real failure (e.g. code that does
      # not compile on 32-bit): reported, and the script fails at the end.
      RESULT[armv7]="FAILED although its std is installed (see the compiler output above)"
    fi
  fi
fi

# --- sizes, linkage, budget -------------------------------------------------

step "binaries"
strip_for() {
  case "$1" in
    aarch64*) echo aarch64-linux-gnu-strip ;;
    armv7*) echo arm-linux-gnueabihf-strip ;;
    *) echo strip ;;
  esac
}
fail=0
BUDGET_LINES=()
printf '%-32s %-20s %12s %10s  %s\n' TARGET BINARY BYTES MIB LINKAGE
for t in x86_64 aarch64 armv7; do
  case "$t" in
    x86_64) triple=x86_64-unknown-linux-gnu ;;
    aarch64) triple=aarch64-unknown-linux-gnu ;;
    armv7) triple=armv7-unknown-linux-gnueabihf ;;
  esac
  want "$t" || continue
  [[ "${RESULT[$t]:-}" == built* ]] || continue
  for b in "${BINS[@]}"; do
    f="target/$triple/release/$b"
    [ -f "$f" ] || die "$f was not produced"
    # The release profile strips already; strip a copy to measure what ships.
    "$(strip_for "$triple")" -o "$f.stripped" "$f"
    size=$(stat -c %s "$f.stripped")
    rm -f "$f.stripped"
    if readelf -l "$f" 2>/dev/null | grep -q 'Requesting program interpreter'; then
      link="dynamic"
    else
      link="static"
    fi
    printf '%-32s %-20s %12d %10s  %s\n' "$triple" "$b" "$size" \
      "$(awk -v s="$size" 'BEGIN{printf "%.2f", s/1048576}')" "$link"
    if [ "$b" = outpost-agent ]; then
      case "$t" in
        aarch64) budget=$AGENT_SIZE_BUDGET_BYTES var=AGENT_SIZE_BUDGET_BYTES ;;
        armv7) budget=$ARMV7_AGENT_SIZE_BUDGET_BYTES var=ARMV7_AGENT_SIZE_BUDGET_BYTES ;;
        *) budget="" ;;
      esac
      if [ -n "$budget" ]; then
        if [ "$size" -gt "$budget" ]; then
          line="SIZE BUDGET EXCEEDED: stripped $t outpost-agent is $size bytes, budget $budget bytes ($var in cross/build.sh)"
          echo "$line" >&2
          fail=1
        else
          line="size budget: stripped $t outpost-agent $size bytes <= $budget bytes ($(( size * 100 / budget ))% used)"
        fi
        BUDGET_LINES+=("$line")
      fi
    fi
  done
done

step "summary"
for t in x86_64 aarch64 armv7; do
  want "$t" || continue
  echo "$t: ${RESULT[$t]:-not built}"
  [[ "${RESULT[$t]:-}" == FAILED* ]] && fail=1
done
for line in "${BUDGET_LINES[@]}"; do echo "$line"; done
echo "total: $(( $(date +%s) - T0 ))s"
exit "$fail"
