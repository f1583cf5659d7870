#!/bin/bash
# Runs ON THE BOARD as root, from the unpacked bundle (deploy.sh does this over SSH):
#
#   ./install.sh --rules FILE [--mode ring|xdp|kernel|nfqueue] [--vlans 100,200] [--interface eth0]
#   ./install.sh --rules FILE --rules-only     swap the rule file, reload (no restart)
#   --rules-files TAR.gz: the files the rule file names (schedule files, delivery traces), by the
#   names it gives them; they go beside it in /etc/reshaper
#   ./install.sh --rollback                    previous wheel and rule file back, restart
#   /opt/reshaper/bundle/install.sh --mode M --switch-mode
#                                              the service in mode M, software and rules as they are
#                                              (what `reshaper bench --board` switches modes with)
#
# Installs into /opt/reshaper/venv (system site packages: Debian's python3-cffi-backend,
# -yaml, -scapy, -pyroute2), the module (DKMS when kernel headers exist, else the
# prebuilt one when its vermagic matches `uname -r`), persistent VLAN interfaces
# (reshaper-vlans: systemd-networkd or ifupdown), /etc/reshaper/rules.yaml, and the hardened
# unit (with, in XDP mode, the drop-in that lets it load an XDP program and open AF_XDP sockets).
# Re-running upgrades in place (wheels the same as the last install's are kept, not installed
# again). Every step says what it did; any failure stops it. What a mode
# switch needs (this script, the unit, XDP mode's drop-in, the module, the DKMS sources) is kept
# in /opt/reshaper/bundle.
set -euo pipefail
cd "$(dirname "$0")"
MODE='' VLANS='' IFACE='' RULES='' RULES_FILES='' RULES_ONLY=0 ROLLBACK=0 SWITCH=0
PREFIX=/opt/reshaper ETC=/etc/reshaper
while [ $# -gt 0 ]; do
  case $1 in
    --mode) MODE=$2; shift 2 ;;
    --vlans) VLANS=$2; shift 2 ;;
    --interface) IFACE=$2; shift 2 ;;
    --rules) RULES=$2; shift 2 ;;
    --rules-files) RULES_FILES=$2; shift 2 ;;
    --rules-only) RULES_ONLY=1; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    --switch-mode) SWITCH=1; shift ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
