"""Ring mode's data path: PACKET_MMAP rings and the C loop (ring.c), seen from Python.

Python opens the bridge, swaps programs between two calls of run(), reads
counters and stops it; every frame stays in C.
"""
from __future__ import annotations

import dataclasses

from reshaper._native import ffi, lib
from reshaper.rules.binding import Engine

PORT_COUNTERS = tuple(name for name, _ in ffi.typeof("struct rs_port_stats").fields)  # ring.h
GRO, GSO, TSO = 1, 2, 4


class RingError(OSError):
    pass


@dataclasses.dataclass(frozen=True)
class RingPort:
    interface: str
    vlan: int | None   # trunk form: the port's VLAN id
    mtu: int


def frame_size_for(mtu: int) -> int:
    """A ring slot (a power of two) that holds a frame of this MTU, two tags, the ring's header and the
    virtio_net_hdr; super-frames (GSO, up to 64 KB) come whole through the socket instead (ring.c)."""
    need = mtu + 14 + 8 + 128
    size = 2048
    while size < need:
        size *= 2
    return size


class RingBridge:
    """Two ports joined by the engine, on AF_PACKET rings."""

    def __init__(self, a: RingPort, b: RingPort, ring_frames: int = 4096, pool_frames: int = 4096,
                 busy_poll_us: int = 0):
        self._names = [ffi.new("char[]", p.interface.encode()) for p in (a, b)]
        cfg = ffi.new("struct rs_bridge_config *")
        cfg.ifname = self._names
        cfg.vlan = [a.vlan or 0, b.vlan or 0]
        cfg.mtu = [a.mtu, b.mtu]
        cfg.frame_size = self.slot_size = frame_size_for(max(a.mtu, b.mtu))
        cfg.ring_frames = ring_frames
        cfg.pool_frames = pool_frames
        cfg.busy_poll_ns = busy_poll_us * 1000
        err = ffi.new("char[256]")
        self._bridge = lib.rs_bridge_open(cfg, err, 256)
        if self._bridge == ffi.NULL:
            raise RingError(ffi.string(err).decode())
        self.engine: Engine | None = None
        self._stats = ffi.new("struct rs_bridge_stats *")

    def load(self, program: bytes, seed: int = 0) -> Engine:
        """Makes program the one the next frame meets; the previous engine is returned to nobody."""
        engine = Engine(program, seed)
        lib.rs_bridge_set_program(self._bridge, engine.program, engine.program_len, engine.state)
        self.engine = engine  # keeps program and state alive while C uses them
        return engine

    def run(self, timeout_ms: int) -> int:
        """Forwards for up to timeout_ms, with the GIL released; returns frames handled."""
        n = lib.rs_bridge_run(self._bridge, timeout_ms)
        if n < 0:
            raise RingError(-n, "ring loop failed")
        return n

    def stop(self) -> None:
        lib.rs_bridge_stop(self._bridge)

    def stats(self) -> dict:
        lib.rs_bridge_stats(self._bridge, self._stats)
        s = self._stats
        return {
            "ports": {name: {c: getattr(s.port[i], c) for c in PORT_COUNTERS} for i, name in enumerate("ab")},
            "not_ours": s.not_ours, "queued": s.queued, "pool_full": s.pool_full, "loops": s.loops,
            "pool_frames": s.pool_frames,
            "hooks_slow_path": {"queued": s.hook_queued, "overflow": s.hook_overflow, "returned": s.hook_returned},
            "release_late": {"hist_lt_us": dict(zip(("1", "2", "5", "10", "20", "50", "100", "more"),
                                                    list(s.late_hist))),
                             "max_ns": s.late_max_ns, "sum_ns": s.late_sum_ns},
        }

    def set_pool(self, frames: int) -> None:
        """Grows the delay pool to frames buffers (between runs only; it never shrinks)."""
        rc = lib.rs_bridge_set_pool(self._bridge, frames)
        if rc < 0:
            raise RingError(-rc, f"cannot grow the delay pool to {frames} buffers")

    def rule_held(self, n_rules: int) -> list[int]:
        """Frames of each rule of the running program waiting in the delay queue now."""
        out = ffi.new("uint32_t[]", max(n_rules, 1))
        lib.rs_bridge_rule_held(self._bridge, out, n_rules)
        return list(out)[:n_rules]

    # ---- the slow path to Python hooks (see ring.h) ----
    def set_hooks(self, rules: set[int]) -> int:
        """Sends the frames of these rules (of the running program) to Python; returns its generation."""
        flags = ffi.new("uint8_t[]", [1 if i in rules else 0 for i in range(256)])
        lib.rs_bridge_set_hooks(self._bridge, flags, 256)
        return lib.rs_bridge_generation(self._bridge)

    def hook_fd(self) -> int:
        return lib.rs_bridge_hook_fd(self._bridge)

    def hook_take(self, meta, buf, cap: int) -> int:
        """The next frame for a hook into buf (its length, 0 if none); its rs_hook_meta into meta."""
        return lib.rs_bridge_hook_take(self._bridge, meta, buf, cap)

    def hook_put(self, meta, frame: bytes) -> bool:
        """A frame a hook sends out of port meta.port; False when the queue back is full."""
        meta.len = len(frame)
        return lib.rs_bridge_hook_put(self._bridge, meta, frame) == 0

    def hook_wake(self) -> None:
        lib.rs_bridge_hook_wake(self._bridge)

    def close(self) -> None:
        if self._bridge is not None:
            lib.rs_bridge_close(self._bridge)
            self._bridge = None


def set_offloads(interface: str, features: int, on: bool) -> int:
    """Sets GRO/GSO/TSO on or off; returns which of them were on before."""
    rc = lib.rs_set_offloads(interface.encode(), features, 1 if on else 0)
    if rc < 0:
        raise RingError(-rc, f"offloads of {interface}")
    return rc


CAP_NET_ADMIN = 12


def drop_capabilities(keep: tuple[int, ...] = (CAP_NET_ADMIN,)) -> None:
    """Keeps only the named capabilities: the sockets are open, nothing else needs root."""
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    rc = lib.rs_drop_capabilities(mask)
    if rc < 0:
        raise RingError(-rc, "dropping capabilities")
