#!/usr/bin/env bash
# The Debian packages for an x86_64 Debian host (bookworm's Python 3.11), built here from the
# tree: reshaper_VER_amd64.deb and reshaper-dkms_VER_all.deb (what build-debs.sh makes of a
# wheel), into OUT (default dist/debian). The armhf ones come from deploy/beaglebone/build.sh.
#
#   deploy/debian/build-amd64.sh [--out DIR]
#
# Needs the project's .venv (make setup) and Debian's libnetfilter-queue-dev (NetfilterQueue is
# compiled here); downloads are cached in ~/.cache/reshaper/debian (RESHAPER_DEBIAN_CACHE).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
CACHE=${RESHAPER_DEBIAN_CACHE:-$HOME/.cache/reshaper/debian}
OUT=$REPO/dist/debian
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;   # the header, however long
    *) echo "build-amd64.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(uname -m)" = x86_64 ] || { echo "build-amd64.sh: builds on x86_64 only" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" "$CACHE"
# the wheel from a snapshot of the tree (tracked and new files): the tree's build/ and egg-info
# belong to the .venv's editable install; the appliance only, as on the board (setup.py)
(cd "$REPO" && git ls-files -z -co --exclude-standard | grep -zv '^dist/' \
  | xargs -0 tar cf - --ignore-failed-read 2>/dev/null) | tar xf - -C "$WORK" --one-top-level=src
# quiet: setuptools' and pip's warnings, shown when a build fails
quiet() { "$@" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; echo "build-amd64.sh: $* failed" >&2; exit 1; }; }
(cd "$WORK/src" && RESHAPER_APPLIANCE_ONLY=1 quiet "$PY" -m pip wheel -q --no-deps --no-build-isolation \
  -w "$WORK/wheel" .)
quiet bash "$REPO/deploy/pure-python-deps.sh" "$WORK/deps" "$CACHE"
NFQ_VER=$("$PY" -c "import importlib.metadata as m; print(m.version('NetfilterQueue'))")
quiet "$PY" -m pip wheel -q --no-deps --cache-dir "$CACHE/pip" -w "$WORK/deps" "NetfilterQueue==$NFQ_VER"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")
make -s -C "$REPO/kmod" dkms-src DEST="$WORK/dkms/reshaper-$VERSION"
rm -f "$OUT"/reshaper_*_amd64.deb "$OUT"/reshaper-dkms_*.deb
bash "$HERE/build-debs.sh" --wheel "$(ls "$WORK"/wheel/reshaper-*-linux_x86_64.whl)" --deps "$WORK/deps" \
  --dkms "$WORK/dkms/reshaper-$VERSION" --out "$OUT"
