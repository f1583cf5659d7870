#!/usr/bin/env bash
# Debian packages from what deploy/beaglebone/build.sh built (it runs this last):
#   reshaper_VER_ARCH.deb     the appliance: the wheel and its private Python dependencies in
#                             /usr/lib/reshaper, /usr/bin/reshaper,
#                             /usr/libexec/reshaper/reshaper-vlans, the unit (installed disabled),
#                             its man page; Debian's python3, cffi backend, PyYAML, libxdp, libbpf
#                             and libnetfilter-queue as dependencies
#   reshaper-dkms_VER_all.deb the module's sources in /usr/src/reshaper-VER for DKMS
#   reshaper-modules-KREL_VER_ARCH.deb
#                             with --module KO: that module, built for the kernel release KREL
#                             (its vermagic), for boards without a compiler or the kernel's
#                             headers; named as module-assistant names its packages
#
#   deploy/debian/build-debs.sh --wheel WHL --deps DIR --dkms DIR --out DIR
#                               [--module KO] [--version V] [--strip STRIP]
#
# ARCH comes from the wheel's platform tag (linux_armv7l: armhf, linux_x86_64: amd64). --version
# gives the packages another version than the wheel's (an older package to upgrade from, in
# tests/armhf/test_board_deploy.py). Built with dpkg-deb, as root:root, files dated at the
# commit (SOURCE_DATE_EPOCH): the same tree gives the same packages.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BB=$REPO/deploy/beaglebone
WHEEL= DEPS= DKMS= OUT= MODULE= VERSION= STRIP=strip
while [ $# -gt 0 ]; do
  case $1 in
    --wheel) WHEEL=$2; shift 2 ;;
    --deps) DEPS=$2; shift 2 ;;
    --dkms) DKMS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --module) MODULE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --strip) STRIP=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;   # the header, however long
    *) echo "build-debs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "build-debs.sh: $*" >&2; exit 1; }
[ -f "$WHEEL" ] && [ -d "$DEPS" ] && [ -d "$DKMS" ] && [ -n "$OUT" ] \
  || die "needs --wheel FILE --deps DIR --dkms DIR --out DIR"
PY=${PYTHON:-$REPO/.venv/bin/python}
whl=$(basename "$WHEEL")
case $whl in
  *-linux_armv7l.whl) ARCH=armhf ;;
  *-linux_x86_64.whl) ARCH=amd64 ;;
  *) die "$whl: no Debian architecture for its platform tag" ;;
esac
VERSION=${VERSION:-$(cut -d- -f2 <<<"$whl")}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
umask 022
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$OUT"

# doc PKG ROOT: copyright and a changelog for this version, as policy wants them
doc() {
  local d=$2/usr/share/doc/$1
  mkdir -p "$d"
  cp "$HERE/copyright" "$d/copyright"
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from commit %s of the reshaper repository.\n\n -- %s  %s\n' \
    "$1" "$VERSION" "$COMMIT" "reshaper developers <reshaper@packages.invalid>" \
    "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$d/changelog.gz"
}

# fill FILE: a template of ours with the version, architecture and kernel release filled in
fill() {
  sed -e "s/@VERSION@/$VERSION/g" -e "s/@ARCH@/$ARCH/g" -e "s/@KREL@/${KREL:-}/g" "$1"
}

# script NAME TEMPLATE ROOT: a maintainer script of ours, filled in
script() {
  [ -f "$HERE/$2.$1" ] || return 0
  fill "$HERE/$2.$1" >"$3/DEBIAN/$1"
  chmod 0755 "$3/DEBIAN/$1"
}

# pack PKG ROOT [TEMPLATE]: control file, md5sums, dates; dpkg-deb. TEMPLATE names our
# PKG.control and maintainer scripts when PKG's name is not fixed (default: PKG)
pack() {
  local pkg=$1 root=$2 template=${3:-$1} arch deb size
  find "$root" -type d -exec chmod 0755 {} +
  mkdir -p "$root/DEBIAN"
  for s in postinst prerm postrm; do script "$s" "$template" "$root"; done
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum >DEBIAN/md5sums)
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  fill "$HERE/$template.control" | sed "s/@INSTALLED_SIZE@/$size/g" >"$root/DEBIAN/control"
  [ ! -f "$root/etc/reshaper/reshaper.env" ] || echo /etc/reshaper/reshaper.env >"$root/DEBIAN/conffiles"
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums" "$root"/DEBIAN/conffiles 2>/dev/null || true
  find "$root" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  arch=$(sed -n 's/^Architecture: //p' "$root/DEBIAN/control")
  deb=$OUT/${pkg}_${VERSION}_$arch.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
  echo "$deb"
}

