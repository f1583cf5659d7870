"""One trial (the generator at a rate for a duration, every counter before and after) and
a mode's measurement at one frame size in one placement built from trials: saturation, the
loss-free rate (binary search, RFC 2544 style), latency at LOAD_POINTS of it, delivered at
OVERLOAD_FACTORS of it (where livelock shows), CPU per frame, drops by where, and where the
receive work ran (topology.placement_check)."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from reshaper.bench.counters import Counters, subtract
from reshaper.bench.generator import generator_argv
from reshaper.bench.probe import Probe, percentile
from reshaper.bench.settings import (DEFAULT_PLACEMENT, GEN_CPU, KERNEL_PATHS, LOAD_POINTS, LOSS_FREE,
                                     OVERLOAD_FACTORS, USER_HZ, log)
from reshaper.bench.topology import placement_check


def drops_by_where(mode: str, d: dict) -> dict:
    """Per-place drop counts of one trial (d: the counter deltas)."""
    links = d["links"]
    out = {"generator_a0_tx_dropped": links["a0"]["tx_dropped"],
           "a1_rx_dropped": links["a1"]["rx_dropped"], "b1_tx_dropped": links["b1"]["tx_dropped"],
           "b0_rx_dropped": links["b0"]["rx_dropped"], "backlog_dropped": d["backlog_dropped"]}
    dut = d.get("dut", {})
    rs = dut.get("reshaper")
    if rs:
        ports = rs.get("ports", {})
        if mode in ("ring", "xdp"):
            out["ring_rx_ring_drops"] = sum(p.get("ring_drops", 0) for p in ports.values())
            out["ring_tx_full"] = sum(p.get("tx_full", 0) for p in ports.values())
            out["ring_oversize"] = sum(p.get("oversize", 0) for p in ports.values())
            out["ring_tx_errors"] = sum(p.get("tx_errors", 0) for p in ports.values())
        elif mode == "nfqueue":
            out["nfqueue_port_dropped"] = sum(p.get("dropped", 0) for p in ports.values())
            out["nfqueue_queue_errors"] = sum(p.get("queue_errors", 0) for p in ports.values())
        elif mode == "kernel":
            for key in ("dropped", "oversize", "queue_drops", "tx_errors"):
                v = sum(p.get(key, 0) for p in ports.values() if isinstance(p.get(key, 0), (int, float)))
                if v:
                    out[f"kernel_{key}"] = v
        engine = rs.get("engine", {})
        out["engine_dropped"] = engine.get("dropped", 0) if isinstance(engine.get("dropped", 0), (int, float)) else 0
    if "nfqueue" in dut:
        out["nfqueue_queue_dropped"] = sum(q["queue_dropped"] for q in dut["nfqueue"].values())
        out["nfqueue_user_dropped"] = sum(q["user_dropped"] for q in dut["nfqueue"].values())
    if "python" in dut:
        out["python_socket_drops"] = dut["python"].get("socket_drops", 0)
        out["python_send_errors"] = dut["python"].get("send_errors", 0)
    return out


class Trials:
    """The trials of one run: the generator binary, the frame files by size, progress across modes,
    and the placement the trials are in now (the caller applies it with topology.placed())."""

    def __init__(self, args, topo, gen: Path, frames: dict[int, Path], counters=None, probe=Probe,
                 gen_ifname: str = "a0"):
        """topo.a: the namespace the generator runs in, on gen_ifname; counters: what snap(dut)
        reads, Counters(topo) unless given; probe: the latency probe's class (bench/board.py gives
        its own for a board)."""
        self.args, self.topo, self.gen, self.frames = args, topo, gen, frames
        self.counters = counters or Counters(topo)
        self.probe, self.gen_ifname = probe, gen_ifname
        self.trials_done = 0
        self.trials_total = 1
        self.t0 = time.monotonic()
        self.placement = DEFAULT_PLACEMENT

    def progress(self, msg: str) -> None:
        el = time.monotonic() - self.t0
        eta = el / self.trials_done * (self.trials_total - self.trials_done) if self.trials_done else 0
        log(f"[{self.trials_done:3d}/{self.trials_total} {el:5.0f} s, ~{eta:4.0f} s left] {msg}")

    def trial(self, dut, size: int, rate: float, duration: float, probe_pps: float = 0) -> dict:
        before = self.counters.snap(dut)
        probe = self.probe(self.topo, probe_pps) if probe_pps else None
        if probe:
            probe.start()
        gen = self.topo.a.popen(["taskset", "-c", str(GEN_CPU),
                                 *generator_argv(self.gen, self.gen_ifname, self.frames[size], duration, rate)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = gen.communicate(timeout=duration + 30)
        delays = probe.stop() if probe else None
        self.counters.settle()   # frames in flight (queues, rings) arrive
        after = self.counters.snap(dut)
        self.trials_done += 1
        try:
            genr = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"generator failed: {err.strip()[-400:]}")
        d = subtract(after, before)
        dt = genr["seconds"]
        a0, b0 = d["links"]["a0"], d["links"]["b0"]
        sent = a0["tx_packets"] + a0["tx_dropped"]
        # b0 may count a frame the generator did not send (a stray one from a namespace's own stack,
        # or one in flight across the window's edge): delivered is capped at sent, the excess kept
        delivered_raw = b0["rx_packets"]
        delivered = min(delivered_raw, sent)
        r = {"size": size, "placement": self.placement, "requested_pps": round(rate), "seconds": round(dt, 3), "generator": genr,
             "sent": sent, "delivered": delivered, "delivered_raw": delivered_raw,
             "stray_received": delivered_raw - delivered, "offered_pps": sent / dt, "delivered_pps": delivered / dt,
             "loss": max(0.0, 1 - delivered / sent) if sent else None,
             "drops": drops_by_where(dut.name, d), "loadavg": open("/proc/loadavg").read().split()[:3],
             "links": d["links"]}
        r["drops"]["unexplained"] = max(0, sent - delivered - sum(v for v in r["drops"].values()))
        r["generator_short"] = bool(rate and r["offered_pps"] < 0.97 * rate)
        # CPU: ticks per CPU over the counter window, per delivered frame
        window = after["t"] - before["t"]
        cpus = {}
        softirq = busy = 0
        kinds = {}
        for c, now in d["cpu"].items():
            total = sum(now.values()) or 1
            cpus[c] = {k: round(now[k] / total, 4) for k in ("user", "system", "softirq", "idle")}
            cpus[c]["busy"] = round(1 - (now["idle"] + now["iowait"]) / total, 4)
            softirq += now["softirq"]
            busy += total - now["idle"] - now["iowait"]
            for k, ticks in now.items():
                kinds[k] = kinds.get(k, 0) + ticks
        r["cpu"] = {"per_cpu": cpus, "window_s": round(window, 3),
                    "net_rx_per_s": {c: v / window for c, v in d["net_rx"].items()}}
        napi = {name: {"ticks": d["napi"].get(name, {}).get("ticks", 0), "cpus": t["cpus"]}
                for name, t in after["napi"].items()}
        r["placement_check"] = placement_check(self.placement, d["rx_frames"], d["net_rx"], d["cpu"],
                                              delivered, napi)
        per = (lambda ticks: ticks / USER_HZ * 1e9 / delivered) if delivered else (lambda ticks: None)
        r["cpu"]["softirq_ns_per_frame"] = per(softirq)
        r["cpu"]["all_busy_ns_per_frame"] = per(busy)
        # all CPUs' time by /proc/stat's kinds (user, system, softirq, idle, ...) per frame
        r["cpu"]["by_kind_ns_per_frame"] = {k: per(ticks) for k, ticks in kinds.items()}
        if "proc" in d:
            p = d["proc"]
            r["cpu"]["fwd_user_ns_per_frame"] = per(p["utime"])
            r["cpu"]["fwd_sys_ns_per_frame"] = per(p["stime"])
            r["cpu"]["fwd_ns_per_frame"] = per(p["ticks"])
            r["cpu"]["fwd_run_ns_per_frame"] = p["run_ns"] / delivered if delivered else None
            r["cpu"]["fwd_cpu_share"] = p["run_ns"] / 1e9 / window
        if self.counters.whole_cpu:   # a board: everything it does is the device under test's
            r["cpu"]["ns_per_frame"], r["cpu"]["source"] = r["cpu"]["all_busy_ns_per_frame"], "all CPUs busy"
        elif dut.name in KERNEL_PATHS:
            r["cpu"]["ns_per_frame"], r["cpu"]["source"] = r["cpu"]["softirq_ns_per_frame"], "softirq, all CPUs"
        else:
            r["cpu"]["ns_per_frame"] = r["cpu"].get("fwd_ns_per_frame")
            r["cpu"]["source"] = "forwarder process user+sys"
        if probe:
            lat = {"probe_pps": probe_pps, "probe_sent": probe.sent, "probe_received": len(delays)}
            if delays:
                lat.update({f"p{k}_us": round(percentile(delays, q), 1)
                            for k, q in (("50", 0.5), ("99", 0.99), ("99.9", 0.999))})
                lat["max_us"] = round(max(delays), 1)
                lat["min_us"] = round(min(delays), 1)
            lat["samples_us"] = [round(x, 1) for x in delays]
            r["latency"] = lat
        return r

    def measure(self, dut, size: int) -> dict:
        a = self.args
        res = {"placement": self.placement, "search": [], "latency": {}}
        who = f"{dut.name:12s} {size:5d} B {self.placement:11s}"
        sat = self.trial(dut, size, 0, a.duration)
        res["saturation"] = sat
        self.progress(f"{who} saturation: offered {sat['offered_pps'] / 1e3:7.1f} kpps, "
                      f"delivered {sat['delivered_pps'] / 1e3:7.1f} kpps, loss {sat['loss'] or 0:.2%}")
        notes = []
        if sat["loss"] is not None and sat["loss"] < LOSS_FREE:
            lfr = sat["offered_pps"]
            res["generator_limited"] = True
            notes.append(f"the generator could not saturate {dut.name}: nothing lost at its maximum "
                         f"({sat['offered_pps'] / 1e3:,.1f} kpps offered); the loss-free rate is at least that")
        else:
            res["generator_limited"] = False
            lo, hi = 0.0, sat["offered_pps"]
            rate = min(hi, max(sat["delivered_pps"] * 0.98, hi / 50))
            for i in range(a.search_steps):
                t = self.trial(dut, size, rate, a.search_duration)
                t["step"] = i
                res["search"].append(t)
                ok = t["loss"] is not None and t["loss"] < LOSS_FREE
                if ok:
                    lo = max(lo, min(rate, t["offered_pps"]))
                else:
                    hi = rate
                self.progress(f"{who} search {i + 1}/{a.search_steps}: "
                              f"{rate / 1e3:7.1f} kpps requested, {t['offered_pps'] / 1e3:7.1f} offered, "
                              f"loss {t['loss'] or 0:.3%} -> {'ok' if ok else 'lossy'}")
                if t["generator_short"]:
                    notes.append(f"search step {i + 1}: offered {t['offered_pps'] / 1e3:,.1f} kpps < requested "
                                 f"{rate / 1e3:,.1f} kpps (generator short)")
                rate = (lo + hi) / 2
            # nothing loss-free yet: keep halving (a loaded machine, or a mode far below its saturation)
            extra = 0
            while lo == 0 and extra < 5 and hi > 100:
                rate = hi / 2
                t = self.trial(dut, size, rate, a.search_duration)
                t["step"] = a.search_steps + extra
                res["search"].append(t)
                ok = t["loss"] is not None and t["loss"] < LOSS_FREE
                if ok:
                    lo = min(rate, t["offered_pps"])
                else:
                    hi = rate
                extra += 1
                self.progress(f"{who} search (lower): {rate / 1e3:7.1f} kpps requested, "
                              f"loss {t['loss'] or 0:.3%} -> {'ok' if ok else 'lossy'}")
            lfr = lo
            if lfr == 0:
                notes.append(f"no loss-free rate found above {hi / 1e3:,.1f} kpps")
        res["loss_free_pps"] = lfr
        for frac in LOAD_POINTS if lfr > 0 else ():
            probe = min(a.probe_pps, max(50.0, 0.2 * frac * lfr))
            rate = max(1.0, frac * lfr - probe)
            t = self.trial(dut, size, rate, a.duration, probe_pps=probe)
            t["load_fraction"] = frac
            res["latency"][str(frac)] = t
            lat = t["latency"]
            self.progress(f"{who} latency at {frac:.0%} ({(rate + probe) / 1e3:7.1f} kpps): "
                          f"p50 {lat.get('p50_us', float('nan')):7.1f} µs, p99 {lat.get('p99_us', float('nan')):8.1f} µs"
                          f", loss {t['loss'] or 0:.3%}")
            if t["generator_short"]:
                notes.append(f"latency at {frac:.0%}: offered {t['offered_pps'] / 1e3:,.1f} kpps < requested "
                             f"{rate / 1e3:,.1f} kpps (generator short)")
        res["overload"] = {}
        for factor in OVERLOAD_FACTORS if lfr > 0 and not res["generator_limited"] else ():
            t = self.trial(dut, size, factor * lfr, a.duration)
            t["overload_factor"] = factor
            res["overload"][str(factor)] = t
            self.progress(f"{who} overload {factor:g}x ({factor * lfr / 1e3:7.1f} kpps requested, "
                          f"{t['offered_pps'] / 1e3:7.1f} offered): delivered {t['delivered_pps'] / 1e3:7.1f} kpps, "
                          f"{t['delivered_pps'] / lfr:.2f}x the loss-free rate")
            if t["generator_short"]:
                notes.append(f"overload {factor:g}x: offered {t['offered_pps'] / 1e3:,.1f} kpps < requested "
                             f"{factor * lfr / 1e3:,.1f} kpps (generator short)")
        res["notes"] = notes
        return res
