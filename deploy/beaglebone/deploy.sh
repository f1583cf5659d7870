#!/usr/bin/env bash
# Deploy reshaper to a BeagleBone Black (or any armhf Debian board) over SSH.
#
#   deploy/beaglebone/deploy.sh HOST RULES.yaml [--mode ring|kernel|nfqueue]
#       [--vlans 100,200] [--interface eth0] [--rules-only] [--rollback]
#       [--bundle FILE] [--port N] [--identity KEYFILE]
#
# HOST is [user@]host; a non-root user needs passwordless sudo. Host keys are
# checked (StrictHostKeyChecking=yes: add the board's key to known_hosts first,
# see README.md); keys only, never passwords (BatchMode). RESHAPER_SSH_OPTS adds
# ssh options (e.g. "-o UserKnownHostsFile=FILE").
#
# 1. validates RULES.yaml here (reshaper check --mode M): nothing is copied if it fails
# 2. copies the bundle (dist/beaglebone/reshaper-beaglebone-*.tar.gz; built if missing)
# 3. runs the bundle's install.sh on the board: venv, module, VLANs, rules, unit
# 4. checks that the service is active and `reshaper stats` answers
# Re-running upgrades in place. --rules-only swaps the rule file and reloads
# (systemctl reload: SIGHUP, no restart). --rollback goes back to the previous version.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
usage() { sed -n 2,20p "$0"; exit 2; }
[ $# -ge 1 ] || usage
HOST=$1; shift
RULES=
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then RULES=$1; shift; fi
MODE= VLANS= IFACE=eth0 RULES_ONLY=0 ROLLBACK=0 BUNDLE= PORT= IDENTITY=
while [ $# -gt 0 ]; do
  case $1 in
    --mode) MODE=$2; shift 2 ;;
    --vlans) VLANS=$2; shift 2 ;;
    --interface) IFACE=$2; shift 2 ;;
    --rules-only) RULES_ONLY=1; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --identity) IDENTITY=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "deploy.sh: unknown argument $1" >&2; usage ;;
  esac
done
MODE_ARG=${MODE:+--mode $MODE}   # install.sh keeps the board's last mode when none is given
MODE=${MODE:-ring}
case $MODE in ring|kernel|nfqueue) ;; *) echo "deploy.sh: --mode must be ring, kernel or nfqueue" >&2; exit 2 ;; esac
[[ -z $VLANS || $VLANS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "deploy.sh: --vlans is a list like 100,200" >&2; exit 2; }
[[ $IFACE =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "deploy.sh: bad --interface" >&2; exit 2; }
log() { printf '[deploy %4ds] %s\n' "$SECONDS" "$*"; }

SSH_OPTS=(-o StrictHostKeyChecking=yes -o BatchMode=yes -o PasswordAuthentication=no
          -o KbdInteractiveAuthentication=no -o ConnectTimeout=20 -o ServerAliveInterval=15)
[ -n "$PORT" ] && SSH_OPTS+=(-p "$PORT")
[ -n "$IDENTITY" ] && SSH_OPTS+=(-i "$IDENTITY" -o IdentitiesOnly=yes)
# shellcheck disable=SC2206
[ -n "${RESHAPER_SSH_OPTS:-}" ] && SSH_OPTS+=(${RESHAPER_SSH_OPTS})
SCP_OPTS=("${SSH_OPTS[@]}")
[ -n "$PORT" ] && { SCP_OPTS=("${SSH_OPTS[@]/#-p/-P}"); }
remote() { ssh "${SSH_OPTS[@]}" "$HOST" "$@"; }

SUDO=sudo
[[ $HOST == root@* ]] && SUDO=
if [ "$ROLLBACK" = 0 ]; then
  [ -n "$RULES" ] && [ -f "$RULES" ] || { echo "deploy.sh: no rule file ${RULES:-given}" >&2; exit 2; }
  # ---- 1. the rule file, here, before anything is copied
  RESHAPER=$REPO/.venv/bin/reshaper
  [ -x "$RESHAPER" ] || RESHAPER=$(command -v reshaper || true)
  [ -n "$RESHAPER" ] || { echo "deploy.sh: no reshaper here to validate with (make setup)" >&2; exit 1; }
  log "checking $RULES (--mode $MODE)"
  "$RESHAPER" check "$RULES" --mode "$MODE" || { echo "deploy.sh: $RULES refused; nothing deployed" >&2; exit 1; }
fi

log "connecting to $HOST"
remote true || { echo "deploy.sh: cannot ssh to $HOST (host key in known_hosts? key authorized?)" >&2; exit 1; }
if [ -z "$SUDO" ] || remote "[ \$(id -u) = 0 ]"; then SUDO=; else
  remote "sudo -n true" || { echo "deploy.sh: $HOST: the user needs passwordless sudo" >&2; exit 1; }
fi
RDIR=$(remote "mktemp -d /tmp/reshaper-deploy.XXXXXX")
trap 'remote "rm -rf $RDIR" >/dev/null 2>&1 || true' EXIT

if [ "$ROLLBACK" = 1 ]; then
  scp -q "${SCP_OPTS[@]}" "$HERE/install.sh" "$HOST:$RDIR/"
  remote "$SUDO bash $RDIR/install.sh --rollback"
  exit 0
fi
if [ "$RULES_ONLY" = 1 ]; then
  log "copying the rule file"
  scp -q "${SCP_OPTS[@]}" "$HERE/install.sh" "$RULES" "$HOST:$RDIR/"
  remote "$SUDO bash $RDIR/install.sh --rules-only --rules $RDIR/$(basename "$RULES") $MODE_ARG"
  log "done: rules swapped on $HOST"
  exit 0
fi

# ---- 2. the bundle
if [ -z "$BUNDLE" ]; then
  BUNDLE=$(ls "$REPO"/dist/beaglebone/reshaper-beaglebone-*.tar.gz 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$BUNDLE" ]; then
    log "no bundle yet: running build.sh"
    "$HERE/build.sh"
    BUNDLE=$(ls "$REPO"/dist/beaglebone/reshaper-beaglebone-*.tar.gz | sort -V | tail -1)
  fi
fi
log "copying $(basename "$BUNDLE") ($(du -k "$BUNDLE" | cut -f1) KiB)"
scp -q "${SCP_OPTS[@]}" "$BUNDLE" "$RULES" "$HOST:$RDIR/"
NAME=$(basename "$BUNDLE" .tar.gz)

# ---- 3./4. install and check on the board
ARGS="$MODE_ARG --interface $IFACE --rules $RDIR/$(basename "$RULES")"
[ -n "$VLANS" ] && ARGS="$ARGS --vlans $VLANS"
log "installing on $HOST: $ARGS"
remote "cd $RDIR && tar xzf $(basename "$BUNDLE") && $SUDO bash $RDIR/$NAME/install.sh $ARGS"
remote "$SUDO systemctl is-active reshaper" >/dev/null
log "done: reshaper is active on $HOST (mode $MODE); counters: ssh $HOST reshaper stats"
