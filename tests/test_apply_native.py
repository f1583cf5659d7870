"""`reshaper apply`'s C loop (bridge/apply_loop.c) against its Python loop, byte for byte.

The Python loop (bridge/apply.py's _python_loop) is what rule files with Python hooks still run, and
what every rule file ran before the C loop: it is the reference here. Both loops read through the same
CaptureReader, the C one taking the plain records itself (bridge/captures.py's bulk), so the inputs
mix what it takes (pcap records, enhanced and simple packet blocks from known Ethernet interfaces)
with what it leaves to Python (sections, interfaces, obsolete packet blocks, unknown blocks,
resolutions finer than a nanosecond or not dividing one, malformed records).
"""
import random
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from reshaper.bridge.apply import apply_capture
from reshaper.bridge.apply_native import NativeLoop
from reshaper.bridge.captures import BULK_CHUNK, CaptureError
from reshaper.rules.config import load_config
from tests.test_hostile_captures import HOSTILE, T0, block, epb, idb, obsolete_pb, pad4, pcap, record, shb, spb

PORTS = {"trunk": "ports: {a: {interface: eth0, vlan: 100}, b: {interface: eth0, vlan: 200}}",
         "plain": "ports: {a: eth0, b: eth1}"}
# every kind of verdict: rewrites, drops, loss and duplicates drawn from the seed, a delay whose jitter
# reorders (reorder_on_jitter), a rate queue that overflows
RULES = """
rules:
  - {name: web, match: {ip_proto: tcp, dst_port: 80}, actions: [{set: {dst_port: 8080, ttl: 58}}]}
  - {name: blocked, match: {ip_proto: tcp, dst_port: 23}, actions: [drop]}
  - name: jitter
    match: {ip_proto: udp, dst_port: 5000-5099}
    actions:
      - {delay: {time: 3ms, jitter: 2ms, reorder_on_jitter: true}}
  - name: twice
    match: {ip_proto: udp, dst_port: 6000}
    actions: [{duplicate: {copies: 2, probability: 50%}}, {delay: {time: 1ms}}]
  - {name: lossy, match: {ip_proto: udp, dst_port: 7000}, actions: [{loss: {probability: 30%}}]}
  - {name: slow, match: {ip_proto: udp, dst_port: 8000}, actions: [{rate: {bitrate: 1mbit, limit: 4}}]}
"""
DPORTS = [80, 23, 5000, 5050, 6000, 7000, 8000, 9999]


