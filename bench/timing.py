"""Timing accuracy of ring mode: `python -m reshaper.bench.timing` (root; network namespaces).

host a (generator) -> a0/a1 -> reshaper --mode ring -> b1/b0 -> host b (sink)

`--netem`: the same measurements of netem instead (`NetemLive`): a Linux bridge
forwards a1 <-> b1 and each measured rule becomes `tc qdisc add dev b1 root
netem ...` (netem_args), one rule at a time since netem is whole-interface.
This machine's kernel has no netem: `--vm` boots the Debian-kernel VM
(lab/vm, as `reshaper bench --vm`) and runs the script there twice, ring
mode then netem, for the side-by-side table (`make bench-timing-vm`).

The generator stamps each UDP payload with CLOCK_REALTIME just before send();
the sink takes the kernel's receive timestamp (SO_TIMESTAMPNS) of each
datagram, so the sink's own scheduling adds nothing (lab/stamped.py). Both ends
share the machine's clock: one-way delay = receive stamp - send stamp, per frame.

Reported:
  * fixed 10 ms and 10 ms +- 2 ms normal, at 1k and 10k frames/s: error of the
    achieved delay (p50, p99, max). For the jittered rule the configured delay
    of every frame is known exactly: the bridge runs with --seed and the same
    engine replays the same draws offline (with reorder_on_jitter every draw
    is independent of arrival times), so error = one-way - that frame's draw.
  * KS test of achieved delays (one-way - the path's median base latency)
    against N(10 ms, 2 ms), with reorder_on_jitter (netem's behaviour) and
    without (the default: order kept, distribution distorted when frames come
    closer than the jitter).
  * achieved loss vs configured, random 10 % and Gilbert-Elliott, 100k
    frames, offline (engine, as `reshaper apply`) and live;
  * achieved rate vs configured (`rate: 10mbit`, offered at 2x), receive side.

For netem the jittered rule has no per-frame error (its draws cannot be
replayed), only the distribution (mean, sd, KS), and there is no order-keeping
row (netem always reorders on jitter). netem counts its losses and its queue's
tail drops together as the qdisc's drops: each measurement has one of them.

--quick runs shorter; --only NAME picks parts (delay, loss, rate); --rates,
--seconds, --loss-frames, --loss-pps size the runs (the VM is slow); --json FILE
writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from reshaper.lab import REPO, stamped
from reshaper.lab.stamped import one_way
from reshaper.lab.timing_model import LOSS_N, MS

from reshaper.bench.machine import machine


# ---- figures ----------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def err_summary(errs_ns: list[int]) -> dict:
    us = [e / 1000 for e in errs_ns]
    return {"n": len(us), "p50_us": round(pct(us, 0.5), 1), "p99_us": round(pct(us, 0.99), 1),
            "max_us": round(max(us), 1), "min_us": round(min(us), 1)}


def replay_draws(actions: str, n: int, seed: int, spacing_ns: int) -> list[int]:
    """The delays the engine gives n frames of one rule (seeded), as the bridge ran them."""
    from reshaper.lab.timing_model import delays
    return delays(actions, n, spacing_ns, seed)


def ring_config(rules: list[tuple[str, int, str]]) -> str:
    """rules: (name, UDP destination port, actions) -> a ring-mode configuration."""
    return "version: 1\nports: {a: a1, b: b1}\nrules:\n" + "".join(
        f"  - {{name: {name}, match: {{ip_proto: udp, dst_port: {port}}}, actions: {actions}}}\n"
        for name, port, actions in rules)


def _pct(x: float) -> str:
    return f"{x * 100:.6g}%"


def _time(ns: int) -> str:
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def netem_args(actions: str) -> list[str]:
    """The netem options (`tc qdisc add dev DEV root netem OPTIONS`) doing what a rule's
    timing actions do; ValueError for what netem does differently or not at all.

    Gilbert-Elliott: netem's `loss gemodel p r 1-h 1-k` takes the loss probabilities of
    the bad and good states (tc-netem(8); iproute2 hands the kernel h = 1 - its third
    argument), where reshaper's h and k are the chances a frame survives.
    """
    from reshaper.rules.config import load_config

    text = f"version: 1\nports: {{a: a1, b: b1}}\nrules:\n  - name: r\n    actions: {actions}\n"
    out: list[str] = []
    for a in load_config("netem.yaml", text).rules[0].actions:
        p = a.params
        if a.kind == "delay":
            if p["correlation"]:
                raise ValueError("delay correlation: netem's correlated draws are another process")
            out += ["delay", _time(p["time"])]
            if p["jitter"]:
                if not p["reorder_on_jitter"]:
                    raise ValueError("netem reorders on jitter: only reorder_on_jitter: true compares")
                out += [_time(p["jitter"]), "distribution", p["distribution"]]
        elif a.kind == "loss" and p["model"] == "gilbert-elliott":
            out += ["loss", "gemodel", _pct(p["p"]), _pct(p["r"]), _pct(1 - p["h"]), _pct(1 - p["k"])]
        elif a.kind == "loss":
            if p["correlation"]:
                raise ValueError("loss correlation: netem's formula does not keep the rate")
            out += ["loss", "random", _pct(p["probability"])]
        elif a.kind == "rate":
            out += ["rate", f"{p['bitrate']}bit", *([str(p["overhead"])] if p["overhead"] else []),
                    "limit", str(p["limit"])]
        else:
            raise ValueError(f"{a.kind}: not compared with netem")
    return out


class Live:
    """A topology and reshaper ring mode in it, for one configuration at a time.

    start(rules) runs them all (one per UDP port); select(port) before measuring a
    flow (nothing to do here: the configuration holds every rule)."""
    backend = "reshaper ring"

    def __init__(self, prefix: str = "bt", rt: bool = False):
        self.rt = rt
        self.busy_poll = 0  # --busy-poll US for the bridge
        from reshaper.bridge.netns import Topology
        self.topo = Topology(prefix).__enter__()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-timing-"))
        self.bridge = None

    def start(self, rules: list[tuple[str, int, str]], seed: int = 1) -> None:
        from reshaper.bridge.launcher import RunningAppliance
        self.stop()
        path = self.tmp / "rules.yaml"
        path.write_text(ring_config(rules))
        extra = ("--seed", str(seed)) + (("--busy-poll", str(self.busy_poll)) if self.busy_poll else ())
        ns = self.topo.br
        bridge = RunningAppliance(path, self.tmp / f"{ns.name}.sock", "ring", ns=ns, log_path=self.tmp / f"{ns.name}.log",
                                  env={**os.environ, "RESHAPER_RUN_DIR": str(self.tmp / "run")}, extra=extra,
                                  # SCHED_FIFO: the appliance is not queued behind other work on a busy machine
                                  prefix=["chrt", "-f", "50"] if self.rt else ())
        self.bridge = bridge.start(timeout=240)   # python under the VM's TCG starts slowly
        # ARP both ways before measuring
        self.topo.a.run(["ping", "-c", "1", "-W", "2", "10.77.0.2"], capture_output=True)

    def select(self, port: int) -> None:
        pass

    def counters(self) -> dict:
        """The first rule's losses and tail drops, the loop's release lateness, pool exhaustion."""
        st = self.bridge.stats()
        rule = st["rules"][0]
        return {"lost": rule["lost"], "queue_drops": rule["queue_drops"],
                "release_late": st["release_late"], "pool_full": st["pool_full"]}

    def stop(self) -> None:
        if self.bridge:
            self.bridge.stop()
            self.bridge = None

    def close(self) -> None:
        self.stop()
        self.topo.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)


class NetemLive:
    """The same topology, a Linux bridge (bench/devices.py's LinuxBridge) in the bridge namespace
    and netem on b1, toward host b: select(port) makes that port's rule the qdisc
    (netem_args), or none for a port without a rule. Static neighbours: no ARP through netem."""
    backend = "netem"
    DEV = "b1"

    def __init__(self, prefix: str = "bt"):
        from reshaper.bridge.netns import Topology

        from reshaper.bench.devices import LinuxBridge
        from reshaper.bench.topology import static_neighbours
        self.topo = Topology(prefix).__enter__()
        try:
            static_neighbours(self.topo)
            self.linux_bridge = LinuxBridge(self.topo)
            self.linux_bridge.start()
        except BaseException:
            self.topo.__exit__(None, None, None)
            raise
        self.rules: dict[int, str] = {}
        self.args: list[str] | None = None
        self.shown: str | None = None

    def _tc(self, *argv: str, check: bool = True) -> str:
        r = self.topo.br.run(["tc", *argv], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"tc {' '.join(argv)}: {r.stderr.strip()}")
        return r.stdout

    def start(self, rules: list[tuple[str, int, str]], seed: int = 1) -> None:
        """netem has no seed (before Linux 6.6 there is no `seed` option)."""
        self.rules = {port: actions for _, port, actions in rules}
        self.select(None)

    def select(self, port: int | None) -> None:
        self._tc("qdisc", "del", "dev", self.DEV, "root", check=False)   # also resets the counters
        self.args = netem_args(self.rules[port]) if port in self.rules else None
        self.shown = None
        if self.args:
            self._tc("qdisc", "add", "dev", self.DEV, "root", "netem", *self.args)
            self.shown = self._tc("qdisc", "show", "dev", self.DEV).strip()   # what the kernel took

    def counters(self) -> dict:
        drops = 0
        for q in json.loads(self._tc("-s", "-j", "qdisc", "show", "dev", self.DEV) or "[]"):
            if q.get("kind") == "netem":
                drops = q.get("drops", 0)
        return {"lost": drops, "queue_drops": drops, "release_late": None, "pool_full": None,
                "netem": self.args, "tc_show": self.shown}

    def stop(self) -> None:
        self.select(None)

    def close(self) -> None:
        self.topo.__exit__(None, None, None)


def bench_delay(live: Live | NetemLive, rates: list[int], seconds: float, out: dict) -> None:
    from reshaper.lab.timing_model import delay_cdf, ks_test

    fixed = "[{delay: {time: 10ms}}]"
    normal_r = "[{delay: {time: 10ms, jitter: 2ms, distribution: normal, reorder_on_jitter: true}}]"
    normal_o = "[{delay: {time: 10ms, jitter: 2ms, distribution: normal}}]"
    netem = isinstance(live, NetemLive)
    # netem always reorders on jitter: no order-keeping rule to compare
    rules = [("fixed", 7000, fixed), ("normal", 7001, normal_r)] + ([] if netem else [("ordered", 7002, normal_o)])
    cdf = delay_cdf("normal", 10 * MS, 2 * MS)
    for pps in rates:
        n = int(pps * seconds)
        seed = 11
        live.start(rules, seed)
        live.select(7009)
        base, _ = one_way(live.topo, 7009, min(n, 2000), min(pps, 1000))  # no rule: the path alone
        base_lat = [rx - tx for _, tx, rx in base]
        b50 = statistics.median(base_lat)
        row = {"pps": pps, "frames": n, "path_no_rule": err_summary(base_lat)}
        live.select(7000)
        got, achieved = one_way(live.topo, 7000, n, pps)
        row["offered_pps"] = round(achieved)
        row["fixed"] = err_summary([rx - tx - 10 * MS for _, tx, rx in got]) | {"lost": n - len(got)}
        row["fixed_minus_path_p50"] = err_summary([rx - tx - 10 * MS - b50 for _, tx, rx in got])
        row["fixed_release_late"] = live.counters()["release_late"]   # the loop's own timer lateness
        # jittered, reorder_on_jitter: each frame's own draw. A fresh bridge with the same seed:
        # frames no rule matches (ARP ping) draw nothing, so the flow's frames take the engine's
        # first n draws, which the same engine replays offline (one draw per frame).
        # netem's draws cannot be replayed: its row has the distribution only.
        live.start(rules, seed)
        live.select(7001)
        got, _ = one_way(live.topo, 7001, n, pps)
        errs = []
        if not netem:
            draws = replay_draws(normal_r, n, seed, MS)
            errs = [rx - tx - draws[seq] for seq, tx, rx in got]
        achieved_d = [rx - tx - b50 for _, tx, rx in got]
        d, p = ks_test(achieved_d, cdf)
        seqs = [s for s, _, _ in sorted(got, key=lambda g: g[2])]
        row["normal_reorder"] = (err_summary(errs) if errs else {}) | {
            "lost": n - len(got), "ks_D": round(d, 4), "ks_p": float(f"{p:.3g}"),
            "mean_ms": round(statistics.fmean(achieved_d) / MS, 3),
            "sd_ms": round(statistics.pstdev(achieved_d) / MS, 3),
            "overtaken": sum(1 for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1])}
        if netem:
            row["netem"] = {"fixed": netem_args(fixed), "normal_reorder": netem_args(normal_r)}
            out.setdefault("delay", []).append(row)
            print(json.dumps(row), flush=True)
            continue
        live.select(7002)
        got, _ = one_way(live.topo, 7002, n, pps)
        achieved_d = [rx - tx - b50 for _, tx, rx in got]
        d, p = ks_test(achieved_d, cdf)
        seqs = [s for s, _, _ in sorted(got, key=lambda g: g[2])]
        row["normal_ordered"] = {"lost": n - len(got), "ks_D": round(d, 4), "ks_p": float(f"{p:.3g}"),
                                 "mean_ms": round(statistics.fmean(achieved_d) / MS, 3),
                                 "sd_ms": round(statistics.pstdev(achieved_d) / MS, 3),
                                 "p1_ms": round(pct(achieved_d, 0.01) / MS, 3),
                                 "in_order": seqs == sorted(seqs)}
        row["pool_full"] = live.counters()["pool_full"]
        out.setdefault("delay", []).append(row)
        print(json.dumps(row), flush=True)


def loss_rel_sd(action: str, n: int) -> float:
    """The relative standard deviation of a loss count over n frames (what 'within 2 %' can mean).

    Gilbert-Elliott: the bad-state count of a two-state chain has variance
    ~ n pi_b pi_g (1 + l) / (1 - l), l = 1 - p - r; each frame then is lost
    with 1-k or 1-h by its state.
    """
    import re
    vals = dict(re.findall(r"(\w+): ([\d.]+)%?", action))
    pct = lambda k, d: float(vals[k]) / (100 if f"{k}: {vals[k]}%" in action else 1) if k in vals else d
    if "gilbert" not in action:
        q = pct("probability", 0)
        return (n * q * (1 - q)) ** 0.5 / (n * q)
    p, r, h, k = pct("p", 0), pct("r", 1), pct("h", 0), pct("k", 1)
    pb = p / (p + r)
    lam = 1 - p - r
    var_bad = n * pb * (1 - pb) * (1 + lam) / (1 - lam)
    mean = n * ((1 - pb) * (1 - k) + pb * (1 - h))
    var = n * ((1 - pb) * k * (1 - k) + pb * h * (1 - h)) + (k - h) ** 2 * var_bad
    return var ** 0.5 / mean


def bench_loss(live: Live | NetemLive | None, n: int, out: dict, pps: float = 10_000) -> None:
    from reshaper.lab.timing_model import lost_flags
    models = {
        "random 10%": ("{loss: {probability: 10%}}", 0.10),
        "gilbert-elliott p=1% r=10% h=0 k=1": ("{loss: {model: gilbert-elliott, p: 1%, r: 10%}}", 0.01 / 0.11),
        "gilbert-elliott p=5% r=50% h=20% k=99%": (
            "{loss: {model: gilbert-elliott, p: 5%, r: 50%, h: 20%, k: 99%}}",
            (0.5 / 0.55) * 0.01 + (0.05 / 0.55) * 0.8),
    }
    netem = isinstance(live, NetemLive)
    for name, (action, expected) in models.items():
        row = {"model": name, "configured": round(expected, 5), "frames": n,
               "sampling_rel_sd": round(loss_rel_sd(action, n), 4)}
        if not netem:   # the engine's own draws, as `reshaper apply` (nothing of netem's)
            flags, _ = lost_flags(f"[{action}]", n=n, seed=3)
            row |= {"offline": round(sum(flags) / n, 5), "offline_rel_err": round(sum(flags) / n / expected - 1, 4)}
        if live:
            live.start([("l", 7100, f"[{action}]")])
            live.select(7100)
            got, offered = one_way(live.topo, 7100, n, pps, threaded=True)
            lost = (n - len(got)) / n
            c = live.counters()   # netem: the qdisc's drops
            row |= {"offered_pps": round(offered), "live": round(lost, 5),
                    "live_rel_err": round(lost / expected - 1, 4),
                    "live_engine_lost": c["lost"], "live_other_drops": n - len(got) - c["lost"]}
            if netem:
                row |= {"netem": c["netem"], "tc_show": c["tc_show"]}
        out.setdefault("loss", []).append(row)
        print(json.dumps(row), flush=True)


def bench_rate(live: Live | NetemLive, out: dict) -> None:
    size = 1000 - 42   # UDP payload: 1000-byte frames
    for bitrate, bps in (("10mbit", 10e6), ("50mbit", 50e6)):
        pps_cap = bps / 8000
        n = int(pps_cap * 2 * 3)  # 3 s offered at twice the rate
        live.start([("r", 7200, f"[{{rate: {{bitrate: {bitrate}, limit: 100}}}}]")])
        live.select(7200)
        got, offered = one_way(live.topo, 7200, n, pps_cap * 2, size=size)
        rx = sorted(r for _, _, r in got)
        achieved = (len(rx) - 1) * 8000 / ((rx[-1] - rx[0]) / 1e9)
        c = live.counters()   # netem: the qdisc's drops
        row = {"bitrate": bitrate, "offered_pps": round(offered), "offered_bps": round(offered * 8000),
               "frames": n, "received": len(got),
               "achieved_bps": round(achieved), "rel_err": round(achieved / bps - 1, 4),
               "queue_drops": c["queue_drops"], "accounted": c["queue_drops"] + len(got) == n}
        if "netem" in c:
            row |= {"netem": c["netem"], "tc_show": c["tc_show"]}
        out.setdefault("rate", []).append(row)
        print(json.dumps(row), flush=True)


def wait_for_quiet(max_load: float, poll: float = 30, limit: float = 1200) -> dict:
    """Waits until the 1-minute load average is at most max_load (every poll s, at most limit s)."""
    t0 = time.monotonic()
    first = os.getloadavg()
    while os.getloadavg()[0] > max_load and time.monotonic() - t0 < limit:
        print(f"load average {os.getloadavg()[0]:.2f} > {max_load}: waiting", flush=True)
        time.sleep(poll)
    return {"max_load": max_load, "load_first": first, "load_then": os.getloadavg(),
            "waited_s": round(time.monotonic() - t0), "quiet": os.getloadavg()[0] <= max_load}


VM_CPUS, VM_MEMORY_MB = 2, 1536


def run_in_vm(args, inner: list[str]) -> dict:
    """Boots the Debian-kernel VM once (lab/vm, set up as `reshaper bench --vm` does) and runs
    this script in it twice with the same options: reshaper ring mode, then netem.
    The repository is shared at its own path: each run writes its JSON and log to build/timing-vm/."""
    from reshaper.lab.vm import VM, kernel_problems, kernel_version, prepare
    from reshaper.lab.vm.kmod import GUEST_SETUP, build_module, python_bundle, shares

    prepare(install=False)
    build = build_module()
    python_bundle(build)
    work = REPO / "build" / "timing-vm"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"command": "python -m reshaper.bench.timing " + " ".join(sys.argv[1:]),
                     "inner": " ".join(inner), "host_before": machine(top=False)}
    t0 = time.monotonic()
    with VM(shares=shares(build), cpus=VM_CPUS, memory_mb=VM_MEMORY_MB) as vm:
        status, out = vm.run(GUEST_SETUP, 120)
        if status != 0:
            raise SystemExit(f"VM set-up failed:\n{out}")
        for backend, flag in (("reshaper", ""), ("netem", " --netem")):
            js, logf = work / f"{backend}.json", work / f"{backend}.log"
            js.unlink(missing_ok=True)
            print(f"vm: {backend}: $PY -m reshaper.bench.timing {' '.join(inner)}{flag} (log: {logf})", flush=True)
            script = (". /tmp/env.sh\nfor m in sch_netem veth bridge; do modprobe $m; done\n"
                      f"$PY -m reshaper.bench.timing {' '.join(inner)}{flag} --json {js} >{logf} 2>&1; rc=$?\n"
                      f"cat {logf}; exit $rc\n")
            t1 = time.monotonic()
            status, out = vm.run(script, args.vm_timeout)
            print(out, flush=True)
            if status != 0:
                raise SystemExit(f"{backend} in the VM failed ({status}); see {logf}")
            results[backend] = json.loads(js.read_text()) | {"wall_s": round(time.monotonic() - t1)}
    results["vm"] = {"kernel": kernel_version(), "cpus": VM_CPUS, "memory_mb": VM_MEMORY_MB, "accel": "tcg",
                     "boot_seconds": round(vm.boot_seconds, 1), "kernel_log_problems": kernel_problems(vm.kernel_log)}
    results["host_after"] = machine(top=False)
    results["wall_s"] = round(time.monotonic() - t0)
    return results


def side_by_side(res: dict) -> str:
    """A markdown table of the two runs of --vm: netem | reshaper ring."""
    def ms3(e):
        return f"{e['p50_us'] / 1000:.2f} / {e['p99_us'] / 1000:.2f} / {e['max_us'] / 1000:.2f} ms"

    def ms2(e):
        return f"{e['p50_us'] / 1000:.2f} / {e['p99_us'] / 1000:.2f} ms"

    def dist(x):
        return f"{x['mean_ms']:.2f} / {x['sd_ms']:.2f} ms, KS D {x['ks_D']}, p {x['ks_p']:.3g}"

    def loss(x):
        return f"{x['live'] * 100:.3f} % ({x['live_rel_err'] * 100:+.1f} %)"

    def rate(x):
        return (f"{x['achieved_bps']:,} bit/s ({x['rel_err'] * 100:+.2f} %), offered {x['offered_bps'] / 1e6:.1f} "
                f"Mbit/s, {x['queue_drops']} drops{'' if x['accounted'] else ' (not all counted)'}")

    def load(x):
        return f"{x['load'][0]:.2f} -> {x['load_after'][0]:.2f}"

    n, r = res["netem"], res["reshaper"]
    rows = []
    for dn, dr in zip(n.get("delay", []), r.get("delay", [])):
        k = f"{dn['pps'] / 1000:g}k/s"
        rows += [(f"path without a rule, {k}: one-way p50 / p99 / max",
                  ms3(dn["path_no_rule"]), ms3(dr["path_no_rule"])),
                 (f"fixed 10 ms, {k} ({dn['frames']} frames; offered {dn['offered_pps']} / {dr['offered_pps']}/s): "
                  "error p50 / p99 / max", ms3(dn["fixed"]), ms3(dr["fixed"])),
                 (f"fixed 10 ms, {k}: error minus the path's median, p50 / p99",
                  ms2(dn["fixed_minus_path_p50"]), ms2(dr["fixed_minus_path_p50"])),
                 (f"10 ms +- 2 ms normal, reordering, {k}: mean / sd, KS vs N(10, 2)",
                  dist(dn["normal_reorder"]), dist(dr["normal_reorder"]))]
    for ln, lr in zip(n.get("loss", []), r.get("loss", [])):
        rows.append((f"loss {ln['model']}: {ln['configured'] * 100:.3f} % configured, {ln['frames']} frames "
                     f"(sampling sd {ln['sampling_rel_sd'] * 100:.1f} %)", loss(ln), loss(lr)))
    for rn, rr in zip(n.get("rate", []), r.get("rate", [])):
        rows.append((f"rate {rn['bitrate']}, limit 100, 1000-byte frames", rate(rn), rate(rr)))
    rows.append(("guest load average (1 min) before -> after", load(n), load(r)))
    return "\n".join(["| same script, same VM | netem | reshaper ring |", "|---|---|---|"]
                     + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reshaper.bench.timing")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=["delay", "loss", "rate"])
    ap.add_argument("--offline", action="store_true", help="loss offline only (no namespaces)")
    ap.add_argument("--json")
    ap.add_argument("--rt", action="store_true", help="run the bridge SCHED_FIFO (chrt -f 50)")
    ap.add_argument("--busy-poll", type=int, default=0, metavar="US", help="run the bridge with --busy-poll US")
    ap.add_argument("--rt-generator", action="store_true", help="the generator SCHED_FIFO 40 too (harmful)")
    ap.add_argument("--netem", action="store_true",
                    help="measure netem (a Linux bridge, netem on b1) instead of reshaper; needs sch_netem")
    ap.add_argument("--vm", action="store_true",
                    help="run reshaper ring mode and netem in the Debian-kernel VM, one after the other")
    ap.add_argument("--vm-timeout", type=float, default=3600, help="seconds per run in the VM")
    ap.add_argument("--wait-load", type=float, metavar="MAX",
                    help="first wait (up to 20 min) until the load average is at most MAX")
    ap.add_argument("--rates", help="delay: frames/s, comma-separated (default 1000,10000)")
    ap.add_argument("--seconds", type=float, help="delay: seconds per flow (default 10; --quick 2)")
    ap.add_argument("--loss-frames", type=int, help=f"loss: frames per model (default {LOSS_N}; --quick 20000)")
    ap.add_argument("--loss-pps", type=float, default=10_000, help="loss: offered frames/s (default 10000)")
    args = ap.parse_args(argv)
    parts = args.only or ["delay", "loss", "rate"]
    rates = [int(x) for x in (args.rates or "1000,10000").split(",")]
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    loss_frames = args.loss_frames or (20_000 if args.quick else LOSS_N)
    quiet = wait_for_quiet(args.wait_load) if args.wait_load is not None else None
    if args.vm:
        inner = [*(["--quick"] if args.quick else []), *(x for p in args.only or [] for x in ("--only", p)),
                 "--rates", ",".join(map(str, rates)), "--seconds", str(seconds), "--loss-frames", str(loss_frames),
                 "--loss-pps", str(args.loss_pps), *(["--rt"] if args.rt else []),
                 *(["--busy-poll", str(args.busy_poll)] if args.busy_poll else [])]
        out = run_in_vm(args, inner) | {"wait_load": quiet}
        print(side_by_side(out), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(out, indent=1))
        return 0
    out: dict = {"load": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "wait_load": quiet}
    print(f"load average {os.getloadavg()}", flush=True)
    stamped.RT_GENERATOR = args.rt_generator
    live = None
    if args.netem:
        live = NetemLive()
    elif not args.offline:
        live = Live(rt=args.rt)
        live.busy_poll = args.busy_poll
    out["backend"] = live.backend if live else "offline"
    out["busy_poll_us"] = args.busy_poll
    out["rt"] = args.rt
    out["sizes"] = {"rates": rates, "seconds": seconds, "loss_frames": loss_frames, "loss_pps": args.loss_pps}
    try:
        if "delay" in parts and live:
            bench_delay(live, rates, seconds, out)
        if "loss" in parts:
            bench_loss(live, loss_frames, out, args.loss_pps)
        if "rate" in parts and live:
            bench_rate(live, out)
    finally:
        if live:
            live.close()
    out["load_after"] = os.getloadavg()
    print(f"load average {os.getloadavg()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
