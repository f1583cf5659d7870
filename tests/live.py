"""Helpers for tests with a live bridge in network namespaces.

FrameTap: an AF_PACKET socket on a host's interface that sends crafted frames
and reads what arrives, with the VLAN tag the kernel took off put back (from
PACKET_AUXDATA), so frames compare byte for byte with what was expected.
Bridge: `reshaper run` started in the bridge namespace, stopped with SIGTERM.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time

from reshaper.bridge.control import read_stats
from reshaper.bridge.netns import Namespace

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


class FrameTap:
    def __init__(self, ns: Namespace, ifname: str):
        self.sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.sock.bind((ifname, ETH_P_ALL))

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(65536)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def receive(self, count: int, timeout: float = 2.0, match=None) -> list[bytes]:
        """Up to count incoming frames for which match(frame) is true, within timeout."""
        frames = []
        deadline = time.monotonic() + timeout
        while len(frames) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.read()
            except socket.timeout:
                break
            if data is not None and (match is None or match(data)):
                frames.append(data)
        return frames

    def read(self) -> bytes | None:
        """One frame as it was on the wire (a tag the kernel took off is put back); None for
        one this host sent."""
        data, ancdata, _, addr = self.sock.recvmsg(65536, 256)
        if addr[2] == socket.PACKET_OUTGOING:
            return None
        for level, kind, payload in ancdata:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _, _, _, _, tci, tpid = AUXDATA.unpack(payload[:AUXDATA.size])
                if status & TP_STATUS_VLAN_VALID:
                    tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        return data

    def close(self) -> None:
        self.sock.close()


class Bridge:
    """`reshaper run CONFIG` in a namespace; control socket and run dir in tmp_path."""

    def __init__(self, ns: Namespace, config_path, tmp_path, mode: str = "ring", extra=()):
        self.ns = ns
        self.config_path = str(config_path)
        self.control = str(tmp_path / f"{ns.name}.sock")
        self.log_path = tmp_path / f"{ns.name}.log"
        self.env = {**os.environ, "RESHAPER_RUN_DIR": str(tmp_path / "run")}
        self.argv = [sys.executable, "-m", "reshaper", "run", self.config_path, "--mode", mode,
                     "--control", self.control, "--status-interval", "0", *extra]
        self.proc = None

    def start(self, timeout: float = 15.0) -> "Bridge":
        self._log = open(self.log_path, "a")
        self.proc = self.ns.popen(self.argv, stderr=self._log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited {self.proc.returncode}: {self.log()}")
            try:
                read_stats(self.control)
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"bridge did not come up: {self.log()}")

    def stats(self) -> dict:
        return read_stats(self.control)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()

    def __enter__(self) -> "Bridge":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
