"""`reshaper demo`: the rule engine at work on crafted frames, offline.

It runs the shipped demo rules over a small capture made here (UDP, ping,
telnet, lossy UDP, all on VLAN 100) and shows each frame as it left VLAN 200,
with its departure time. The live appliance in network namespaces joins this
once ring mode lands.
"""
from __future__ import annotations

import os
import tempfile

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import RawPcapReader, wrpcap

from bridge.apply import apply_capture
from rules.config import load_config
from rules.examples import example

HOST_A, HOST_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def demo_frames() -> list:
    base = Ether(src=HOST_A, dst=HOST_B) / Dot1Q(vlan=100) / IP(src="10.0.0.1", dst="10.0.1.1")
    frames = [base / UDP(sport=4000, dport=7) / b"echo me",
              base / ICMP(id=1, seq=1) / b"ping",
              base / TCP(sport=4001, dport=23, flags="S")]
    frames += [base / UDP(sport=4002, dport=5000) / bytes([i]) for i in range(20)]
    for i, frame in enumerate(frames):
        frame.time = 1_700_000_000 + i / 1000  # 1 ms apart
    return frames


def run_demo() -> int:
    config_path = str(example("demo.yaml"))
    config = load_config(config_path)
    print(f"rules: {config_path}")
    with tempfile.TemporaryDirectory(prefix="reshaper-demo-") as tmp:
        in_pcap, out_pcap = os.path.join(tmp, "in.pcap"), os.path.join(tmp, "out.pcap")
        frames = demo_frames()
        wrpcap(in_pcap, frames)
        result = apply_capture(config, in_pcap, out_pcap, "a", seed=1)
        t0 = frames[0].time
        print(f"\n{len(frames)} frames sent on VLAN 100; leaving VLAN 200:")
        for data, meta in RawPcapReader(out_pcap):
            t = meta.sec + meta.usec / 1e9
            print(f"  +{(t - float(t0)) * 1000:7.3f} ms  {Ether(data).summary()}")
    print()
    print(result.report())
    return 0
