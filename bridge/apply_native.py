"""`reshaper apply`'s loop in C (bridge/apply_loop.c) seen from Python: the engine, the queue of
departures and the output's records run there; Python opens the files, writes the output's header,
reads the records the C reader leaves to it (bridge/captures.py's CaptureReader, with every error text)
and says what went wrong.
"""
from __future__ import annotations

import os

from reshaper._native import ffi, lib
from reshaper.bridge.captures import LINKTYPE_ETHERNET, NS, PCAP_SNAPLEN, CaptureOutput, Layout
from reshaper.rules.binding import DROP_REASONS, PORTS, Engine

if max(DROP_REASONS) >= lib.RS_APPLY_REASONS:
    raise ImportError(f"the engine has drop reasons up to {max(DROP_REASONS)}; bridge/apply_loop.h counts "
                      f"{lib.RS_APPLY_REASONS}")


class NativeLoop:
    """The C loop over one engine's program and state, writing to one output."""

    def __init__(self, engine: Engine, from_port: str, in_vlan: int | None, out_vlan: int | None,
                 writer: CaptureOutput):
        self.writer = writer
        writer.f.flush()  # its header: the C loop writes the records after it, by the same descriptor
        a = self.a = ffi.new("struct rs_apply *")
        a.state = engine.state
        a.port = PORTS[from_port]
        a.in_vlan = -1 if in_vlan is None else in_vlan
        a.out_vlan = -1 if out_vlan is None else out_vlan
        a.fd = writer.f.fileno()
        a.pcapng = writer.pcapng
        a.snaplen = PCAP_SNAPLEN
        self._input = ffi.new("struct rs_apply_input *")
        self._layout: Layout | None = None
        self._interfaces = None  # the C array of self._layout's interfaces, kept alive with it
        self._ahead = self._ahead_c = None  # the reader's buffer, and as C sees it
        self._check(lib.rs_apply_open(a))

    def close(self) -> None:
        lib.rs_apply_close(self.a)

    def _check(self, rc: int) -> None:
        if rc == lib.RS_APPLY_OK:
            return
        a = self.a
        if rc == lib.RS_APPLY_UNWRITABLE:
            # the Python writer says why the output cannot hold this departure (its one error text)
            t_ns = a.unwritable_ns + (a.unwritable_over << 64)
            self.writer.write(t_ns, ffi.buffer(a.unwritable_frame, a.unwritable_len)[:])
            raise AssertionError(f"bridge/apply_loop.c refused a departure at {t_ns} ns that the writer takes")
        if rc == lib.RS_APPLY_IO:
            raise OSError(a.io_errno, os.strerror(a.io_errno), self.writer.path)
        if rc == lib.RS_APPLY_NOMEM:
            raise MemoryError("reshaper apply: out of memory for the frames waiting to leave")
        raise AssertionError(f"bridge/apply_loop.c returned {rc}")

    def frame(self, now_ns: int, data: bytes) -> None:
        """A frame Python's reader read (CaptureReader checked it is at most RS_MAX_FRAME bytes)."""
        self._check(lib.rs_apply_frame(self.a, now_ns, data, len(data)))

    def records(self, layout: Layout, ahead: memoryview, at: int, end: int, last_ns: int) -> tuple[int, int, int]:
        """CaptureReader.bulk: the records the C reader takes from ahead[at:end]."""
        inp = self._input
        if layout is not self._layout:
            self._describe(layout)
        if ahead is not self._ahead:  # the reader keeps one buffer
            self._ahead, self._ahead_c = ahead, ffi.from_buffer(ahead)
        inp.last_ns = last_ns
        rc = lib.rs_apply_records(self.a, inp, self._ahead_c + at, end - at)
        self._check(rc)
        return at + inp.taken, inp.records, inp.last_ns

    def _describe(self, layout: Layout) -> None:
        inp = self._input
        inp.pcapng, inp.big_endian = layout.pcapng, layout.big_endian
        inp.unit_ns, inp.snaplen = layout.unit_ns, layout.snaplen
        self._interfaces = ffi.new("struct rs_apply_iface[]", max(1, len(layout.interfaces)))
        for c, iface in zip(self._interfaces, layout.interfaces):
            c.ethernet = iface.linktype == LINKTYPE_ETHERNET
            c.snaplen = iface.snaplen
            # a whole number of ns a tick, else Python's reader cuts (and counts) the finer part
            c.ns_per_tick = NS // iface.per_second if NS % iface.per_second == 0 else 0
            c.offset_s = iface.offset_s
        inp.n_ifaces, inp.ifaces = len(layout.interfaces), self._interfaces
        self._layout = layout

    def finish(self) -> None:
        self._check(lib.rs_apply_finish(self.a))

    def counts(self) -> tuple[int, int, int, dict[str, int]]:
        """frames in, not on the port, frames out, and drops by reason."""
        a = self.a
        dropped = {DROP_REASONS.get(r, str(r)): a.dropped[r] for r in range(lib.RS_APPLY_REASONS) if a.dropped[r]}
        return a.frames_in, a.not_on_port, a.frames_out, dropped

