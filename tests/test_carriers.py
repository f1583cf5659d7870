"""One rule file, the same frames on every carrier: the same inputs through ring mode,
XDP mode and nfqueue mode live (network namespaces) and through `apply` must leave as the same
frames, byte for byte, in the same order within each flow. Kernel mode gets the golden cases in the VM
(tests/kmod/test_kmod.py) against the same expectations.

The inputs: the golden cases whose outcome does not depend on when frames arrive, with
their ports moved onto the test topology's a1 and b1; a generated mix (a two-way
conversation sent from one side, inner VLAN tags, IPv6 extension headers, fragments,
bad checksums); and a real capture of two hosts talking (tests/data/conversation.pcapng)
replayed from one side. XDP mode takes the rule files without trunk form (`check --mode
xdp`). nfqueue mode takes the rule files its limits allow (`check --mode
nfqueue`), and the frames it can see the same way: IP, not cut short (br_netfilter drops
an IPv4 packet with a bad header before the queue, README "NFQUEUE mode").
"""
from __future__ import annotations

import re

import pytest
import yaml
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from reshaper._native import ffi, lib
from reshaper.bridge.apply import apply_capture
from reshaper.bridge.captures import CaptureReader
from reshaper.bridge.modes import MODES
from reshaper.rules.config import load_config
from tests.helpers.captures import read_outputs, write_capture
from tests.helpers.carriers import CONVERSATION, CONVERSATION_RULES, MIX_RULES, mix
from tests.helpers.golden import UNTIMED_CASES, Case
from tests.helpers.live import LiveAppliance

pytestmark = pytest.mark.live


def on_topology(config: str) -> str:
    """The case's rule file with port a on a1 and port b on b1, in the form it had (trunk
    form keeps its VLANs); only the text of its ports mapping changes."""
    node = next(v for k, v in yaml.compose(config, Loader=yaml.SafeLoader).value if k.value == "ports")
    ports = config[node.start_mark.index:node.end_mark.index]
    for port in "ab":
        ports = re.sub(rf"(\b{port}:\s*\{{\s*interface:\s*)[\w.]+", rf"\g<1>{port}1", ports)
        ports = re.sub(rf"(\b{port}:\s*)[A-Za-z][\w.]*(?=\s*(,|\}}|$))", rf"\g<1>{port}1", ports, flags=re.M)
    return config[:node.start_mark.index] + ports + config[node.end_mark.index:]


def applied(tmp_path, config_path, frames: list[bytes], from_port: str, seed: int) -> list[bytes]:
    inp, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    write_capture(inp, [(i * 10**6, frame) for i, frame in enumerate(frames)])   # 1 ms apart
    apply_capture(load_config(str(config_path)), str(inp), str(out), from_port, seed)
    return [bytes(data) for _, data in read_outputs(out)]


def live(topo, taps, tmp_path, config_path, mode: str, frames: list[bytes], from_port: str, seed: int,
         expect: int) -> list[bytes]:
    tap_a, tap_b = taps
    send, receive = (tap_a, tap_b) if from_port == "a" else (tap_b, tap_a)
    # what the topology's interfaces send themselves (IPv6 neighbour discovery, MLD) is not the case's
    hosts = {mac(topo, host, ifname) for host, ifname in (("a", "a0"), ("b", "b0"), ("br", "a1"), ("br", "b1"))}
    with LiveAppliance(topo.br, config_path, tmp_path, mode=mode, extra=("--seed", str(seed))):
        receive.drain()
        for frame in frames:
            send.send(frame)
        return receive.receive(expect + 5, timeout=1.0 + 0.2 * expect if expect else 0.7,
                               match=lambda f: f[6:12] not in hosts)


def mac(topo, host: str, ifname: str) -> bytes:
    with getattr(topo, host).ipr() as ipr:
        text = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")
    return bytes.fromhex(text.replace(":", ""))


def flows(frames: list[bytes]) -> dict[tuple, list[bytes]]:
    """The frames of each flow (addresses, protocol, ports), in their order: carriers keep
    order within a flow, not across (nfqueue mode passes ARP while IP waits for its verdict)."""
    out: dict[tuple, list[bytes]] = {}
    for frame in frames:
        eth = Ether(frame)
        l3 = eth.getlayer(IP) or eth.getlayer(IPv6)
        l4 = eth.getlayer(TCP) or eth.getlayer(UDP)
        key = (eth.src, eth.dst, eth.type, l3.src if l3 else None, l3.dst if l3 else None,
               type(l4).__name__ if l4 else None, l4.sport if l4 else None, l4.dport if l4 else None)
        out.setdefault(key, []).append(frame)
    return out


