"""XDP mode's own set-up, live in network namespaces: the program it attaches, what it
refuses and why, that a killed run leaves no program behind, and the
checksums a veth peer leaves to a NIC, which XDP does not point out. The frames
it carries are held to ring mode's in tests/test_carriers.py, test_offloads.py and
test_timing_live.py."""
from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct
from socket import inet_aton

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from reshaper._native import ffi, lib
from reshaper.bridge.cli import main as cli
from reshaper.bridge.netns import HOST_B
from tests.helpers.frames import MAC_A, MAC_B, PLAIN, TRUNK, write_config
from tests.helpers.live import LiveAppliance

BPF_PROG_LOAD, BPF_PROG_TYPE_XDP, XDP_PASS = 5, 6, 2   # linux/bpf.h
SYS_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]


def xdp_prog_id(ns, ifname: str) -> int:
    """The id of the XDP program attached to ifname in ns (0: none)."""
    with ns.ipr() as ipr:
        xdp = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_XDP")
    return (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0


def promiscuity(ns, ifname: str) -> int:
    """How many holders keep ifname in ns promiscuous (ip -d link's promiscuity)."""
    with ns.ipr() as ipr:
        return ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_PROMISCUITY")


def load_pass_program(name: bytes) -> int:
    """An XDP program named name that passes every frame (mov r0, XDP_PASS; exit), by the bpf
    system call itself: a program of someone else's, which XDP mode must leave alone."""
    insns = bytes([0xb7, 0, 0, 0, XDP_PASS, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
    license_ = ctypes.create_string_buffer(b"GPL")
    code = ctypes.create_string_buffer(insns, len(insns))
    attr = ctypes.create_string_buffer(128)   # union bpf_attr, BPF_PROG_LOAD's part
    ctypes.c_uint32.from_buffer(attr, 0).value = BPF_PROG_TYPE_XDP
    ctypes.c_uint32.from_buffer(attr, 4).value = 2
    ctypes.c_uint64.from_buffer(attr, 8).value = ctypes.addressof(code)
    ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(license_)
    ctypes.memmove(ctypes.addressof(attr) + 48, name, len(name))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, 72)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return fd


def test_the_program_is_attached_natively_while_it_runs_and_taken_off_after(tmp_path, topo):
    before = {i: promiscuity(topo.br, i) for i in ("a1", "b1")}
    with LiveAppliance(topo.br, write_config(tmp_path, PLAIN), tmp_path, mode="xdp") as appliance:
        assert xdp_prog_id(topo.br, "a1") and xdp_prog_id(topo.br, "b1")
        # a NIC's address filter (not veth's) drops other hosts' frames before XDP unless promiscuous
        assert {i: promiscuity(topo.br, i) for i in ("a1", "b1")} == {i: n + 1 for i, n in before.items()}
        assert topo.a.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", HOST_B["v4"]],
                          capture_output=True).returncode == 0
        assert "a: native XDP, copy mode; b: native XDP, copy mode" in appliance.log()  # veth has native XDP
    assert xdp_prog_id(topo.br, "a1") == xdp_prog_id(topo.br, "b1") == 0
    assert {i: promiscuity(topo.br, i) for i in ("a1", "b1")} == before


def test_a_killed_run_leaves_no_program_behind(tmp_path, topo):
    """The program hangs on a BPF link the process holds: the kernel takes it off, and lets go of
    promiscuous mode, when the process dies, so a board's service restarted after kill -9 finds
    its interfaces free (it could not tell its own program from someone else's: reading a
    program's name takes CAP_SYS_ADMIN)."""
    config = write_config(tmp_path, PLAIN)
    before = promiscuity(topo.br, "a1")
    appliance = LiveAppliance(topo.br, config, tmp_path, mode="xdp").start()
    assert xdp_prog_id(topo.br, "a1") != 0
    appliance.stop(signal.SIGKILL)
    assert xdp_prog_id(topo.br, "a1") == xdp_prog_id(topo.br, "b1") == 0
    assert promiscuity(topo.br, "a1") == before
    with LiveAppliance(topo.br, config, tmp_path, mode="xdp") as again:
        assert "did not exit cleanly: restoring its interface settings" in again.log()   # GRO, from the state file
        assert topo.a.run(["ping", "-c", "1", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
    assert xdp_prog_id(topo.br, "a1") == 0


def test_someone_elses_xdp_program_is_left_alone_and_the_start_refused(tmp_path, topo):
    fd = load_pass_program(b"theirs")
    try:
        with topo.br.ipr() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="b1")[0], xdp_fd=fd)
        theirs = xdp_prog_id(topo.br, "b1")
        with pytest.raises(RuntimeError) as refused:
            LiveAppliance(topo.br, write_config(tmp_path, PLAIN), tmp_path, mode="xdp").start()
        assert "b1 already has an XDP program (theirs): remove it (ip link set dev b1 xdp off) " \
               "or use another mode" in str(refused.value)
        assert xdp_prog_id(topo.br, "b1") == theirs
        assert xdp_prog_id(topo.br, "a1") == 0   # port a's, attached first, was taken off again
    finally:
        with topo.br.ipr() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="b1")[0], xdp_fd=-1)
        os.close(fd)


