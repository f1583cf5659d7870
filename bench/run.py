"""`reshaper bench` on this machine: the topology (bridge/netns.py), the rule file with its
ports rewritten, and every mode measured at every frame size in every placement asked for,
sizes outer, modes inner and placements innermost so that what is compared is close in time;
one mode failing says so and the others go on."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from reshaper.examples import example
from reshaper.lab import REPO

from reshaper.bench.devices import device_under_test
from reshaper.bench.frames import DST_MAC, MIX, SRC_MAC, write_frames
from reshaper.bench.generator import build_generator
from reshaper.bench.machine import machine, versions
from reshaper.bench.report import summarise
from reshaper.bench.settings import (FWD_CPU, GEN_CPU, LOAD_POINTS, LOSS_FREE, OVERLOAD_FACTORS, REALTIME, RT_PREFIX,
                                     log)
from reshaper.bench.topology import OFFLOADS, PLACEMENT_RPS, placed, prepare, threaded_napi
from reshaper.bench.trial import Trials

FIVE_RULES = example("five-rules.yaml")


def bench_config(config_path: Path, tmp: Path) -> tuple[Path, str, str]:
    """The rule file with its ports rewritten to plain a: a1, b: b1; (path, original, rewritten)."""
    import yaml

    text = config_path.read_text()
    doc = yaml.safe_load(text)
    doc["ports"] = {"a": "a1", "b": "b1"}
    out = f"# {config_path} with its ports rewritten for reshaper bench (a: a1, b: b1)\n" + \
        yaml.safe_dump(doc, sort_keys=False)
    path = tmp / "bench-rules.yaml"
    path.write_text(out)
    return path, text, out


def unavailable_reason(mode: str, in_vm: bool) -> str | None:
    if mode == "kernel" and not os.path.exists("/proc/modules"):
        return ("not available here (no loadable modules: this kernel cannot load reshaper.ko): use --vm, "
                "which runs every mode inside the Debian-kernel VM so that the kernel module's figures "
                "compare with the others")
    if mode == "kernel" and in_vm and not os.environ.get("RESHAPER_KMOD") and \
            not (REPO / "kmod" / "reshaper.ko").exists():
        return "kernel module not built (RESHAPER_KMOD unset, no kmod/reshaper.ko)"
    return None


def measure_placed(result: dict, mode: str, placement: str, size: int, trials, topo, rules_path: Path,
                   tmp: Path) -> None:
    """One mode at one size in one placement, into result (its entry in results["modes"]): the
    placement set up before the device under test starts and undone after it stopped; a failure
    is written down, and the other modes go on."""
    dut = device_under_test(mode, topo, rules_path, tmp)
    trials.placement = placement
    try:
        with placed(topo, placement):
            try:
                dut.start()
                if mode == "xdp":
                    threaded_napi(topo, placement)
                result["placements"][placement]["sizes"][str(size)] = trials.measure(dut, size)
            finally:
                dut.stop()
    except Exception as exc:   # one mode failing says so and the others go on
        log(f"{mode} {size} B {placement}: FAILED: {exc}")
        result["placements"][placement]["sizes"][str(size)] = {"placement": placement, "error": str(exc)}
        result["status"] = "error"
    finally:
        if mode == "nfqueue":
            log_path = tmp / "nfqueue.log"
            result["log"] = log_path.read_text()[-2000:] if log_path.exists() else ""


def run_bench(args) -> dict:
    from reshaper.bridge.netns import Topology

    # this process (the probe and the bookkeeping) stays on the generator's CPU
    os.sched_setaffinity(0, {GEN_CPU})
    config_path = Path(args.config) if args.config else FIVE_RULES
    results = {"schema": 2, "command": args.command_line, "where": "vm" if args.in_vm else "host",
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
               "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
               "machine_before": machine(top=not args.quick), "versions": versions(),
               "placements": args.placements,
               "placement": {"headline": args.placements[0], "generator_cpu": GEN_CPU, "forwarder_cpu": FWD_CPU,
                             "rps": {p: PLACEMENT_RPS[p] for p in args.placements},
                             "forwarder_sched": f"SCHED_FIFO (--realtime: {' '.join(RT_PREFIX)} for the baselines)"
                             if REALTIME[0] else "SCHED_OTHER",
                             "offloads": OFFLOADS},
               "loss_threshold": LOSS_FREE, "load_points": list(LOAD_POINTS),
               "overload_factors": list(OVERLOAD_FACTORS), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="reshaper-bench-") as tmpdir, Topology("rsbn") as topo:
        tmp = Path(tmpdir)
        rules_path, original, rewritten = bench_config(config_path, tmp)
        results["rule_file"] = {"path": str(config_path), "text": original, "as_run": rewritten}
        gen = build_generator(Path(args.gen_dir) if args.gen_dir else None)
        if args.frames_dir:   # made on the host (--vm): scapy is slow to import under TCG
            frames = {size: Path(args.frames_dir) / f"frames-{size}.hex" for size in args.sizes}
        else:
            frames = write_frames(args.sizes, tmp)
        results["frames"] = {"mix": list(MIX), "src_mac": SRC_MAC, "dst_mac": DST_MAC}
        prepare(topo)
        runnable = []
        for mode in args.modes:
            why = unavailable_reason(mode, args.in_vm)
            if why:
                results["modes"][mode] = {"status": "unavailable", "reason": why}
                log(f"{mode}: {why}")
            else:
                runnable.append(mode)
                results["modes"][mode] = {"status": "ok", "notes": [],
                                          "placements": {p: {"sizes": {}} for p in args.placements}}
        trials = Trials(args, topo, gen, frames)
        per = 1 + (args.search_steps) + len(LOAD_POINTS) + len(OVERLOAD_FACTORS)
        trials.trials_total = per * len(runnable) * len(args.sizes) * len(args.placements)
        try:
            for size in args.sizes:
                for mode in runnable:
                    for placement in args.placements:   # side by side: the same mode and size, in turn
                        measure_placed(results["modes"][mode], mode, placement, size, trials, topo, rules_path, tmp)
        finally:
            trials.counters.close()
    results["machine_after"] = machine(top=not args.quick)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    results["summary"] = summarise(results)
    return results
