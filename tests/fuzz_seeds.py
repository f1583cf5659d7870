"""Writes the fuzzer's seed corpus: compiled example and golden programs x sample frames.

Input layouts of rules/engine/fuzz_engine.c: [u16 LE program length][program][u8 port][frame], and
[u16 0][u8 port][u8 n][n bytes the harness makes a program of][frame] (seeded with pseudo-random bytes).
Usage: python -m tests.fuzz_seeds DIR
"""
import pathlib
import random
import struct
import sys
import tempfile

import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from reshaper.rules.model import ConfigError
from reshaper.examples import EXAMPLES
from tests.helpers.golden import CASES


# inputs the fuzzer once failed on, tried first by every run (hex, the harness's first input layout)
REGRESSIONS = {
    # three rules testing the destination MAC (the third under a zero mask) and an IPv4 frame without
    # Ethernet (RS_RUN_L3): the loaded form took the zero-mask test for no test; the walk never matches it
    "l3-zero-mask-eth": "5b005253485002000600030000005b0000001900000001010000010d01020000000002ff"
                        "ffffffffff48001900000001010000010d0101005e000000ffffff80000048001900000001010000010d013333000000"
                        "000000000000004800054500002000010000401165cb0a0000010a0001010fa00035000c00007a65726f",
}


def sample_frames() -> list[bytes]:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    frames = [
        eth / IP(src="10.0.0.1", dst="10.0.1.1") / TCP(sport=4000, dport=80, flags="S") / b"GET /",
        eth / IP(src="10.0.0.1", dst="10.0.1.1", ttl=1) / UDP(sport=4000, dport=53) / (b"q" * 30),
        eth / IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=4000, dport=53, chksum=0) / b"zero",
        eth / IP(src="10.0.0.1", dst="10.0.1.1", flags="MF") / UDP(dport=5000) / b"frag",
        eth / IP(dst="10.0.1.1") / ICMP() / b"ping",
        eth / Dot1Q(vlan=7, prio=3) / IP(dst="10.0.1.1") / UDP(dport=7) / b"tagged",
        eth / Dot1AD(vlan=8) / Dot1Q(vlan=9) / IP(dst="10.0.1.1") / TCP(dport=23),
        eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=53) / b"v6",
        eth / IPv6(dst="2001:db8::2") / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment() / TCP(dport=80),
        eth / ARP(pdst="10.0.0.2"),
    ]
    raw = [bytes(f) for f in frames]
    raw.append(raw[0][:20])                       # truncated IPv4 header
    raw.append(raw[0][:14] + b"\x4f" + raw[0][15:])  # IHL 15: header past the frame
    raw.append(b"\x02\x00\x00")                   # runt
    raw.append(raw[1] + b"\0" * 20)               # Ethernet padding
    return raw


def programs() -> list[bytes]:
    out = []
    sources = sorted(EXAMPLES.glob("*.yaml"))
    for path in sources:
        out.append(compile_rules(load_config(str(path))))
    with tempfile.TemporaryDirectory() as tmp:
        for path in CASES:
            config_file = pathlib.Path(tmp) / "config.yaml"
            config_file.write_text(yaml.safe_dump(yaml.safe_load(path.read_text())["config"]))
            try:
                out.append(compile_rules(load_config(str(config_file))))
            except ConfigError:
                pass  # a golden case about errors
    return out


def main(directory: str) -> None:
    target = pathlib.Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, program in enumerate(programs()):
        for j, frame in enumerate(sample_frames()):
            for port in (1, 2, 1 | 4):  # a, b, and a in L3 mode
                data = frame[14:] if port & 4 else frame
                (target / f"seed-{i:03}-{j:02}-{port}").write_bytes(
                    struct.pack("<H", len(program)) + program + bytes([port]) + data)
                n += 1
    draw = random.Random(18)
    for j, frame in enumerate(sample_frames()):
        for k in range(4):
            made = bytes(draw.randrange(256) for _ in range(draw.randrange(8, 256)))
            (target / f"built-{j:02}-{k}").write_bytes(struct.pack("<HBB", 0, 1 + k % 2, len(made)) + made + frame)
            n += 1
    for name, data in REGRESSIONS.items():
        (target / f"regression-{name}").write_bytes(bytes.fromhex(data))
        n += 1
    print(f"{n} seeds in {target}")


if __name__ == "__main__":
    main(sys.argv[1])
