"""`reshaper trace`: live in each user-space mode (kernel mode: tests/kmod/test_kmod.py), the
records are the frames that arrived, byte for byte, with the rule and the verdict the engine
gave them; a rule filter, a reload under a trace, a reader that falls behind, the errors."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, GRE, Dot1Q, Ether

from reshaper._native import lib
from reshaper.bridge.control import read_stats
from reshaper.bridge.trace import line, summary
from tests.helpers.frames import write_config
from tests.helpers.live import LiveAppliance

RULES = """version: 1
ports: {a: a1, b: b1}
rules:
  - name: slow
    match: {ip_proto: udp, dst_port: 9}
    actions: [{delay: {time: 2ms}}, {set: {dscp: 4}}]
  - name: lossy
    match: {ip_proto: udp, dst_port: 10}
    actions: [{loss: {probability: 100%}}]
  - name: twice
    match: {ip_proto: udp, dst_port: 11}
    actions: [{duplicate: {copies: 1}}]
"""


ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4 = IP(src="10.0.0.1", dst="10.0.0.2")
BATCH = 100
SRC_DST_MAC = bytes.fromhex("020000000002" "020000000001")


def frame(dport: int, payload: bytes = b"traced") -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2")
                 / UDP(sport=4000, dport=dport) / payload)


def tracer(topo, appliance, *args: str) -> subprocess.Popen:
    """`reshaper trace` in the bridge's namespace, started once the instance says it traces."""
    proc = topo.br.popen([sys.executable, "-m", "reshaper", "trace", "--control", str(appliance.control), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while read_stats(appliance.control)["trace"] is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the trace did not start"
        time.sleep(0.05)
    return proc


def ours(proc: subprocess.Popen, n: int, l3: bool = False) -> list[dict]:
    """The next n JSON records of frames sent here (the hosts' own IPv6 chatter crosses too), then
    the client is interrupted as a user would."""
    got = []
    while len(got) < n:
        raw = proc.stdout.readline()
        assert raw, proc.communicate()
        record = json.loads(raw)
        if bytes.fromhex(record["head"]).startswith(bytes.fromhex("450000") if l3 else SRC_DST_MAC):
            got.append(record)
    proc.send_signal(signal.SIGINT)
    return got


def finished(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.parametrize("mode", ["ring", "xdp", "nfqueue"])
def test_each_frame_as_it_arrived_with_its_rule_and_verdict(topo, taps, tmp_path, mode):
    tap_a, tap_b = taps
    # NFQUEUE cannot send copies (its limits): there the third rule marks instead
    config = write_config(tmp_path, RULES if mode != "nfqueue" else RULES.replace("{duplicate: {copies: 1}}",
                                                                                   "{set: {dscp: 8}}"))
    sent = [frame(9), frame(10), frame(11), frame(12)]
    with LiveAppliance(topo.br, config, tmp_path, mode=mode) as appliance:
        proc = tracer(topo, appliance, "--json")
        for f in sent:
            tap_a.send(f)
        records = ours(proc, 4, l3=mode == "nfqueue")
        rc, _, err = finished(proc)
        assert (rc, err) == (0, "")
        deadline = time.monotonic() + 5
        while read_stats(appliance.control)["trace"] is not None:   # the client went: tracing is off
            assert time.monotonic() < deadline
            time.sleep(0.05)
    seen = [f[14:] if mode == "nfqueue" else f for f in sent]   # NFQUEUE hands over the IP packet
    assert [{k: r[k] for k in ("port", "len", "rule", "verdict", "reason", "copies", "delay_ns", "l3", "head")}
            for r in records] == [
        {"port": "a", "len": len(s), "rule": rule, "verdict": verdict, "reason": reason, "copies": copies,
         "delay_ns": delay, "l3": mode == "nfqueue", "head": s.hex()}
        for s, (rule, verdict, reason, copies, delay) in zip(seen, [
            ("slow", "forward", None, 0, 2_000_000), ("lossy", "drop", "loss", 0, 0),
            ("twice", "forward", None, 1 if mode != "nfqueue" else 0, 0), (None, "forward", None, 0, 0)])]
    assert all(abs(r["time"] - time.time()) < 60 for r in records)


def test_one_rule_and_the_line_tcpdump_would_print(topo, taps, tmp_path):
    tap_a, _ = taps
    config = write_config(tmp_path, RULES)
    with LiveAppliance(topo.br, config, tmp_path, mode="ring") as appliance:
        proc = tracer(topo, appliance, "--rule", "slow", "--count", "2")
        for dport in (10, 9, 11, 9):
            tap_a.send(frame(dport, b"x" * dport))
        rc, out, err = finished(proc)
    assert (rc, err) == (0, "")
    clock = r"\d\d:\d\d:\d\d\.\d{6}"
    assert re.fullmatch(f"{clock} a IP 10.0.0.1.4000 > 10.0.0.2.9: UDP, length 9 \\| slow: forward, delay 2.000 ms\n"
                        f"{clock} a IP 10.0.0.1.4000 > 10.0.0.2.9: UDP, length 9 \\| slow: forward, delay 2.000 ms\n",
                        out), out


def test_a_reload_keeps_the_trace_on_its_rule_and_ends_it_when_the_rule_goes(topo, taps, tmp_path):
    tap_a, _ = taps
    config = write_config(tmp_path, RULES)
    with LiveAppliance(topo.br, config, tmp_path, mode="ring") as appliance:
        proc = tracer(topo, appliance, "--rule", "lossy", "--json")
        tap_a.send(frame(10))
        # the rule moves to index 0: its frames are still the ones traced, under its name
        config.write_text(RULES.replace("  - name: slow\n", "  - name: lossy\n    match: {ip_proto: udp, dst_port: 10}\n"
                                        "    actions: [drop]\n  - name: slow\n", 1)
                          .replace("  - name: lossy\n    match: {ip_proto: udp, dst_port: 10}\n    actions: [{loss",
                                   "  - name: gone\n    match: {ip_proto: udp, dst_port: 10}\n    actions: [{loss"))
        before = read_stats(appliance.control)["reloads"]
        appliance.send_signal(1)
        while read_stats(appliance.control)["reloads"] == before:
            time.sleep(0.05)
        tap_a.send(frame(10))
        tap_a.send(frame(9))
        time.sleep(0.5)
        config.write_text(RULES.replace("name: lossy", "name: renamed"))
        appliance.send_signal(1)
        rc, out, err = finished(proc)
    records = [json.loads(x) for x in out.splitlines()]
    assert [(r["rule"], r["reason"]) for r in records] == [("lossy", "loss"), ("lossy", "rule")]
    assert rc == 1
    assert err == (f"reshaper trace: the reload ended the trace: no rule named 'lossy' in {config}; "
                   f"its rules: slow, renamed, twice\n")


def test_a_reader_that_falls_behind_loses_lines_not_frames(topo, taps, tmp_path):
    """The loop never waits for a reader: with the reader stalled, the buffer fills, later frames
    are counted as not shown, and every frame still crosses."""
    tap_a, tap_b = taps
    # a rule of these frames alone (the hosts' IPv6 chatter crosses too), that leaves them as they are
    config = write_config(tmp_path, RULES + "  - name: counted\n    match: {ip_proto: udp, dst_port: 12}\n"
                                            "    actions: [{set: {ttl: 64}}]\n")
    n = 3000   # RS_TRACE_SLOTS (1024) records fill the buffer
    with LiveAppliance(topo.br, config, tmp_path, mode="ring") as appliance:
        s = _stalled_reader(str(appliance.control), "counted")   # a path: any namespace reaches it
        for first in range(0, n, BATCH):   # batches the receiving socket holds
            batch = [frame(12, i.to_bytes(4, "big")) for i in range(first, first + BATCH)]
            for f in batch:
                tap_a.send(f)
            assert tap_b.receive(BATCH, timeout=10, match=lambda f: f in batch) == batch
        records, not_shown = _read_all(s, n)
    assert not_shown > 0 and len(records) + not_shown == n
    numbers = [int.from_bytes(bytes.fromhex(r["head"])[42:46], "big") for r in records]
    assert numbers == list(range(len(records)))   # the first ones, in order


def _stalled_reader(path: str, rule: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"trace " + json.dumps({"rule": rule}).encode() + b"\n")
    return s


def _read_all(s: socket.socket, n: int) -> tuple[list[dict], int]:
    f = s.makefile("rb")
    assert json.loads(f.readline()) == {"mode": "ring", "rule": "counted"}
    records, not_shown = [], 0
    s.settimeout(20)
    while len(records) + not_shown < n:
        msg = json.loads(f.readline())
        if "not_shown" in msg:
            not_shown = msg["not_shown"]
        else:
            records.append(msg)
    s.close()
    return records, not_shown


def test_errors_name_what_is_wrong(topo, tmp_path):
    config = write_config(tmp_path, RULES)
    with LiveAppliance(topo.br, config, tmp_path, mode="ring") as appliance:
        r = topo.br.run([sys.executable, "-m", "reshaper", "trace", "--control", str(appliance.control),
                         "--rule", "nosuch"], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr == f"reshaper trace: no rule named 'nosuch' in {config}; its rules: slow, lossy, twice\n"
        first = tracer(topo, appliance)
        r = topo.br.run([sys.executable, "-m", "reshaper", "trace", "--control", str(appliance.control)],
                        capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stderr) == (1, "reshaper trace: another `reshaper trace` is reading this "
                                               "instance; one at a time\n")
        first.terminate()
        first.wait(10)
    r = subprocess.run([sys.executable, "-m", "reshaper", "trace", "--control", str(tmp_path / "none.sock")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith(f"reshaper trace: no running instance answers on "
                                                     f"{tmp_path / 'none.sock'}: ")


@pytest.mark.unit
@pytest.mark.parametrize("pkt, l3, words", [
    (ETH / V4 / UDP(sport=1, dport=53) / b"abc", False, "IP 10.0.0.1.1 > 10.0.0.2.53: UDP, length 3"),
    (V4 / UDP(sport=1, dport=53) / b"abc", True, "IP 10.0.0.1.1 > 10.0.0.2.53: UDP, length 3"),
    (ETH / V4 / TCP(sport=40000, dport=80, flags="SA") / (b"y" * 1400), False,
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S.], length 1400"),
    (ETH / V4 / TCP(sport=1, dport=2, flags="FPA"), False, "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [FP.], length 0"),
    (ETH / Dot1Q(vlan=100) / Dot1Q(vlan=7) / V4 / ICMP(id=3, seq=9) / (b"p" * 56), False,
     "vlan 100, vlan 7, IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 3, seq 9, length 64"),
    (ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment() / UDP(sport=5, dport=6) / b"zz", False,
     "IP6 2001:db8::1.5 > 2001:db8::2.6: UDP, length 2"),
    (IPv6(src="fd00::1", dst="fd00::2", nh=59), True, "IP6 fd00::1 > fd00::2: ip-proto-59, length 0"),
    (ETH / V4 / GRE(), False, "IP 10.0.0.1 > 10.0.0.2: ip-proto-47, length 4"),
    (ETH / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2"), False, "ARP, Request who-has 10.0.0.2 tell 10.0.0.1, "
                                                                "length 42"),
    (Ether(type=0x88cc) / (b"\0" * 50), False, "ethertype 0x88cc, length 64"),
])
def test_summary_speaks_tcpdump(pkt, l3, words):
    """As tcpdump -n prints them, from the first RS_TRACE_HEAD bytes (the length from the headers)."""
    data = bytes(pkt)
    assert summary(data[:lib.RS_TRACE_HEAD], len(data), l3) == words


@pytest.mark.unit
def test_the_line_says_rule_and_verdict():
    data = bytes(ETH / V4 / UDP(sport=1, dport=53))
    base = {"time": 0.5, "port": "b", "len": len(data), "l3": False, "head": data.hex(), "copies": 0,
            "delay_ns": 0, "reason": None}
    tail = [line({**base, **r}).split(" | ")[1] for r in (
        {"rule": None, "verdict": "forward"}, {"rule": "x", "verdict": "drop", "reason": "loss"},
        {"rule": "x", "verdict": "forward", "copies": 2, "delay_ns": 1_500_000},
        {"rule": "x", "verdict": "forward", "copies": 1})]
    assert tail == ["no rule: forward", "x: drop (loss)", "x: forward +2 copies, delay 1.500 ms", "x: forward +1 copy"]
    assert line({**base, "rule": None, "verdict": "forward"}).split(" ")[1:3] == ["b", "IP"]


def test_the_appliance_stops_under_a_trace(topo, tmp_path):
    """A stop while a client traces: the appliance exits cleanly (the trace thread reads nothing of
    the data path it tears down), and the client says the instance stopped."""
    config = write_config(tmp_path, RULES)
    appliance = LiveAppliance(topo.br, config, tmp_path, mode="ring").start()
    try:
        proc = tracer(topo, appliance, "--json")
    finally:
        rc = appliance.stop()
    assert rc == 0, appliance.log()
    code, out, err = finished(proc)
    assert (code, err) == (1, "reshaper trace: the instance stopped\n")
    # what crossed before the stop (the hosts' own IPv6 chatter) was shown as records
    assert all(json.loads(x)["verdict"] == "forward" for x in out.splitlines())
    assert list((tmp_path / "run").glob("*")) == []
