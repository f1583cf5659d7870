"""What a run comes to: the summary rows (ratios to the Linux bridge in the same placement, and
whether the placement held), report.md (how every number was taken, the placement check, and the
recipe for the real set-up with a board in the middle), and results.json; the plots come from
plots.py, imported only when they are asked for."""
from __future__ import annotations

import json
from pathlib import Path

from reshaper.bench.settings import (FWD_CPU, GEN_CPU, HOG, LIVELOCK, LOSS_FREE, OVERLOAD_FACTORS,
                                     SHARED_CPU_MAX_P99, SHARED_CPU_MIN_LOSS_FREE,
                                     PLACEMENT_MAX_GEN_RX_PER_FRAME, USER_HZ, YARDSTICK_OF)
from reshaper.bench.topology import placement_verdict


def measurements(results: dict):
    """(mode, placement, size, measurement) of every mode measured, in the order of the run's
    placements (the headline first)."""
    for mode, m in results["modes"].items():
        for placement in results["placements"]:
            for size, s in m.get("placements", {}).get(placement, {}).get("sizes", {}).items():
                yield mode, placement, size, s


def placement_summary(s: dict) -> dict:
    """Where a measurement's receive work ran over all its trials (topology.placement_verdict), and
    the generator CPU's softirq time per frame at saturation."""
    checks = [t["placement_check"]
              for t in (s["saturation"], *s["search"], *s["latency"].values(), *s.get("overload", {}).values())]
    return {**placement_verdict(checks),
            "generator_softirq_ns_per_frame": s["saturation"]["placement_check"]["generator_softirq_ns_per_frame"]}


def summarise(results: dict) -> dict:
    rows = []
    for mode, placement, size, s in measurements(results):
        if "error" in s:
            continue
        sat = s["saturation"]
        lat = {k: {q: v["latency"].get(q) for q in ("p50_us", "p99_us", "p99.9_us", "max_us")}
               for k, v in s["latency"].items()}
        cpu_at = s["latency"].get("0.9") or sat
        rows.append({"mode": mode, "placement": placement, "size": int(size), "loss_free_pps": s["loss_free_pps"],
                     "generator_limited": s["generator_limited"],
                     "sat_offered_pps": sat["offered_pps"], "sat_delivered_pps": sat["delivered_pps"],
                     "sat_loss": sat["loss"], "cpu_ns_per_frame": cpu_at["cpu"].get("ns_per_frame"),
                     "cpu_source": cpu_at["cpu"]["source"],
                     "cpu_at": "90 % of loss-free" if "0.9" in s["latency"] else "saturation",
                     "fwd_ns_per_frame": cpu_at["cpu"].get("fwd_ns_per_frame"),
                     "softirq_ns_per_frame": cpu_at["cpu"].get("softirq_ns_per_frame"),
                     "all_busy_ns_per_frame": cpu_at["cpu"].get("all_busy_ns_per_frame"),
                     "forwarder_cpu_ns_per_frame": cpu_at["placement_check"]["forwarder_ns_per_frame"],
                     "placement_check": placement_summary(s),
                     "sat_drops": sat["drops"], "latency": lat,
                     # delivered at each overload factor, as a fraction of the loss-free rate
                     "overload": {k: {"offered_pps": t["offered_pps"], "delivered_pps": t["delivered_pps"],
                                      "of_loss_free": t["delivered_pps"] / s["loss_free_pps"]}
                                  for k, t in s.get("overload", {}).items()}})
    base = {(r["size"], r["placement"]): r for r in rows if r["mode"] == "linux-bridge"}
    for r in rows:
        b = base.get((r["size"], r["placement"]))
        r["vs_linux_bridge"] = ratios(r, b)
        bl = b["latency"].get("0.5", {}) if b else {}
        rl = r["latency"].get("0.5", {})
        r["vs_linux_bridge"]["p50_at_50"] = (rl["p50_us"] / bl["p50_us"]
                                             if rl.get("p50_us") and bl.get("p50_us") else None)
    yardstick_ratios(rows)
    return {"rows": rows}


