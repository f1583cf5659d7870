"""The naive Python forwarder, the bench's `python` mode: what a first attempt looks like.

    python -m reshaper.bench.naive_forwarder A B STATS_PATH

bench/devices.py runs it in the bridge namespace, pinned to the forwarder's CPU.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

from reshaper.lab.stamped import SO_RCVBUFFORCE

SOL_PACKET = 263
PACKET_STATISTICS = 6


def naive_forward(a: str, b: str, stats_path: str) -> None:
    """What a first attempt looks like: two AF_PACKET sockets, recv() from one, send() on the other.
    SIGUSR1 writes the counters (frames, socket drops) to stats_path; SIGTERM ends it."""
    socks = {}
    for name in (a, b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((name, 0x0003))
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        s.setblocking(False)
        socks[name] = s
    out = {a: socks[b], b: socks[a]}
    counts = {"rx": 0, "tx": 0, "send_errors": 0, "socket_drops": 0}

    def dump(*_):
        for s in socks.values():
            packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            counts["socket_drops"] += drops   # the kernel resets them on every read
        with open(stats_path + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(stats_path + ".tmp", stats_path)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    poller = select.poll()
    by_fd = {}
    for name, s in socks.items():
        poller.register(s, select.POLLIN)
        by_fd[s.fileno()] = name
    dump()
    while True:
        for fd, _ in poller.poll():
            name = by_fd[fd]
            rx, tx = socks[name], out[name]
            while True:
                try:
                    data, addr = rx.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                counts["rx"] += 1
                try:
                    tx.send(data)
                    counts["tx"] += 1
                except OSError:
                    counts["send_errors"] += 1


if __name__ == "__main__":
    naive_forward(*sys.argv[1:])
