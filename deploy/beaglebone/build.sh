#!/usr/bin/env bash
# Cross-build everything a BeagleBone Black (armhf, Cortex-A8) needs, from x86_64,
# into dist/beaglebone/:
#   reshaper-VER-cp311-cp311-linux_armv7l.whl   the cffi extension (reshaper._native), ARM EABI5;
#                                                the appliance only (no reshaper.bench, no reshaper.lab)
#   reshaper-VER-KREL.ko                         the module for one kernel (default: the newest
#                                                Debian armmp release in apt's lists)
#   dkms/reshaper-VER/                           module sources + dkms.conf (rebuilt on the board)
#   reshaper-beaglebone-VER.tar.gz               bundle: all of the above, install.sh (and
#                                                reshaper-vlans, which makes the VLAN interfaces),
#                                                reshaper.service (and reshaper-xdp.conf, its
#                                                drop-in for XDP mode; reshaper-nfqueue.modules
#                                                and .sysctl, what nfqueue mode loads and sets),
#                                                an example rule file
#   reshaper_VER_armhf.deb, reshaper-dkms_VER_all.deb, reshaper-modules-KREL_VER_armhf.deb
#                                                the same as Debian packages, for apt
#                                                (deploy/debian/build-debs.sh; the last one
#                                                holds the module, unless --no-module)
#
#   deploy/beaglebone/build.sh [--kernel-release 6.1.0-50-armmp | --kernel-headers DIR]
#                              [--no-module] [--out DIR]
#
# Idempotent. Debian packages (armhf libpython headers, libxdp and libbpf, armmp kernel
# headers) are fetched with `apt-get download` and unpacked with `dpkg -x` (never installed:
# installing armhf kernel headers through apt would remove the host gcc), cached in
# ~/.cache/reshaper/armhf (RESHAPER_ARMHF_CACHE). Needs: gcc-arm-linux-gnueabihf, clang,
# dpkg --add-architecture armhf + apt-get update (done here when missing), the
# project's .venv (make setup) for cffi/setuptools.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RESHAPER_ARMHF_CACHE:-$HOME/.cache/reshaper/armhf}
OUT=$REPO/dist/beaglebone
PY=${PYTHON:-$REPO/.venv/bin/python}
CROSS=arm-linux-gnueabihf-
KREL= KHEADERS= MODULE=1
while [ $# -gt 0 ]; do
  case $1 in
    --kernel-release) KREL=$2; shift 2 ;;
    --kernel-headers) KHEADERS=$2; shift 2 ;;
    --no-module) MODULE=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;   # the header, however long
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf '[build %5.1fs] %s\n' "$SECONDS" "$*"; }
die() { echo "build.sh: $*" >&2; exit 1; }

command -v ${CROSS}gcc >/dev/null || die "no ${CROSS}gcc: apt-get install gcc-arm-linux-gnueabihf"
[ -x "$PY" ] || die "no $PY: run make setup first"
mkdir -p "$CACHE/debs" "$OUT"

# ---------------------------------------------------------------- Debian packages
ensure_armhf_apt() {
  if ! dpkg --print-foreign-architectures | grep -qx armhf; then
    dpkg --add-architecture armhf
    apt-get -q update || true   # a half-synced mirror index must not stop us
  fi
  apt-cache show libpython3.11-dev:armhf >/dev/null 2>&1 || apt-get -q update || true
}

