"""Frames and rule files of the live tests' topology (bridge/netns.py: host a's a0 on
port a1, host b's b0 on port b1): the hosts' MAC addresses the tests send from, the
two forms of ports, and frames as scapy rebuilds them."""
from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP

MAC_A, MAC_B = "02:00:00:00:0a:01", "02:00:00:00:0b:01"
PLAIN = "version: 1\nports: {a: a1, b: b1}\n"
TRUNK = "version: 1\nports: {a: {interface: a1, vlan: 100}, b: {interface: b1, vlan: 200}}\n"


def ours(frame: bytes) -> bool:
    """Frames the test crafted (other traffic, IPv6 router solicitations and the like, is ignored)."""
    return frame[6:12] in (bytes.fromhex(MAC_A.replace(":", "")), bytes.fromhex(MAC_B.replace(":", "")))


def write_config(tmp_path, text, name="rules.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rebuilt(frame):
    """The frame with every length and checksum recomputed by scapy."""
    frame = frame.copy()
    for layer in (IP, TCP, UDP):
        if frame.haslayer(layer):
            del frame[layer].chksum
    return bytes(frame)
