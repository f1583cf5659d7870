"""Counters past 2**32: rules/engine/engine.c's rs_count adds to a counter's low word and carries
into its high word on a 32-bit CPU (the board's). Two frames carry every counter they touch; run on
its own this prints the counters after them as one JSON line after `COUNTS `, so that the armhf
wheel's test can run it under qemu-user (tests/armhf/test_wheel_armhf.py), where that path is
compiled, and the unit test here (tests/test_engine_counters.py) where the 64-bit add is."""
import json

from reshaper.rules.binding import Engine
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
    "engine": {"frames_in": 2**32 + 1, "forwarded": 2**32, "dropped": 2**32, "malformed": BEFORE,
               "unmatched": 2**32},
    "rule": {"matched": 2**32, "bytes": BYTES_BEFORE + FRAME_LEN, "dropped": 2**32},
}


def ipv4_frame(proto: int, l4: bytes) -> bytes:
    """An untagged Ethernet frame of FRAME_LEN bytes: IPv4 10.0.0.1 -> 10.0.0.2 carrying l4."""
    ip = bytes([0x45, 0, 0, FRAME_LEN - 14, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    return (eth + ip + l4).ljust(FRAME_LEN, b"\0")


def counts_after_carry() -> dict[str, dict[str, int]]:
    engine = Engine(compile_rules(load_config("carry.yaml", RULES)))
    state, rule = engine._header, engine._rules[0]
    for name in EXPECTED["engine"]:
        setattr(state.counters, name, BEFORE)
    rule.matched, rule.bytes, rule.dropped = BEFORE, BYTES_BEFORE, BEFORE
    udp = (1000).to_bytes(2, "big") + (2000).to_bytes(2, "big") + (FRAME_LEN - 34).to_bytes(2, "big") + b"\0\0"
    tcp = (1000).to_bytes(2, "big") + (80).to_bytes(2, "big") + bytes(8) + bytes([0x50, 0x10]) + bytes(6)
    engine.run(ipv4_frame(17, udp), "a")
    engine.run(ipv4_frame(6, tcp), "a")
    rule_counts = engine.rule_counters(0)
    return {"engine": engine.counters(), "rule": {name: rule_counts[name] for name in EXPECTED["rule"]}}


if __name__ == "__main__":
    print("COUNTS " + json.dumps(counts_after_carry(), sort_keys=True))
