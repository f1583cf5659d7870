"""Frames/s through the kernel bridge alone, the module with no rules, the module
with the five-rule example, and ring mode (no rules and five rules), all in one
VM boot, one interleaved run. Under TCG absolute figures mean little: read
the ratios.

    .venv/bin/python -m reshaper.bench.kernel [--seconds 4]

Topology: lab/vm/kmod.py (h0 in ns h <-> eth0 in ns br, ports eth0.100
and eth0.200). bench/generator.c on h0 (CPU 0) sends a 4-frame mix tagged 100
(port a) as fast as it goes; what comes back tagged 200 is counted by h0's rx_packets. veth delivers on the
sending CPU, so the bridge and the module run on CPU 0 with the generator; the
ring process is pinned to CPU 1 (its receive softirq still runs on CPU 0).
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

from scapy.all import ARP, IP, TCP, UDP, Dot1Q, Ether

from reshaper.lab import REPO
from reshaper.lab.vm import VM, assert_kernel_clean, prepare
from reshaper.lab.vm.kmod import GUEST_DIR, GUEST_SETUP, build_module, python_bundle, run_command, shares

from reshaper.bench.frames import frames_file
from reshaper.bench.generator import build_generator

NO_RULES = """version: 1
ports: {a: {interface: eth0, vlan: 100}, b: {interface: eth0, vlan: 200}}
rules: []
"""


def frames() -> list[bytes]:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=100)
    return [bytes(f) for f in (
        eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53) / (b"q" * 18),
        eth / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80, flags="S"),
        eth / IP(src="10.0.1.1", dst="10.0.0.2") / UDP(sport=1000, dport=9) / (b"x" * 18),
        Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=100) / ARP(psrc="10.0.0.1", pdst="10.0.0.2"),
    )]


MEASURE = r"""
measure() {  # LABEL: frames/s delivered back to h0 over $SECS s
  rx0=$(ip netns exec h cat /sys/class/net/h0/statistics/rx_packets)
  tx0=$(ip netns exec h cat /sys/class/net/h0/statistics/tx_packets)
  ip netns exec h taskset -c 0 $GENERATOR h0 $FRAMES $SECS >/dev/null
  sleep 0.5
  rx1=$(ip netns exec h cat /sys/class/net/h0/statistics/rx_packets)
  tx1=$(ip netns exec h cat /sys/class/net/h0/statistics/tx_packets)
  echo "RESULT {\"label\": \"$1\", \"sent\": $((tx1 - tx0)), \"delivered\": $((rx1 - rx0)), \"seconds\": $SECS}"
}
wait_ready() { for i in $(seq 600); do [ -S $1 ] && $PY -S -c "import socket; s=socket.socket(socket.AF_UNIX); s.connect('$1')" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
"""


def script(seconds: float, generator: str, frames: str) -> str:
    """The guest's script: generator and frames are paths in the guest."""
    five = f"{REPO}/examples/five-rules.yaml"
    return textwrap.dedent(f"""
        . /tmp/env.sh
        SECS={seconds}
        GENERATOR={generator}
        FRAMES={frames}
        {MEASURE}
        set -e
        topology br h
        rmmod reshaper
        # 1. the kernel bridge alone (module not loaded), as reshaper would set it up
        ip -n br link add link eth0 name eth0.100 type vlan id 100
        ip -n br link add link eth0 name eth0.200 type vlan id 200
        ip -n br link add rsbr0 type bridge ageing_time 0 stp_state 0
        for p in eth0.100 eth0.200; do ip -n br link set $p master rsbr0 up; done
        ip -n br link set rsbr0 up
        sleep 0.5
        measure "bridge alone"
        ip -n br link del rsbr0; ip -n br link del eth0.100; ip -n br link del eth0.200
        # 2. the module: no rules, then the five-rule example (SIGHUP)
        insmod $RESHAPER_KMOD
        cp {GUEST_DIR}/norules.yaml /tmp/bench.yaml
        ip netns exec br {run_command("/tmp/bench.yaml", "/tmp/bench.sock", "--status-interval 0")} >/tmp/k.log 2>&1 &
        k=$!
        wait_ready /tmp/bench.sock
        measure "kernel module, no rules"
        cp {five} /tmp/bench.yaml; kill -HUP $k; sleep 3
        measure "kernel module, five rules"
        ip netns exec h $PY -S $AGENT stats /tmp/bench.sock >/tmp/k.stats
        kill -TERM $k; wait $k
        # 3. ring mode on the same veth, forwarder pinned to CPU 1
        cp {GUEST_DIR}/norules.yaml /tmp/bench.yaml
        ip netns exec br taskset -c 1 $PY -m reshaper run /tmp/bench.yaml --mode ring --control /tmp/ring.sock --status-interval 0 >/tmp/r.log 2>&1 &
        r=$!
        wait_ready /tmp/ring.sock
        measure "ring mode, no rules"
        cp {five} /tmp/bench.yaml; kill -HUP $r; sleep 3
        measure "ring mode, five rules"
        kill -TERM $r; wait $r
        echo KSTATS $(cat /tmp/k.stats)
    """)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4)
    args = ap.parse_args()
    prepare(install=False)
    build = build_module()
    python_bundle(build)
    generator = build_generator(build)
    frames_file(build / "bench.frames", frames())
    (build / "norules.yaml").write_text(NO_RULES)
    with VM(shares=shares(build), cpus=2, memory_mb=1024) as vm:
        status, out = vm.run(GUEST_SETUP, 60)
        assert status == 0, out
        status, out = vm.run(script(args.seconds, f"{GUEST_DIR}/{generator.name}", f"{GUEST_DIR}/bench.frames"), 600)
    if status != 0:
        print(f"benchmark script failed ({status}):\n{out}")
        return 1
    assert_kernel_clean(vm.kernel_log)
    results = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    base = next(r for r in results if r["label"] == "bridge alone")
    base_rate = base["delivered"] / base["seconds"]
    print(f"{'data path':<28}{'sent/s':>12}{'delivered/s':>14}{'vs bridge':>11}")
    for r in results:
        rate = r["delivered"] / r["seconds"]
        print(f"{r['label']:<28}{r['sent'] / r['seconds']:>12,.0f}{rate:>14,.0f}{rate / base_rate:>10.2f}x")
    for line in out.splitlines():
        if line.startswith("KSTATS "):
            k = json.loads(line[7:])
            print("kernel module, five rules, port counters:", json.dumps(k["ports"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
