"""`reshaper explain`: the golden cases double as its tests (every frame of every case, explained
after the frames before it, leaves as `apply` sends it, at the same time), and the account it
gives of one frame is checked line by line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from reshaper.bridge.explain import explain, ip_packet
from reshaper.examples import example
from reshaper.rules.config import load_config
from tests.helpers.captures import write_capture
from tests.helpers.golden import CASES, Case, run_case

FIVE_RULES = example("five-rules.yaml")
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def hooked(case: Case) -> bool:
    return "python:" in case.config   # a hook decides those frames; explain does not run hooks


@pytest.mark.parametrize("path", [p for p in CASES if not hooked(Case(p))], ids=lambda p: p.stem)
def test_every_golden_frame_leaves_as_apply_sends_it(path: Path, tmp_path: Path):
    case = Case(path)
    _, applied = run_case(case, tmp_path)
    config = load_config(str(tmp_path / "rules.yaml"))
    explained = []
    for k, (now, frame) in enumerate(case.inputs):
        result = explain(config, frame, case.from_port, seed=case.seed, before=case.inputs[:k], now_ns=now)
        if result.verdict is not None and result.verdict.forward:
            explained += [(now + result.verdict.delay_ns, f) for f in result.leaves]
    assert sorted(explained) == sorted(applied)


def dns_frame(vlan: int = 100) -> bytes:
    return bytes(ETH / Dot1Q(vlan=vlan) / IP(src="10.0.0.5", dst="198.51.100.7") / UDP(sport=5353, dport=53)
                 / (b"q" * 30))


def test_the_account_of_one_frame():
    r = explain(load_config(str(FIVE_RULES)), dns_frame())
    at = lambda line, col: f"{FIVE_RULES}:{line}:{col}"   # noqa: E731 - positions in the example file
    assert r.lines[:11] == [
        "the frame: 76 bytes into port a (eth0 VLAN 100, trunk form)",
        "its tag (VLAN 100, PCP 0) taken off: the rules see 72 bytes",
        "parsed: ethertype 0x0800 (ipv4), no VLAN tag; IPv4 header at 14, protocol 17 (udp); "
        "UDP header at 34 (8 bytes)",
        "rules, in order:",
        f"  rule 1 block-telnet ({at(10, 5)}): no: ip_proto ({at(11, 39)}) did not match; "
        "the frame's ip_proto is 17 (udp)",
        f"  rule 2 web-to-proxy ({at(13, 5)}): no: ip_proto ({at(18, 17)}) did not match; "
        "the frame's ip_proto is 17 (udp)",
        f"  rule 3 syn-mark ({at(22, 5)}): no: ip_proto ({at(23, 23)}) did not match; "
        "the frame's ip_proto is 17 (udp)",
        f"  rule 4 dns-rewrite ({at(26, 5)}): matched (eth_type, ip_proto, dst_port)",
        "actions of dns-rewrite:",
        f"  set ({at(29, 9)}): IP.chksum 0x4673 -> 0xae78, IP.dst 198.51.100.7 -> 192.0.2.53, "
        "UDP.chksum 0x109f -> 0x78a4",
        f"  dec_ttl ({at(30, 9)}): IP.ttl 64 -> 63, IP.chksum 0xae78 -> 0xaf78",
    ]
    assert r.lines[11:13] == ["verdict: forward (rule dns-rewrite), 1 frame, at once",
                              "leaves port b, tagged VLAN 200, 76 bytes:"]
    want = bytes(ETH / Dot1Q(vlan=200) / IP(src="10.0.0.5", dst="192.0.2.53", ttl=63) / UDP(sport=5353, dport=53)
                 / (b"q" * 30))
    assert r.leaves == [want]
    assert "".join(line[8:].replace(" ", "") for line in r.lines[13:]) == want.hex()


def test_a_rule_for_the_other_port_and_a_drop():
    config = load_config(str(FIVE_RULES))
    web = bytes(ETH / Dot1Q(vlan=200) / IP(src="10.0.0.5", dst="198.51.100.7") / TCP(dport=80, flags="A"))
    r = explain(config, web, "b")
    assert f"  rule 2 web-to-proxy ({FIVE_RULES}:13:5): no: it takes frames from port a only" in r.lines
    assert "verdict: forward (no rule), 1 frame, at once" in r.lines
    telnet = bytes(ETH / Dot1Q(vlan=100) / IP(src="10.0.0.5", dst="198.51.100.7") / TCP(dport=23))
    r = explain(config, telnet)
    assert r.lines[-2:] == [f"  drop ({FIVE_RULES}:12:15): the frame is dropped (rule)",
                            "verdict: dropped (rule; rule block-telnet)"]
    assert r.leaves == []


def test_a_frame_of_another_vlan_is_not_on_the_port():
    r = explain(load_config(str(FIVE_RULES)), dns_frame(vlan=300))
    assert r.verdict is None and r.leaves == []
    assert r.lines[-1] == ("not on port a: in trunk form it takes only frames tagged with VLAN 100; "
                           "the rules never see this one")


def explain_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reshaper", "explain", *args], capture_output=True, text=True,
                          timeout=60)


def test_a_frame_of_a_capture_after_the_frames_before_it(tmp_path):
    """--frame N runs the frames before N first: the third frame through a rate queue of two
    finds it full (the two before are still in it), as apply would; the first waits its 142 ms."""
    config = tmp_path / "rules.yaml"
    config.write_text("version: 1\nports: {a: eth0, b: eth1}\nrules:\n  - name: slow\n"
                      "    actions: [{rate: {bitrate: 8kbit, limit: 2}}]\n")
    frame = bytes(ETH / IP(dst="10.0.0.2") / UDP(dport=9) / (b"r" * 100))
    write_capture(tmp_path / "in.pcap", [(0, frame), (1000, frame), (2000, frame)])
    first = explain_cli(str(config), "--pcap", str(tmp_path / "in.pcap"))
    third = explain_cli(str(config), "--pcap", str(tmp_path / "in.pcap"), "--frame", "3")
    assert first.returncode == third.returncode == 0, first.stderr + third.stderr
    assert "verdict: forward (rule slow), 1 frame, 142.000 ms after it arrived" in first.stdout   # 1,136 bits at 8 kbit/s
    assert third.stdout.splitlines()[0] == f"frame 3 of {tmp_path / 'in.pcap'}: 142 bytes into port a (eth0)"
    assert "verdict: dropped (queue; rule slow)" in third.stdout
    missing = explain_cli(str(config), "--pcap", str(tmp_path / "in.pcap"), "--frame", "4")
    assert (missing.returncode, missing.stderr) == (1, f"reshaper explain: {tmp_path / 'in.pcap'} has 3 frames, "
                                                       "no frame 4\n")


def test_nfqueue_mode_sees_the_ip_packet():
    frame = dns_frame()
    r = explain_cli(str(FIVE_RULES), "--hex", frame.hex(), "--mode", "nfqueue")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "the frame: 58 bytes into port a (eth0, as NFQUEUE hands it over: from the IP header on)"
    assert lines[1] == "parsed: IPv4 header at 0, protocol 17 (udp); UDP header at 20 (8 bytes)"
    assert "leaves port b, 58 bytes:" in lines
    assert ip_packet(frame + b"\0" * 6) == frame[18:]   # the Ethernet padding goes, as the bridge trims it


def test_bad_arguments():
    assert explain_cli(str(FIVE_RULES)).returncode == 2        # neither --pcap nor --hex
    r = explain_cli(str(FIVE_RULES), "--hex", "zz")
    assert (r.returncode, r.stderr) == (2, "reshaper explain: --hex expected the frame's bytes in hex, got 'zz'\n")
    r = explain_cli(str(FIVE_RULES), "--hex", "00", "--mode", "xdp")
    assert r.returncode == 1 and "xdp mode" in r.stderr and r.stderr.endswith("nothing applied\n"), r.stderr
