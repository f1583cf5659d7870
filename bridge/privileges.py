"""Dropping capabilities once a mode's sockets are open: reshaper/privileges.c, seen from Python.

Every mode calls it at start (bridge/appliance.py), before its other threads
start: capabilities are per thread.
"""
from __future__ import annotations

from reshaper._native import lib

CAP_NET_ADMIN = lib.RS_CAP_NET_ADMIN  # linux/capability.h, through reshaper/privileges.h


def drop_capabilities(keep: tuple[int, ...] = (CAP_NET_ADMIN,)) -> None:
    """Keeps only the named capabilities, for good: the sockets are open, and only undoing the
    set-up at exit needs a privilege. OSError when the kernel refuses."""
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    rc = lib.rs_drop_capabilities(mask)
    if rc < 0:
        raise OSError(-rc, "dropping capabilities")
