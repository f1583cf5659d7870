"""Rewrites a string in UDP payloads, changing the packet's length.

The declarative `payload` action writes bytes in place; a hook can make the
packet longer or shorter, and reshaper fixes the IP and UDP lengths and
checksums after it.
"""
from scapy.layers.inet import UDP
from scapy.packet import Raw

OLD, NEW = b"hello", b"howdy, partner"


def rewrite(frame, ctx):
    udp = frame.getlayer(UDP)
    if udp is not None and udp.haslayer(Raw):
        udp[Raw].load = udp[Raw].load.replace(OLD, NEW)
    return frame
