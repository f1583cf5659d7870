"""The engine's global counters: its 64-bit counters count on past 2**32 (tests/helpers/counter_carry.py;
on armhf the same check runs in tests/armhf/test_wheel_armhf.py), and frames_in, worked out from the
others, counts each frame once."""
from scapy.layers.inet import TCP, UDP

from reshaper.rules.binding import Engine
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from tests.helpers.counter_carry import EXPECTED, counts_after_carry, ipv4_frame


def test_counters_carry_past_32_bits():
    assert counts_after_carry() == EXPECTED


def test_frames_in_counts_every_frame_once():
    """frames_in is worked out from the other counters (rules/binding.py's engine_counters): a frame
    that leaves with copies, one a rule drops, one no rule takes, a runt, one from the port that does
    not forward (a-to-b only) and a default-dropped one each count once."""
    rules = """version: 1
ports: {a: eth0.100, b: eth0.200}
forward: a-to-b
default: drop
rules:
  - {name: copy-udp, match: {ip_proto: udp, dst_port: 53}, actions: [{duplicate: {copies: 2}}]}
  - {name: drop-udp, match: {ip_proto: udp}, actions: [drop]}
  - {name: pass-web, match: {ip_proto: tcp, dst_port: 80}, actions: []}
"""
    engine = Engine(compile_rules(load_config("frames-in.yaml", rules)))
    verdicts = [engine.run(ipv4_frame(UDP(dport=53)), "a"),       # leaves with 2 copies
                engine.run(ipv4_frame(UDP(dport=54)), "a"),       # dropped by drop-udp
                engine.run(ipv4_frame(TCP(dport=80, flags="A")), "a"),   # a rule, no action
                engine.run(ipv4_frame(TCP(dport=81, flags="A")), "a"),   # no rule: default drop
                engine.run(b"\x02" * 10, "a"),                    # a runt: malformed, passed
                engine.run(ipv4_frame(UDP(dport=53)), "b")]       # b does not forward
    assert [(v.forward, v.copies, v.reason) for v, _ in verdicts] == [
        (True, 2, "none"), (False, 0, "rule"), (True, 0, "none"), (False, 0, "default"), (True, 0, "none"),
        (False, 0, "direction")]
    assert engine.counters() == {"frames_in": 6, "forwarded": 5, "dropped": 3, "malformed": 1, "unmatched": 1}
    assert engine.rule_counters(0)["duplicated"] == 2
