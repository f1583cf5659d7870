"""Frames the engine must survive: runts, bogus headers, QinQ, extension headers, jumbo frames."""
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from reshaper.rules.binding import Engine

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def engine(rules: str, malformed: str = "pass") -> Engine:
    text = f"version: 1\nports: {{a: x.1, b: x.2}}\nmalformed: {malformed}\nrules:\n{rules}"
    return Engine(compile_rules(load_config("m.yaml", text)))


SET_DSCP = "  - {name: web, match: {ip_proto: tcp, dst_port: 80}, actions: [{set: {dscp: 10}}]}\n"
VALID = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80) / b"payload")


def bogus_ihl(frame: bytes, ihl: int) -> bytes:
    return frame[:14] + bytes([0x40 | ihl]) + frame[15:]


def bogus_total_length(frame: bytes, length: int) -> bytes:
    return frame[:16] + length.to_bytes(2, "big") + frame[18:]


MALFORMED = {
    "empty": b"",
    "runt 13 bytes": VALID[:13],
    "ipv4 header cut": VALID[:30],
    "ihl 4": bogus_ihl(VALID, 4),
    "ihl past the frame": bogus_ihl(VALID, 15)[:50],
    "total length past the frame": bogus_total_length(VALID, 1500),
    "total length below the header": bogus_total_length(VALID, 12),
    "ipv6 payload length past the frame": bytes(ETH / IPv6(plen=400) / UDP()),
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("policy", ["pass", "drop"])
def test_malformed_frames_are_counted_and_follow_the_policy(frame, policy):
    eng = engine(SET_DSCP, policy)
    verdict, out = eng.run(frame, "a")
    assert eng.counters()["malformed"] == 1
    assert eng.rule_counters(0)["matched"] == 0
    if policy == "pass":
        assert verdict.forward and out == frame
    else:
        assert not verdict.forward and verdict.reason == "malformed"


def test_short_tcp_header_is_not_malformed_but_has_no_ports():
    # IP says TCP, but only 10 bytes of it arrived: no port can match
    frame = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2", proto=6) / (b"\0\x50" * 5))
    eng = engine(SET_DSCP)
    verdict, out = eng.run(frame, "a")
    assert verdict.forward and out == frame
    assert eng.counters()["malformed"] == 0 and eng.counters()["unmatched"] == 1


def test_bad_tcp_data_offset():
    frame = bytearray(VALID)
    frame[14 + 20 + 12] = 0x20  # data offset 2 words: impossible
    eng = engine(SET_DSCP)
    verdict, out = eng.run(bytes(frame), "a")
    assert verdict.forward and out == bytes(frame) and eng.rule_counters(0)["matched"] == 0


def test_qinq_inner_fields_match_through_two_tags():
    frame = ETH / Dot1AD(vlan=10) / Dot1Q(vlan=20, prio=5) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80)
    eng = engine("  - {name: q, match: {vlan: 10, ip_proto: tcp, dst_port: 80}, actions: [{set: {dscp: 10}}]}\n")
    verdict, out = eng.run(bytes(frame), "a")
    expected = frame.copy()
    expected[IP].tos = 40
    del expected[IP].chksum, expected[TCP].chksum
    assert verdict.forward and out == bytes(expected)


def test_ipv6_extension_headers_are_walked_to_the_transport():
    frame = (ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
             / IPv6ExtHdrDestOpt() / UDP(sport=5, dport=53) / b"query")
    eng = engine("  - {name: dns, match: {ip_proto: udp, dst_port: 53}, actions: [{set: {dst_port: 5353}}]}\n")
    verdict, out = eng.run(bytes(frame), "a")
    expected = frame.copy()
    expected[UDP].dport = 5353
    del expected[UDP].chksum
    assert verdict.forward and out == bytes(expected)


def test_jumbo_frame_of_9216_bytes():
    frame = ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80) / (b"j" * (9216 - 54))
    assert len(frame) == 9216
    eng = engine(SET_DSCP)
    verdict, out = eng.run(bytes(frame), "a")
    expected = frame.copy()
    expected[IP].tos = 40
    del expected[IP].chksum, expected[TCP].chksum
    assert verdict.forward and out == bytes(expected)


def test_l3_mode_reads_from_the_ip_header():
    packet = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80) / b"x"
    eng = engine(SET_DSCP)
    verdict, out = eng.run(bytes(packet), "a", l3=True)
    expected = packet.copy()
    expected.tos = 40
    del expected.chksum, expected[TCP].chksum
    assert verdict.forward and out == bytes(expected)
