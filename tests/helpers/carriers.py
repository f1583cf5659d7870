"""Inputs the carriers are compared on beyond the golden cases (tests/test_carriers.py live,
tests/kmod/test_kmod.py in the kernel module): a generated mix of frames and a real
conversation, each with the rule file it crosses, written for the live topology's ports a1
and b1 (tests/helpers/frames.py)."""
from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import ARP, Dot1Q, Ether

CONVERSATION = Path(__file__).resolve().parents[1] / "data/conversation.pcapng"   # tests/data/make_captures.py
CONVERSATION_RULES = """version: 1
ports: {a: a1, b: b1}
rules:
  - name: web
    match: {ip_proto: tcp, src_port: 8080}
    actions: [{set: {dscp: 34}}, dec_ttl]
  - name: ping
    match: {ip_proto: icmp}
    actions: [{set: {ttl: 9}}]
"""
CLIENT, SERVER = "02:00:00:00:0c:01", "02:00:00:00:0c:02"
MIX_RULES = """version: 1
ports: {a: a1, b: b1}
rules:
  - name: voice
    match: {ip_proto: udp, dst_port: 5004}
    actions: [{set: {dscp: 46}}]
  - name: web-ttl
    match: {ip_proto: tcp, dst_port: 80}
    actions: [dec_ttl]
  - name: no-telnet
    match: {ip_proto: tcp, dst_port: 23}
    actions: [drop]
  - name: v6
    match: {eth_type: ipv6}
    actions: [{set: {dscp: 10}}]
"""


def mix() -> list[bytes]:
    """A two-way conversation sent from one side, an inner VLAN tag, IPv6 extension headers,
    fragments, bad checksums and ARP; MIX_RULES drops one (telnet)."""
    frames = []
    for i in range(4):   # a conversation, both directions, replayed from one side
        src, dst = (CLIENT, SERVER) if i % 2 == 0 else (SERVER, CLIENT)
        frames.append(Ether(src=src, dst=dst) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=4000 + i, dport=5004)
                      / b"rtp")
    frames += [
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2", ttl=9) / TCP(sport=1, dport=80) / b"GET",
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=1, dport=23),
        Ether(src=CLIENT, dst=SERVER) / Dot1Q(vlan=7) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=1, dport=5004),
        Ether(src=CLIENT, dst=SERVER) / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() /
        IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=9),
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2", flags="MF", id=7) /
        UDP(sport=1, dport=5004, len=100) / (b"x" * 40),
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2", frag=5, id=7) / (b"y" * 40),
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=1, dport=5004, chksum=0x1234),
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=2, dport=80, chksum=0x4321),
        Ether(src=CLIENT, dst=SERVER) / IP(src="10.9.0.1", dst="10.9.0.2") / ICMP(),
        Ether(src=CLIENT, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.9.0.1", pdst="10.9.0.2"),
    ]
    return [bytes(f) for f in frames]
