"""Ring mode's data path: PACKET_MMAP rings and the C forwarder (ring/*.c, ring.h), seen from Python.
XDP mode's is the same forwarder on AF_XDP sockets (ring/xsk.c): carrier=lib.RS_CARRIER_XDP.

Python opens the forwarder, swaps programs between two calls of run(), reads
counters and stops it; every frame stays in C.
"""
from __future__ import annotations

import dataclasses

from reshaper._native import ffi, lib
from reshaper.rules.binding import Engine

TRACE_BATCH = 256   # trace records taken from the loop's buffer in one call
PORT_COUNTERS = tuple(name for name, _ in ffi.typeof("struct rs_port_stats").fields)  # ring.h


class RingError(OSError):
    pass


@dataclasses.dataclass(frozen=True)
class RingPort:
    interface: str
    vlan: int | None   # trunk form: the port's VLAN id
    mtu: int


def frame_size_for(mtu: int) -> int:
    """A ring slot (a power of two) that holds a frame of this MTU, two tags, the ring's header and the
    virtio_net_hdr; super-frames (GSO, up to 64 KB) come whole through the socket instead (ring/link.c)."""
    need = mtu + lib.RS_RING_SLOT_ROOM
    size = lib.RS_RING_MIN_SLOT
    while size < need:
        size *= 2
    return size


class RingForwarder:
    """Two ports joined by the engine, on AF_PACKET rings."""

    def __init__(self, a: RingPort, b: RingPort, ring_frames: int = 4096, pool_frames: int = 4096,
                 busy_poll_us: int = 0, carrier: int = lib.RS_CARRIER_PACKET):
        self._names = [ffi.new("char[]", p.interface.encode()) for p in (a, b)]
        cfg = ffi.new("struct rs_forwarder_config *")
        cfg.ifname = self._names
        cfg.vlan = [a.vlan or 0, b.vlan or 0]
        cfg.mtu = [a.mtu, b.mtu]
        cfg.frame_size = self.slot_size = frame_size_for(max(a.mtu, b.mtu))
        cfg.ring_frames = ring_frames
        cfg.pool_frames = pool_frames
        cfg.busy_poll_ns = busy_poll_us * 1000
        cfg.carrier = carrier
        err = ffi.new("char[256]")
        self._forwarder = lib.rs_forwarder_open(cfg, err, 256)
        if self._forwarder == ffi.NULL:
            raise RingError(ffi.string(err).decode())
        self.engine: Engine | None = None
        self._stats = ffi.new("struct rs_forwarder_stats *")
        self._trace_out = None   # records taken in one call, made at the first

    def load(self, program: bytes, seed: int = 0, time_zero: tuple[int, int] | None = None) -> Engine:
        """Makes program the one the next frame meets; the previous engine is returned to nobody.
        time_zero: its schedules' (Engine.start), on CLOCK_MONOTONIC as the loop's frame times."""
        engine = Engine(program, seed)
        if time_zero is not None:
            engine.start(*time_zero)
        lib.rs_forwarder_set_program(self._forwarder, engine.program, engine.program_len, engine.state)
        self.engine = engine  # keeps program and state alive while C uses them
        return engine

    def run(self, timeout_ms: int) -> int:
        """Forwards for up to timeout_ms, with the GIL released; returns frames handled."""
        n = lib.rs_forwarder_run(self._forwarder, timeout_ms)
        if n < 0:
            raise RingError(-n, "ring loop failed")
        return n

    def stop(self) -> None:
        lib.rs_forwarder_stop(self._forwarder)

    def xdp_attachment(self, port: int) -> str:
        """How XDP mode meets port's interface (0 a, 1 b): native or generic XDP, zero-copy or copy."""
        flags = lib.rs_forwarder_carrier_flags(self._forwarder, port)
        return ("native XDP" if flags & lib.RS_XDP_NATIVE else "generic XDP") + ", " + \
            ("zero-copy" if flags & lib.RS_XDP_ZEROCOPY else "copy mode")

    def stats(self) -> dict:
        lib.rs_forwarder_stats(self._forwarder, self._stats)
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
        rc = lib.rs_forwarder_set_pool(self._forwarder, frames)
        if rc < 0:
            raise RingError(-rc, f"cannot grow the delay pool to {frames} buffers")

    def rule_held(self, n_rules: int) -> list[int]:
        """Frames of each rule of the running program waiting in the delay queue now."""
        out = ffi.new("uint32_t[]", max(n_rules, 1))
        lib.rs_forwarder_rule_held(self._forwarder, out, n_rules)
        return list(out)[:n_rules]

    # ---- the slow path to Python hooks (see ring.h) ----
    def set_hooks(self, rules: set[int]) -> int:
        """Sends the frames of these rules (of the running program) to Python; returns its generation."""
        flags = ffi.new("uint8_t[]", [1 if i in rules else 0 for i in range(lib.RS_MAX_RULES)])
        lib.rs_forwarder_set_hooks(self._forwarder, flags, lib.RS_MAX_RULES)
        return lib.rs_forwarder_generation(self._forwarder)

    def hook_fd(self) -> int:
        return lib.rs_forwarder_hook_fd(self._forwarder)

    def hook_take(self, meta, buf, cap: int) -> int:
        """The next frame for a hook into buf (its length, 0 if none); its rs_hook_meta into meta."""
        return lib.rs_forwarder_hook_take(self._forwarder, meta, buf, cap)

    def hook_put(self, meta, frame: bytes) -> bool:
        """A frame a hook sends out of port meta.port; False when the queue back is full."""
        meta.len = len(frame)
        return lib.rs_forwarder_hook_put(self._forwarder, meta, frame) == 0

    def hook_wake(self) -> None:
        lib.rs_forwarder_hook_wake(self._forwarder)

    # ---- tracing (ring/trace_buffer.c) ----
    def set_trace(self, on: bool, rule: int = -1) -> None:
        lib.rs_forwarder_set_trace(self._forwarder, int(on), rule)

    def trace_take(self) -> list:
        """The records the loop left since the last call (bridge/trace.py's TraceRecord)."""
        from reshaper.bridge.trace import TraceRecord

        if self._trace_out is None:
            self._trace_out = ffi.new("struct rs_trace_record[]", TRACE_BATCH)
        out = []
        while n := lib.rs_forwarder_trace_take(self._forwarder, self._trace_out, TRACE_BATCH):
            out.extend(TraceRecord(r.timestamp_ns, r.port, r.len, r.rule, r.verdict, r.reason, r.copies, r.delay_ns,
                                   bytes(ffi.buffer(r.head, r.caplen)))
                       for r in self._trace_out[0:n])
            if n < TRACE_BATCH:
                break
        return out

    def trace_lost(self) -> int:
        return lib.rs_forwarder_trace_lost(self._forwarder)

    def close(self) -> None:
        if self._forwarder is not None:
            lib.rs_forwarder_close(self._forwarder)
            self._forwarder = None

