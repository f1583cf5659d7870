#!/usr/bin/env bash
# Deploy reshaper to a BeagleBone Black (or any armhf Debian board) over SSH.
#
#   deploy/beaglebone/deploy.sh HOST RULES.yaml [--mode ring|xdp|kernel|nfqueue]
#       [--vlans 100,200] [--interface eth0] [--rules-only] [--rollback]
#       [--bundle FILE] [--port N] [--identity KEYFILE]
#
# HOST is [user@]host; a non-root user needs passwordless sudo. Host keys are
# checked (StrictHostKeyChecking=yes: add the board's key to known_hosts first,
# see README.md); keys only, never passwords (BatchMode). RESHAPER_SSH_OPTS adds
# ssh options (e.g. "-o UserKnownHostsFile=FILE").
#
# 1. validates RULES.yaml here (reshaper check --mode M): nothing is copied if it fails;
#    the files it names (schedule files, delivery traces) go with it, beside it on the board
# 2. copies the bundle (dist/beaglebone/reshaper-beaglebone-*.tar.gz; built if missing)
# 3. runs the bundle's install.sh on the board: venv, module, VLANs, rules, unit
# 4. checks that the service is active and `reshaper stats` answers
# Re-running upgrades in place (the same wheels are not installed again). --rules-only swaps the rule file and reloads
# (systemctl reload: SIGHUP, no restart). --rollback goes back to the previous version.
#
# Remote commands are run by a shell on the board, as root: no local file name ever
# goes into one. The rule file and the bundle are copied to fixed names (rules.yaml,
# bundle.tar.gz) in a directory whose name is checked; the other arguments are checked
# against strict patterns and quoted (q) all the same.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
usage() { sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 2; }   # the header, however long
[ $# -ge 1 ] || usage
HOST=$1; shift
RULES=
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then RULES=$1; shift; fi
MODE='' VLANS='' IFACE=eth0 RULES_ONLY=0 ROLLBACK=0 BUNDLE='' PORT='' IDENTITY='' FILES=()
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
MODE_ARG=()   # install.sh keeps the board's last mode when none is given
[ -n "$MODE" ] && MODE_ARG=(--mode "$MODE")
MODE=${MODE:-ring}
case $MODE in ring|xdp|kernel|nfqueue) ;; *) echo "deploy.sh: --mode must be ring, xdp, kernel or nfqueue" >&2; exit 2 ;; esac
[[ -z $VLANS || $VLANS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "deploy.sh: --vlans is a list like 100,200" >&2; exit 2; }
[[ $IFACE =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "deploy.sh: bad --interface" >&2; exit 2; }
[[ -z $PORT || $PORT =~ ^[0-9]+$ ]] || { echo "deploy.sh: --port is a number" >&2; exit 2; }
# ssh and scp would take a HOST starting with - for an option
[[ -n $HOST && $HOST != -* && $HOST != *[[:space:]]* ]] || { echo "deploy.sh: bad HOST '$HOST'" >&2; exit 2; }
log() { printf '[deploy %4ds] %s\n' "$SECONDS" "$*"; }
q() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }   # words for a remote command line

SSH_OPTS=(-o StrictHostKeyChecking=yes -o BatchMode=yes -o PasswordAuthentication=no
          -o KbdInteractiveAuthentication=no -o ConnectTimeout=20 -o ServerAliveInterval=15)
[ -n "$PORT" ] && SSH_OPTS+=(-p "$PORT")
[ -n "$IDENTITY" ] && SSH_OPTS+=(-i "$IDENTITY" -o IdentitiesOnly=yes)
# shellcheck disable=SC2206
[ -n "${RESHAPER_SSH_OPTS:-}" ] && SSH_OPTS+=(${RESHAPER_SSH_OPTS})
SCP_OPTS=("${SSH_OPTS[@]}")
[ -n "$PORT" ] && { SCP_OPTS=("${SSH_OPTS[@]/#-p/-P}"); }
remote() { ssh "${SSH_OPTS[@]}" -- "$HOST" "$1"; }   # $1: one command line, built with q

SUDO=sudo
[[ $HOST == root@* ]] && SUDO=
if [ "$ROLLBACK" = 0 ]; then
  if [ -z "$RULES" ] || [ ! -f "$RULES" ]; then echo "deploy.sh: no rule file ${RULES:-given}" >&2; exit 2; fi
  # ---- 1. the rule file, here, before anything is copied
  RESHAPER=$REPO/.venv/bin/reshaper
  [ -x "$RESHAPER" ] || RESHAPER=$(command -v reshaper || true)
  [ -n "$RESHAPER" ] || { echo "deploy.sh: no reshaper here to validate with (make setup)" >&2; exit 1; }
  log "checking $RULES (--mode $MODE)"
  "$RESHAPER" check "$RULES" --mode "$MODE" || { echo "deploy.sh: $RULES refused; nothing deployed" >&2; exit 1; }
  # the files it names, relative to it: they go beside it in /etc/reshaper (a tarball of them)
  NAMED=$("$RESHAPER" check "$RULES" --files)
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    [[ $f != /* && /$f/ != */../* ]] \
      || { echo "deploy.sh: $RULES names $f, which is not under its directory: it cannot go beside it on the board; nothing deployed" >&2; exit 1; }
    FILES+=("$f")
  done <<<"$NAMED"
fi

log "connecting to $HOST"
remote true || { echo "deploy.sh: cannot ssh to $HOST (host key in known_hosts? key authorized?)" >&2; exit 1; }
if [ -z "$SUDO" ] || remote "[ \$(id -u) = 0 ]"; then SUDO=; else
  remote "sudo -n true" || { echo "deploy.sh: $HOST: the user needs passwordless sudo" >&2; exit 1; }
fi
# what is copied, under the names it gets on the board
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/reshaper-stage.XXXXXX")
RDIR=
cleanup() {
  [ -n "$RDIR" ] && { remote "rm -rf $(q "$RDIR")" >/dev/null 2>&1 || true; }
  rm -rf "$STAGE"
}
trap cleanup EXIT
[ "$ROLLBACK" = 1 ] || cp -- "$RULES" "$STAGE/rules.yaml"
RULES_FILES=() RULES_FILES_ARG=()   # the tarball of the files the rule file names; install.sh's argument
if [ ${#FILES[@]} -gt 0 ]; then
  tar czf "$STAGE/rules-files.tar.gz" -C "$(dirname -- "$RULES")" -- "${FILES[@]}"
  RULES_FILES=("$STAGE/rules-files.tar.gz")
fi
RDIR=$(remote "mktemp -d /tmp/reshaper-deploy.XXXXXX")
# it goes into remote command lines and scp's target: mktemp's own pattern, nothing else
[[ $RDIR =~ ^/tmp/reshaper-deploy\.[A-Za-z0-9]{6}$ ]] || { echo "deploy.sh: $HOST: unexpected temporary directory '$RDIR'" >&2; RDIR=; exit 1; }
[ ${#RULES_FILES[@]} -eq 0 ] || RULES_FILES_ARG=(--rules-files "$RDIR/rules-files.tar.gz")

if [ "$ROLLBACK" = 1 ]; then
  scp -q "${SCP_OPTS[@]}" "$HERE/install.sh" "$HOST:$RDIR/"
  remote "$SUDO bash $(q "$RDIR/install.sh" --rollback)"
  exit 0
fi
if [ "$RULES_ONLY" = 1 ]; then
  log "copying the rule file"
  scp -q "${SCP_OPTS[@]}" "$HERE/install.sh" "$STAGE/rules.yaml" "${RULES_FILES[@]}" "$HOST:$RDIR/"
  remote "$SUDO bash $(q "$RDIR/install.sh" --rules-only --rules "$RDIR/rules.yaml" "${MODE_ARG[@]}" \
    "${RULES_FILES_ARG[@]}")"
  log "done: rules swapped on $HOST"
  exit 0
fi

# ---- 2. the bundle
latest_bundle() {
  local f
  f=$(printf '%s\n' "$REPO"/dist/beaglebone/reshaper-beaglebone-*.tar.gz | sort -V | tail -1)
  if [ -f "$f" ]; then printf '%s' "$f"; fi
}
if [ -z "$BUNDLE" ]; then
  BUNDLE=$(latest_bundle)
  if [ -z "$BUNDLE" ]; then
    log "no bundle yet: running build.sh"
    "$HERE/build.sh"
    BUNDLE=$(latest_bundle)
  fi
fi
[ -f "$BUNDLE" ] || { echo "deploy.sh: no bundle ${BUNDLE:-built}" >&2; exit 2; }
log "copying $(basename "$BUNDLE") ($(du -k "$BUNDLE" | cut -f1) KiB)"
cp -- "$BUNDLE" "$STAGE/bundle.tar.gz"
scp -q "${SCP_OPTS[@]}" "$STAGE/bundle.tar.gz" "$STAGE/rules.yaml" "${RULES_FILES[@]}" "$HOST:$RDIR/"

# ---- 3./4. install and check on the board
ARGS=("${MODE_ARG[@]}" --interface "$IFACE" --rules "$RDIR/rules.yaml")
ARGS+=("${RULES_FILES_ARG[@]}")
[ -n "$VLANS" ] && ARGS+=(--vlans "$VLANS")
log "installing on $HOST: ${ARGS[*]}"
# the bundle's one top directory (reshaper-beaglebone-VER) becomes bundle/, whatever the file was called
remote "cd $(q "$RDIR") && mkdir bundle && tar xzf bundle.tar.gz -C bundle --strip-components=1 && $SUDO bash bundle/install.sh $(q "${ARGS[@]}")"
remote "$SUDO systemctl is-active reshaper" >/dev/null
log "done: reshaper is active on $HOST (mode $MODE); counters: ssh $HOST reshaper stats"
