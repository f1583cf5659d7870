"""`reshaper apply` and tcprewrite side by side on the same capture and rewrites (a benchmark, not a test).

    python -m reshaper.bench.apply_speed [--frames 1000000] [--runs 3]

One capture of N IPv4 frames (TCP and UDP, a quarter to port 80), then the two tools, interleaved,
runs times each, the median of each, the ratio:

    reshaper apply RULES in.pcap out.pcap          (RULES: a port map 80->8080, then a TTL of 58)
    tcprewrite --portmap=80:8080 --ttl=58 --infile=in.pcap --outfile=out.pcap

Before timing, the two outputs are held to the same work: every frame to port 80 leaves to 8080, every
frame with a TTL of 58, and the frames of the two byte for byte the same (both update the checksums).
"""
import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader, RawPcapWriter

PORT_MAP = (80, 8080)
TTL = 58
RULES = f"""version: 1
ports: {{a: eth0, b: eth1}}
rules:
  - {{name: portmap, match: {{dst_port: {PORT_MAP[0]}}}, actions: [{{set: {{dst_port: {PORT_MAP[1]}, ttl: {TTL}}}}}]}}
  - {{name: ttl, match: {{eth_type: ipv4}}, actions: [{{set: {{ttl: {TTL}}}}}]}}
"""
TCPREWRITE_ARGS = [f"--portmap={PORT_MAP[0]}:{PORT_MAP[1]}", f"--ttl={TTL}"]


def frame_mix() -> list[bytes]:
    """IPv4 frames from ephemeral source ports (tcprewrite's port map also maps a source port 80)."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ip = IP(src="10.0.0.5", dst="198.51.100.7", ttl=64)
    frames = [eth / ip / TCP(sport=40001, dport=80, flags="A") / (b"x" * 100),
              eth / ip / UDP(sport=5353, dport=53) / (b"q" * 30),
              eth / ip / TCP(sport=40002, dport=443, flags="A") / (b"y" * 1400),
              eth / ip / UDP(sport=40003, dport=9999) / (b"z" * 18)]
    return [bytes(f) for f in frames]


def write_input(path: pathlib.Path, n: int) -> None:
    """A microsecond pcap (what tcpdump writes) of n frames, 1 us apart."""
    frames = frame_mix()
    with RawPcapWriter(str(path), linktype=1) as w:
        w.write_header(None)
        for i in range(n):
            t = 1_700_000_000 * 10**6 + i
            w.write_packet(frames[i % len(frames)], sec=t // 10**6, usec=t % 10**6)


def reshaper_command(rules: pathlib.Path, inp: pathlib.Path, out: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "reshaper", "apply", str(rules), str(inp), str(out)]


def tcprewrite_command(tcprewrite: str, inp: pathlib.Path, out: pathlib.Path) -> list[str]:
    return [tcprewrite, *TCPREWRITE_ARGS, f"--infile={inp}", f"--outfile={out}"]


def same_work(inp: pathlib.Path, ours: pathlib.Path, theirs: pathlib.Path) -> int:
    """Checks both outputs hold the frames rewritten alike; returns how many went to port 80."""
    to_80 = 0
    rows = zip(RawPcapReader(str(inp)), RawPcapReader(str(ours)), RawPcapReader(str(theirs)), strict=True)
    for (before, _), (a, _), (b, _) in rows:
        if a != b:
            raise SystemExit(f"the outputs differ: reshaper {a.hex()}, tcprewrite {b.hex()}")
        ip = Ether(a)[IP]
        if ip.ttl != TTL:
            raise SystemExit(f"a frame left with TTL {ip.ttl}: {a.hex()}")
        if Ether(before)[IP].payload.dport == PORT_MAP[0]:
            to_80 += 1
            if ip.payload.dport != PORT_MAP[1]:
                raise SystemExit(f"a frame to port {PORT_MAP[0]} left to {ip.payload.dport}: {a.hex()}")
    return to_80


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tcprewrite = shutil.which("tcprewrite")
    if not tcprewrite:
        raise SystemExit("tcprewrite is missing: make apt-test installs it (Debian package tcpreplay)")
    with tempfile.TemporaryDirectory(prefix="reshaper-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        inp, rules = tmp / "in.pcap", tmp / "rules.yaml"
        rules.write_text(RULES)
        write_input(inp, args.frames)
        ours, theirs = reshaper_command(rules, inp, tmp / "ours.pcap"), tcprewrite_command(tcprewrite, inp,
                                                                                           tmp / "theirs.pcap")
        check = min(args.frames, 10_000)  # the outputs compared on a prefix of the capture: scapy is slow
        write_input(tmp / "check.pcap", check)
        subprocess.run(reshaper_command(rules, tmp / "check.pcap", tmp / "check-ours.pcap"), check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(tcprewrite_command(tcprewrite, tmp / "check.pcap", tmp / "check-theirs.pcap"), check=True)
        to_80 = same_work(tmp / "check.pcap", tmp / "check-ours.pcap", tmp / "check-theirs.pcap")
        print(f"same work: {check} frames byte for byte alike out of both, TTL {TTL} on all, "
              f"{to_80} to port {PORT_MAP[0]} left to {PORT_MAP[1]}")
        times = {"reshaper apply": [], "tcprewrite": []}
        for _ in range(args.runs):  # interleaved: a slow moment of the machine falls on both
            times["reshaper apply"].append(timed(ours))
            times["tcprewrite"].append(timed(theirs))
        if (tmp / "ours.pcap").stat().st_size - 24 != (tmp / "theirs.pcap").stat().st_size - 24:
            raise SystemExit("the two outputs of the whole capture differ in length")
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"{name:>15}: {medians[name]:.2f} s median of {', '.join(f'{x:.2f}' for x in t)} "
                  f"({args.frames / medians[name]:,.0f} frames/s)")
        print(f"reshaper apply / tcprewrite: {medians['reshaper apply'] / medians['tcprewrite']:.2f}x the time")


if __name__ == "__main__":
    main()
