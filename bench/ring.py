"""Ring-mode benchmark: frames/s, RTT and CPU per frame, against the Linux bridge.

    .venv/bin/python -m reshaper.bench.ring [--duration S] [--sizes 64,1500] [--rounds 3]
                                            [--placement single-core|split|both] [--json PATH]

Topology (bridge/netns.py), one run, modes interleaved round by round:

    trafgen (CPU 0) -> a0 [ns a] <-veth-> a1 [ns br: forwarder] b1 <-veth-> b0 [ns b]: sink

Modes:
  kernel   a Linux bridge device in the bridge namespace, a1 and b1 enslaved (pyroute2),
           br_netfilter's bridge-nf-call-* off in that namespace (a plain bridge), a static
           FDB entry for the destination MAC (known-unicast forwarding, no flooding).
  ring     `reshaper run --mode ring`, no rules, pinned to CPU 1.
  ring-5   the same with examples/five-rules.yaml (ports rewritten to a: a1, b: b1).
  kernel-rps   the kernel bridge, always in the single-core placement (what split was compared with).

Placement (--placement, bench/topology.py's placed(), as in `reshaper bench`): single-core (the
default) steers the receive of the forwarder's ports to CPU 1 with RPS, so the whole path shares
the forwarder's CPU as on the one-core board; split leaves veth's receive on the sender's CPU 0,
where trafgen runs; both runs each mode in each, in turn. Every measurement checks where the
receive ran (frames received per CPU, /proc/net/softnet_stat) and the report warns when
single-core did not hold.

The generator is trafgen (Debian netsniff-ng, bench/trafgen.py), pinned to CPU 0, sending a round-robin mix
of five frames, each of which hits a different branch of the five-rule program:
dns-rewrite (UDP/53: ip_dst rewritten, TTL decremented), web-to-proxy (TCP/80 from
10.0.0.0/24: port and DSCP rewritten), syn-mark (TCP SYN: ECN set), v6-hoplimit (IPv6 to
2001:db8::/32: hop limit decremented) and one no rule matches (all five rules tried,
default forward). block-telnet (drop) is never hit: dropped frames would not be delivered.
The destination MAC is not b0's: b0 drops the frames at the first look (PACKET_OTHERHOST),
so its IP stack neither answers nor costs much. A size is the Ethernet frame length
without FCS (what trafgen writes, what rx_bytes counts).

Delivered = b0's rx_packets, offered = a0's tx_packets + tx_dropped, both IFLA_STATS64 read
with pyroute2: no user-space sink. CPU: /proc/stat per CPU, /proc/softirqs (NET_RX: where
receive softirqs run), /proc/PID/stat (utime+stime) and schedstat of the forwarder.
RTT: ping a -> b at low rate, no other traffic, per-packet times.
Everything it creates (namespaces, bridge, processes, temporary files) is removed on exit,
also on failure or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from reshaper.bridge.launcher import RunningAppliance
from reshaper.bridge.netns import HOST_B, Topology
from reshaper.bridge.offloads import GRO, GSO, TSO, set_offloads
from reshaper.lab import REPO

from reshaper.bench.cli import unwind_on_sigterm
from reshaper.bench.counters import proc_cpu
from reshaper.bridge.proc_counters import cpu_times, frames_received, link_stats, net_rx_softirqs
from reshaper.bench.devices import BRIDGE_DEV, LinuxBridge
from reshaper.bench.frames import frame_mix
from reshaper.bench.machine import machine, qemu_running
from reshaper.bench.probe import percentile
from reshaper.bench.report import fmt, placement_rule, placement_verdict_line
from reshaper.bench.run import FIVE_RULES
from reshaper.bench.settings import (DEFAULT_PLACEMENT, FWD_CPU, GEN_CPU, PLACEMENT_CHOICES, USER_HZ,
                                     placements_asked)
from reshaper.bench.topology import PLACEMENT_RPS, placed, placement_check, placement_verdict
from reshaper.bench.trafgen import Trafgen, build_shim, trafgen_config

MODES = ("kernel", "ring", "ring-5", "kernel-rps", "ring-5-busy")
BUSY_POLL_US = 20_000  # ring-5-busy: longer than the ping interval, so the loop never sleeps under ping
DEFAULT_MODES = ("kernel", "ring", "ring-5")


# ---- counters ------------------------------------------------------------------

class Probe:
    """Counter snapshots: a0 and b0 (pyroute2), CPUs, softirqs, the forwarder."""

    def __init__(self, topo: Topology):
        self.ipr_a = topo.a.ipr()
        self.ipr_b = topo.b.ipr()

    def close(self) -> None:
        self.ipr_a.close()
        self.ipr_b.close()

    def snap(self, pid: int | None = None, bridge: RunningAppliance | None = None) -> dict:
        s = {"t": time.monotonic(), "a0": link_stats(self.ipr_a, "a0"), "b0": link_stats(self.ipr_b, "b0"),
             "cpu": cpu_times(), "net_rx": net_rx_softirqs(), "rx_frames": frames_received()}
        if pid:
            s["proc"] = proc_cpu(pid)
        if bridge:
            # the control thread shares the saturated forwarder CPU: it may answer late
            for attempt in range(3):
                try:
                    s["reshaper"] = bridge.stats()
                    break
                except OSError:
                    time.sleep(0.2)
        return s


def delta(before: dict, after: dict, placement: str) -> dict:
    dt = after["t"] - before["t"]
    delivered = after["b0"]["rx_packets"] - before["b0"]["rx_packets"]
    sent = after["a0"]["tx_packets"] - before["a0"]["tx_packets"]
    sent_dropped = after["a0"]["tx_dropped"] - before["a0"]["tx_dropped"]
    delivered_bytes = after["b0"]["rx_bytes"] - before["b0"]["rx_bytes"]
    r = {
        "seconds": round(dt, 3),
        "delivered_pps": delivered / dt,
        "offered_pps": (sent + sent_dropped) / dt,
        "a0_tx_dropped": sent_dropped,
        "b0_rx_dropped": after["b0"]["rx_dropped"] - before["b0"]["rx_dropped"],
        "delivered_frame_bytes": delivered_bytes / delivered if delivered else 0,
        "cpu": {},
        "net_rx_per_s": {c: (after["net_rx"][c] - before["net_rx"].get(c, 0)) / dt for c in after["net_rx"]},
    }
    r["delivered_ratio"] = r["delivered_pps"] / r["offered_pps"] if r["offered_pps"] else 0.0
    per_cpu = {c: {k: now[k] - before["cpu"][c][k] for k in now} for c, now in after["cpu"].items()}
    r["placement_check"] = placement_check(
        placement, {c: n - before["rx_frames"].get(c, 0) for c, n in after["rx_frames"].items()},
        {c: n - before["net_rx"].get(c, 0) for c, n in after["net_rx"].items()}, per_cpu, delivered)
    for c, now in after["cpu"].items():
        d = {k: now[k] - before["cpu"][c][k] for k in now}
        total = sum(d.values()) or 1
        r["cpu"][c] = {k: d[k] / total for k in ("user", "system", "softirq", "irq", "steal", "idle")}
        r["cpu"][c]["busy"] = 1.0 - (d["idle"] + d["iowait"]) / total
        # softirq ns per delivered frame on this CPU
        r["cpu"][c]["softirq_ns_per_frame"] = d["softirq"] / USER_HZ * 1e9 / delivered if delivered else None
        r["cpu"][c]["busy_ns_per_frame"] = \
            (total - d["idle"] - d["iowait"]) / USER_HZ * 1e9 / delivered if delivered else None
    if "proc" in after:
        p0, p1 = before["proc"], after["proc"]
        r["fwd_cpu_ns_per_frame"] = (p1["ticks"] - p0["ticks"]) / USER_HZ * 1e9 / delivered if delivered else None
        r["fwd_user_ns_per_frame"] = (p1["utime"] - p0["utime"]) / USER_HZ * 1e9 / delivered if delivered else None
        r["fwd_sys_ns_per_frame"] = (p1["stime"] - p0["stime"]) / USER_HZ * 1e9 / delivered if delivered else None
        r["fwd_run_ns_per_frame"] = (p1["run_ns"] - p0["run_ns"]) / delivered if delivered else None
        r["fwd_cpu_share"] = (p1["run_ns"] - p0["run_ns"]) / 1e9 / dt
        r["fwd_ctxsw_per_s"] = {k: (p1[k] - p0[k]) / dt for k in ("voluntary", "nonvoluntary")}
    if "reshaper" in after and "reshaper" in before:
        s0, s1 = before["reshaper"], after["reshaper"]
        frames = s1["ports"]["a"]["rx"] - s0["ports"]["a"]["rx"]
        loops = s1["loops"] - s0["loops"]
        r["fwd_loops_per_s"] = loops / dt
        r["fwd_frames_per_loop"] = frames / loops if loops else None
        r["fwd_ring_drops"] = s1["ports"]["a"]["ring_drops"] - s0["ports"]["a"]["ring_drops"]
        r["fwd_tx_full"] = s1["ports"]["b"]["tx_full"] - s0["ports"]["b"]["tx_full"]
        r["fwd_tx_errors"] = s1["ports"]["b"]["tx_errors"] - s0["ports"]["b"]["tx_errors"]
        r["rule_hits"] = {rule["name"]: rule.get("matched", 0) - rule0.get("matched", 0)
                          for rule, rule0 in zip(s1.get("rules", []), s0.get("rules", []))}
        if r["rule_hits"]:
            r["rule_hits"]["(none)"] = s1.get("engine", {}).get("unmatched", 0) - \
                s0.get("engine", {}).get("unmatched", 0)
    return r


# ---- the forwarders --------------------------------------------------------------

class KernelBridge(LinuxBridge):
    """bench/devices.py's plain Linux bridge (br_netfilter hooks off, static FDB entry) under the
    name of its mode (kernel, or kernel-rps: the same in the single-core placement)."""

    def __init__(self, topo: Topology, name: str):
        super().__init__(topo)
        self.name = name


def placements_of(mode: str, args) -> list[str]:
    """The placements a mode runs in: kernel-rps is the kernel bridge in single-core, whatever
    --placement says."""
    return ["single-core"] if mode == "kernel-rps" else args.placements


class RingModeUnderTest:
    """`reshaper run --mode ring` (bridge/launcher.py) in the bridge namespace, pinned to FWD_CPU."""

    def __init__(self, topo: Topology, name: str, config: Path, tmp: Path):
        self.topo, self.name, self.config, self.tmp = topo, name, config, tmp
        self.appliance: RunningAppliance | None = None
        self.pid = None

    def start(self) -> None:
        extra = ["--busy-poll", str(BUSY_POLL_US)] if self.name.endswith("-busy") else []
        # pinned before it starts, so that every thread (the control thread too) inherits it
        self.appliance = RunningAppliance(self.config, self.tmp / f"{self.topo.br.name}.sock", "ring", ns=self.topo.br,
                                       log_path=self.tmp / f"{self.topo.br.name}.log",
                                       env={**os.environ, "RESHAPER_RUN_DIR": str(self.tmp / "run")},
                                       prefix=["taskset", "-c", str(FWD_CPU)], extra=extra)
        self.appliance.start()
        self.pid = self.appliance.proc.pid

    def stop(self) -> None:
        if self.appliance:
            self.appliance.stop()
            self.appliance = None
            self.pid = None


def ring_configs(tmp: Path) -> dict[str, Path]:
    plain = tmp / "ring-0.yaml"
    plain.write_text("version: 1\nports: {a: a1, b: b1}\n")
    doc = yaml.safe_load(FIVE_RULES.read_text())
    doc["ports"] = {"a": "a1", "b": "b1"}
    five = tmp / "ring-5.yaml"
    five.write_text(f"# {FIVE_RULES.relative_to(REPO)} with plain ports\n" + yaml.safe_dump(doc, sort_keys=False))
    return {"ring": plain, "ring-5": five, "ring-5-busy": five}


# ---- generator and ping ------------------------------------------------------------

def ping_rtts(topo: Topology, count: int, interval: float) -> list[float]:
    """Per-packet RTTs in µs from ping a -> b, pinned to the generator's CPU."""
    base = ["taskset", "-c", str(GEN_CPU), "ping", "-n", "-W", "1", "-i", str(interval)]
    topo.a.run([*base, "-c", "5", HOST_B["v4"]], capture_output=True)  # ARP, warm caches
    out = topo.a.run([*base, "-c", str(count), HOST_B["v4"]], capture_output=True, text=True).stdout
    return [float(t) * 1000 for t in re.findall(r"time=([\d.]+) ms", out)]


