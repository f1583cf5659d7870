"""Schedules live: `python -m reshaper.bench.schedule --out DIR` (root; network namespaces), `make bench-schedule`.

host a (stamped UDP) -> a0/a1 -> reshaper --mode ring -> b1/b0 -> host b (sink)

Two runs, each a fresh ring-mode appliance (bridge/netns.py's topology):

* the experiment of docs/schedules.md: examples/experiment.yaml (20 ms, an outage, 100 ms +- 10 ms
  with 2 % loss, 200 ms; repeating every 15 s) on a stamped UDP stream (lab/stamped.py) of --pps
  datagrams/s for --seconds. Each datagram's configured delay is that of the phase it was sent in
  (rules/model.py's Schedule.phase_at, from the time zero `stats` reports); its measured delay the
  sink's kernel receive stamp minus its send stamp. Written: experiment.csv (one row a datagram),
  experiment.png (the configured delay over time against the measured, losses marked), and per
  phase the median error of the measured delay and the loss.
* the switch error: a rule alternating every 50.037 ms (not a multiple of the pacing, so that the
  changes fall at every point between two datagrams) between forwarding and an outage, on 10,000
  datagrams/s for 2 s (one every 100 us). At each of the ~40 changes the switch lies between the
  last datagram treated the old way and the first treated the new way (the missing ones' send times
  follow the pacing): the error is that midpoint's send time minus the change's time, on the
  sender's clock, so it includes the ~20-50 us from the sender to the bridge, +-50 us. Datagrams
  that arrived though sent over 1 ms inside an outage are counted.

--vm: the switch error also in kernel mode, inside the Debian-kernel VM with the module loaded (as the
kernel-module tests load it), at --vm-pps (the sender under TCG manages ~2,000 datagrams/s).

Both clocks are the machine's: the engine's time zero is CLOCK_MONOTONIC, the stamps CLOCK_REALTIME;
one offset read at the start converts between them. Results in DIR/schedule.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from reshaper.lab import REPO
from reshaper.lab.stamped import one_way
from reshaper.rules.config import load_config

MS = 1_000_000
EXPERIMENT = REPO / "examples" / "experiment.yaml"
SWITCH_RULES = """version: 1
ports: {a: a1, b: b1}
rules:
  - name: alternating
    match: {ip_proto: udp, dst_port: 5001}
    schedule:
      repeat: true
      phases: [{for: 50037us, actions: []}, {for: 50037us, actions: [drop]}]
