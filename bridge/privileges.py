"""Dropping capabilities once a mode's sockets are open: reshaper/privileges.c, seen from Python.

Every mode calls it at start (bridge/appliance.py), before its other threads
start: capabilities are per thread.
"""
from __future__ import annotations

from reshaper._native import lib

# linux/capability.h's numbers, through reshaper/privileges.h
CAP_NET_ADMIN = lib.RS_CAP_NET_ADMIN
CAP_SYS_NICE = lib.RS_CAP_SYS_NICE
CAP_IPC_LOCK = lib.RS_CAP_IPC_LOCK


def drop_capabilities(keep: tuple[int, ...] = (CAP_NET_ADMIN,)) -> None:
    """Keeps only the named capabilities, for good: the sockets are open, and only undoing the
    set-up at exit needs a privilege (and, under --realtime, locking memory: bridge/realtime.py).
    OSError when the kernel refuses."""
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    rc = lib.rs_drop_capabilities(mask)
    if rc < 0:
        raise OSError(-rc, "dropping capabilities")


def effective_capabilities() -> int:
    """The calling process's effective set, as a mask of 1 << CAP_* (/proc/self/status, which a
    systemd unit's ProcSubset=pid leaves visible)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise OSError("no CapEff in /proc/self/status")