# ---- machine ------------------------------------------------------------------------

def wait_idle(limit: float) -> dict:
    """Waits (up to limit s) until every CPU was >= 90 % idle for a second: others share this machine."""
    deadline = time.monotonic() + limit
    waited = 0.0
    while True:
        before = cpu_times()
        time.sleep(1.0)
        after = cpu_times()
        idle = {}
        for c, now in after.items():
            d = {k: now[k] - before[c][k] for k in now}
            idle[c] = (d["idle"] + d["iowait"]) / (sum(d.values()) or 1)
        if min(idle.values()) >= 0.9 or time.monotonic() >= deadline:
            return {"idle_before": idle, "waited_s": round(waited, 1), "idle_ok": min(idle.values()) >= 0.9}
        if waited == 0:
            print(f"waiting for an idle machine (CPU idle {', '.join(f'{v:.0%}' for v in idle.values())}; "
                  f"qemu running: {qemu_running()})", file=sys.stderr)
        waited += 1.0


def strace_summary(pid: int, seconds: float = 1.0) -> str:
    if not shutil.which("strace"):
        return "strace not installed"
    p = subprocess.run(["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid)],
                       capture_output=True, text=True)
    return p.stderr.strip()


# ---- the run ---------------------------------------------------------------------------

def measure(topo, probe, fwd, trafgen, warmup: float, duration: float, idle_wait: float, placement: str) -> dict:
    idle = wait_idle(idle_wait)
    qemu = qemu_running()
    trafgen.start()
    try:
        time.sleep(warmup)
        if not trafgen.alive():
            return {"error": f"trafgen exited during warm-up: {trafgen.output()[-400:]}"}
        rbridge = getattr(fwd, "appliance", None)
        before = probe.snap(fwd.pid, rbridge)
        time.sleep(duration)
        after = probe.snap(fwd.pid, rbridge)
        result = delta(before, after, placement)
        result.update(idle, qemu_running=qemu or qemu_running())
        if not trafgen.alive():
            result["error"] = f"trafgen exited during the measurement: {trafgen.output()[-400:]}"
        return result
    finally:
        trafgen.stop()


def run_mode(args, topo, probe, mode: str, placement: str, rnd: int, configs, tg_cfgs, shim, tmp: Path,
             results: dict) -> None:
    """One mode in one placement, one round: RTT (--ping), then every size; into results."""
    if mode.startswith("kernel"):
        fwd = KernelBridge(topo, mode)
    else:
        fwd = RingModeUnderTest(topo, mode, configs[mode], tmp)
    fwd.start()
    try:
        if args.ping:
            idle = wait_idle(args.idle_wait)
            rtts = ping_rtts(topo, args.ping_count, args.ping_interval)
            results["rtt"].append({"round": rnd, "mode": mode, "placement": placement, "samples": len(rtts),
                                   "p50_us": percentile(rtts, 0.5) if rtts else None,
                                   "p99_us": percentile(rtts, 0.99) if rtts else None,
                                   "max_us": max(rtts) if rtts else None,
                                   "idle_ok": idle["idle_ok"], "qemu_running": qemu_running()})
        for size in args.sizes:
            tg = Trafgen(topo, tg_cfgs[size], tmp / "trafgen.log", shim)
            m = measure(topo, probe, fwd, tg, args.warmup, args.duration, args.idle_wait, placement)
            m.update(round=rnd, mode=mode, placement=placement, size=size)
            results["measurements"].append(m)
            print(f"round {rnd + 1}/{args.rounds} {mode:7s} {placement:11s} {size:5d} B: "
                  f"offered {m.get('offered_pps', 0) / 1e3:7.1f} kpps, "
                  f"delivered {m.get('delivered_pps', 0) / 1e3:7.1f} kpps"
                  + (f"  ERROR {m['error']}" if "error" in m else ""), file=sys.stderr)
            if args.profile and mode.startswith("ring") and rnd == args.rounds - 1:
                tg.start()
                try:
                    time.sleep(args.warmup)
                    results["profile"][f"{mode} {placement} {size}"] = strace_summary(fwd.pid)
                finally:
                    tg.stop()
    finally:
        fwd.stop()


def run(args) -> dict:
    results = {"command": " ".join([os.path.relpath(sys.executable, REPO), "-m", "reshaper.bench.ring", *sys.argv[1:]]),
               "machine_before": machine(), "placements": args.placements, "measurements": [], "rtt": [],
               "profile": {}}
    if not shutil.which("trafgen"):
        raise SystemExit("trafgen not found: apt-get install netsniff-ng")
    with tempfile.TemporaryDirectory(prefix="bench-ring-") as tmpdir, Topology("rsbench") as topo:
        tmp = Path(tmpdir)
        configs = ring_configs(tmp)
        shim = build_shim(tmp)
        tg_cfgs = {}
        for size in args.sizes:
            tg_cfgs[size] = tmp / f"trafgen-{size}.cfg"
            tg_cfgs[size].write_text(trafgen_config(frame_mix(size)))
        # same interface settings for every mode: what ring mode sets on its ports
        for ifname in ("a1", "b1"):
            with topo.br.entered():
                set_offloads(ifname, GRO | GSO | TSO, False)
        probe = Probe(topo)
        try:
            for rnd in range(args.rounds):
                order = list(args.modes[rnd % len(args.modes):] + args.modes[:rnd % len(args.modes)])
                for mode in order:
                    for placement in placements_of(mode, args):
                        with placed(topo, placement):
                            run_mode(args, topo, probe, mode, placement, rnd, configs, tg_cfgs, shim, tmp, results)
        finally:
            probe.close()
    results["machine_after"] = machine()
    return results


# ---- the report ----------------------------------------------------------------------------

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(results: dict, args) -> dict:
    ms = [m for m in results["measurements"] if "error" not in m]
    summary = {"throughput": [], "rtt": []}
    for size in args.sizes:
        kernel_by_round = {(m["round"], m["placement"]): m["delivered_pps"] for m in ms
                           if m["mode"] == "kernel" and m["size"] == size}
        for mode, placement in ((mo, pl) for mo in args.modes for pl in placements_of(mo, args)):
            rows = [m for m in ms if m["mode"] == mode and m["size"] == size and m["placement"] == placement]
            if not rows:
                continue
            # against the kernel bridge in the same placement (kernel-rps: in the headline one)
            ref = args.placements[0] if mode == "kernel-rps" else placement
            ratios = [m["delivered_pps"] / kernel_by_round[(m["round"], ref)] for m in rows
                      if kernel_by_round.get((m["round"], ref))]
            pick = lambda key, rows=rows: med([m.get(key) for m in rows])  # noqa: E731
            cpu = lambda c, key, rows=rows: med([m["cpu"][c][key] for m in rows])  # noqa: E731
            summary["throughput"].append({
                "size": size, "mode": mode, "placement": placement, "n": len(rows),
                "delivered_pps": pick("delivered_pps"), "offered_pps": pick("offered_pps"),
                "delivered_ratio": pick("delivered_ratio"),
                "vs_kernel": med(ratios),
                "all_delivered_pps": [round(m["delivered_pps"]) for m in rows],
                "fwd_cpu_ns_per_frame": pick("fwd_cpu_ns_per_frame"),
                "fwd_run_ns_per_frame": pick("fwd_run_ns_per_frame"),
                "fwd_user_ns_per_frame": pick("fwd_user_ns_per_frame"),
                "fwd_sys_ns_per_frame": pick("fwd_sys_ns_per_frame"),
                "fwd_cpu_share": pick("fwd_cpu_share"),
                "fwd_frames_per_loop": pick("fwd_frames_per_loop"),
                "fwd_ring_drops_per_s": med([m["fwd_ring_drops"] / m["seconds"] for m in rows if "fwd_ring_drops" in m]),
                "fwd_ctxsw_per_s": med([sum(m["fwd_ctxsw_per_s"].values()) for m in rows if "fwd_ctxsw_per_s" in m]),
                "cpu": {c: {k: cpu(c, k) for k in ("busy", "user", "system", "softirq", "steal",
                                                    "softirq_ns_per_frame", "busy_ns_per_frame")}
                        for c in (GEN_CPU, FWD_CPU)},
                "net_rx_per_s": {c: med([m["net_rx_per_s"].get(c) for m in rows]) for c in (GEN_CPU, FWD_CPU)},
                "rule_hits": rows[-1].get("rule_hits"),
                "placement_check": placement_verdict([m["placement_check"] for m in rows]),
                "fwd_cpu_split_ns_per_frame": {k: med([m["placement_check"]["forwarder_ns_per_frame"][k] for m in rows])
                                               for k in ("softirq", "system", "user")},
            })
    kernel_rtt = {(r["round"], r["placement"]): r for r in results["rtt"] if r["mode"] == "kernel"}
    for mode, placement in ((mo, pl) for mo in args.modes for pl in placements_of(mo, args)):
        rows = [r for r in results["rtt"] if r["mode"] == mode and r["placement"] == placement
                and r["p50_us"] is not None]
        if not rows:
            continue
        ref = args.placements[0] if mode == "kernel-rps" else placement
        base = {r["round"]: kernel_rtt[(r["round"], ref)] for r in rows if (r["round"], ref) in kernel_rtt}
        added50 = [r["p50_us"] - base[r["round"]]["p50_us"] for r in rows if r["round"] in base]
        added99 = [r["p99_us"] - base[r["round"]]["p99_us"] for r in rows if r["round"] in base]
        summary["rtt"].append({"mode": mode, "placement": placement, "n": len(rows), "p50_us": med([r["p50_us"] for r in rows]),
                               "p99_us": med([r["p99_us"] for r in rows]), "max_us": max(r["max_us"] for r in rows),
                               "added_p50_us": med(added50), "added_p99_us": med(added99)})
    return summary


def report(results: dict, summary: dict, args) -> str:
    mb, ma = results["machine_before"], results["machine_after"]
    out = ["# reshaper ring-mode benchmark", "",
           f"Command: `{results['command']}`  ",
           f"Machine: {mb['nproc']} CPUs ({mb['cpu_model']}), kernel {mb['kernel']}; "
           f"load average before {' '.join(mb['loadavg'])}, after {' '.join(ma['loadavg'])}; "
           f"qemu running: {'yes' if mb['qemu_running'] or ma['qemu_running'] else 'no'}"
           + (f"; busy before: {', '.join(mb['busy_processes'])}" if mb["busy_processes"] else ""), "",
           f"{args.rounds} rounds, modes interleaved (order rotated each round), {args.duration:g} s per "
           f"measurement after {args.warmup:g} s warm-up; medians over rounds; `vs kernel` is the median of "
           f"per-round ratios to the kernel bridge in the same placement.", "",
           f"Placement: the headline figures are **{args.placements[0]}**"
           + (" (every table shows both, side by side)" if len(args.placements) > 1 else "") + "; "
           f"single-core: RPS steers the receive of a1 and b1 to CPU {FWD_CPU}, the forwarder's, so the whole "
           f"path shares one CPU as on the one-core board; split: veth's receive stays on the sender's CPU "
           f"{GEN_CPU}, trafgen's. The placement check is below the table.", "",
           "| size | forwarder | placement | delivered kpps | offered kpps | delivered/offered | vs kernel | "
           "fwd CPU ns/frame utime+stime (user/sys) | fwd on-CPU ns/frame | frames/loop | "
           f"CPU{GEN_CPU} busy (softirq) | CPU{FWD_CPU} busy (softirq) | NET_RX/s CPU{GEN_CPU} / CPU{FWD_CPU} |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["throughput"]:
        c0, c1 = r["cpu"][GEN_CPU], r["cpu"][FWD_CPU]
        out.append(
            f"| {r['size']} | {r['mode']} | {r['placement']} | {fmt(r['delivered_pps'] / 1e3, ',.1f')} | "
            f"{fmt(r['offered_pps'] / 1e3, ',.1f')} | {fmt(r['delivered_ratio'], '.3f')} | "
            f"{fmt(r['vs_kernel'], '.2f')} | {fmt(r['fwd_cpu_ns_per_frame'])}"
            + (f" ({fmt(r['fwd_user_ns_per_frame'])}/{fmt(r['fwd_sys_ns_per_frame'])})" if r['fwd_user_ns_per_frame'] is not None else "")
            + f" | {fmt(r['fwd_run_ns_per_frame'])} | "
            f"{fmt(r['fwd_frames_per_loop'], '.1f')} | {fmt(c0['busy'] * 100, '.0f')} % ({fmt(c0['softirq'] * 100, '.0f')} %) | "
            f"{fmt(c1['busy'] * 100, '.0f')} % ({fmt(c1['softirq'] * 100, '.0f')} %) | "
            f"{fmt(r['net_rx_per_s'][GEN_CPU])} / {fmt(r['net_rx_per_s'][FWD_CPU])} |")
    out += ["", "Placement check. " + placement_rule(), ""]
    for r in summary["throughput"]:
        split = r["fwd_cpu_split_ns_per_frame"]
        out.append("* " + placement_verdict_line(
            f"{r['mode']} at {r['size']} B in {r['placement']}", r["placement_check"],
            f"; CPU {FWD_CPU} per frame: softirq {fmt(split['softirq'])}, system {fmt(split['system'])}, "
            f"user {fmt(split['user'])} ns"))
    if summary["rtt"]:
        out += ["", f"RTT, ping a -> b, {args.ping_count} pings at {args.ping_interval * 1000:g} ms, no other traffic "
                "(median over rounds of each round's percentile; `added` = minus the kernel bridge of the same round and placement):", "",
                "| forwarder | placement | p50 µs | p99 µs | max µs | added p50 µs | added p99 µs |",
                "|---|---|---|---|---|---|---|"]
        for r in summary["rtt"]:
            out.append(f"| {r['mode']} | {r['placement']} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {fmt(r['max_us'])} | "
                       f"{fmt(r['added_p50_us'], '+,.0f')} | {fmt(r['added_p99_us'], '+,.0f')} |")
    out += ["", "Where the bottleneck is (per row, from delivered/offered, drops and CPU busy):"]
    for r in summary["throughput"]:
        c0, c1 = r["cpu"][GEN_CPU]["busy"], r["cpu"][FWD_CPU]["busy"]
        if r["delivered_ratio"] is not None and r["delivered_ratio"] < 0.97:
            where = (f"the forwarder: {1 - r['delivered_ratio']:.0%} of offered frames lost"
                     + (f" ({fmt(r['fwd_ring_drops_per_s'])}/s RX-ring drops, {fmt(r['fwd_frames_per_loop'], '.0f')} frames "
                        f"per loop)" if r["fwd_ring_drops_per_s"] is not None else "")
                     + f", CPU {FWD_CPU} {c1:.0%} busy")
        else:
            where = (f"the offered load: everything offered is delivered; CPU {GEN_CPU} {c0:.0%} busy (generator"
                     + ("" if r["placement"] == "single-core" else
                        " + whole bridge path" if r["mode"] == "kernel" else " + a1 receive")
                     + f"), CPU {FWD_CPU} {c1:.0%}")
        out.append(f"* {r['size']} B {r['mode']} {r['placement']}: {where}.")
    out += ["", "Targets (issue 3):"]
    for r5 in (r for r in summary["throughput"] if r["mode"] == "ring-5" and r["vs_kernel"] is not None):
        out.append(f"* {r5['size']} B {r5['placement']}: ring mode with 5 rules delivers {r5['vs_kernel']:.2f}x the "
                   f"kernel bridge's frames/s: {'met' if r5['vs_kernel'] >= 1.0 else 'MISSED'} (target >= 1.00).")
    for r in summary["rtt"]:
        if r["mode"].startswith("ring") and r["added_p99_us"] is not None:
            out.append(f"* {r['mode']} {r['placement']} adds {r['added_p99_us']:+.0f} µs p99 RTT: "
                       f"{'met' if r['added_p99_us'] <= 100 else 'MISSED'} (target <= +100 µs).")
    disturbed = [m for m in results["measurements"] + results["rtt"] if not m.get("idle_ok", True) or m.get("qemu_running")]
    errors = [m for m in results["measurements"] if "error" in m]
    out += [f"* {len(disturbed)} of {len(results['measurements']) + len(results['rtt'])} measurements started on a busy "
            f"machine (a CPU < 90 % idle for the second before, or qemu running); "
            f"{len(errors)} failed (trafgen exited)."]
    hits = next((r["rule_hits"] for r in summary["throughput"] if r["mode"] == "ring-5" and r["rule_hits"]), None)
    out += ["", "Notes on placement and method:",
            f"* trafgen pinned to CPU {GEN_CPU} in namespace a, sending on a0 (TX ring, qdisc bypassed, one worker, "
            f"4 MB SO_SNDBUFFORCE send buffer through an LD_PRELOAD shim); "
            f"reshaper pinned to CPU {FWD_CPU} (all threads). RPS: "
            + "; ".join(f"{p}: {PLACEMENT_RPS[p]}" for p in args.placements)
            + ("; kernel-rps is always single-core." if "kernel-rps" in args.modes else "."),
            f"* veth delivers on the sending CPU: in split a1's receive (and for the kernel bridge the whole bridge "
            f"path a1 -> {BRIDGE_DEV} -> b1 -> b0) runs in softirq on CPU {GEN_CPU}, charged beside the generator; in "
            f"single-core RPS moves it to CPU {FWD_CPU}. In ring mode the send() from CPU {FWD_CPU} runs b0's receive "
            f"in softirq on CPU {FWD_CPU} in both. See the NET_RX/s columns and the placement check.",
            "* delivered = b0 rx_packets, offered = a0 tx_packets + tx_dropped (IFLA_STATS64 via pyroute2); "
            "frames reaching b0 are dropped there at once (foreign destination MAC), no user-space sink.",
            "* fwd CPU ns/frame: reshaper's utime+stime (10 ms ticks) and schedstat on-CPU time per delivered frame; "
            "softirq work done on its behalf on its CPU appears in the CPU busy columns.",
            "* kernel bridge: br_netfilter hooks off in its namespace (bridge-nf-call-*=0), static FDB entry, "
            "GRO/GSO/TSO off on a1/b1 in all modes (as ring mode sets them).",
            "* frame mix, round robin: one frame each for dns-rewrite, web-to-proxy, syn-mark, v6-hoplimit, "
            f"and one that no rule matches; ring-5 rule hits in the last measurement: {hits}."]
    for key, text in results["profile"].items():
        out += ["", f"strace -c -f -p (1 s) of {key}:", "```", text, "```"]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reshaper.bench.ring", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before counting (default 1)")
    p.add_argument("--sizes", default="64,1500", help="frame sizes, bytes without FCS (default 64,1500)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help=f"subset of {','.join(MODES)} (default {','.join(DEFAULT_MODES)}); kernel-rps: "
                        f"the kernel bridge in the single-core placement whatever --placement says")
    p.add_argument("--placement", default=DEFAULT_PLACEMENT, choices=PLACEMENT_CHOICES,
                   help="single-core (default): the forwarder's ports' receive on its CPU (RPS), the whole path "
                        "on one CPU as on the board; split: that receive on trafgen's CPU, as veth does it; "
                        "both: each mode in each, in turn")
    p.add_argument("--ping-count", type=int, default=200)
    p.add_argument("--ping-interval", type=float, default=0.01, help="seconds (default 0.01)")
    p.add_argument("--no-ping", dest="ping", action="store_false")
    p.add_argument("--idle-wait", type=float, default=60.0, metavar="S",
                   help="before each measurement wait up to S s for both CPUs >= 90 %% idle (default 60)")
    p.add_argument("--profile", action="store_true", help="strace -c the forwarder for 1 s in the last round")
    p.add_argument("--json", metavar="PATH", help="also write all data as JSON")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    args.placements = placements_asked(args.placement)
    if bad := set(args.modes) - set(MODES):
        p.error(f"unknown modes {bad}")
    if os.geteuid() != 0:
        p.error("needs root (network namespaces, AF_PACKET)")
    if (os.cpu_count() or 1) < 2:
        p.error("needs two CPUs: the generator and the forwarder each get one")
    unwind_on_sigterm()
    results = run(args)
    summary = summarise(results, args)
    print(report(results, summary, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "summary": summary}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
