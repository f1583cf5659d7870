"""A port interface's segmentation offloads (GRO, GSO, TSO) on or off: reshaper/offloads.c, seen from Python.

Ring mode turns GRO off on its ports and puts back what it found
(bridge/modes/ring.py); the benchmark and the tests set them on their hosts.
"""
from __future__ import annotations

from reshaper._native import lib

GRO, GSO, TSO = lib.RS_OFFLOAD_GRO, lib.RS_OFFLOAD_GSO, lib.RS_OFFLOAD_TSO  # reshaper/offloads.h


def set_offloads(interface: str, features: int, on: bool) -> int:
    """Sets the offloads in features (GRO | GSO | TSO bits) on or off; returns which of them were on
    before. OSError when the interface cannot be asked (gone, no permission)."""
    rc = lib.rs_set_offloads(interface.encode(), features, 1 if on else 0)
    if rc < 0:
        raise OSError(-rc, f"offloads of {interface}")
    return rc