def ratios(r: dict, b: dict | None) -> dict:
    """Row r against row b (same size and placement): loss-free rate, delivered at saturation, CPU
    per frame; None where either lacks the figure."""
    def ratio(key):
        return r[key] / b[key] if b and r.get(key) is not None and b.get(key) else None
    return {"loss_free": ratio("loss_free_pps"), "saturation": ratio("sat_delivered_pps"),
            "cpu_per_frame": ratio("cpu_ns_per_frame")}


def yardstick_ratios(rows: list[dict]) -> None:
    """Each row of a mode with a yardstick (settings.YARDSTICK_OF) gets vs_yardstick: its ratios to the
    yardstick's row of the same size and placement, None where the run did not measure it."""
    by = {(r["mode"], r["size"], r["placement"]): r for r in rows}
    for r in rows:
        if r["mode"] in YARDSTICK_OF:
            y = by.get((YARDSTICK_OF[r["mode"]], r["size"], r["placement"]))
            r["vs_yardstick"] = {"yardstick": YARDSTICK_OF[r["mode"]], **ratios(r, y)} if y else None


def ordered(results: dict, rows: list[dict]) -> list[dict]:
    """Rows by size, mode, then placement as run (the headline first): placements side by side."""
    return sorted(rows, key=lambda r: (r["size"], r["mode"], results["placements"].index(r["placement"])))


def fmt(v, spec=",.0f", none="–"):
    return none if v is None else format(v, spec)


def placement_verdict_line(what: str, verdict: dict, detail: str = "") -> str:
    """One report line (markdown) on whether a placement held (topology.placement_verdict), with a
    WARNING when single-core did not."""
    line = (f"{what}: generator CPU frames received per forwarded frame: "
            f"{fmt(verdict['generator_rx_per_frame'], '.2f')}, NET_RX softirqs per forwarded frame: "
            f"{fmt(verdict['generator_net_rx_per_frame'], '.2f')} ({verdict['trials']} trials{detail})"
            + (f"; its ports' NAPI threads ran on CPU {', '.join(map(str, verdict['napi_thread_cpus']))}"
               if verdict.get("napi_thread_cpus") else ""))
    if verdict["held"] is True:
        return line + ": held."
    if verdict["held"] is False:
        return line + (f".  \n  **WARNING: the single-core placement did not hold for {what}**: the generator's CPU "
                       f"received frames (above {PLACEMENT_MAX_GEN_RX_PER_FRAME:g} per forwarded frame), or its NAPI "
                       f"threads were not on CPU {FWD_CPU} only, so part of the device under test's work ran there; "
                       "these are not single-core figures.")
    return line + " (split: that receive is the generator CPU's by design)."


def placement_rule() -> str:
    """How topology.placement_verdict judges, for a report."""
    return (f"Single-core held when CPU {GEN_CPU} (the generator's) received at most "
            f"{PLACEMENT_MAX_GEN_RX_PER_FRAME:g} frames per forwarded frame (/proc/net/softnet_stat, counted on "
            f"the CPU that runs the receive): receiving for the device under test is one per frame or more (split: "
            f"a1, and b0 for the kernel paths); the margin is for this machine's other traffic. Its NET_RX softirqs "
            f"(/proc/softirqs) are no test: handing a frame to CPU {FWD_CPU}'s idle backlog runs one on CPU "
            f"{GEN_CPU} to send the RPS interrupt, up to one per frame at light load, none when CPU {FWD_CPU} is "
            "saturated; in a VM each such interrupt is costly, which its softirq time (/proc/stat) shows, work the "
            f"one-core board does not have. XDP mode receives before any of that, in its ports' NAPI threads: "
            f"single-core held for it when, besides, every one of them may run on CPU {FWD_CPU} only.")