# deb NAME[=VERSION] -> path of the cached .deb (downloaded once)
deb() {
  local spec=$1 name=${1%%=*} base f
  base=${name%%:*}
  f=$(ls "$CACHE"/debs/"${base}"_*.deb 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$f" ]; then
    ensure_armhf_apt
    (cd "$CACHE/debs" && apt-get -q -o APT::Sandbox::User=root download "$spec" >&2) \
      || die "apt-get download $spec failed"
    f=$(ls "$CACHE"/debs/"${base}"_*.deb | sort -V | tail -1)
  fi
  echo "$f"
}

# unpack DEST PKG... : dpkg -x into DEST atomically
unpack() {
  local dest=$1; shift
  [ -d "$dest" ] && return 0
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  local p; for p in "$@"; do dpkg -x "$(deb "$p")" "$dest.tmp"; done
  mv "$dest.tmp" "$dest"
}

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")
[ -n "$VERSION" ] || die "no version in pyproject.toml"

# ---------------------------------------------------------------- (a) the wheel
log "wheel: armhf libpython 3.11 headers and sysconfig"
SYSROOT=$CACHE/python3.11-armhf
unpack "$SYSROOT" libpython3.11-dev:armhf libpython3.11-stdlib:armhf libpython3.11-minimal:armhf
SYSCFG_DIR=$SYSROOT/usr/lib/python3.11
SYSCFG=$(basename "$(ls "$SYSCFG_DIR"/_sysconfigdata__linux_arm-linux-gnueabihf.py)" .py)
# a folder with only the sysconfigdata: the armhf stdlib must not shadow the host's
SYSCFG_ONLY=$CACHE/sysconfigdata
mkdir -p "$SYSCFG_ONLY"; cp -L "$SYSCFG_DIR/$SYSCFG.py" "$SYSCFG_ONLY/"
HOST_PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$HOST_PYVER" = 3.11 ] || die "the build Python must be 3.11 (is $HOST_PYVER): the wheel is cp311"

# Build from a snapshot of the working tree (tracked and new files, not what
# .gitignore or dist/ holds): its build/ and egg-info belong to the x86 install.
SRC=$CACHE/src
rm -rf "$SRC"; mkdir -p "$SRC"
(cd "$REPO" && git ls-files -z -co --exclude-standard | grep -zv '^dist/' | xargs -0 tar cf - --ignore-failed-read 2>/dev/null) | tar xf - -C "$SRC"
WHEELS=$CACHE/wheels; rm -rf "$WHEELS"; mkdir -p "$WHEELS"
# cross_wheel DIR LOG [CFLAGS [LDFLAGS]]: pip wheel of a source tree, for armhf CPython 3.11
cross_wheel() {
  (
    cd "$1"
    # sysconfig of the armhf interpreter: compiler, flags, platform (linux-armv7l)
    export _PYTHON_SYSCONFIGDATA_NAME=$SYSCFG
    export _PYTHON_HOST_PLATFORM=linux-armv7l
    export PYTHONPATH=$SYSCFG_ONLY
    export CC="${CROSS}gcc" LDSHARED="${CROSS}gcc -shared" AR="${CROSS}ar"
    # Debian's /usr/include/python3.11/pyconfig.h picks <arm-linux-gnueabihf/python3.11/pyconfig.h>
    export CFLAGS="-I$SYSROOT/usr/include/python3.11 -I$SYSROOT/usr/include -march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard ${3:-}"
    export LDFLAGS="${4:-}"
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . 2>&1 | grep -v "^$" || true
  ) >"$2" 2>&1 || true
}
# XDP mode (reshaper/_ffi_build.py): the extension links Debian's armhf libxdp and libbpf, and
# through them libelf and zlib (the board installs libxdp1 and libbpf1: install.sh); the XDP
# program is compiled by this machine's clang, with this machine's headers (a BPF object is the
# same whichever machine it is for)
log "wheel: armhf libxdp and libbpf"
command -v clang >/dev/null || die "no clang (XDP mode's program): apt-get install clang"
XDP_ROOT=$CACHE/xdp-armhf
unpack "$XDP_ROOT" libxdp-dev:armhf libxdp1:armhf libbpf-dev:armhf libbpf1:armhf libelf1:armhf zlib1g:armhf
XDP_CFLAGS="-I$XDP_ROOT/usr/include"
XDP_LDFLAGS="-L$XDP_ROOT/usr/lib/arm-linux-gnueabihf"
for d in "$XDP_ROOT"/usr/lib/arm-linux-gnueabihf "$XDP_ROOT"/lib/arm-linux-gnueabihf; do
  [ ! -d "$d" ] || XDP_LDFLAGS="$XDP_LDFLAGS -Wl,-rpath-link,$d"   # libbpf's own libelf and libz
done
log "wheel: building with ${CROSS}gcc"
# the appliance only: no benchmark, no test lab (setup.py), so no matplotlib either
RESHAPER_APPLIANCE_ONLY=1 cross_wheel "$SRC" "$CACHE/wheel-build.log" "$XDP_CFLAGS" "$XDP_LDFLAGS"
WHEEL=$(ls "$WHEELS"/reshaper-"$VERSION"-cp311-cp311-linux_armv7l.whl 2>/dev/null || true)
[ -n "$WHEEL" ] || { cat "$CACHE/wheel-build.log"; die "no armhf wheel built"; }
# arm_wheel_check WHEEL N: the wheel holds N shared objects, each ARM EABI5 hard-float
arm_wheel_check() {
  local check nso=0 so hdr
  check=$(mktemp -d)
  (cd "$check" && "$PY" -m zipfile -e "$1" .)
  for so in $(find "$check" -name '*.so'); do
    nso=$((nso + 1))
    hdr=$(readelf -h "$so")
    grep -q "Machine:.*ARM" <<<"$hdr" && grep -q "Flags:.*Version5 EABI.*hard-float" <<<"$hdr" \
      || { rm -rf "$check"; die "$(basename "$so") is not an ARM EABI5 hard-float object"; }
    log "wheel: ${so#$check/}: $(file -b "$so" | cut -d, -f1-3)"
  done
  rm -rf "$check"
  [ "$nso" -eq "$2" ] || die "expected $2 extensions in $(basename "$1"), found $nso"
}
arm_wheel_check "$WHEEL" 1   # reshaper._native: engine and ring in one (reshaper/_ffi_build.py)
# _ffi_build.py builds without XDP mode where the compiler cannot link libxdp and libbpf: here
# that would be a board that says "no AF_XDP", so the build stops and shows the linker's reason
xdp_check() {
  local check needed
  check=$(mktemp -d)
  (cd "$check" && "$PY" -m zipfile -e "$WHEEL" .)
  needed=$(readelf -d "$check"/reshaper/_native*.so | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  rm -rf "$check"
  if [[ " $needed" != *" libxdp.so.1 "* || " $needed" != *" libbpf.so.1 "* ]]; then
    echo "the extension needs: $needed" >&2
    echo "${CROSS}gcc linking -lxdp -lbpf as reshaper/_ffi_build.py tries it:" >&2
    # shellcheck disable=SC2086  # flag lists
    printf '#include <xdp/xsk.h>\n#include <bpf/libbpf.h>\nint main(void) { return 0; }\n' \
      | ${CROSS}gcc -I"$SYSROOT/usr/include" $XDP_CFLAGS -x c - -o /dev/null $XDP_LDFLAGS -lxdp -lbpf >&2 || true
    die "the wheel was built without XDP mode (no libxdp.so.1 and libbpf.so.1 in its extension)"
  fi
  log "wheel: XDP mode in; the extension needs $needed"
}
xdp_check
grep -qE '^reshaper/(bench|lab)/' <<<"$("$PY" -m zipfile -l "$WHEEL")" && die "the wheel carries reshaper/bench or reshaper/lab"
rm -f "$OUT"/reshaper-*-linux_armv7l.whl
cp "$WHEEL" "$OUT/"
WHEEL=$OUT/$(basename "$WHEEL")
log "wheel: $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"

# pure-Python dependencies as wheels, the versions this tree is tested with
DEPS=$CACHE/pydeps
rm -rf "$OUT/deps"
bash "$REPO/deploy/pure-python-deps.sh" "$OUT/deps" "$DEPS"
# netfilterqueue (--mode nfqueue) is compiled: cross-built from its sdist against Debian's
# armhf libnetfilter-queue (the board needs libnetfilter-queue1, which install.sh installs)
NFQ_VER=$("$PY" -c "import importlib.metadata as m; print(m.version('NetfilterQueue'))")
NFQ_SDIST=$(ls "$DEPS"/[Nn]etfilter[Qq]ueue-"$NFQ_VER".tar.gz 2>/dev/null | head -1 || true)
if [ -z "$NFQ_SDIST" ]; then
  "$PY" -m pip download -q --no-deps --no-binary=:all: --dest "$DEPS" "NetfilterQueue==$NFQ_VER" >&2
  NFQ_SDIST=$(ls "$DEPS"/[Nn]etfilter[Qq]ueue-"$NFQ_VER".tar.gz | head -1)
fi
NFQ_ROOT=$CACHE/netfilter-queue-armhf
unpack "$NFQ_ROOT" libnetfilter-queue-dev:armhf libnetfilter-queue1:armhf libnfnetlink-dev:armhf \
  libnfnetlink0:armhf libmnl0:armhf
NFQ_SRC=$CACHE/netfilterqueue-src
rm -rf "$NFQ_SRC"; mkdir -p "$NFQ_SRC"
tar xzf "$NFQ_SDIST" -C "$NFQ_SRC" --strip-components=1
# the sdist's pre-generated _impl.c predates Python 3.11: regenerate it with Cython here
# (a build-time tool on x86_64; the cross build below then compiles only C)
CYTHON=$CACHE/cython-3.0
[ -d "$CYTHON" ] || { "$PY" -m pip install -q --target "$CYTHON.tmp" "Cython>=3.0,<3.1" >&2 && mv "$CYTHON.tmp" "$CYTHON"; }
(cd "$NFQ_SRC" && PYTHONPATH=$CYTHON "$PY" -m cython --3str netfilterqueue/_impl.pyx -o netfilterqueue/_impl.c) \
  || die "cython failed on NetfilterQueue"
NFQ_LIB=$NFQ_ROOT/usr/lib/arm-linux-gnueabihf
cross_wheel "$NFQ_SRC" "$CACHE/netfilterqueue-build.log" "-I$NFQ_ROOT/usr/include" \
  "-L$NFQ_LIB -Wl,-rpath-link,$NFQ_LIB"
NFQ_WHEEL=$(ls "$WHEELS"/[Nn]etfilter[Qq]ueue-"$NFQ_VER"-cp311-cp311-linux_armv7l.whl 2>/dev/null || true)
[ -n "$NFQ_WHEEL" ] || { cat "$CACHE/netfilterqueue-build.log"; die "no armhf NetfilterQueue wheel built"; }
arm_wheel_check "$NFQ_WHEEL" 1
cp "$NFQ_WHEEL" "$OUT/deps/"
log "deps: $(cd "$OUT/deps" && echo *)"

# ---------------------------------------------------------------- (b) the module
DKMS=$OUT/dkms/reshaper-$VERSION
rm -rf "$OUT/dkms"; mkdir -p "$OUT/dkms"
make -s -C "$REPO/kmod" dkms-src DEST="$DKMS"
sed -i "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$VERSION\"/" "$DKMS/dkms.conf"
log "dkms: source tree $DKMS"

# KREL=6.1.0-50-armmp -> unpacked, fixed headers tree; prints KDIR
armmp_kdir() {
  local krel=$1 abi=${1%-armmp} root ver
  root=$CACHE/kernel/$krel/headers
  if [ ! -d "$root" ]; then
    local hdeb; hdeb=$(deb "linux-headers-$krel:armhf")
    ver=$(dpkg-deb -f "$hdeb" Version)
    # host-side kbuild tools (fixdep, modpost) run on x86_64: the amd64 package,
    # same upstream version as the headers
    [ -e "$(ls "$CACHE"/debs/linux-kbuild-6.1_"$ver"_amd64.deb 2>/dev/null)" ] \
      || (cd "$CACHE/debs" && apt-get -q -o APT::Sandbox::User=root download "linux-kbuild-6.1:amd64=$ver" >&2)
    unpack "$root" "linux-headers-$krel:armhf" "linux-headers-$abi-common"
    dpkg -x "$CACHE/debs/linux-kbuild-6.1_${ver}_amd64.deb" "$root"
  fi
  local tree=$root/usr/src/linux-headers-$krel
  # "include /usr/src/linux-headers-X-common/Makefile" -> the unpacked one
  sed -i -E "s#^include \S*/usr/src/#include $root/usr/src/#" "$tree/Makefile"
  echo "$tree"
}

# the armmp release Debian's linux-image-armmp points at in apt's lists (the one a board
# gets on its next upgrade); the newest cached one only when apt names none
default_krel() {
  local krel cached
  ensure_armhf_apt
  krel=$(apt-cache depends linux-image-armmp:armhf 2>/dev/null \
    | sed -n 's/.*Depends: linux-image-\(.*-armmp\)$/\1/p' | head -1)
  if [ -z "$krel" ]; then
    cached=$(ls -d "$CACHE"/kernel/*-armmp 2>/dev/null | sort -V | tail -1 || true)
    [ -z "$cached" ] || { krel=$(basename "$cached"); log "apt names no armmp kernel: using the cached $krel" >&2; }
  fi
  echo "$krel"
}

KO=
if [ "$MODULE" = 1 ]; then
  if [ -n "$KHEADERS" ]; then
    KDIR=$(cd "$KHEADERS" && pwd)
    # the release modules get as vermagic: UTS_RELEASE (on Debian's headers `make kernelrelease`
    # and include/config/kernel.release say the upstream 6.1.176, not 6.1.0-50-armmp)
    KREL=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"/\1/p' "$KDIR/include/generated/utsrelease.h" 2>/dev/null || true)
    [ -n "$KREL" ] || die "$KDIR: no include/generated/utsrelease.h (not a prepared kernel headers tree)"
  else
    KREL=${KREL:-$(default_krel)}
    [ -n "$KREL" ] || die "cannot find the armmp kernel release (apt-cache depends linux-image-armmp:armhf)"
    case $KREL in *-armmp) ;; *) die "--kernel-release: only Debian armmp releases can be fetched; use --kernel-headers DIR" ;; esac
    log "module: headers for $KREL"
    KDIR=$(armmp_kdir "$KREL")
  fi
  KB=$CACHE/kmod-build/$KREL
  rm -rf "$KB"; mkdir -p "$KB"; cp -r "$DKMS"/. "$KB"/
  log "module: make -C $KDIR M=... ARCH=arm CROSS_COMPILE=$CROSS"
  make -C "$KDIR" M="$KB" ARCH=arm CROSS_COMPILE=$CROSS modules >"$KB/build.log" 2>&1 \
    || { cat "$KB/build.log"; die "module build failed"; }
  ! grep -q "warning:" "$KB/build.log" || { grep "warning:" "$KB/build.log"; die "module build warnings"; }
  readelf -h "$KB/reshaper.ko" | grep -q "Machine:.*ARM" || die "reshaper.ko is not ARM"
  vermagic=$(modinfo -F vermagic "$KB/reshaper.ko")
  [ "${vermagic%% *}" = "$KREL" ] || die "module built for ${vermagic%% *}, expected $KREL"
  KO=$OUT/reshaper-$VERSION-$KREL.ko
  rm -f "$OUT"/reshaper-*.ko
  ${CROSS}strip --strip-debug -o "$KO" "$KB/reshaper.ko"
  log "module: $(basename "$KO"), vermagic: $(modinfo -F vermagic "$KO")"
fi

# ---------------------------------------------------------------- (c) the bundle
NAME=reshaper-beaglebone-$VERSION
B=$CACHE/bundle/$NAME
rm -rf "$CACHE/bundle"; mkdir -p "$B/module"
cp "$WHEEL" "$B/"
cp -r "$OUT/deps" "$B/deps"
[ -z "$KO" ] || cp "$KO" "$B/module/"
mkdir -p "$B/dkms" && cp -r "$DKMS" "$B/dkms/"   # dkms/reshaper-VERSION, as install.sh takes it
cp "$HERE/install.sh" "$HERE/reshaper-vlans" "$HERE/reshaper.service" "$HERE/reshaper-xdp.conf" \
  "$HERE/reshaper-nfqueue.modules" "$HERE/reshaper-nfqueue.sysctl" "$B/"
cp "$HERE/rules.example.yaml" "$B/rules.example.yaml"
[ ! -f "$HERE/README.md" ] || cp "$HERE/README.md" "$B/README.md"
chmod +x "$B/install.sh" "$B/reshaper-vlans"
{ echo "version=$VERSION"; echo "wheel=$(basename "$WHEEL")"
  echo "module=${KO:+module/$(basename "$KO")}"; echo "kernel=${KREL:-}"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"; } >"$B/BUILD-INFO"
tar czf "$OUT/$NAME.tar.gz.tmp" -C "$CACHE/bundle" "$NAME"
mv "$OUT/$NAME.tar.gz.tmp" "$OUT/$NAME.tar.gz"
log "bundle: $OUT/$NAME.tar.gz ($(du -k "$OUT/$NAME.tar.gz" | cut -f1) KiB)"

# ---------------------------------------------------------------- (d) the Debian packages
rm -f "$OUT"/reshaper_*.deb "$OUT"/reshaper-dkms_*.deb "$OUT"/reshaper-modules-*.deb
DEBS=$(bash "$REPO/deploy/debian/build-debs.sh" --wheel "$WHEEL" --deps "$OUT/deps" --dkms "$DKMS" \
         ${KO:+--module "$KO"} --out "$OUT" --strip "${CROSS}strip")
for d in $DEBS; do
  log "package: $d ($(du -k "$d" | cut -f1) KiB)"
done
