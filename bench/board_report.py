"""report.md of `reshaper bench --board` (bench/board.py): how much slower user space is than
the kernel on the board, and where the board's time goes (its CPU split per forwarded frame by
/proc/stat's kinds, and perf's top symbols), with the board, its kernel and what limited the run."""
from __future__ import annotations

import re

from reshaper.bench.report import fmt, measurements
from reshaper.bench.settings import LOSS_FREE

# ARM stopped flushing the data cache in flush_dcache_page() for non-aliasing caches in 4.11
# ("ARM: 8627/1: avoid cache flushing in flush_dcache_page()"); below it every ring page a frame
# touches is flushed (v7_flush_kern_dcache_area in a profile)
CACHE_FLUSH_FIXED = (4, 11)
CPU_KINDS = ("user", "system", "softirq", "irq", "idle")


def kernel_at_least(release: str, version: tuple[int, int]) -> bool:
    m = re.match(r"(\d+)\.(\d+)", release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= version


def cpu_trial(s: dict) -> tuple[str, dict]:
    """The trial a measurement's CPU split is taken from: 90 % of the loss-free rate, else saturation."""
    if "0.9" in s.get("latency", {}):
        return "90 % of loss-free", s["latency"]["0.9"]
    return "saturation", s["saturation"]


def board_report(results: dict) -> str:
    b = results["board"]
    rows = {(r["mode"], r["size"]): r for r in results["summary"]["rows"]}
    sizes = sorted({r["size"] for r in rows.values()})
    mh = results["machine_before"]
    out = ["# reshaper bench on a board", "",
           f"Command: `{results['command']}`  ",
           f"Started {results['started']}, finished {results['finished']}  ",
           f"Board: {b['host']}: {b['board_model']}, {b['nproc']} CPU ({b['cpu_model']}), {b['machine']}, "
           f"kernel **{b['kernel']}** ({b['kernel_version']}); reshaper {b['reshaper']} (this machine: "
           f"{results['versions'].get('reshaper', '?')}); ports {', '.join(b['ports'])}  ",
           f"This machine (generator and sink): {mh['nproc']} CPUs ({mh['cpu_model']}), kernel {mh['kernel']}; "
           f"trunk {b['trunk']}, VLANs {b['vlans'][0]} (generator) and {b['vlans'][1]} (sink)  ",
           f"Rule file: {results['rule_file']['path']} (its text is in results.json)", ""]
    if b["emulated"]:
        out += ["**Emulated board**: this board is qemu (TCG, no hardware virtualisation), so every absolute "
                "figure here is the emulator's, many times below a real board's and shaped by what qemu emulates "
                "slowly; what carries over is the method and, roughly, the ratios between modes measured in this "
                "one run.", ""]
    if kernel_at_least(b["kernel"], CACHE_FLUSH_FIXED):
        out += [f"Kernel {b['kernel']} is 4.11 or later: ARM no longer flushes the data cache in "
                "`flush_dcache_page()` for non-aliasing caches (\"ARM: 8627/1: avoid cache flushing in "
                "flush_dcache_page()\"), so ring mode's pages cost no flush per frame.", ""]
    else:
        out += [f"**WARNING: kernel {b['kernel']} is older than 4.11.** There `flush_dcache_page()` flushes every "
                "ring page a frame touches (`v7_flush_kern_dcache_area` in a profile: 35 % of the time in the "
                "report that started this project), a cost the kernel paths do not pay; ARM stopped it in 4.11 "
                "(\"ARM: 8627/1: avoid cache flushing in flush_dcache_page()\"). Upgrade the board's kernel "
                "before reading ring mode's figures as user space's cost.", ""]
    out += ["## Modes", ""]
    for mode, m in results["modes"].items():
        if m["status"] == "unavailable":
            out.append(f"* **{mode}**: not measured: {m['reason']}")
            continue
        errs = [f"{size} B: {s['error']}" for mo, _, size, s in measurements(results) if mo == mode and "error" in s]
        out.append(f"* **{mode}**: " + ("FAILED: " + "; ".join(errs) if errs else "measured")
                   + f" (the board switched to it in {m['switch_seconds']:.0f} s)")
    out += ["", "## User space against the kernel", "",
            "Loss-free: the highest offered rate with loss < 0.1 % (binary search); CPU: the board's whole CPU "
            "(all of it is the device under test's: one core, nothing else running) per forwarded frame, at 90 % "
            "of the mode's loss-free rate. Ratios are to kernel mode and to the Linux bridge, same run and size.", "",
            "| size B | mode | loss-free kpps | saturation delivered kpps | board CPU µs/frame | "
            "loss-free vs kernel | CPU vs kernel | loss-free vs linux-bridge | CPU vs linux-bridge |",
            "|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        base = {name: rows.get((name, size)) for name in ("kernel", "linux-bridge")}
        for mode in results["modes"]:
            r = rows.get((mode, size))
            if not r:
                continue

            def ratio(key, to):
                o = base[to]
                return r[key] / o[key] if o and r.get(key) and o.get(key) else None
            us = r["cpu_ns_per_frame"] / 1e3 if r["cpu_ns_per_frame"] is not None else None
            out.append(f"| {size} | {mode} | {fmt(r['loss_free_pps'] / 1e3, ',.2f')}"
                       f"{' (host max)' if r['generator_limited'] else ''} | {fmt(r['sat_delivered_pps'] / 1e3, ',.2f')} | "
                       f"{fmt(us, ',.1f')} | {fmt(ratio('loss_free_pps', 'kernel'), '.2f')} | "
                       f"{fmt(ratio('cpu_ns_per_frame', 'kernel'), '.2f')} | "
                       f"{fmt(ratio('loss_free_pps', 'linux-bridge'), '.2f')} | "
                       f"{fmt(ratio('cpu_ns_per_frame', 'linux-bridge'), '.2f')} |")
    out += ["", "## Where the board's time goes", "",
            "The board's CPU time per forwarded frame by /proc/stat's kinds (µs): `user` is the forwarder's own "
            "work in user space (the engine, the ring's bookkeeping; ring, XDP and nfqueue modes), `system` the "
            "system calls and wake-ups, `softirq` the receive and transmit paths (and the whole of kernel mode and "
            "the Linux bridge), `idle` what was left over at that load.", "",
            "| size B | mode | at | user | system | softirq | irq | idle |", "|---|---|---|---|---|---|---|---|"]
    for mode, _, size, s in measurements(results):
        if "error" in s:
            continue
        at, t = cpu_trial(s)
        k = t["cpu"]["by_kind_ns_per_frame"]
        out.append(f"| {size} | {mode} | {at} | " + " | ".join(
            fmt(k.get(kind) / 1e3 if k.get(kind) is not None else None, ',.1f') for kind in CPU_KINDS) + " |")
    out += ["", "### perf on the board", ""]
    for mode, m in results["modes"].items():
        for size, prof in m.get("perf", {}).items():
            if not prof.get("perf"):
                out.append(f"* **{mode}** {size} B: no profile: {prof.get('reason')}")
                continue
            out += [f"**{mode}**, {size} B, `perf record -a -e {prof['perf']}` over one trial at "
                    f"{prof['requested_pps'] / 1e3:,.2f} kpps requested ({prof['delivered_pps'] / 1e3:,.2f} delivered), "
                    f"{prof['samples']} samples; symbols of at least 0.5 %:", "",
                    "| % | space | object | symbol |", "|---|---|---|---|"]
            out += [f"| {sym['percent']:.1f} | {'kernel' if sym['kernel'] else 'user'} | {sym['dso']} | "
                    f"`{sym['symbol']}` |" for sym in prof["symbols"]]
            if prof.get("error"):
                out.append(f"\nperf report said: {prof['error']}")
            out.append("")
    out += ["", "## One-way latency (probe flow, µs)", "",
            "| size B | mode | load | p50 | p99 | max | probes recv/sent | bulk loss |", "|---|---|---|---|---|---|---|---|"]
    for mode, _, size, s in measurements(results):
        for frac, t in s.get("latency", {}).items():
            lat = t["latency"]
            out.append(f"| {size} | {mode} | {float(frac):.0%} ({t['offered_pps'] / 1e3:,.2f} kpps) | "
                       f"{fmt(lat.get('p50_us'), ',.1f')} | {fmt(lat.get('p99_us'), ',.1f')} | "
                       f"{fmt(lat.get('max_us'), ',.1f')} | {lat['probe_received']}/{lat['probe_sent']} | "
                       f"{(t['loss'] or 0) * 100:.2f} % |")
    out += ["", "## Drops by where, at saturation", "", "| size B | mode | sent | delivered | where (counts) |",
            "|---|---|---|---|---|"]
    for mode, _, size, s in measurements(results):
        if "error" in s:
            continue
        sat = s["saturation"]
        nz = ", ".join(f"{k} {v:,}" for k, v in sat["drops"].items() if v) or "none"
        out.append(f"| {size} | {mode} | {sat['sent']:,} | {sat['delivered']:,} | {nz} |")
    limited = [(mode, size, s) for mode, _, size, s in measurements(results)
               if "error" not in s and s["generator_limited"]]
    out += ["", "## This machine as generator", ""]
    most = max((s["saturation"]["offered_pps"] for _, _, _, s in measurements(results) if "error" not in s),
               default=0)
    out.append(f"Unpaced, this machine's generator offered up to {most / 1e3:,.1f} kpps into VLAN "
               f"{b['vlans'][0]} (`bench/generator.c`, AF_PACKET on the trunk).")
    if limited:
        out += [f"* **WARNING: this machine, not the board, was the limit** for {mode} at {size} B: nothing was lost "
                f"at the generator's maximum ({s['saturation']['offered_pps'] / 1e3:,.1f} kpps), so its loss-free "
                "rate is at least that." for mode, size, s in limited]
    notes = [f"* {mode} {size} B: {n}" for mode, _, size, s in measurements(results) for n in s.get("notes", [])
             if "generator could not saturate" not in n]
    out += notes
    out += ["", "## Where each number came from", "",
            "* Offered = the trunk's tx_packets + tx_dropped (IFLA_STATS64; `generator_a0_tx_dropped` below: frames "
            "the trunk could not take), delivered = the frames tagged with the second VLAN that came back on it, "
            "counted by a packet socket with a BPF filter on the tag and the bench's source MAC (PACKET_STATISTICS; "
            "the board's own frames on the VLAN are not counted). The generator's frames "
            "carry the first VLAN's tag; this machine's own stack never talks on the board's VLANs.",
            "* The board's side is read by its agent (`bridge/bench_agent.py`, one SSH session): /proc/stat, "
            "/proc/softirqs, /proc/net/softnet_stat, its ports' IFLA_STATS64 and the service's `reshaper stats`, "
            "before and after each trial. Its CPU per frame is all of its CPU time over the trial's window "
            "(from one snapshot to the next) by kind, per delivered frame, less the agent's own time answering "
            "(counted as idle); the service's answer to `reshaper stats` stays in.",
            "* Each mode is the deployed service switched by `/opt/reshaper/bundle/install.sh --mode M "
            "--switch-mode` (the unit's sandbox and `--realtime` as deployed); linux-bridge is the service stopped "
            "and a bridge of the two ports made (ageing 0, as the modes forward: bridge/linux_bridge.py), "
            "br_netfilter's hooks off. The agent puts back the mode and the service's state at the end.",
            "* Latency: the probe flow (IPv4/UDP frames tagged with the first VLAN, stamped with CLOCK_REALTIME, read "
            "back tagged with the second by a packet socket with SO_TIMESTAMPNS): one clock, this machine's.",
            f"* Settings: trial {results['args']['duration']:g} s (search trials "
            f"{results['args']['search_duration']:g} s, {results['args']['search_steps']} steps), loss threshold "
            f"{LOSS_FREE:.1%}; frame mix: {', '.join(results['frames']['mix'])} (bench/frames.py).", ""]
    restored = b.get("restored")
    out.append(f"The board was put back in {restored['mode']} mode, service "
               f"{'active' if restored['service_active'] else 'stopped'}." if restored else
               "The run ended before the board was put back by the bench; its agent puts it back when its session ends.")
    return "\n".join(out)