"""


class Appliance:
    """reshaper in a fresh topology, for one rule file: ring mode, or any other."""

    def __init__(self, rules: Path, tmp: Path, mode: str = "ring"):
        from reshaper.bridge.launcher import RunningAppliance
        from reshaper.bridge.netns import Topology

        self.topo = Topology(f"bs{os.getpid()}").__enter__()
        try:
            # python under the VM's TCG starts slowly
            self.bridge = RunningAppliance(rules, tmp / "ctl.sock", mode, ns=self.topo.br,
                                           log_path=tmp / f"{mode}.log",
                                           env={**os.environ, "RESHAPER_RUN_DIR": str(tmp / "run")}).start(timeout=240)
        except BaseException:
            self.topo.__exit__(None, None, None)
            raise

    def time_zero_realtime(self) -> int:
        """The schedules' time zero (this load's), as a CLOCK_REALTIME time."""
        load, _ = self.bridge.stats()["schedule_time_zero_ns"]
        return load + time.clock_gettime_ns(time.CLOCK_REALTIME) - time.monotonic_ns()

    def close(self) -> None:
        self.bridge.stop()
        self.topo.__exit__(None, None, None)


def configured_ms(rule, elapsed_ns: int) -> float | None:
    """The delay the phase at elapsed_ns gives (its delay's time), None for an outage (drop)."""
    phase = rule.schedule.phases[rule.schedule.phase_at(elapsed_ns)]
    actions = rule.actions if phase.actions is None else phase.actions
    if any(a.kind == "drop" for a in actions):
        return None
    delay = next((a for a in actions if a.kind == "delay"), None)
    return delay.params["time"] / MS if delay else 0.0


def experiment(tmp: Path, out: Path, pps: float, seconds: float) -> dict:
    rule = load_config(str(EXPERIMENT)).rules[0]
    ring = Appliance(EXPERIMENT, tmp)
    try:
        zero = ring.time_zero_realtime()
        got, rate = one_way(ring.topo, 5001, int(pps * seconds), pps, threaded=True)
        counters = ring.bridge.stats()["rules"][0]
    finally:
        ring.close()
    received = {seq: (tx, rx) for seq, tx, rx in got}
    # the sender's stamps of the lost ones are not known: their send times follow the pacing
    first_tx = min(tx for tx, _ in received.values())
    rows, per_phase = [], {}
    for seq in range(int(pps * seconds)):
        tx, rx = received.get(seq, (first_tx + int(seq * 1e9 / pps), None))
        elapsed = tx - zero
        want = configured_ms(rule, elapsed)
        took = (rx - tx) / MS if rx is not None else None
        rows.append((elapsed / 1e9, want, took))
        phase = rule.schedule.phase_at(elapsed)
        per_phase.setdefault(phase, []).append((want, took))
    (out / "experiment.csv").write_text("sent_s,configured_ms,measured_ms\n" + "".join(
        f"{t:.6f},{'' if w is None else w},{'' if m is None else round(m, 3)}\n" for t, w, m in rows))
    plot_experiment(rows, out / "experiment.png")
    phases = {}
    for phase, pairs in sorted(per_phase.items()):
        errors = [m - w for w, m in pairs if w is not None and m is not None]
        phases[phase] = {"datagrams": len(pairs), "lost": sum(m is None for _, m in pairs),
                         "median_error_ms": round(statistics.median(errors), 3) if errors else None}
    return {"pps": round(rate), "datagrams": int(pps * seconds), "received": len(got), "phases": phases,
            "rule_counters": {k: counters[k] for k in ("matched", "dropped", "lost", "delayed")}}


def plot_experiment(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    t = [r[0] for r in rows]
    ax.step(t, [r[1] if r[1] is not None else float("nan") for r in rows], where="post", color="black",
            linewidth=1.5, label="configured delay (the phase's)")
    ax.plot([r[0] for r in rows if r[2] is not None], [r[2] for r in rows if r[2] is not None], ".",
            markersize=2, color="tab:blue", label="measured one-way delay")
    lost = [r[0] for r in rows if r[2] is None]
    ax.plot(lost, [-8] * len(lost), "|", color="tab:red", markersize=6, label="lost (outage, 2 % loss)")
    ax.set_xlabel("seconds since the rules were loaded")
    ax.set_ylabel("ms")
    ax.set_title("examples/experiment.yaml in ring mode: a UDP stream through a repeating schedule")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def switch_error(tmp: Path, pps: float = 10_000, seconds: float = 2.0, mode: str = "ring") -> dict:
    rules = tmp / "switch.yaml"
    rules.write_text(SWITCH_RULES)
    rule = load_config(str(rules)).rules[0]
    ring = Appliance(rules, tmp, mode)
    try:
        zero = ring.time_zero_realtime()
        got, rate = one_way(ring.topo, 5001, int(pps * seconds), pps, threaded=True)
    finally:
        ring.close()
    sent = {seq: tx for seq, tx, _ in got}
    half = rule.schedule.phases[0].duration_ns
    # the sender's achieved spacing (under the VM's TCG it falls short of pps)
    gap = (max(sent.values()) - min(sent.values())) / max(1, max(sent) - min(sent))
    errors_us = []
    for seq, tx in sent.items():
        # the outage's datagrams never arrive: a change lies half a gap after the last one before a
        # missing one, and half a gap before the first one after
        for side, missing in ((1, seq + 1 not in sent and seq + 1 < pps * seconds), (-1, seq - 1 not in sent)):
            if missing and seq > 0:
                at = tx + side * gap / 2 - zero
                errors_us.append((at - round(at / half) * half) / 1000)
    wrong = 0
    for seq, tx in sent.items():
        elapsed = tx - zero
        into = elapsed % half
        if min(into, half - into) >= MS and rule.schedule.phase_at(elapsed) == 1:
            wrong += 1   # arrived, though sent well inside the outage
    errors_us.sort()
    q = (lambda p: round(errors_us[min(len(errors_us) - 1, int(p * len(errors_us)))], 1)) if errors_us else None
    return {"mode": mode, "pps": round(rate), "sent": int(pps * seconds), "received": len(got),
            "changes": len(errors_us),
            "error_us": {"min": q(0), "median": q(0.5), "p90": q(0.9), "max": q(1.0)} if q else None,
            "received_inside_the_outage": wrong}


def switch_in_vm(pps: float) -> dict:
    """The switch error in kernel mode, measured inside the Debian-kernel VM (lab/vm, the module
    loaded as the kernel-module tests load it); TCG: the figures are emulated."""
    from reshaper.lab.vm import VM, kernel_version, prepare
    from reshaper.lab.vm.kmod import GUEST_SETUP, build_module, python_bundle, shares

    prepare(install=False)
    build = build_module()
    python_bundle(build)
    out = REPO / "build" / "schedule-vm"
    out.mkdir(parents=True, exist_ok=True)
    (out / "switch.json").unlink(missing_ok=True)
    with VM(shares=shares(build), cpus=2, memory_mb=1024) as vm:
        status, log = vm.run(GUEST_SETUP, 120)
        if status != 0:
            raise SystemExit(f"VM set-up failed:\n{log}")
        status, log = vm.run(f". /tmp/env.sh\n$PY -m reshaper.bench.schedule --switch-only --mode kernel "
                             f"--switch-pps {pps:g} --out {out}", 900)
        if status != 0:
            raise SystemExit(f"the switch measurement in the VM failed ({status}):\n{log}")
    return json.loads((out / "schedule.json").read_text())["switch"] | {"vm": f"TCG, {kernel_version()}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reshaper.bench.schedule", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for schedule.json, experiment.csv/.png")
    ap.add_argument("--pps", type=float, default=200, help="the experiment's datagrams/s (default 200)")
    ap.add_argument("--seconds", type=float, default=30, help="the experiment's length (default 30)")
    ap.add_argument("--switch-only", action="store_true", help="only the switch error")
    ap.add_argument("--switch-pps", type=float, default=10_000, help="the switch run's datagrams/s (default 10000)")
    ap.add_argument("--mode", default="ring", help="the mode the switch error is measured in (default ring)")
    ap.add_argument("--vm", action="store_true",
                    help="also the switch error in kernel mode inside the VM (at --vm-pps), into the same JSON")
    ap.add_argument("--vm-pps", type=float, default=2000, help="the VM's switch run's datagrams/s (default 2000)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-schedule-"))
    try:
        result = {} if args.switch_only else {"experiment": experiment(tmp, args.out, args.pps, args.seconds)}
        result["switch"] = switch_error(tmp, args.switch_pps, mode=args.mode)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.vm:
        result["switch_kernel_vm"] = switch_in_vm(args.vm_pps)
    (args.out / "schedule.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