def remote_recipe() -> str:
    return """## `--remote`: the real setup (external generator, BeagleBone in the middle, sink)

`reshaper bench` builds everything in namespaces on one machine. On real hardware the
three roles are three hosts; run the same pieces by hand (replace interface names):

```
 generator host  eth0.100 ---- switch (VLAN 100 and 200, trunk to the board) ---- eth0.200  sink host
                                   |
                         BeagleBone eth0 (trunk): reshaper, ports {eth0, vlan 100} / {eth0, vlan 200}
```

1. **BeagleBone** (device under test), one mode at a time, nothing else running:
   ```
   reshaper check rules.yaml --mode ring              # ports: a: {interface: eth0, vlan: 100}, b: {interface: eth0, vlan: 200}
   chrt -f 50 reshaper run rules.yaml --mode ring --status-interval 0 &   # or --mode nfqueue / --mode kernel
   # baseline: ip link add br0 type bridge; ip link add link eth0 name eth0.100 type vlan id 100;
   #           ip link add link eth0 name eth0.200 type vlan id 200; ip link set eth0.100 master br0; ...
   reshaper stats --json > before.json; sleep 30; reshaper stats --json > after.json   # drops by where
   cat /proc/stat /proc/softirqs                       # before/after each run: CPU per frame
   ```
2. **Sink host** (VLAN 200): counts frames and takes receive timestamps; its clock synchronised
   with the generator's by PTP (`ptp4l -i eth0 -S`, `phc2sys -a -r`) or both roles on one host
   with two NICs (then one clock, as here):
   ```
   ip link add link eth0 name eth0.200 type vlan id 200; ip addr add 10.77.0.2/24 dev eth0.200; ip link set eth0.200 up
   cat /sys/class/net/eth0.200/statistics/rx_packets          # before and after each trial
   .venv/bin/python -c 'from reshaper.lab.stamped import Sink; ...'   # or any SO_TIMESTAMPNS UDP sink on port 7077
   ```
3. **Generator host** (VLAN 100):
   ```
   ip link add link eth0 name eth0.100 type vlan id 100; ip addr add 10.77.0.1/24 dev eth0.100; ip link set eth0.100 up
   ip neigh replace 10.77.0.2 lladdr <sink MAC> dev eth0.100
   gcc -O2 -o generator bench/generator.c
   python3 -c 'from reshaper.bench.frames import frame_mix; print("".join(d.hex()+"\\n" for _, d in frame_mix(64)))' > f64.hex
   taskset -c 0 ./generator eth0.100 f64.hex 10 0        # saturation: frames/s the board delivers
   taskset -c 0 ./generator eth0.100 f64.hex 10 RATE     # binary search RATE for loss < 0.1 %
   ```
   (edit the destination MAC in frame_mix to the sink's for a routed/learning switch; on the
   100 Mbit/s cpsw the wire limit is 148,809 frames/s at 64 B, 8,127 at 1518 B: a loss-free
   rate equal to that is the wire's, not the board's.)
"""


PLACEMENT_WORDS = {
    "single-core": f"the device under test's receive steered to CPU {FWD_CPU} by RPS: all its work on one CPU, "
                   "as on the one-core board",
    "split": f"veth's default: the device under test's receive runs on the generator's CPU {GEN_CPU}, for free",
    HOG: f"single-core, with a busy loop (SCHED_OTHER) on CPU {FWD_CPU} besides: a board that runs other work",
}