# ---------------------------------------------------------------- reshaper
R=$STAGE/reshaper
LIB=$R/usr/lib/reshaper
mkdir -p "$LIB"
for w in "$WHEEL" "$DEPS"/*.whl; do
  "$PY" -m zipfile -e "$w" "$LIB"
done
# what the wheels hold besides their modules: scapy's man page (*.data) and license files, which
# copyright gives
rm -rf "$LIB"/*.data
find "$LIB" -path '*.dist-info/*' \( -name 'LICENSE*' -o -name 'COPYING*' -o -name licenses \) -prune \
  -exec rm -rf {} +
find "$LIB" -type d -name __pycache__ -prune -exec rm -rf {} +
find "$LIB" -type f -exec chmod 0644 {} +
# modules, not scripts: a "#!" line of theirs (python, not python3) goes, its line kept blank
grep -rlZ --include='*.py' -m1 '^#!' "$LIB" | xargs -0 -r sed -i '1s/^#!.*$//'
find "$LIB" -name '*.so' -exec "$STRIP" --strip-unneeded --remove-section=.comment --remove-section=.note {} +
install -D -m 0755 "$HERE/reshaper" "$R/usr/bin/reshaper"
# the unit the bundle installs (deploy/beaglebone/reshaper.service), run from the package's paths
mkdir -p "$R/lib/systemd/system"
sed -e 's#/opt/reshaper/venv/bin/reshaper#/usr/bin/reshaper#g' \
  -e 's#^Documentation=.*#Documentation=man:reshaper(1) file:///usr/share/doc/reshaper/README.md#' \
  "$BB/reshaper.service" >"$R/lib/systemd/system/reshaper.service"
! grep -q /opt/ "$R/lib/systemd/system/reshaper.service" || die "the unit still names /opt"
install -D -m 0644 "$BB/reshaper-xdp.conf" "$R/usr/share/reshaper/xdp.conf"
# what makes the VLAN interfaces, as the bundle's install.sh does (the Ansible role runs it)
install -D -m 0755 "$BB/reshaper-vlans" "$R/usr/libexec/reshaper/reshaper-vlans"
install -D -m 0644 "$BB/reshaper-nfqueue.modules" "$R/usr/share/reshaper/nfqueue-modules.conf"
install -D -m 0644 "$BB/reshaper-nfqueue.sysctl" "$R/usr/share/reshaper/nfqueue-sysctl.conf"
# the modules every mode needs at boot (the service has no CAP_SYS_MODULE), as install.sh loads them
install -d "$R/usr/lib/modules-load.d"
printf '8021q\nbridge\n' >"$R/usr/lib/modules-load.d/reshaper.conf"
install -d "$R/etc/reshaper"
printf '# the mode the service runs in: ring, xdp, nfqueue or kernel (reshaper(1))\nRESHAPER_MODE=ring\n' \
  >"$R/etc/reshaper/reshaper.env"
doc reshaper "$R"
install -m 0644 "$BB/README.md" "$R/usr/share/doc/reshaper/README.md"
install -D -m 0644 "$BB/rules.example.yaml" "$R/usr/share/doc/reshaper/examples/rules.example.yaml"
install -d "$R/usr/share/man/man1"
gzip -9n <"$HERE/reshaper.1" >"$R/usr/share/man/man1/reshaper.1.gz"
# the versions the copyright file names
ver() { sed -n 's/^Version: //p' "$LIB"/"$1"-*.dist-info/METADATA; }
sed -i -e "s/@SCAPY@/$(ver scapy)/" -e "s/@PYROUTE2@/$(ver pyroute2)/" \
  -e "s/@PROMETHEUS_CLIENT@/$(ver prometheus_client)/" -e "s/@NETFILTERQUEUE@/$(ver netfilterqueue)/" \
  "$R/usr/share/doc/reshaper/copyright"
pack reshaper "$R"

# ---------------------------------------------------------------- reshaper-dkms
D=$STAGE/reshaper-dkms
mkdir -p "$D/usr/src"
cp -r "$DKMS" "$D/usr/src/reshaper-$VERSION"
sed -i "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$VERSION\"/" "$D/usr/src/reshaper-$VERSION/dkms.conf"
find "$D/usr/src" -type f -exec chmod 0644 {} +
doc reshaper-dkms "$D"
pack reshaper-dkms "$D"

# ---------------------------------------------------------------- reshaper-modules-KREL
if [ -n "$MODULE" ]; then
  [ -f "$MODULE" ] || die "--module $MODULE: no such file"
  # the release the module loads into is its vermagic's first word, as install.sh compares it
  KREL=$(modinfo -F vermagic "$MODULE" | cut -d' ' -f1)
  [ -n "$KREL" ] || die "--module $MODULE: no vermagic"
  case $ARCH:$(readelf -h "$MODULE" | sed -n 's/^ *Machine: *//p') in
    armhf:ARM|amd64:*X86-64) ;;
    *) die "--module $MODULE: not a module for $ARCH" ;;
  esac
  M=$STAGE/reshaper-modules
  install -D -m 0644 "$MODULE" "$M/lib/modules/$KREL/updates/reshaper.ko"
  doc "reshaper-modules-$KREL" "$M"
  pack "reshaper-modules-$KREL" "$M" reshaper-modules
fi
