"""The engine's global counters: its 64-bit counters count on past 2**32 (tests/helpers/counter_carry.py;
on armhf the same check runs in tests/armhf/test_wheel_armhf.py), and the totals added up from them
are what the verdicts say."""
import pytest
from scapy.layers.inet import TCP, UDP

from reshaper.rules.binding import Engine
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from tests.helpers.counter_carry import EXPECTED, counts_after_carry, ipv4_frame


def test_counters_carry_past_32_bits():
    assert counts_after_carry() == EXPECTED


@pytest.mark.parametrize("default, malformed", [("drop", "pass"), ("forward", "drop")])
def test_totals_are_what_the_verdicts_say(default, malformed):
    """frames_in, forwarded and dropped are added up from the counters of the ways frames went and the
    rules' (rules/binding.py's engine_counters): they are what the verdicts say, for a frame that
    leaves with copies, one a rule drops, one a rule passes, one no rule takes, a runt and one from
    the port that does not forward (a-to-b only), under either program flag for the last three."""
    rules = f"""version: 1
ports: {{a: eth0.100, b: eth0.200}}
forward: a-to-b
default: {default}
malformed: {malformed}
rules:
  - {{name: copy-udp, match: {{ip_proto: udp, dst_port: 53}}, actions: [{{duplicate: {{copies: 2}}}}]}}
  - {{name: drop-udp, match: {{ip_proto: udp}}, actions: [drop]}}
  - {{name: pass-web, match: {{ip_proto: tcp, dst_port: 80}}, actions: []}}
"""
    engine = Engine(compile_rules(load_config("totals.yaml", rules)))
    verdicts = [engine.run(frame, port)[0] for frame, port in (
        (ipv4_frame(UDP(dport=53)), "a"), (ipv4_frame(UDP(dport=54)), "a"),
        (ipv4_frame(TCP(dport=80, flags="A")), "a"), (ipv4_frame(TCP(dport=81, flags="A")), "a"),
        (b"\x02" * 10, "a"), (ipv4_frame(UDP(dport=53)), "b"))]
    assert [v.reason for v in verdicts] == [
        "none", "rule", "none", "default" if default == "drop" else "none",
        "malformed" if malformed == "drop" else "none", "direction"]
    assert engine.counters() == {
        "frames_in": len(verdicts), "forwarded": sum(1 + v.copies for v in verdicts if v.forward),
        "dropped": sum(not v.forward for v in verdicts), "malformed": 1, "unmatched": 1, "direction": 1}
    assert engine.rule_counters(0)["duplicated"] == 2