def nfqueue_sees(frame: bytes) -> bool:
    """IP (perhaps in one 802.1Q tag) that br_netfilter passes to the queue as it came:
    an IPv4 header that is whole and sums right, a length the frame holds."""
    at = 18 if frame[12:14] == b"\x81\x00" else 14
    ethertype, ip = frame[at - 2:at], frame[at:]
    if ethertype == b"\x86\xdd":
        return len(ip) >= 40 and 40 + int.from_bytes(ip[4:6], "big") <= len(ip)
    if ethertype != b"\x08\x00" or len(ip) < 20 or ip[0] >> 4 != 4:
        return False
    header = ip[:(ip[0] & 15) * 4]
    total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return len(header) >= 20 and total == 0xFFFF and len(header) <= int.from_bytes(ip[2:4], "big") <= len(ip)


@pytest.mark.parametrize("path", UNTIMED_CASES, ids=lambda p: p.stem)
def test_golden_case_on_every_carrier(path, tmp_path, topo, taps):
    case = Case(path)
    config = tmp_path / "rules.yaml"
    config.write_text(on_topology(case.config))
    frames = [f for _, f in case.inputs]
    want = applied(tmp_path, config, frames, case.from_port, case.seed)
    modes = ["ring"]
    if not MODES["xdp"].limits(load_config(str(config))):
        modes.append("xdp")
    if not MODES["nfqueue"].limits(load_config(str(config))) and "vlan:" not in config.read_text() \
            and all(nfqueue_sees(f) for f in frames):
        modes.append("nfqueue")
    for mode in modes:
        got = live(topo, taps, tmp_path, config, mode, frames, case.from_port, case.seed, len(want))
        assert flows(got) == flows(want), f"{mode} differs from apply on {path.stem}"


@pytest.mark.parametrize("from_port", ["a", "b"])
def test_a_generated_mix_on_every_carrier(from_port, tmp_path, topo, taps):
    config = tmp_path / "rules.yaml"
    config.write_text(MIX_RULES)
    frames = mix()
    want = applied(tmp_path, config, frames, from_port, 0)
    assert len(want) == len(frames) - 1   # telnet dropped; the others cross
    for mode in ("ring", "xdp", "nfqueue"):
        got = live(topo, taps, tmp_path, config, mode, frames, from_port, 0, len(want))
        assert flows(got) == flows(want), mode


@pytest.mark.parametrize("from_port", ["a", "b"])
def test_a_real_conversation_replayed_from_one_side_on_every_carrier(from_port, tmp_path, topo, taps):
    """dumpcap's capture of two hosts talking (ARP, ping, UDP, TCP both ways; the locally sent
    frames with the checksums offload leaves), replayed from one side: every frame crosses,
    rewritten alike by every carrier. XDP mode cannot tell those checksums from ones a NIC was
    left to compute (CHECKSUM_PARTIAL, which it is not told of) and computes them before the
    rules (docs/modes.md): it gives what apply gives for the frames with them computed."""
    reader = CaptureReader(str(CONVERSATION))
    frames = [data for _, data in reader.frames()]
    assert len(frames) == 70
    config = tmp_path / "rules.yaml"
    config.write_text(CONVERSATION_RULES)
    want = applied(tmp_path, config, frames, from_port, 0)
    assert len(want) == len(frames)
    completed = [seed_checksums_computed(f) for f in frames]
    assert completed != frames   # the capture has such checksums
    want_xdp = applied(tmp_path, config, completed, from_port, 0)
    for mode in ("ring", "xdp", "nfqueue"):
        got = live(topo, taps, tmp_path, config, mode, frames, from_port, 0, len(want))
        assert flows(got) == flows(want_xdp if mode == "xdp" else want), mode


def seed_checksums_computed(frame: bytes) -> bytes:
    """frame with a TCP/UDP checksum that holds only the pseudo-header sum computed, as XDP mode does."""
    buf = ffi.new("uint8_t[]", frame)
    lib.rs_csum_complete_seeded(buf, len(frame), 0)
    return ffi.buffer(buf, len(frame))[:]
