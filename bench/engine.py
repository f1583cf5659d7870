"""Engine cost per frame and `apply` throughput (a benchmark, not a test).

    python -m reshaper.bench.engine [--frames 1000000] [--json PATH] [--plot PATH]

1. The engine over two kinds of rule sets: the five-rule example over a mix of
   frames, and per-host rules (each `match: {ip_dst: 10.1.x.y/32, ip_proto:
   udp}` with a delay, as experimenters write them) from 5 to 1,000 rules with
   a frame that hits the last rule and one that hits none. Instructions per
   frame under callgrind (deterministic) and ns per frame natively, built with
   the flags of the cffi extension (-O2; medians of three runs taken in
   turns), for rs_run (the classifier of the loaded form) and
   rs_run_reference (every rule in turn) from one build.
2. `reshaper apply` on a capture of N frames: frames per second, end to end
   (against tcprewrite on the same capture: bench/apply_speed.py).
"""
import argparse
import dataclasses
import json
import os
import pathlib
import re
import statistics
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
RULE_COUNTS = (5, 50, 250, 1000)
# the harness's argument for each entry; and the runs to count: the entries and "none", the harness's
# loop without an engine, which each entry's count is taken against
ENTRIES = {"loaded": [], "reference": ["reference"]}
COUNTED_RUNS = {**ENTRIES, "none": ["none"]}
# frames per callgrind run and per native run of the five-rule mix (callgrind counts: any number will do)
CALLGRIND_FRAMES = 2_000
NATIVE_INSTRUCTIONS = 1_000_000_000   # about half a second natively, whatever a case costs
NATIVE_RUNS = 3


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


def per_host_address(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}"


def per_host_config(n: int) -> str:
    """n rules, a delay per lab host: the rule file experimenters write."""
    rules = "".join(f"  - {{name: host-{i}, match: {{ip_dst: {per_host_address(i)}/32, ip_proto: udp}}, "
                    f"actions: [{{delay: {{time: {i % 50 + 1}ms}}}}]}}\n" for i in range(n))
    return "version: 1\nports: {a: eth0.100, b: eth0.200}\n" + ("rules:\n" + rules if n else "rules: []\n")


def per_host_frame(address: str) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.5", dst=address)
                 / UDP(sport=5000, dport=6000) / (b"d" * 18))


@dataclasses.dataclass
class Case:
    name: str
    rules: int
    program: bytes
    frames: list[bytes]


def cases() -> list[Case]:
    """The five-rule mix, the same frames with no rules (what parsing and the verdict cost alone), then
    per n rules a frame hitting the last rule and one hitting none."""
    out = [Case("five-rule mix", 5, compile_rules(load_config(str(CONFIG))), frame_mix()),
           Case("no rules, the same mix", 0, compile_rules(load_config("none.yaml", per_host_config(0))), frame_mix())]
    for n in RULE_COUNTS:
        program = compile_rules(load_config(f"per-host-{n}.yaml", per_host_config(n)))
        out.append(Case(f"{n} per-host rules, last rule", n, program, [per_host_frame(per_host_address(n - 1))]))
        out.append(Case(f"{n} per-host rules, no rule", n, program, [per_host_frame("10.2.0.1")]))
    return out


def bench_input(path: pathlib.Path, case: Case) -> None:
    data = struct.pack("<I", len(case.program)) + case.program + struct.pack("<I", len(case.frames))
    data += b"".join(struct.pack("<H", len(f)) + f for f in case.frames)
    path.write_bytes(data)


def harness_command(cc: str, flags: list[str], out: pathlib.Path) -> list[str]:
    return [cc, *flags, f"-I{ENGINE}", str(HARNESS), str(ENGINE / "engine.c"), "-o", str(out)]


def iterations(case: Case, frames: int) -> int:
    return max(1, frames // len(case.frames))


def callgrind_command(binary: str, inp: str, iters: int, argument: list[str], out: str) -> list[str]:
    """valgrind counting every instruction of one harness run: rs_state_init, the loop, its memcpy"""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, inp, str(iters), *argument]


