"""The armhf module (deploy/beaglebone/build.sh) in Debian's armmp kernel on
qemu's virt board: it loads, takes a program over generic netlink, and rewrites
the frames a bridge forwards between two VLAN interfaces.

Guest (busybox initramfs, no Python): veth h0 <-> eth0; eth0.100 and eth0.200
are ports of bridge rsbr0. rsctl (tests/armhf/rsctl.c, static armhf) loads the
program, sends UDP frames tagged 100 on h0 and captures what comes back on h0:
the frames must arrive tagged 200, rewritten (DSCP and destination port, both
checksums fixed), and the module's counters must agree."""
from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from reshaper.lab.vm import armhf
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from tests.helpers.engine_names import collisions, kernel_macros

pytestmark = pytest.mark.armhf
HERE = Path(__file__).resolve().parent
N = 5
RULES = """version: 1
ports: {a: eth0.100, b: eth0.200}
rules:
  - name: rewrite
    from: a
    match: {eth_type: ipv4, ip_proto: udp, dst_port: 9}
    actions: [{set: {dscp: 8, dst_port: 9999}}]
"""


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(vid: int, tos: int, dport: int) -> bytes:
    src, dst, payload = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), b"reshaper armhf!!"
    udp = struct.pack("!HHHH", 4000, dport, 8 + len(payload), 0) + payload
    c = csum(src + dst + struct.pack("!BBH", 0, 17, len(udp)) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = bytes.fromhex("020000000002" "020000000001") + struct.pack("!HH", 0x8100, vid) + b"\x08\x00"
    return eth + ip + udp


SCRIPT = f"""
set -e
ip link add eth0 type veth peer name h0
ip link show h0 >/dev/null 2>&1 || ip link set veth0 name h0
ip link add link eth0 name eth0.100 type vlan id 100
ip link add link eth0 name eth0.200 type vlan id 200
ip link add rsbr0 type bridge
ip link set eth0.100 master rsbr0
ip link set eth0.200 master rsbr0
for i in h0 eth0 eth0.100 eth0.200 rsbr0; do ip link set $i up; done
insmod /reshaper.ko
echo "modinfo $(cat /sys/module/reshaper/srcversion 2>/dev/null) $(uname -r) $(uname -m)"
/rsctl load /prog.bin eth0.100 eth0.200
/rsctl recv h0 4000 >/tmp/recv.txt &
sleep 1
/rsctl send h0 {udp_frame(100, 0, 9).hex()} {N}
wait
cat /tmp/recv.txt
/rsctl stats
rmmod reshaper && echo unloaded
"""


def test_module_rewrites_bridged_frames_in_armmp_kernel(bb_build):
    rsctl = armhf.cross_compile(HERE / "rsctl.c", "rsctl", ("-O2", f"-I{HERE}"))
    prog = compile_rules(load_config("-", RULES))
    res = armhf.boot_script(SCRIPT, files={"/rsctl": rsctl, "/reshaper.ko": bb_build["ko"], "/prog.bin": prog},
                            timeout=300)
    print(f"armhf VM: {res.seconds:.1f} s")
    assert res.status == 0, res.console[-5000:]
    out = res.output
    assert "armv7l" in out and "loaded" in out and "unloaded" in out, out
    frames = [bytes.fromhex(h) for h in re.findall(r"^frame ([0-9a-f]+)$", out, re.M)]
    # only our sender's frames: the guest's interfaces send IGMP reports of their own
    frames = [f for f in frames if f[6:12] == bytes.fromhex("020000000001")]
    want = udp_frame(200, 8 << 2, 9999)
    assert frames == [want] * N, (out, want.hex())
    stats = {m[0]: dict(zip(("rx", "tx", "dropped", "errors"), map(int, m[1:])))
             for m in re.findall(r"^([ab]) rx (\d+) tx (\d+) dropped (\d+) errors (\d+)$", out, re.M)}
    assert stats["a"]["rx"] == N and stats["b"]["tx"] == N, out
    assert stats["a"]["dropped"] == stats["a"]["errors"] == 0, out
    assert not res.kernel_problems, res.console[-5000:]


def test_no_armmp_kernel_macro_spells_an_engine_identifier(bb_build):
    """The newest armmp headers (where 6.1.0-57's field_get() broke the build) against
    the engine's names, as Kbuild compiles the engine into the module."""
    macros = kernel_macros(bb_build["kdir"], ("ARCH=arm", f"CROSS_COMPILE={armhf.CROSS}"))
    assert "__LINUX_ARM_ARCH__" in macros, sorted(macros)[:20]   # the ARM tree, not the host's
    print(f"armmp {bb_build['krel']}: {len(macros)} kernel macros")
    assert collisions(macros) == {}