def overload_section(results: dict, rows: list[dict]) -> list[str]:
    """Delivered when offered more than the loss-free rate: where receive livelock shows."""
    out = ["", "## Overload: delivered past the loss-free rate", "",
           f"Offered {' and '.join(f'{f:g}x' for f in OVERLOAD_FACTORS)} each mode's own loss-free rate; delivered "
           f"as a fraction of that rate. A mode that keeps less than {LIVELOCK:g} of it livelocks: the "
           f"kernel spends the CPU receiving frames the forwarder cannot drain, then drops them. Modes whose "
           f"loss-free rate is the generator's maximum cannot be overloaded here.", "",
           "| size B | mode | placement | loss-free kpps | " + " | ".join(f"{f:g}x: offered, delivered kpps (of loss-free)"
                                                            for f in OVERLOAD_FACTORS) + " | |",
           "|---|---|---|---|" + "---|" * len(OVERLOAD_FACTORS) + "---|"]
    for r in ordered(results, rows):
        if not r["overload"]:
            continue
        cells = []
        for factor in OVERLOAD_FACTORS:
            o = r["overload"].get(str(factor))
            cells.append("–" if o is None else f"{o['offered_pps'] / 1e3:,.1f}, {o['delivered_pps'] / 1e3:,.1f} "
                                               f"({o['of_loss_free']:.2f})")
        worst = min(o["of_loss_free"] for o in r["overload"].values())
        out.append(f"| {r['size']} | {r['mode']} | {r['placement']} | {fmt(r['loss_free_pps'] / 1e3, ',.1f')} | "
                   + " | ".join(cells) + f" | {'**livelock**' if worst < LIVELOCK else 'holds'} |")
    return out


def yardstick_section(results: dict, rows: list[dict]) -> list[str]:
    """Each mode with a yardstick (settings.YARDSTICK_OF) against it, or how to get it measured."""
    mine = [r for r in ordered(results, rows) if r["mode"] in YARDSTICK_OF]
    if not mine:
        return []
    out = ["", "## Against its own yardstick (same run, same size, same placement)", "",
           ", ".join(f"{mode} against {yardstick}" for mode, yardstick in YARDSTICK_OF.items()
                     if any(r["mode"] == mode for r in mine)) + ": what the same set-up gives without the mode's own "
           "work (nfqueue-accept: no work per packet; ring: no trace reader; bench/devices.py).", "",
           "| size B | mode | yardstick | placement | loss-free rate | saturation delivered | CPU per frame |",
           "|---|---|---|---|---|---|---|"]
    for r in mine:
        v = r["vs_yardstick"]
        if v is None:
            out.append(f"| {r['size']} | {r['mode']} | {YARDSTICK_OF[r['mode']]} | {r['placement']} | not in this "
                       f"run (add {YARDSTICK_OF[r['mode']]} to --modes) | | |")
        else:
            out.append(f"| {r['size']} | {r['mode']} | {v['yardstick']} | {r['placement']} | "
                       f"{fmt(v['loss_free'], '.2f')} | {fmt(v['saturation'], '.2f')} | {fmt(v['cpu_per_frame'], '.2f')} |")
    return out


