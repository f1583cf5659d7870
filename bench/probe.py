"""The latency probe: stamped UDP datagrams (lab/stamped.py's format) from host a to a
socket on host b, sleep-paced at a low rate beside the generator's load; the sink's
kernel receive timestamps give one-way delays. And percentiles of such samples."""
from __future__ import annotations

import socket
import struct
import threading
import time

from reshaper.lab.stamped import SO_RCVBUFFORCE, SO_TIMESTAMPNS, STAMP

PROBE_PORT = 7077


class Probe:
    """Stamped UDP datagrams from ns a to a socket in ns b (SO_TIMESTAMPNS), sleep-paced.
    A subclass sends and receives otherwise (open(), send() and the stamp's offset in what rx
    reads: bench/board.py's, as frames on a VLAN trunk)."""
    stamp_offset = 0   # where STAMP starts in what rx reads

    def __init__(self, topo, pps: float):
        self.pps = pps
        self.open(topo)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def open(self, topo) -> None:
        """rx and tx, and what send() needs."""
        from reshaper.bridge.netns import HOST_B

        self.dst = (HOST_B["v4"], PROBE_PORT)
        self.rx = topo.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        except OSError:
            pass
        self.rx.bind(("0.0.0.0", PROBE_PORT))
        self.tx = topo.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # UDP checksum 0 (none): with checksum offload the frame would leave a0 with a partial
        # checksum, which a forwarder that copies raw frames (the naive one) passes on unfixed
        self.tx.setsockopt(socket.SOL_SOCKET, 11, 1)   # SO_NO_CHECK

    def start(self) -> None:
        self._thread.start()

    def _send(self) -> None:
        pad = bytes(48)
        gap = 1e9 / self.pps
        start = time.monotonic_ns()
        i = 0
        while not self._stop.is_set():
            due = start + int(i * gap)
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            try:
                self.send(STAMP.pack(i, time.clock_gettime_ns(time.CLOCK_REALTIME)) + pad)
            except OSError:
                pass
            i += 1
        self.sent = i

    def send(self, payload: bytes) -> None:
        self.tx.sendto(payload, self.dst)

    def stop(self) -> list[float]:
        """One-way delays in µs of the probes that arrived."""
        self._stop.set()
        self._thread.join()
        self.tx.close()
        delays = []
        self.rx.settimeout(0.3)
        while True:
            try:
                data, anc, _, _ = self.rx.recvmsg(2048, 64)
            except (socket.timeout, BlockingIOError):
                break
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and \
                        len(data) >= self.stamp_offset + STAMP.size:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    _, tx = STAMP.unpack_from(data, self.stamp_offset)
                    delays.append((sec * 1_000_000_000 + nsec - tx) / 1000)
        self.rx.close()
        return delays


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)
