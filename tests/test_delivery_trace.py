"""`rate: {trace: FILE}`: a rule's frames leave at the opportunities of a delivery trace in mahimahi's
format (rules/delivery_trace.py), offline through `reshaper apply` where times are exact; the trace
file's errors; the verifier on broken traces."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper._native import lib
from reshaper.bridge.apply import apply_capture
from reshaper.rules.binding import ProgramError, program_verify
from reshaper.rules.config import load_config
from tests.helpers.captures import read_outputs, write_capture
from tests.helpers.config_errors import PORTS, reshaper_check

MS = 10**6
OPP = lib.RS_TRACE_OPP_BYTES


def frame(n: int, size: int) -> bytes:
    head = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") \
        / UDP(sport=4000, dport=9)
    return bytes(head / f"{n:08d}".encode().ljust(size - len(head), b"."))


def run(tmp_path, trace: str, arrivals: list[tuple[int, int]], limit: int = 1000, extra: str = "") -> list[int]:
    """Departure times (ns after the first arrival) of frames (arrival ns, size) through a rule that
    serialises them by trace."""
    (tmp_path / "link.trace").write_text(trace)
    (tmp_path / "r.yaml").write_text(PORTS + "rules:\n  - name: link\n    match: {ip_proto: udp}\n"
                                     f"    actions: [{{rate: {{trace: link.trace, limit: {limit}{extra}}}}}]\n")
    write_capture(tmp_path / "in.pcap", [(t, frame(i, size)) for i, (t, size) in enumerate(arrivals)])
    apply_capture(load_config(str(tmp_path / "r.yaml")), str(tmp_path / "in.pcap"), str(tmp_path / "out.pcap"))
    out = read_outputs(tmp_path / "out.pcap")
    sent = [int(f[42:50]) for _, f in out]   # each frame leaves once, in the order it came
    assert sent == sorted(set(sent)), sent
    return [t for t, _ in out]


def test_full_size_frames_leave_one_an_opportunity_and_the_trace_repeats(tmp_path):
    """Twelve 1514-byte frames at once, a trace of opportunities at 1, 1, 3, 6 and 10 ms (period 10 ms):
    each frame takes the next opportunity, two in the first millisecond, then the trace again."""
    out = run(tmp_path, "1\n1\n3\n6\n10\n", [(0, OPP)] * 12)
    assert out == [t * MS for t in (1, 1, 3, 6, 10, 11, 11, 13, 16, 20, 21, 21)]


def test_smaller_frames_share_an_opportunity_and_a_larger_one_spans_two(tmp_path):
    """An opportunity carries 1514 bytes: two 757-byte frames leave in one, a 2000-byte frame leaves
    with the second opportunity it takes bytes from, the next frame (1000 bytes) in the 1028 that one
    left, and a 100-byte frame with 28 there and 72 in the next."""
    out = run(tmp_path, "2\n4\n6\n8\n", [(0, 757), (0, 757), (0, 2000), (0, 1000), (0, 100)])
    assert out == [2 * MS, 2 * MS, 6 * MS, 6 * MS, 8 * MS]


def test_after_an_idle_link_a_frame_waits_for_the_next_opportunity_only(tmp_path):
    """Opportunities unused while nothing waits are gone: a frame at 3.5 ms leaves at 4 ms, one at
    25 ms (the third period) at 26 ms, not at the opportunities it missed."""
    out = run(tmp_path, "1\n2\n4\n5\n", [(0, 60), (3_500_000, OPP), (25 * MS, OPP)])
    assert out == [1 * MS, 4 * MS, 26 * MS]


def test_a_trace_delivers_its_opportunities_within_one_percent(tmp_path):
    """A varying trace (one period of 1 s: 3 opportunities a ms for 400 ms, then 1 every 2 ms) under a
    stream offered above its capacity (4 frames a ms) for 3 s: each second delivers the period's 1,500
    opportunities, within 1 %; the queue's overflow is dropped."""
    trace = "".join(f"{ms}\n" * 3 for ms in range(1, 401)) + "".join(f"{ms}\n" for ms in range(402, 1001, 2))
    assert trace.count("\n") == 1500
    arrivals = [(i * 1_000_000_000 // 4000, OPP) for i in range(12000)]
    out = run(tmp_path, trace, arrivals, limit=200)
    for second in range(3):
        got = sum(second * 10**9 <= t < (second + 1) * 10**9 for t in out)
        assert abs(got - 1500) <= 15, (second, got)


def test_overhead_counts_towards_the_opportunity(tmp_path):
    """overhead: -14 counts a frame without its Ethernet header: two 771-byte frames (757 bytes each
    counted) fill one opportunity."""
    out = run(tmp_path, "1\n2\n3\n", [(0, 771)] * 4, extra=", overhead: -14")
    assert out == [1 * MS, 1 * MS, 2 * MS, 2 * MS]


@pytest.mark.parametrize("text,where,message", [
    ("5\n3\n", (2, 1), "expected a millisecond at or after the line before's 5, got 3"),
    ("1\n2 ms\n", (2, 1), "expected a whole number of milliseconds, got '2 ms'"),
    ("1\n  x\n", (2, 3), "expected a whole number of milliseconds, got 'x'"),
    ("0\n0\n", (1, 1), "expected at least one delivery opportunity, the last after 0 ms (the period)"),
    ("\n", (1, 1), "expected at least one delivery opportunity, the last after 0 ms (the period)"),
    ("1\n70000\n", (2, 1), "expected at most 65535 ms between two opportunities, got 69999"),
])
def test_a_bad_trace_is_named_at_its_line(tmp_path, text, where, message):
    (tmp_path / "t.trace").write_text(text)
    (tmp_path / "r.yaml").write_text(PORTS + "rules:\n  - name: r\n    actions: [{rate: {trace: t.trace}}]\n")
    result = reshaper_check(tmp_path / "r.yaml")
    assert result.returncode == 1
    assert result.stderr.splitlines()[:2] == [
        f"{tmp_path / 'r.yaml'}:5:15: error: rule 'r': rate: trace: t.trace is not a delivery trace "
        "(its errors name its lines)",
        f"{tmp_path / 't.trace'}:{where[0]}:{where[1]}: error: {message}"]


@pytest.mark.parametrize("rate,message", [
    ("{rate: {bitrate: 1mbit, trace: t.trace}}", "rule 'r': rate: expected a bitrate or a trace, not both"),
    ("{rate: {limit: 5}}", "rule 'r': rate: expected a bitrate or a trace, got neither"),
])
def test_a_rate_takes_a_bitrate_or_a_trace(tmp_path, rate, message):
    (tmp_path / "t.trace").write_text("1\n")
    (tmp_path / "r.yaml").write_text(PORTS + f"rules:\n  - name: r\n    actions: [{rate}]\n")
    result = reshaper_check(tmp_path / "r.yaml")
    assert result.stderr.splitlines() == [f"{tmp_path / 'r.yaml'}:5:15: error: {message}", "1 error; nothing applied"]


def test_one_file_named_twice_is_carried_once(tmp_path):
    (tmp_path / "t.trace").write_text("1\n2\n")
    config = load_config(str(tmp_path / "r.yaml"), PORTS + "rules:\n"
                         "  - {name: a, match: {dst_port: 9, ip_proto: udp}, actions: [{rate: {trace: t.trace}}]}\n"
                         "  - {name: b, actions: [{rate: {trace: t.trace}}]}\n")
    assert struct.unpack_from("<H", config.program, 10) == (1,)
    assert config.program.endswith(struct.pack("<IIIHH", lib.RS_TRACE_HDR_LEN + 4, 2, 2, 1, 1))


# ---- the verifier, on traces broken by hand ----

RATE_TRACE = bytes([lib.RS_A_RATE_TRACE, 6])


def with_trace(index: int, trace: bytes, ntraces: int = 1) -> bytes:
    rule_body = RATE_TRACE + struct.pack("<HhH", index, 0, 10)
    rule = struct.pack("<HBBBBH", 8 + len(rule_body), 0, 0, 0, 1, 0) + rule_body
    body = rule + trace
    return struct.pack("<IHHHHI", lib.RS_MAGIC, lib.RS_VERSION, lib.RS_PF_FWD_A_TO_B, 1, ntraces,
                       16 + len(body)) + body


def trace_bytes(period: int, deltas: list[int], length: int | None = None) -> bytes:
    n = len(deltas)
    return struct.pack("<III", length if length is not None else 12 + 2 * n, period, n) + \
        struct.pack(f"<{n}H", *deltas)


def test_a_well_made_trace_verifies():
    assert program_verify(with_trace(0, trace_bytes(3, [1, 2]))) > 0


@pytest.mark.parametrize("prog", [
    with_trace(1, trace_bytes(3, [1, 2])),                 # names a trace that is not there
    with_trace(0, b"", ntraces=0),
    with_trace(0, trace_bytes(4, [1, 2])),                 # the period is not the last opportunity
    with_trace(0, trace_bytes(0, [0, 0])),                 # a period of 0
    with_trace(0, trace_bytes(0, [])),                     # no opportunity
    with_trace(0, trace_bytes(3, [1, 2], length=14)),      # its length is not its opportunities'
    with_trace(0, trace_bytes(3, [1, 2]), ntraces=lib.RS_MAX_TRACES + 1),
    with_trace(0, trace_bytes(3, [1, 2])[:-1]),            # cut short
])
def test_broken_traces_are_refused(prog):
    with pytest.raises(ProgramError) as info:
        program_verify(prog)
    assert info.value.code in (lib.RS_E_TRACE, lib.RS_E_RULES)


def test_a_bad_trace_named_twice_is_read_and_reported_once(tmp_path):
    (tmp_path / "t.trace").write_text("5\n3\n")
    (tmp_path / "r.yaml").write_text(PORTS + "rules:\n"
                                     "  - {name: a, match: {dst_port: 9, ip_proto: udp}, actions: [{rate: {trace: t.trace}}]}\n"
                                     "  - {name: b, actions: [{rate: {trace: t.trace}}]}\n")
    result = reshaper_check(tmp_path / "r.yaml")
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'r.yaml'}:4:62: error: rule 'a': rate: trace: t.trace is not a delivery trace "
        "(its errors name its lines)",
        f"{tmp_path / 'r.yaml'}:5:25: error: rule 'b': rate: trace: t.trace is not a delivery trace "
        "(its errors name its lines)",
        f"{tmp_path / 't.trace'}:2:1: error: expected a millisecond at or after the line before's 5, got 3",
        "3 errors; nothing applied"]
