"""Frames between the carriers' bytes and a hook's function: the packet a hook is given, the
bytes of what it returns (lengths and checksums made right again), and what leaves on its error.

A frame is (back by the ingress port?, bytes): reshaper.hook.Reply sends one back.
"""
from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from reshaper.hook import Reply


def packet(frame: bytes, raw: bool, l3: bool):
    """What the hook is given: the bytes (raw), an IP/IPv6 packet (l3: nfqueue mode) or an Ether frame."""
    if raw:
        return frame
    return (IP(frame) if frame[0] >> 4 == 4 else IPv6(frame)) if l3 else Ether(frame)


def on_error(frame: bytes, action: str) -> list[tuple[bool, bytes]]:
    """What leaves when a hook fails or overruns: the frame unchanged (pass), or nothing (drop)."""
    return [] if action == "drop" else [(False, frame)]


def fix_lengths_and_checksums(packet: Packet) -> bytes:
    """Lets scapy recompute IP/UDP lengths and IP/TCP/UDP/ICMP checksums."""
    for layer, fields in ((IP, ("len", "chksum")), (IPv6, ("plen",)), (UDP, ("len", "chksum")),
                          (TCP, ("chksum",)), (ICMP, ("chksum",))):
        current = packet.getlayer(layer)
        while current is not None:
            for field in fields:
                setattr(current, field, None)
            current = current.payload.getlayer(layer) if current.payload else None
    return bytes(packet)


def frames(result, fix_checksums: bool, l3: bool) -> list[tuple[bool, bytes]]:
    """The frames a hook's return value stands for, in order."""
    if result is None:
        return []
    items = result if isinstance(result, list) else [result]
    out = []
    for item in items:
        back = isinstance(item, Reply)
        if back:
            item = item.frame
        if isinstance(item, (bytes, bytearray)):
            data = bytes(item)
            if fix_checksums:
                data = fix_lengths_and_checksums(packet(data, False, l3))
        elif isinstance(item, Packet):
            data = fix_lengths_and_checksums(item) if fix_checksums else bytes(item)
        else:
            raise TypeError(f"a hook returns a frame (bytes or scapy packet), a list of them or None, "
                            f"not {type(item).__name__}")
        out.append((back, data))
    return out
