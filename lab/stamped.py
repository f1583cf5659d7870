"""One-way delays of stamped UDP datagrams between two hosts of a topology (bridge/netns.py).

The sender stamps each payload with (sequence, CLOCK_REALTIME ns) just before send();
the sink takes the kernel's receive timestamp (SO_TIMESTAMPNS) of each datagram, so the
sink's own scheduling adds nothing. Both ends share the machine's clock: one-way delay =
receive stamp - send stamp, per datagram. Used by tests/test_timing_live.py and the
benchmarks (bench/timing.py; bench/probe.py stamps its latency probes the same way).
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

STAMP = struct.Struct("!QQ")   # sequence, send time (CLOCK_REALTIME ns)
SO_TIMESTAMPNS = 35            # <asm-generic/socket.h>; Python's socket module lacks both
SO_RCVBUFFORCE = 33
RT_GENERATOR = False   # bench/timing.py --rt-generator: the sender runs SCHED_FIFO 40 while it sends


class Sink:
    """A UDP socket that records (sequence, send ns, kernel receive ns) of every datagram."""

    def __init__(self, sock: socket.socket, port: int, threaded: bool = False):
        """threaded: read while the generator runs (long runs that would fill the socket buffer).
        Otherwise everything is read afterwards: a reading thread would take the GIL from the
        generator between its stamp and its send() (Python's 5 ms switch interval), which
        measured as milliseconds of false delay."""
        self.sock = sock
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.bind(("0.0.0.0", port))
        self.got: list[tuple[int, int, int]] = []
        self._stop = False
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(getattr(self, "_settle", 0.2))
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(2048, 64)
            except socket.timeout:
                if self._thread is None:
                    return   # drained: nothing for settle seconds
                continue
            except OSError:
                return
            rx = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    rx = sec * 1_000_000_000 + nsec
            if rx is None or len(data) < STAMP.size:
                continue
            seq, tx = STAMP.unpack_from(data)
            self.got.append((seq, tx, rx))

    def collect(self, settle: float = 0.5) -> list[tuple[int, int, int]]:
        """Waits until nothing arrived for settle seconds; returns what came, by sequence."""
        if self._thread is None:
            self._settle = settle
            self._run()
        n = -1
        while n != len(self.got):
            n = len(self.got)
            time.sleep(settle)
        self._stop = True
        if self._thread:
            self._thread.join()
        self.sock.close()
        return sorted(self.got)


def send_stamped(sock: socket.socket, dst: tuple[str, int], n: int, pps: float, size: int = 64) -> float:
    """Sends n datagrams at pps (paced on the monotonic clock, spinning); returns the achieved rate."""
    pad = bytes(max(0, size - STAMP.size))
    gap = 1e9 / pps
    old = None
    if RT_GENERATOR:  # --rt-generator: measured harmful (a spinning SCHED_FIFO thread starves
        # ksoftirqd, which carries veth traffic: frames then wait for RT throttling, seconds)
        old = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))
    try:
        start = time.monotonic_ns()
        for i in range(n):
            due = start + int(i * gap)
            while time.monotonic_ns() < due:
                pass
            sock.sendto(STAMP.pack(i, time.clock_gettime_ns(time.CLOCK_REALTIME)) + pad, dst)
        return n / ((time.monotonic_ns() - start) / 1e9)
    finally:
        if old:
            os.sched_setscheduler(0, *old)


def one_way(topo, port: int, n: int, pps: float, src: str = "a", size: int = 64,
            threaded: bool = False) -> tuple[list, float]:
    """n stamped datagrams from host src to the other host's UDP port; [(seq, tx, rx)], achieved pps."""
    from reshaper.bridge.netns import HOST_A, HOST_B

    sender_ns, sink_ns, dst = (topo.a, topo.b, HOST_B["v4"]) if src == "a" else (topo.b, topo.a, HOST_A["v4"])
    sink = Sink(sink_ns.socket(socket.AF_INET, socket.SOCK_DGRAM), port, threaded)
    tx = sender_ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    try:
        rate = send_stamped(tx, (dst, port), n, pps, size)
    finally:
        tx.close()
    return sink.collect(), rate
