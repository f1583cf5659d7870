"""FrameTap: an AF_PACKET socket on an interface that sends crafted frames and reads what
arrives, with the VLAN tag the kernel took off put back (from PACKET_AUXDATA), so frames
compare byte for byte with what was expected. The live tests tap their hosts' interfaces
with it (tests/conftest.py), the emulated board its trunk (lab/vm/board.py).
"""
from __future__ import annotations

import socket
import struct
import time

from reshaper.bridge.netns import Namespace

# linux/if_ether.h, linux/if_packet.h (lab/vm/agent.py writes them again: the guest agent runs on
# the standard library alone)
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


class FrameTap:
    """ifname in namespace ns: send() frames out of it, receive() what arrives on it."""

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