say() { echo "[install] $*"; }
die() { echo "[install] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
# shellcheck source=/dev/null  # written by build.sh
. ./BUILD-INFO 2>/dev/null || true
[ "$SWITCH" = 0 ] || [ -n "$MODE" ] || die "--switch-mode needs --mode"
# mode/interface: flags, else what the last install recorded, else defaults
# shellcheck source=/dev/null  # written by the last run, below
[ -f $ETC/install.conf ] && . $ETC/install.conf
MODE=${MODE:-${LAST_MODE:-ring}} IFACE=${IFACE:-${LAST_IFACE:-eth0}} VLANS=${VLANS:-${LAST_VLANS:-}}
case $MODE in ring|xdp|kernel|nfqueue) ;; *) die "--mode must be ring, xdp, kernel or nfqueue" ;; esac
# both end up in the ifupdown file, whose up/pre-up lines a shell runs, and in install.conf
[[ $IFACE =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die "--interface: not an interface name: $IFACE"
[[ -z $VLANS || $VLANS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--vlans is a list like 100,200"
RESHAPER=$PREFIX/venv/bin/reshaper
mkdir -p $ETC
# private (0600, unpredictable name): a fixed name in /tmp could be a planted symlink
STATS_OUT=$(mktemp -t reshaper-stats.XXXXXX)
trap 'rm -f "$STATS_OUT"' EXIT

stats_ok() {  # the service answers `reshaper stats` (Python starts slowly on a Cortex-A8)
  local _
  for _ in $(seq 1 "${1:-90}"); do
    if ! systemctl is-active -q reshaper; then
      [ "$(systemctl show -p ActiveState --value reshaper)" = failed ] && break
    elif $RESHAPER stats >"$STATS_OUT" 2>&1; then
      say "service active; reshaper stats:"; sed 's/^/    /' "$STATS_OUT"; return 0
    fi
    sleep 1
  done
  systemctl status --no-pager reshaper || true
  journalctl -u reshaper -n 30 --no-pager || true
  return 1
}

install_rules() {  # validate with the board's own reshaper, keep the previous one
  [ -n "$RULES" ] || die "--rules FILE is required"
  # checked where it will be read from: beside the files it names, apart until it passes
  local new=$ETC/rules.new.d
  rm -rf $new; mkdir -p $new
  if [ -n "$RULES_FILES" ]; then
    tar xzf "$RULES_FILES" -C $new --no-same-owner --no-same-permissions \
      || { rm -rf $new; die "cannot unpack the files the rule file names"; }
  fi
  install -m 0644 "$RULES" $new/rules.yaml
  $RESHAPER check $new/rules.yaml --mode "$MODE" >/dev/null \
    || { $RESHAPER check $new/rules.yaml --mode "$MODE" || true; rm -rf $new; die "rule file refused"; }
  (cd $new && find . -type f ! -path ./rules.yaml -print0) | while IFS= read -r -d '' f; do
    install -D -m 0644 "$new/$f" "$ETC/$f"; say "rules: $ETC/${f#./}"
  done
  [ -f $ETC/rules.yaml ] && cp -p $ETC/rules.yaml $ETC/rules.yaml.prev
  mv $new/rules.yaml $ETC/rules.yaml
  rm -rf $new
  say "rules: $ETC/rules.yaml"
}

if [ "$ROLLBACK" = 1 ]; then
  prev=$(cat $PREFIX/wheels/previous 2>/dev/null || true)
  if [ -z "$prev" ] || [ ! -f "$PREFIX/wheels/$prev" ]; then die "no previous version recorded"; fi
  $PREFIX/venv/bin/pip install -q --no-deps --force-reinstall --no-index "$PREFIX/wheels/$prev"
  rm -f $PREFIX/wheels/installed.sha256   # the next deploy installs its wheels again
  cur=$(cat $PREFIX/wheels/current); echo "$prev" >$PREFIX/wheels/current; echo "$cur" >$PREFIX/wheels/previous
  [ -f $ETC/rules.yaml.prev ] && { cp -p $ETC/rules.yaml $ETC/rules.yaml.tmp; mv $ETC/rules.yaml.prev $ETC/rules.yaml; mv $ETC/rules.yaml.tmp $ETC/rules.yaml.prev; }
  systemctl restart reshaper; stats_ok; say "rolled back to $prev"; exit 0
fi

if [ "$RULES_ONLY" = 1 ]; then
  [ -x $RESHAPER ] || die "reshaper is not installed here yet: run a full deploy first"
  install_rules
  systemctl reload reshaper
  sleep 2
  stats_ok 30
  say "rules swapped and reloaded (no restart)"; exit 0
fi

# ---- real-time throttling: the unit runs the service SCHED_FIFO (reshaper.service), and its
# sandbox hides /proc/sys from reshaper's own check (bridge/realtime.py), so it is checked here
rt_runtime=$(cat /proc/sys/kernel/sched_rt_runtime_us) rt_period=$(cat /proc/sys/kernel/sched_rt_period_us)
if [ "$rt_runtime" -lt 0 ] || [ "$rt_runtime" -ge "$rt_period" ]; then
  die "real-time throttling is off (kernel.sched_rt_runtime_us = $rt_runtime): the service's SCHED_FIFO \
forwarder could keep everything else off the core under a full load of frames; set it back to the kernel's \
default (sysctl kernel.sched_rt_runtime_us=950000, and in /etc/sysctl.d) and deploy again"
fi

# ---- Debian packages: what the mode needs
need=
# libxdp1 and libbpf1 in every mode: the wheel's extension links them (XDP mode, build.sh)
pkgs="python3-venv python3-cffi-backend python3-yaml python3-scapy python3-pyroute2 iproute2 kmod libxdp1 libbpf1"
[ "$MODE" = nfqueue ] && pkgs="$pkgs libnetfilter-queue1 iptables"   # the bundle's netfilterqueue links it
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  say "apt-get install$need"
  # shellcheck disable=SC2086  # a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need \
    || die "could not install$need (the board needs its apt sources reachable once)"
fi

if [ "$SWITCH" = 1 ]; then   # the rules as they are, checked for the mode before anything changes
  [ -x $RESHAPER ] && [ -f $ETC/rules.yaml ] || die "reshaper is not installed here yet: run a full deploy first"
  $RESHAPER check $ETC/rules.yaml --mode "$MODE" >/dev/null \
    || { $RESHAPER check $ETC/rules.yaml --mode "$MODE" || true; die "the rule file is refused in $MODE mode"; }
  new=$(cat $PREFIX/wheels/current)
else
# ---- Python: venv with Debian's compiled dependencies, our wheel without deps
# Debian's python3-venv brings pip (ensurepip, offline)
[ -x $PREFIX/venv/bin/pip ] || python3 -m venv --system-site-packages $PREFIX/venv
mkdir -p $PREFIX/wheels
wheels=(./reshaper-*-linux_armv7l.whl); wheel=${wheels[0]}; [ -f "$wheel" ] || die "no wheel in the bundle"
cp "$wheel" $PREFIX/wheels/
new=$(basename "$wheel")
cur=$(cat $PREFIX/wheels/current 2>/dev/null || true)
# the same wheels as the last install (a re-deploy of the same bundle, in another mode say) are
# not installed again: pip takes about a minute of the board's one core
sums=$(sha256sum "$new" deps/*.whl)
if [ -x $RESHAPER ] && [ "$sums" = "$(cat $PREFIX/wheels/installed.sha256 2>/dev/null)" ]; then
  say "python: the bundle's wheels are the ones installed (sha256): kept"
else
  rm -f $PREFIX/wheels/installed.sha256
  # pure-Python dependencies shipped in the bundle (scapy, pyroute2: newer than Debian's; prometheus_client)
  $PREFIX/venv/bin/python -m pip install -q --no-deps --no-index --disable-pip-version-check deps/*.whl
  $PREFIX/venv/bin/python -m pip install -q --no-deps --force-reinstall --no-index \
    --disable-pip-version-check "$PREFIX/wheels/$new"
  printf '%s\n' "$sums" >$PREFIX/wheels/installed.sha256
fi
[ -n "$cur" ] && [ "$cur" != "$new" ] && echo "$cur" >$PREFIX/wheels/previous
echo "$new" >$PREFIX/wheels/current
cp -f README.md $PREFIX/ 2>/dev/null || true
ln -sf $PREFIX/venv/bin/reshaper /usr/local/bin/reshaper
$PREFIX/venv/bin/python -c 'import reshaper._native' || die "the wheel's extension does not load"
if [ "$MODE" = nfqueue ]; then
  $PREFIX/venv/bin/python -c 'import netfilterqueue' || die "netfilterqueue does not load (libnetfilter-queue1?)"
fi
say "python: $($RESHAPER --version 2>/dev/null || echo reshaper) from $new in $PREFIX/venv"
# what --switch-mode runs from later (it keeps its own copy: this one may be in /tmp)
rm -rf $PREFIX/bundle.new; mkdir -p $PREFIX/bundle.new
cp -r install.sh BUILD-INFO reshaper.service reshaper-xdp.conf reshaper-nfqueue.modules reshaper-nfqueue.sysctl \
  module dkms $PREFIX/bundle.new/ 2>/dev/null || true
rm -rf $PREFIX/bundle; mv $PREFIX/bundle.new $PREFIX/bundle
fi

# ---- modules loaded at boot (the service has no CAP_SYS_MODULE)
mods="8021q bridge"
[ "$MODE" = nfqueue ] && mods="$mods $(sed 's/#.*//' reshaper-nfqueue.modules | xargs)"
if [ "$MODE" = kernel ]; then
  krel=$(uname -r)
  dver=${version:-0.1.0}
  if command -v dkms >/dev/null && [ -e "/lib/modules/$krel/build" ]; then
    for old in $(dkms status reshaper 2>/dev/null | sed -n 's#^reshaper[/,] *\([^,:]*\).*#\1#p' | sort -u); do
      [ "$old" = "$dver" ] || dkms remove -m reshaper -v "$old" --all || true
    done
    rm -rf "/usr/src/reshaper-$dver"; cp -r "dkms/reshaper-$dver" /usr/src/
    dkms remove -m reshaper -v "$dver" --all >/dev/null 2>&1 || true
    dkms install -m reshaper -v "$dver" -k "$krel" || die "DKMS build failed for $krel"
    say "module: built by DKMS for $krel"
  else
    kos=(module/*.ko); ko=${kos[0]}; [ -f "$ko" ] || ko=''
    want=$(modinfo -F vermagic "$ko" 2>/dev/null | cut -d' ' -f1 || true)
    if [ -n "$ko" ] && [ "$want" = "$krel" ]; then
      mkdir -p "/lib/modules/$krel/updates"
      install -m 0644 "$ko" "/lib/modules/$krel/updates/reshaper.ko"
      depmod "$krel"
      say "module: prebuilt $(basename "$ko") installed for $krel"
    else
      die "kernel mode needs reshaper.ko for kernel $krel: the bundle's module is for '${want:-none}'.
  Install this kernel's headers (BeagleBoard images: apt-get install linux-headers-$krel; Debian: same)
  and dkms (apt-get install dkms), then run the deploy again: DKMS builds it from dkms/ and rebuilds
  it on kernel upgrades. Or use --mode ring, which needs no module."
    fi
  fi
  mods="$mods reshaper"
  rmmod reshaper 2>/dev/null || true   # an upgrade replaces the loaded one (the service restarts below)
fi
# shellcheck disable=SC2086  # one module a line
printf '%s\n' $mods >/etc/modules-load.d/reshaper.conf
for m in $mods; do
  if [ "$m" = reshaper ]; then systemctl stop reshaper 2>/dev/null || true; rmmod reshaper 2>/dev/null || true; fi
  modprobe "$m" || die "modprobe $m failed"
done
say "modules: $mods (/etc/modules-load.d/reshaper.conf)"
# nfqueue mode's sysctl (why: reshaper-nfqueue.sysctl), at boot and now
if [ "$MODE" = nfqueue ]; then
  install -m 0644 reshaper-nfqueue.sysctl /etc/sysctl.d/60-reshaper.conf
  sysctl -q -p /etc/sysctl.d/60-reshaper.conf || die "sysctl net.bridge.bridge-nf-filter-vlan-tagged failed"
else
  rm -f /etc/sysctl.d/60-reshaper.conf
fi

# ---- VLAN interfaces, persistent (a mode switch leaves them)
if [ "$SWITCH" = 0 ] && [ -n "$VLANS" ]; then
  # shellcheck disable=SC2086  # one argument per VLAN id, checked above
  ./reshaper-vlans "$IFACE" ${VLANS//,/ } | sed 's/^/[install] /'
fi
# sourced by the next run: quoted (%q), though the values were checked above
printf 'LAST_MODE=%q\nLAST_IFACE=%q\nLAST_VLANS=%q\n' "$MODE" "$IFACE" "$VLANS" >$ETC/install.conf

# ---- rules, unit, start
[ "$SWITCH" = 1 ] || install_rules
echo "RESHAPER_MODE=$MODE" >$ETC/reshaper.env
install -m 0644 reshaper.service /etc/systemd/system/reshaper.service
# XDP mode needs more than the other modes (an XDP program: CAP_BPF and bpf(); AF_XDP sockets):
# a drop-in for that mode only, so the others keep the unit's sandbox as it is
dropins=/etc/systemd/system/reshaper.service.d
if [ "$MODE" = xdp ]; then
  mkdir -p $dropins && install -m 0644 reshaper-xdp.conf $dropins/xdp.conf
  say "unit: XDP mode's drop-in $dropins/xdp.conf"
else
  rm -f $dropins/xdp.conf; rmdir $dropins 2>/dev/null || true
fi
systemctl daemon-reload
systemctl enable -q reshaper
systemctl restart reshaper
stats_ok || die "reshaper did not come up (journalctl -u reshaper)"
say "done: reshaper $new, mode $MODE"
