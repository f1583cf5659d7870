"""`reshaper apply` as a user runs it: captures in and out, seeds, order, counts."""
import struct
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import RawPcapReader, RawPcapWriter

T0 = 1_700_000_000


def frame(i: int, vlan: int = 100, dport: int = 5000) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=vlan)
                 / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=dport) / b"data")


def write_capture(path, frames, nano=False, step_ns=1_000_000):
    with RawPcapWriter(str(path), linktype=1, nano=nano) as w:
        w.write_header(None)  # write_packet() alone writes no file header
        for i, f in enumerate(frames):
            t = T0 * 10**9 + i * step_ns
            w.write_packet(f, sec=t // 10**9, usec=(t % 10**9) if nano else (t % 10**9) // 1000)


def read_capture(path):
    return [((m.sec - T0) * 10**9 + m.usec, d) for d, m in RawPcapReader(str(path))]


def apply(tmp_path, config_text, frames, *args, nano=False):
    config = tmp_path / "rules.yaml"
    config.write_text(config_text)
    write_capture(tmp_path / "in.pcap", frames, nano=nano)
    result = subprocess.run([sys.executable, "-m", "reshaper", "apply", str(config), str(tmp_path / "in.pcap"),
                             str(tmp_path / "out.pcap"), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout, read_capture(tmp_path / "out.pcap")


TRUNK = "version: 1\nports: {a: {interface: eth0, vlan: 100}, b: {interface: eth0, vlan: 200}}\n"
LOSSY = TRUNK + "rules:\n  - {name: lossy, actions: [{loss: {probability: 50%}}]}\n"


def test_same_seed_same_output_other_seed_other_output(tmp_path):
    frames = [frame(i) for i in range(200)]
    _, first = apply(tmp_path, LOSSY, frames, "--seed", "7")
    _, again = apply(tmp_path, LOSSY, frames, "--seed", "7")
    _, other = apply(tmp_path, LOSSY, frames, "--seed", "8")
    assert first == again
    assert first != other
    assert 60 < len(first) < 140  # about half survive


def test_counts_are_printed(tmp_path):
    frames = [frame(i) for i in range(10)] + [frame(99, vlan=300)]
    frames[1] = frame(1, dport=5001)
    stdout, out = apply(tmp_path, TRUNK + "rules:\n  - {name: drop-5001, match: {dst_port: 5001}, actions: [drop]}\n",
                        frames)
    lines = stdout.splitlines()
    assert lines[0] == "in 11, out 9, dropped 1 (rule 1), not on the port 1, unmatched 9"
    assert lines[2].split() == ["drop-5001", "1", "1", "0", "0", "0", "0", "0", "0", "0"]
    # the tag of VLAN 100 came off, VLAN 200's went on
    assert [d[14:16] for _, d in out] == [struct.pack("!H", 200)] * 9


@pytest.mark.parametrize("nano", [False, True])
def test_microsecond_and_nanosecond_captures_give_departure_times(tmp_path, nano):
    config = TRUNK + "rules:\n  - {name: late, match: {dst_port: 5001}, actions: [{delay: {time: 2500us}}]}\n"
    frames = [frame(0), frame(1, dport=5001), frame(2), frame(3)]
    _, out = apply(tmp_path, config, frames, nano=nano)
    # departure order: the delayed frame (arrived at 1 ms) leaves at 3.5 ms, after frame 3
    assert [t for t, _ in out] == [0, 2_000_000, 3_000_000, 3_500_000]
    assert out[-1][1] == frame(1, vlan=200, dport=5001)


def test_frames_from_b_leave_a(tmp_path):
    config = TRUNK + "forward: both\nrules: []\n"
    _, out = apply(tmp_path, config, [frame(0, vlan=200)], "--from", "b")
    assert out[0][1] == frame(0, vlan=100)


def test_forward_a_to_b_drops_frames_from_b(tmp_path):
    stdout, out = apply(tmp_path, TRUNK + "forward: a-to-b\n", [frame(0, vlan=200)], "--from", "b")
    assert out == []
    assert stdout.startswith("in 1, out 0, dropped 1 (direction 1)")


def test_not_a_capture_is_a_clear_error(tmp_path):
    config = tmp_path / "rules.yaml"
    config.write_text(TRUNK)
    (tmp_path / "in.pcap").write_bytes(b"this is not a capture at all")
    result = subprocess.run([sys.executable, "-m", "reshaper", "apply", str(config), str(tmp_path / "in.pcap"),
                             str(tmp_path / "out.pcap")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == (f"reshaper apply: {tmp_path / 'in.pcap'}: not a pcap or pcapng capture: it starts with "
                             "74686973, not a pcap magic (a1b2c3d4 or a1b23c4d, either byte order) or a pcapng "
                             "section header (0a0d0d0a)\n")
    assert not (tmp_path / "out.pcap").exists()


def test_other_link_types_are_refused(tmp_path):
    config = tmp_path / "rules.yaml"
    config.write_text(TRUNK)
    with RawPcapWriter(str(tmp_path / "in.pcap"), linktype=101) as w:  # LINKTYPE_RAW: IP packets, no Ethernet
        w.write_header(None)
        w.write_packet(bytes(IP() / UDP()), sec=T0, usec=0)
    result = subprocess.run([sys.executable, "-m", "reshaper", "apply", str(config), str(tmp_path / "in.pcap"),
                             str(tmp_path / "out.pcap")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == (f"reshaper apply: {tmp_path / 'in.pcap'}: file header: link type 101, not Ethernet (1): "
                             "apply takes Ethernet frames only\n")