def frames(n: int, seed: int = 1) -> list[bytes]:
    """n frames of every rule's kind, tagged 100 (the trunk's port a), 300 (no port's) or not at all,
    with PCPs to carry, and runts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        dport = rng.choice(DPORTS)
        l4 = TCP(sport=1000 + i % 50000, dport=dport) if dport in (80, 23) else UDP(sport=1000 + i % 50000, dport=dport)
        inner = IP(src="10.0.0.1", dst="10.0.0.2", ttl=64) / l4 / (b"p" * rng.randrange(0, 300))
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        kind = rng.random()
        if kind < 0.8:
            frame = bytes(eth / Dot1Q(vlan=100, prio=rng.randrange(8)) / inner)
        elif kind < 0.9:
            frame = bytes(eth / Dot1Q(vlan=300) / inner)
        elif kind < 0.97:
            frame = bytes(eth / inner)
        else:
            frame = bytes(eth / inner)[:rng.randrange(1, 20)]  # a runt: malformed, passed
        out.append(frame)
    return out


def pcap_capture(fs: list[bytes], nano: bool, e: str = "<") -> bytes:
    rng = random.Random(2)
    t, records = T0 * 10**9, []
    for f in fs:
        t += rng.randrange(0, 2_000_000)  # closer than the jitter: the queue reorders
        frac = t % 10**9 if nano else t % 10**9 // 1000
        records.append(record(f, sec=t // 10**9, frac=frac, e=e))
    return pcap(*records, magic=0xA1B23C4D if nano else 0xA1B2C3D4, e=e)


def pcapng_capture(fs: list[bytes], e: str = "<") -> bytes:
    """Two sections; interfaces counting ns, us (no if_tsresol), 2^-10 s and ps, one with an offset; every
    kind of packet block, options, and blocks apply skips."""
    rng = random.Random(3)
    data = (shb(e) + idb(tsresol=9, e=e) + idb(tsresol=None, tsoffset=T0, e=e) + idb(tsresol=0x80 | 10, e=e)
            + idb(tsresol=12, tsoffset=T0, e=e))
    t = 0
    for i, f in enumerate(fs):
        t += rng.randrange(0, 2_000_000)
        if i == len(fs) // 2:
            data += shb(e) + idb(tsresol=6, e=e) + idb(tsresol=9, e=e)  # a new section: interfaces anew
            kinds = ["ns", "us"]
        elif i < len(fs) // 2:
            kinds = ["ns", "us-offset", "2^-10", "ps", "spb", "pb", "options", "skipped"]
        kind = rng.choice(kinds)
        ns = T0 * 10**9 + t
        if kind == "ns":
            data += epb(f, ns, iface=0 if i < len(fs) // 2 else 1, e=e)
        elif kind == "us":
            data += epb(f, ns // 1000, iface=0, e=e)
        elif kind == "us-offset":
            data += epb(f, t // 1000, iface=1, e=e)
        elif kind == "2^-10":
            data += epb(f, ns * 1024 // 10**9, iface=2, e=e)
        elif kind == "ps":
            data += epb(f, t * 1000 + rng.randrange(1000), iface=3, e=e)
        elif kind == "spb":
            data += spb(f, e=e)
        elif kind == "pb":
            data += obsolete_pb(f, ns, iface=0, e=e)
        elif kind == "options":
            header = struct.pack(e + "IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, len(f), len(f))
            comment = struct.pack(e + "HH", 1, 7) + b"comment\x00" + struct.pack(e + "HH", 0, 0)
            data += block(6, header + pad4(f) + comment, e)
        else:
            data += block(0xBAD, pad4(b"skipped"), e) + epb(f, ns, iface=0, e=e)
    return data


def both_loops(tmp_path, capture: bytes, ports: str, out: str, seed: int = 5, from_port: str = "a"):
    """The C loop's and the Python loop's output bytes and reports."""
    (tmp_path / "rules.yaml").write_text(f"version: 1\n{PORTS[ports]}\n{RULES}")
    (tmp_path / "in.capture").write_bytes(capture)
    config = load_config(str(tmp_path / "rules.yaml"))
    results = []
    for python_loop in (False, True):
        path = tmp_path / f"{python_loop}-{out}"
        result = apply_capture(config, str(tmp_path / "in.capture"), str(path), from_port, seed,
                               python_loop=python_loop)
        results.append((path.read_bytes(), result.report()))
    return results


CAPTURES = {
    "pcap micro": lambda fs: pcap_capture(fs, nano=False),
    "pcap nano, big-endian": lambda fs: pcap_capture(fs, nano=True, e=">"),
    "pcapng": lambda fs: pcapng_capture(fs),
    "pcapng, big-endian": lambda fs: pcapng_capture(fs, e=">"),
}


@pytest.mark.parametrize("out", ["out.pcap", "out.pcapng"])
@pytest.mark.parametrize("ports", PORTS)
@pytest.mark.parametrize("capture", CAPTURES)
def test_the_c_loop_writes_what_the_python_loop_writes(tmp_path, monkeypatch, capture, ports, out):
    from_python = []  # the frames Python's reader read for the C loop
    run_frame = NativeLoop.frame
    monkeypatch.setattr(NativeLoop, "frame", lambda loop, t, data: (from_python.append(t), run_frame(loop, t, data)))
    (c_bytes, c_report), (py_bytes, py_report) = both_loops(tmp_path, CAPTURES[capture](frames(600)), ports, out)
    assert c_report == py_report
    assert c_bytes == py_bytes
    # the C reader took the plain records: all of a pcap, the pcapng's from interfaces counting ns or us
    assert len(from_python) == 0 if capture.startswith("pcap ") else 100 < len(from_python) < 300
    lines = c_report.splitlines()
    # every kind of verdict happened
    for rule in ("web", "blocked", "jitter", "twice", "lossy", "slow"):
        assert int(next(line for line in lines if line.startswith(rule)).split()[1]) > 0, c_report


def test_frames_from_b_and_other_seeds(tmp_path):
    fs = [f[:14] + struct.pack("!H", 200) + f[16:] if f[12:14] == b"\x81\x00" and f[14:16] == b"\x00\x64" else f
          for f in frames(300)]
    for seed in (0, 1, 99):
        (c, c_report), (py, py_report) = both_loops(tmp_path, pcap_capture(fs, nano=True), "trunk", "out.pcap",
                                                    seed=seed, from_port="b")
        assert (c, c_report) == (py, py_report)


def test_a_capture_longer_than_a_read_ahead(tmp_path):
    """Records across the C reader's read-ahead boundaries (bridge/captures.py's BULK_CHUNK)."""
    fs = frames(2_000) * 25
    capture = pcap_capture(fs, nano=True)
    assert len(capture) > 2 * BULK_CHUNK
    (c, c_report), (py, py_report) = both_loops(tmp_path, capture, "plain", "out.pcapng")
    assert c_report == py_report
    assert c == py


def refusals(tmp_path, capture: bytes, out: str = "out.pcap") -> list[str]:
    """The error each loop gives, and that neither left an output."""
    (tmp_path / "rules.yaml").write_text(f"version: 1\n{PORTS['plain']}\n{RULES}")
    (tmp_path / "in.capture").write_bytes(capture)
    config = load_config(str(tmp_path / "rules.yaml"))
    messages = []
    for python_loop in (False, True):
        with pytest.raises(CaptureError) as info:
            apply_capture(config, str(tmp_path / "in.capture"), str(tmp_path / out), python_loop=python_loop)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.capture", "rules.yaml"]
        messages.append(str(info.value).removeprefix(f"{tmp_path / 'in.capture'}: "))
    return messages


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_captures_give_the_same_error_through_either_loop(tmp_path, name):
    data, error = HOSTILE[name]
    assert refusals(tmp_path, data) == [error, error]


def test_an_error_past_the_read_ahead_names_its_record_and_byte(tmp_path):
    good = [record(f, sec=T0) for f in frames(1_000)] * 60
    capture = pcap(*good, record(frames(1)[0], caplen=40, wirelen=41))
    start = len(capture) - len(record(frames(1)[0]))
    assert len(capture) > 2 * BULK_CHUNK
    expected = f"record {len(good) + 1} at byte {start}: only 40 of the frame's 41 bytes were captured; " \
               f"apply needs whole frames"
    assert refusals(tmp_path, capture) == [expected, expected]


def test_departures_the_output_cannot_hold_are_refused_as_the_python_writer_says(tmp_path):
    f = frames(1)[0]
    late = 2**32 * 10**9  # 2106: past pcap's 32-bit seconds
    capture = shb() + idb() + epb(f, late - 5) + epb(f, late + 5)
    expected = f"a departure at {2**32} s past 1970 does not fit pcap's 32-bit seconds: write .pcapng"
    assert refusals(tmp_path, capture) == [expected, expected]
    # past 2^64 ns: the 3 ms of the jitter rule's delay carry a frame from 2554 beyond pcapng's timestamps
    udp = bytes(Ether() / IP() / UDP(dport=5000))
    last = 2**64 - 1_000
    capture = shb() + idb() + epb(f, last - 10) + epb(udp, last)
    messages = refusals(tmp_path, capture, out="out.pcapng")
    assert messages[0] == messages[1]
    assert messages[0].startswith("a departure at ") and messages[0].endswith(
        " ns past 1970 does not fit pcapng's 64-bit timestamps")
