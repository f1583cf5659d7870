"""This machine's end of `reshaper bench --board` (bench/board.py), without a board: a veth pair
stands for the trunk, its far end for the board. The sink counts exactly the frames tagged with
VLAN B (BPF on the tag the kernel took off), the probe reads back only its own stamped frames on
B and gives their delays, and the generator's frames carry tag A. The whole run against the
emulated board: tests/armhf/test_board_deploy.py."""
from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from reshaper.bench.board import BoardHost, BoardProbe, tagged, vlan_filter
from reshaper.bench.frames import SRC_MAC
from reshaper.bench.probe import PROBE_PORT
from reshaper.bench.topology import ns_write
from reshaper.bridge.netns import Namespace
from reshaper.lab.frame_tap import FrameTap

pytestmark = pytest.mark.live


@pytest.fixture
def trunk():
    """(namespace, our end "trunk", the board's end as a FrameTap)."""
    ns = Namespace("rsbdt").create()
    try:
        for key in ("all", "default"):   # a silent trunk, as the emulated board's (lab/vm/board.py)
            ns_write(ns, f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "1")
        with ns.ipr() as ipr:
            ipr.link("add", ifname="trunk", kind="veth", peer={"ifname": "board"})
            for name in ("trunk", "board"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        board = FrameTap(ns, "board")
        yield ns, board
        board.close()
    finally:
        ns.remove()


def frame(vlan: int | None, prio: int = 0, src: str = SRC_MAC) -> bytes:
    eth = Ether(src=src, dst="02:00:00:00:00:0a")
    ip = IP(src="10.77.0.9", dst="10.77.0.1") / UDP(sport=1, dport=9) / (b"x" * 20)
    return bytes(eth / Dot1Q(vlan=vlan, prio=prio) / ip) if vlan is not None else bytes(eth / ip)


def test_the_sink_counts_exactly_the_frames_tagged_b(trunk):
    ns, board = trunk
    host = BoardHost("trunk", (100, 200), "rsbdt")
    try:
        # the priority bits are not the VLAN's; the board's own frames on the VLAN are not the bench's
        for f in [frame(200)] * 5 + [frame(200, prio=5)] + [frame(100)] * 3 + [frame(None)] * 2 + [frame(201)] \
                + [frame(200, src="52:54:00:be:00:01")] + [frame(200, src=SRC_MAC[:-1] + "2")]:
            board.send(f)
        time.sleep(0.2)
        assert host.delivered() == 6
        board.send(frame(200))
        time.sleep(0.2)
        assert host.delivered() == 7   # PACKET_STATISTICS starts again at each read: the sink adds up
    finally:
        host.close()


def test_the_probe_sends_stamped_frames_tagged_a_and_reads_back_its_own_on_b(trunk):
    ns, board = trunk
    host = BoardHost("trunk", (100, 200), "rsbdt")
    probe = BoardProbe(host, 200)
    try:
        probe.start()
        time.sleep(0.3)
        sent_by_probe = board.receive(200, timeout=0.5)
        # the board's part, by hand: what arrived tagged 100 goes back tagged 200, plus noise
        for f in sent_by_probe:
            assert f[12:16] == b"\x81\x00\x00\x64", f.hex()   # tag 100
            board.send(tagged(f[:12] + f[16:], 200))
            board.send(frame(200))                            # tagged B, not the probe's port
            board.send(tagged(f[:6] + bytes(6) + f[16:], 200))  # tagged B, another source
            board.send(tagged(f[:12] + f[16:], 100))          # the probe's frame, on the wrong VLAN
        delays = probe.stop()
    finally:
        host.close()
    assert probe.sent >= len(sent_by_probe) > 10
    assert len(delays) == len(sent_by_probe), (len(delays), len(sent_by_probe))
    assert all(0 < d < 2_000_000 for d in delays), delays
    udp = IP(sent_by_probe[0][18:])
    assert (udp[UDP].dport, udp[UDP].chksum, udp.dst) == (PROBE_PORT, 0, "10.77.0.2")


def test_vlan_filter_jumps_land_on_the_drop():
    prog = vlan_filter(200, SRC_MAC, udp_dport=PROBE_PORT, snaplen=64)
    drop, accept = len(prog) - 1, len(prog) - 2
    assert prog[accept] == (0x06, 0, 0, 64) and prog[drop] == (0x06, 0, 0, 0)
    for i, (code, jt, jf, _) in enumerate(prog):
        if code == 0x15:   # BPF_JMP|BPF_JEQ|BPF_K: true goes on, false to the drop
            assert (jt, i + 1 + jf) == (0, drop), (i, prog)