def shared_cpu_section(results: dict, rows: list[dict]) -> list[str]:
    """Each mode with a busy loop on its CPU (single-core+hog) against itself idle (single-core): the
    loss-free rate's ratio and p99 latency at half of each one's loss-free rate, against issue 17's
    targets (settings.SHARED_CPU_*)."""
    by = {(r["mode"], r["size"], r["placement"]): r for r in rows}
    pairs = [(by[(m, z, "single-core")], r) for (m, z, p), r in sorted(by.items()) if p == HOG
             and (m, z, "single-core") in by]
    if not pairs:
        return []
    out = ["", "## A shared CPU: a busy loop on the forwarder's CPU", "",
           f"Each mode in single-core+hog against itself in single-core (same run): the loss-free rate's ratio "
           f"(target at least {SHARED_CPU_MIN_LOSS_FREE:g}) and p99 latency at 50 % of each one's loss-free rate "
           f"(target at most {SHARED_CPU_MAX_P99:g}x). The forwarders ran "
           + ("SCHED_FIFO (`--realtime`)." if results["args"].get("realtime") else "SCHED_OTHER."), "",
           "| size B | mode | loss-free kpps idle | with hog | ratio | p99 µs idle | with hog | ratio | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
    for idle, hog in pairs:
        lf = hog["loss_free_pps"] / idle["loss_free_pps"] if idle["loss_free_pps"] else None
        p_idle = idle["latency"].get("0.5", {}).get("p99_us")
        p_hog = hog["latency"].get("0.5", {}).get("p99_us")
        p99 = p_hog / p_idle if p_idle and p_hog else None
        met = lf is not None and p99 is not None and lf >= SHARED_CPU_MIN_LOSS_FREE and p99 <= SHARED_CPU_MAX_P99
        out.append(f"| {idle['size']} | {idle['mode']} | {fmt(idle['loss_free_pps'] / 1e3, ',.1f')} | "
                   f"{fmt(hog['loss_free_pps'] / 1e3, ',.1f')} | {fmt(lf, '.2f')} | {fmt(p_idle, ',.0f')} | "
                   f"{fmt(p_hog, ',.0f')} | {fmt(p99, '.2f')} | {'met' if met else '**not met**'} |")
    return out


def placement_section(results: dict, rows: list[dict]) -> list[str]:
    """Whether each measurement's placement held, and the forwarder CPU's time per frame by kind."""
    out = ["", "## Placement check", "", placement_rule(), ""]
    for r in ordered(results, rows):
        c = r["placement_check"]
        out.append("* " + placement_verdict_line(
            f"{r['mode']} at {r['size']} B in {r['placement']}", c,
            f"; softirq time at saturation {fmt(c['generator_softirq_ns_per_frame'])} ns/frame"))
    out += ["", f"CPU {FWD_CPU} (the device under test's) per forwarded frame at 90 % of the loss-free rate (at "
            "saturation where none was found), by kind (/proc/stat ticks of that CPU, all processes):", "",
            "| size B | mode | placement | softirq ns/frame | system ns/frame | user ns/frame |",
            "|---|---|---|---|---|---|"]
    for r in ordered(results, rows):
        f = r["forwarder_cpu_ns_per_frame"]
        out.append(f"| {r['size']} | {r['mode']} | {r['placement']} | {fmt(f['softirq'])} | {fmt(f['system'])} | "
                   f"{fmt(f['user'])} |")
    return out


def report(results: dict) -> str:
    mb, ma = results["machine_before"], results["machine_after"]
    rows = results["summary"]["rows"]
    where = ("inside the Debian-kernel VM (qemu TCG, lab/vm): absolute figures are the VM's, read the ratios"
             if results["where"] == "vm" else "on this machine, in network namespaces")
    out = ["# reshaper bench", "",
           f"Command: `{results['command']}`  ",
           f"Where: {where}  ",
           f"Started {results['started']}, finished {results['finished']}  ",
           f"Machine: {mb['nproc']} CPUs ({mb['cpu_model']}), {mb['machine']}, kernel {mb['kernel']}; "
           f"load average before {' '.join(mb['loadavg'])}, after {' '.join(ma['loadavg'])}; "
           f"qemu running: before {'yes' if mb['qemu_running'] else 'no'}, after {'yes' if ma['qemu_running'] else 'no'}"
           + (f"; busy before: {', '.join(mb['busy_processes'])}" if mb["busy_processes"] else "") + "  ",
           f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}  ",
           f"Rule file: `{results['rule_file']['path']}` (ports rewritten to a: a1, b: b1; full text in results.json)  ",
           f"Placement: the headline figures are **{results['placement']['headline']}** "
           f"({PLACEMENT_WORDS[results['placement']['headline']]})"
           + ("; every table shows each mode in both placements, side by side (the `placement` column)"
              if len(results["placements"]) > 1 else "") + ". The placement check is below.",
           ""]
    host = results.get("vm", {}).get("host_machine")
    if results["where"] == "vm":
        out += ["The VM is qemu with TCG (no hardware virtualisation): every figure is emulated and ~10x below the "
                "host's; what carries over is the ratio between modes measured together in this one boot."
                + (f" Host load average when the VM finished: {' '.join(host['loadavg'])}" if host else "")
                + (f"; kernel log problems: {results['vm']['kernel_log_problems']}"
                   if results.get("vm", {}).get("kernel_log_problems") else
                   "; the guest kernel log shows no BUG/WARNING/Oops" if results.get("vm") else "") + ".", ""]
    elif mb["qemu_running"] or ma["qemu_running"] or float(mb["loadavg"][0]) > 0.5 or mb["busy_processes"]:
        out += ["**This machine was shared during the run**: load average above"
                + (", qemu running (another job's VM)" if mb["qemu_running"] or ma["qemu_running"] else "")
                + (f", busy processes {', '.join(mb['busy_processes'])}" if mb["busy_processes"] else "")
                + f"; per-trial load averages are in results.json. The device under test shares CPU {FWD_CPU} with "
                "that work (SCHED_OTHER unless --realtime), so user-space modes lose frames and gain milliseconds of "
                "latency whenever the scheduler runs something else there; the kernel paths run in softirq, "
                "which preempts it. Figures drift 10-40 % between runs here; compare modes within this run "
                "(interleaved size by size), not with other runs.", ""]
    out += ["## Modes", ""]
    for mode, m in results["modes"].items():
        if m["status"] == "unavailable":
            out.append(f"* **{mode}**: {m['reason']}.")
        elif m["status"] == "error":
            errs = [f"{size} B {placement}: {s['error']}" for mo, placement, size, s in measurements(results)
                    if mo == mode and "error" in s]
            out.append(f"* **{mode}**: FAILED: " + "; ".join(errs))
        else:
            out.append(f"* **{mode}**: measured.")
    out += ["", "## Throughput and CPU (absolute)", "",
            "Loss-free: highest offered rate with loss < 0.1 % (binary search); saturation: generator unpaced. "
            "CPU/frame at 90 % of the loss-free rate: user-space modes the forwarder process's user+sys, "
            "kernel paths softirq time of all CPUs; `softirq` and `all CPUs busy` columns for every mode.", "",
            "| size B | mode | placement | loss-free kpps | saturation offered kpps | saturation delivered kpps | "
            "loss at sat. | CPU ns/frame (source) | fwd user+sys ns/frame | softirq ns/frame | all CPUs busy ns/frame |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ordered(results, rows):
        out.append(f"| {r['size']} | {r['mode']} | {r['placement']} | {fmt(r['loss_free_pps'] / 1e3, ',.1f')}"
                   f"{' (generator max)' if r['generator_limited'] else ''} | {fmt(r['sat_offered_pps'] / 1e3, ',.1f')} | "
                   f"{fmt(r['sat_delivered_pps'] / 1e3, ',.1f')} | {fmt((r['sat_loss'] or 0) * 100, '.1f')} % | "
                   f"{fmt(r['cpu_ns_per_frame'])} ({r['cpu_source']}) | {fmt(r['fwd_ns_per_frame'])} | "
                   f"{fmt(r['softirq_ns_per_frame'])} | {fmt(r['all_busy_ns_per_frame'])} |")
    out += ["", "## Ratios to the Linux bridge (same run, same size, same placement)", "",
            "| size B | mode | placement | loss-free rate | saturation delivered | CPU per frame | "
            "p50 latency at 50 % load |",
            "|---|---|---|---|---|---|---|"]
    gl = [r for r in rows if r["generator_limited"]]
    if gl:
        out[-2:-2] = ["`≤`/`≥`: the Linux bridge's or the mode's loss-free rate is the generator's maximum, a lower "
                      "bound (the generator could not saturate it), so the ratio is a bound; `~`: both were, the ratio "
                      "compares generator maxima, not the paths.", ""]
    for r in ordered(results, rows):
        v = r["vs_linux_bridge"]
        b = next((x for x in rows if x["mode"] == "linux-bridge" and x["size"] == r["size"]
                  and x["placement"] == r["placement"]), None)
        # a generator-limited loss-free rate is a lower bound: so is a ratio with it on top, an upper
        # bound with it below
        mark = ("≥ " if r["generator_limited"] and not (b and b["generator_limited"]) else
                "≤ " if b and b["generator_limited"] and not r["generator_limited"] else
                "~ " if r["generator_limited"] and b and b["generator_limited"] and r["mode"] != "linux-bridge"
                else "")
        out.append(f"| {r['size']} | {r['mode']} | {r['placement']} | {mark}{fmt(v['loss_free'], '.2f')} | {fmt(v['saturation'], '.2f')} | "
                   f"{fmt(v['cpu_per_frame'], '.2f')} | {fmt(v['p50_at_50'], '.2f')} |")
    out += yardstick_section(results, rows)
    out += ["", "## One-way latency (probe flow, µs)", "",
            "At 10, 50 and 90 % of each mode's own loss-free rate (the generator carries the load minus the probe).", "",
            "| size B | mode | placement | load | p50 | p99 | p99.9 | max | probes recv/sent | bulk loss |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, placement, size, s in measurements(results):
        for frac, t in s.get("latency", {}).items():
            lat = t["latency"]
            req = t["requested_pps"] + lat["probe_pps"]
            load = (f"{t['offered_pps'] / 1e3:,.1f} kpps" if t["offered_pps"] >= 0.97 * req else
                    f"asked {req / 1e3:,.1f}, offered {t['offered_pps'] / 1e3:,.1f} kpps")
            out.append(f"| {size} | {mode} | {placement} | {float(frac):.0%} ({load}) | "
                       f"{fmt(lat.get('p50_us'), ',.1f')} | {fmt(lat.get('p99_us'), ',.1f')} | "
                       f"{fmt(lat.get('p99.9_us'), ',.1f')} | {fmt(lat.get('max_us'), ',.1f')} | "
                       f"{lat['probe_received']}/{lat['probe_sent']} | {(t['loss'] or 0) * 100:.2f} %"
                       f"{' (above 0.1 %: not loss-free on this repeat)' if (t['loss'] or 0) >= LOSS_FREE else ''} |")
    out += ["", "## Drops by where, at saturation", "",
            "| size B | mode | placement | sent | delivered | where (counts) |", "|---|---|---|---|---|---|"]
    for r in ordered(results, rows):
        m = results["modes"][r["mode"]]["placements"][r["placement"]]["sizes"][str(r["size"])]["saturation"]
        nz = ", ".join(f"{k} {v:,}" for k, v in r["sat_drops"].items() if v) or "none"
        out.append(f"| {r['size']} | {r['mode']} | {r['placement']} | {m['sent']:,} | {m['delivered']:,} | {nz} |")
    out += overload_section(results, rows)
    out += shared_cpu_section(results, rows)
    out += placement_section(results, rows)
    notes = [(mode, f"{size} B {placement}", n) for mode, placement, size, s in measurements(results)
             for n in s.get("notes", [])]
    out += ["", "## Generator limits", "",
            f"For the kernel paths (linux-bridge, kernel) in the split placement the generator's maximum is not "
            f"independent of the path: veth "
            f"runs the whole bridge path inside the generator's send() on CPU {GEN_CPU}, so `(generator max)` there is "
            f"what generator + path manage together on one CPU; between two kernel paths its ratio still reflects the "
            f"paths' cost (the generator's share is the same). User-space modes only put a1's receive on CPU {GEN_CPU}. "
            f"That is the split placement; in single-core CPU {GEN_CPU} only hands the frames over (RPS). "
            "The latency probe (Python) also runs on that CPU: where a row says `asked X, offered Y`, the paced "
            "generator fell short and the latency was taken at the lower load.", ""]
    if notes:
        out += [f"* {mode} {where}: {n}" for mode, where, n in notes]
    else:
        out.append("* The generator saturated every mode (loss at its maximum rate) and reached every requested rate.")
    out += ["", "## Where each number came from", "",
            "* Topology: generator namespace `a` (a0) -> veth -> device-under-test namespace `br` (a1, b1) -> veth -> "
            "sink namespace `b` (b0). Offered = a0 tx_packets + tx_dropped, delivered = b0 rx_packets "
            "(IFLA_STATS64 via pyroute2); bulk frames carry a foreign destination MAC and are dropped by b0 at once.",
            f"* Generator: `bench/generator.c`, AF_PACKET sendmmsg() (qdisc bypass, 4 MB SO_SNDBUFFORCE), paced on "
            f"CLOCK_MONOTONIC (batches of up to 32 when behind), pinned to CPU {GEN_CPU}; 5-frame round-robin mix "
            "(dns-rewrite, web-to-proxy, syn-mark, v6-hoplimit, no rule).",
            f"* Device under test: pinned to CPU {FWD_CPU} (every thread), "
            f"{results['placement'].get('forwarder_sched', 'SCHED_OTHER')}. veth delivers on the *sending* CPU: "
            f"in the split placement a1's receive, and for the kernel paths (linux-bridge, kernel) the whole bridge "
            f"path a1 -> bridge -> b1 -> b0, run in softirq on CPU {GEN_CPU} beside the generator, so the kernel paths "
            f"compete with the generator for CPU {GEN_CPU} and the user-space ones get that receive for free. In the "
            f"single-core placement RPS on a1 and b1 (rps_cpus = CPU {FWD_CPU}) moves that receive to CPU {FWD_CPU}: "
            "the device under test's whole path shares one CPU, as on the one-core board. A user-space forwarder's "
            f"send() runs b0's receive on CPU {FWD_CPU} in both. On real NICs interrupts decide this instead.",
            "* Latency: a probe flow (UDP, 64-byte payload, ≤ 1000/s, sleep-paced) from ns a to a socket in ns b; the "
            "payload carries CLOCK_REALTIME ns taken just before sendto(), the sink reads the kernel's SO_TIMESTAMPNS "
            "(lab/stamped.py's method). Same machine, same clock. Probes take the no-rule path of the program.",
            "* CPU: /proc/stat per CPU (ticks of 1/%d s), /proc/PID/stat utime+stime of the forwarder, per delivered frame "
            "over the trial. A forwarder's stime includes the receive softirq its send() runs for b0." % USER_HZ,
            "* Drops: reshaper stats (ring: ring_drops, tx_full, oversize; engine verdicts `engine_dropped`), "
            "nfqueue: /proc/PID/net/netfilter/nfnetlink_queue (queue_dropped: queue full; user_dropped: netlink "
            "buffer), python: PACKET_STATISTICS tp_drops, interfaces: rx/tx_dropped, backlog: /proc/net/softnet_stat; "
            "`unexplained` = sent - delivered - the rest (e.g. veth drops not counted anywhere).",
            f"* Settings: trial {results['args']['duration']:g} s (search trials {results['args']['search_duration']:g} s, "
            f"{results['args']['search_steps']} steps), loss threshold {LOSS_FREE:.1%}.", ""]
    out.append(remote_recipe())
    return "\n".join(out)


def write_outputs(results: dict, out_dir: Path, with_plots: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    if with_plots:
        from reshaper.bench.plots import plots

        results["plots"] = [p.name for p in plots(results, out_dir)]
        with open(out_dir / "results.json", "w") as f:
            json.dump(results, f, indent=1, default=str)
    if results["where"] == "board":
        from reshaper.bench.board_report import board_report

        text = board_report(results)
    else:
        text = report(results)
    (out_dir / "report.md").write_text(text + "\n" + "".join(
        f"\n![{p}]({p})\n" for p in results.get("plots", [])))