def parse_callgrind(stdout: str, stderr: str) -> tuple[int, int]:
    """(frames, instructions) of one run"""
    return (int(re.search(r"frames=(\d+)", stdout).group(1)),
            int(re.search(r"Collected : (\d+)", stderr).group(1)))


def instructions_per_frame(run: tuple[str, str], without: tuple[str, str]) -> float:
    """An entry's instructions per frame: its run's (stdout, stderr) less the same run's without an engine."""
    frames, total = parse_callgrind(*run)
    _, rest = parse_callgrind(*without)
    return (total - rest) / frames


def engine_costs(tmp: pathlib.Path) -> list[dict]:
    """Every case through both entries: instructions per frame (callgrind), then ns per frame natively,
    the median of NATIVE_RUNS runs taken in turns (both entries, every case, then again)."""
    binary = tmp / "bench_engine"
    subprocess.run(harness_command("gcc", ["-O2", "-std=gnu11"], binary), check=True)
    rows, native = [], []
    for k, case in enumerate(cases()):
        inp = tmp / f"input-{k}.bin"
        bench_input(inp, case)
        row = {"case": case.name, "rules": case.rules}
        counted = {}
        for entry, argument in COUNTED_RUNS.items():
            cg = subprocess.run(callgrind_command(str(binary), str(inp), iterations(case, CALLGRIND_FRAMES),
                                                  argument, str(tmp / "cg.out")),
                                check=True, capture_output=True, text=True)
            counted[entry] = (cg.stdout, cg.stderr)
        for entry, argument in ENTRIES.items():
            per = instructions_per_frame(counted[entry], counted["none"])
            row[entry] = {"instructions_per_frame": round(per, 1), "ns_runs": []}
            native.append((row[entry], [str(binary), str(inp), str(iterations(case, int(NATIVE_INSTRUCTIONS / per))),
                                        *argument]))
        rows.append(row)
    for _ in range(NATIVE_RUNS):
        for figures, command in native:
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            figures["ns_runs"].append(float(re.search(r"ns_per_frame=([\d.]+)", out).group(1)))
    for figures, _ in native:
        figures["ns_per_frame"] = statistics.median(figures["ns_runs"])
    return rows


def cost_table(rows: list[dict], arch: str, timed: bool = True) -> str:
    head = "| case | loaded form, instructions/frame | reference, instructions/frame |"
    rule = "|---|---|---|"
    if timed:
        head += " loaded form, ns/frame | reference, ns/frame |"
        rule += "---|---|"
    lines = [f"{arch}, callgrind" + (" and native -O2" if timed else ""), "", head, rule]
    for r in rows:
        line = (f"| {r['case']} | {r['loaded']['instructions_per_frame']:,.0f} | "
                f"{r['reference']['instructions_per_frame']:,.0f} |")
        if timed:
            line += f" {r['loaded']['ns_per_frame']:.1f} | {r['reference']['ns_per_frame']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


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
    parser.add_argument("--json", type=pathlib.Path, help="write the engine's figures here")
    parser.add_argument("--plot", type=pathlib.Path, help="write instructions per frame against rules here (PNG)")
    parser.add_argument("--with", dest="others", type=pathlib.Path, action="append", default=[],
                        help="another architecture's figures to plot beside these (engine_armhf --json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reshaper-bench-") as tmp:
        rows = engine_costs(pathlib.Path(tmp))
        print(cost_table(rows, os.uname().machine))
        if args.json:
            args.json.write_text(json.dumps({"arch": os.uname().machine, "rows": rows}, indent=1) + "\n")
        if args.plot:
            from reshaper.bench.plots import engine_scaling
            others = [json.loads(path.read_text()) for path in args.others]
            engine_scaling({os.uname().machine: rows} | {o["arch"]: o["rows"] for o in others}, args.plot)
        result = apply_throughput(pathlib.Path(tmp), args.frames)
        print(f"reshaper apply: {result['frames']} frames in {result['seconds']:.1f} s = "
              f"{result['frames_per_second']:,.0f} frames/s")


if __name__ == "__main__":
    main()