def test_an_interface_with_more_receive_queues_is_refused_before_anything_changes(tmp_path, topo):
    with topo.br.ipr() as ipr:
        ipr.link("add", ifname="mq0", kind="veth", peer={"ifname": "mq1", "num_rx_queues": 2}, num_rx_queues=2)
    config = write_config(tmp_path, PLAIN.replace("a: a1", "a: mq0"))
    with pytest.raises(RuntimeError) as refused:
        LiveAppliance(topo.br, config, tmp_path, mode="xdp").start()
    assert ("mq0 has 2 receive queues, and xdp mode serves one: ethtool -L mq0 combined 1 (or rx 1), "
            "or use --mode ring") in str(refused.value)
    assert xdp_prog_id(topo.br, "mq0") == xdp_prog_id(topo.br, "b1") == 0


def test_check_refuses_trunk_form_for_xdp_at_the_port(tmp_path, capsys):
    config = write_config(tmp_path, TRUNK)
    assert cli(["check", str(config), "--mode", "xdp"]) == 1
    out = capsys.readouterr()
    assert (f"{config}:2:12: error: port a: xdp mode carries plain ports only, not VLAN 100 on trunk a1: "
            "name the VLAN interface (a1.100) or use --mode ring\n"
            f"{config}:2:43: error: port b: xdp mode carries plain ports only, not VLAN 200 on trunk b1: "
            "name the VLAN interface (b1.200) or use --mode ring\n") in out.out + out.err


def partial(frame: bytes) -> bytes:
    """frame with its TCP checksum as a sending stack leaves it for the NIC (CHECKSUM_PARTIAL):
    the folded pseudo-header sum, not complemented."""
    eth = Ether(frame)
    ip, tcp = eth[IP], eth[TCP]
    length = len(bytes(tcp))
    total = sum(struct.unpack("!4H", inet_aton(ip.src) + inet_aton(ip.dst))) + 6 + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    at = 14 + ip.ihl * 4 + 16
    return frame[:at] + total.to_bytes(2, "big") + frame[at + 2:]


def test_checksums_left_to_the_nic_are_completed_and_no_other_is_touched():
    good = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2)
                 / b"payload")
    wrong = good[:50] + b"\x12\x34" + good[52:]   # a wrong checksum of the frame's own
    for frame, completed, want in ((good, 0, good), (partial(good), 1, good), (wrong, 0, wrong)):
        buf = ffi.new("uint8_t[]", frame)
        assert lib.rs_csum_complete_seeded(buf, len(frame), 0) == completed
        assert ffi.buffer(buf, len(frame))[:] == want
