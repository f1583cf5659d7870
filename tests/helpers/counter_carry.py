"""Counters past 2**32: rules/engine/engine.c's rs_count adds to a counter's low word and carries
into its high word on a 32-bit CPU (the board's). Two frames carry every counter they touch; run on
its own this prints the counters after them as one JSON line after `COUNTS `, so that the armhf
wheel's test can run it under qemu-user (tests/armhf/test_wheel_armhf.py), where that path is
compiled, and the unit test here (tests/test_engine_counters.py) where the 64-bit add is."""
import json

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from reshaper.rules.binding import COUNTED_GLOBALS, Engine
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config

RULES = """version: 1
ports: {a: eth0.100, b: eth0.200}
rules:
  - {name: drop-udp, match: {ip_proto: udp}, actions: [drop]}
"""
FRAME_LEN = 60
# the counters' values before the frames: one below 2**32, the rule's bytes ten below
BEFORE = 2**32 - 1
BYTES_BEFORE = 2**32 - 10
# after a UDP frame (the rule drops it) and a TCP frame (no rule: forwarded), both from port a
EXPECTED = {
    "engine": {"malformed": BEFORE, "unmatched": 2**32, "direction": BEFORE},
    "rule": {"matched": 2**32, "bytes": BYTES_BEFORE + FRAME_LEN, "dropped": 2**32},
}


def ipv4_frame(l4) -> bytes:
    """An untagged Ethernet frame of FRAME_LEN bytes: IPv4 10.0.0.1 -> 10.0.0.2 carrying l4."""
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") / l4
    return bytes(frame / Padding(b"\0" * (FRAME_LEN - len(frame))))


def counts_after_carry() -> dict[str, dict[str, int]]:
    engine = Engine(compile_rules(load_config("carry.yaml", RULES)))
    state, rule = engine._header, engine._rules[0]
    for name in COUNTED_GLOBALS:
        setattr(state.counters, name, BEFORE)
    rule.matched, rule.bytes, rule.dropped = BEFORE, BYTES_BEFORE, BEFORE
    engine.run(ipv4_frame(UDP(sport=1000, dport=2000)), "a")
    engine.run(ipv4_frame(TCP(sport=1000, dport=80, flags="A")), "a")
    rule_counts = engine.rule_counters(0)
    engine_counts = engine.counters()
    return {"engine": {name: engine_counts[name] for name in COUNTED_GLOBALS},
            "rule": {name: rule_counts[name] for name in EXPECTED["rule"]}}


if __name__ == "__main__":
    print("COUNTS " + json.dumps(counts_after_carry(), sort_keys=True))
