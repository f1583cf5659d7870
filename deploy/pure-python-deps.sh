#!/usr/bin/env bash
# The pure-Python dependencies the appliance ships beside its wheel, as wheels of the versions
# this tree is tested with (those of the project's .venv), into DEST; downloaded once into CACHE.
# Debian bookworm's python3-scapy 2.5 and python3-pyroute2 0.7 are too old; prometheus_client
# (`run --metrics`) so that a board needs no apt for it. cffi's backend and PyYAML come from
# Debian's python3-cffi-backend and python3-yaml. Used by deploy/beaglebone/build.sh and
# deploy/debian/build-amd64.sh.
#
#   deploy/pure-python-deps.sh DEST CACHE
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
DEST=$1 CACHE=$2
mkdir -p "$DEST" "$CACHE"
for pkg in scapy pyroute2 prometheus_client; do
  ver=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
  f=$(ls "$CACHE"/"$pkg"-"$ver"-*none-any.whl 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    "$PY" -m pip download -q --no-deps --only-binary=:all: --dest "$CACHE" "$pkg==$ver" >&2
    f=$(ls "$CACHE"/"$pkg"-"$ver"-*none-any.whl | head -1)
  fi
  cp "$f" "$DEST/"
done
