"""Engine cost per frame and `apply` throughput (a benchmark, not a test).

    python -m reshaper.bench.engine [--frames 1000000]

1. rs_run on the five-rule example over a mix of frames: instructions per
   frame under callgrind (deterministic) and ns per frame natively, built
   with the flags of the cffi extension (-O2).
2. `reshaper apply` on a capture of N frames: frames per second, end to end
   (against tcprewrite on the same capture: bench/apply_speed.py).
"""
import argparse
import os
import pathlib
import re
import struct
import subprocess
import sys
import tempfile
import time

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapWriter

from reshaper.examples import example
from reshaper.lab import REPO
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config

ENGINE = REPO / "rules" / "engine"
HARNESS = pathlib.Path(__file__).resolve().parent / "engine_harness.c"   # the engine over a file of frames
CONFIG = example("five-rules.yaml")


def frame_mix() -> list[bytes]:
    """Frames that hit each of the five rules, and some that hit none."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    v4 = IP(src="10.0.0.5", dst="198.51.100.7")
    frames = [
        eth / v4 / TCP(sport=40000, dport=23, flags="A"),                 # block-telnet
        eth / v4 / TCP(sport=40001, dport=80, flags="A") / (b"x" * 100),  # web-to-proxy
        eth / IP(src="10.9.0.5", dst="198.51.100.7") / TCP(dport=443, flags="S"),  # syn-mark
        eth / v4 / UDP(sport=5353, dport=53) / (b"q" * 30),               # dns-rewrite
        eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(dport=9),  # v6-hoplimit
        eth / v4 / TCP(sport=40002, dport=443, flags="A") / (b"y" * 1400),  # no rule
        eth / v4 / ICMP() / (b"p" * 56),                                  # no rule
        eth / IPv6(src="fd00::1", dst="fd00::2") / TCP(dport=22, flags="A"),  # no rule
    ]
    return [bytes(f) for f in frames]


def bench_input(path: pathlib.Path) -> int:
    program = compile_rules(load_config(str(CONFIG)))
    frames = frame_mix()
    data = struct.pack("<I", len(program)) + program + struct.pack("<I", len(frames))
    data += b"".join(struct.pack("<H", len(f)) + f for f in frames)
    path.write_bytes(data)
    return len(frames)


def engine_cost(tmp: pathlib.Path) -> dict:
    binary = tmp / "bench_engine"
    subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{ENGINE}", str(HARNESS),
                    str(ENGINE / "engine.c"), "-o", str(binary)], check=True)
    inp = tmp / "input.bin"
    bench_input(inp)
    native = subprocess.run([str(binary), str(inp), "200000"], check=True, capture_output=True, text=True).stdout
    ns = float(re.search(r"ns_per_frame=([\d.]+)", native).group(1))
    out = tmp / "callgrind.out"
    cg = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=rs_run",
                         str(binary), str(inp), "1000"], check=True, capture_output=True, text=True)
    frames = int(re.search(r"frames=(\d+)", cg.stdout).group(1))
    instructions = int(re.search(r"Collected : (\d+)", cg.stderr).group(1))
    return {"ns_per_frame": ns, "instructions_per_frame": instructions / frames}


def apply_throughput(tmp: pathlib.Path, n: int) -> dict:
    pcap = tmp / "in.pcap"
    frames = frame_mix()
    with RawPcapWriter(str(pcap), linktype=1, nano=True) as w:
        w.write_header(None)
        for i in range(n):
            t = 1_700_000_000 * 10**9 + i * 1000
            w.write_packet(frames[i % len(frames)], sec=t // 10**9, usec=t % 10**9)
    # the five-rule example uses trunk ports; the same rules on plain ports suit an untagged capture
    config = tmp / "plain.yaml"
    config.write_text(re.sub(r"ports:\n(  .*\n)+", "ports: {a: eth0.100, b: eth0.200}\n", CONFIG.read_text()))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reshaper", "apply", str(config), str(pcap), str(tmp / "out.pcap")],
                   check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    return {"frames": n, "seconds": elapsed, "frames_per_second": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reshaper-bench-") as tmp:
        cost = engine_cost(pathlib.Path(tmp))
        print(f"engine, five-rule program, {len(frame_mix())}-frame mix: "
              f"{cost['instructions_per_frame']:.0f} instructions/frame (callgrind), "
              f"{cost['ns_per_frame']:.1f} ns/frame (native, -O2, {os.uname().machine})")
        result = apply_throughput(pathlib.Path(tmp), args.frames)
        print(f"reshaper apply: {result['frames']} frames in {result['seconds']:.1f} s = "
              f"{result['frames_per_second']:,.0f} frames/s")


if __name__ == "__main__":
    main()
