"""Timing accuracy of ring mode: `python -m tests.bench_timing` (root; network namespaces).

host a (generator) -> a0/a1 -> reshaper --mode ring -> b1/b0 -> host b (sink)

The generator stamps each UDP payload with CLOCK_REALTIME just before send();
the sink takes the kernel's receive timestamp (SO_TIMESTAMPNS) of each
datagram, so the sink's own scheduling adds nothing. Both ends share the
machine's clock: one-way delay = receive stamp - send stamp, per frame.

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

--quick runs shorter; --only NAME picks parts (delay, loss, rate); --json FILE
writes the figures. `--netem DEV` measures an existing netem qdisc instead
of reshaper (used inside the VM for the side-by-side comparison).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

STAMP = struct.Struct("!QQ")   # sequence, send time (CLOCK_REALTIME ns)
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
MS = 1_000_000
RT_GENERATOR = False   # --rt-generator: the generator thread runs SCHED_FIFO 40 while it sends


# ---- generator and sink ----------------------------------------------------------

class Sink:
    """A UDP socket that records (sequence, send ns, kernel receive ns) of every datagram."""

    def __init__(self, sock: socket.socket, port: int, threaded: bool = False):
        """threaded: read while the generator runs (long runs that would fill the socket buffer).
        Otherwise everything is read afterwards: a reading thread would take the GIL from the
        generator between its stamp and its send() (Python's 5 ms switch interval), which
        measured as milliseconds of false delay."""
        self.sock = sock
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.bind(("0.0.0.0", port))
        self.got: list[tuple[int, int, int]] = []
        self._stop = False
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(getattr(self, "_settle", 0.2))
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(2048, 64)
            except socket.timeout:
                if self._thread is None:
                    return   # drained: nothing for settle seconds
                continue
            except OSError:
                return
            rx = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    rx = sec * 1_000_000_000 + nsec
            if rx is None or len(data) < STAMP.size:
                continue
            seq, tx = STAMP.unpack_from(data)
            self.got.append((seq, tx, rx))

    def collect(self, settle: float = 0.5) -> list[tuple[int, int, int]]:
        """Waits until nothing arrived for settle seconds; returns what came, by sequence."""
        if self._thread is None:
            self._settle = settle
            self._run()
        n = -1
        while n != len(self.got):
            n = len(self.got)
            time.sleep(settle)
        self._stop = True
        if self._thread:
            self._thread.join()
        self.sock.close()
        return sorted(self.got)


def send_stamped(sock: socket.socket, dst: tuple[str, int], n: int, pps: float, size: int = 64) -> float:
    """Sends n datagrams at pps (paced on the monotonic clock, spinning); returns the achieved rate."""
    pad = bytes(max(0, size - STAMP.size))
    gap = 1e9 / pps
    old = None
    if RT_GENERATOR:  # --rt-generator: measured harmful (a spinning SCHED_FIFO thread starves
        # ksoftirqd, which carries veth traffic: frames then wait for RT throttling, seconds)
        old = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))
    try:
        start = time.monotonic_ns()
        for i in range(n):
            due = start + int(i * gap)
            while time.monotonic_ns() < due:
                pass
            sock.sendto(STAMP.pack(i, time.clock_gettime_ns(time.CLOCK_REALTIME)) + pad, dst)
        return n / ((time.monotonic_ns() - start) / 1e9)
    finally:
        if old:
            os.sched_setscheduler(0, *old)


def one_way(topo, port: int, n: int, pps: float, src: str = "a", size: int = 64,
            threaded: bool = False) -> tuple[list, float]:
    """n stamped datagrams from host src to the other host's UDP port; [(seq, tx, rx)], achieved pps."""
    from bridge.netns import HOST_A, HOST_B

    sender_ns, sink_ns, dst = (topo.a, topo.b, HOST_B["v4"]) if src == "a" else (topo.b, topo.a, HOST_A["v4"])
    sink = Sink(sink_ns.socket(socket.AF_INET, socket.SOCK_DGRAM), port, threaded)
    tx = sender_ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    try:
        rate = send_stamped(tx, (dst, port), n, pps, size)
    finally:
        tx.close()
    return sink.collect(), rate


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
    from tests.test_timing import delays
    return delays(actions, n, spacing_ns, seed)


def ring_config(rules: str) -> str:
    return "version: 1\nports: {a: a1, b: b1}\nrules:\n" + rules


class Live:
    """A topology and reshaper ring mode in it, for one configuration at a time."""

    def __init__(self, prefix: str = "bt", rt: bool = False):
        self.rt = rt
        self.busy_poll = 0  # --busy-poll US for the bridge
        from bridge.netns import Topology
        self.topo = Topology(prefix).__enter__()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-timing-"))
        self.bridge = None

    def start(self, config_text: str, seed: int = 1) -> None:
        from tests.live import Bridge
        self.stop()
        path = self.tmp / "rules.yaml"
        path.write_text(config_text)
        extra = ("--seed", str(seed)) + (("--busy-poll", str(self.busy_poll)) if self.busy_poll else ())
        bridge = Bridge(self.topo.br, path, self.tmp, extra=extra)
        if self.rt:   # SCHED_FIFO: the appliance is not queued behind other work on a busy machine
            bridge.argv = ["chrt", "-f", "50", *bridge.argv]
        self.bridge = bridge.start()
        # ARP both ways before measuring
        self.topo.a.run(["ping", "-c", "1", "-W", "2", "10.77.0.2"], capture_output=True)

    def stats(self) -> dict:
        return self.bridge.stats()

    def stop(self) -> None:
        if self.bridge:
            self.bridge.stop()
            self.bridge = None

    def close(self) -> None:
        self.stop()
        self.topo.__exit__(None, None, None)


def bench_delay(live: Live, rates: list[int], seconds: float, out: dict) -> None:
    from tests.test_timing import delay_cdf, ks_test

    fixed = "{delay: {time: 10ms}}"
    normal_r = "{delay: {time: 10ms, jitter: 2ms, distribution: normal, reorder_on_jitter: true}}"
    normal_o = "{delay: {time: 10ms, jitter: 2ms, distribution: normal}}"
    rules = ("  - {name: fixed, match: {ip_proto: udp, dst_port: 7000}, actions: [%s]}\n"
             "  - {name: normal, match: {ip_proto: udp, dst_port: 7001}, actions: [%s]}\n"
             "  - {name: ordered, match: {ip_proto: udp, dst_port: 7002}, actions: [%s]}\n"
             % (fixed, normal_r, normal_o))
    cdf = delay_cdf("normal", 10 * MS, 2 * MS)
    for pps in rates:
        n = int(pps * seconds)
        seed = 11
        live.start(ring_config(rules), seed)
        base, _ = one_way(live.topo, 7009, min(n, 2000), min(pps, 1000))  # no rule: the path alone
        base_lat = [rx - tx for _, tx, rx in base]
        b50 = statistics.median(base_lat)
        row = {"pps": pps, "frames": n, "path_no_rule": err_summary(base_lat)}
        got, achieved = one_way(live.topo, 7000, n, pps)
        row["offered_pps"] = round(achieved)
        row["fixed"] = err_summary([rx - tx - 10 * MS for _, tx, rx in got]) | {"lost": n - len(got)}
        row["fixed_minus_path_p50"] = err_summary([rx - tx - 10 * MS - b50 for _, tx, rx in got])
        row["fixed_release_late"] = live.stats()["release_late"]   # the loop's own timer lateness
        # jittered, reorder_on_jitter: each frame's own draw. A fresh bridge with the same seed:
        # frames no rule matches (ARP ping) draw nothing, so the flow's frames take the engine's
        # first n draws, which the same engine replays offline (one draw per frame).
        live.start(ring_config(rules), seed)
        got, _ = one_way(live.topo, 7001, n, pps)
        draws = replay_draws(f"[{normal_r}]", n, seed, MS)
        errs = [rx - tx - draws[seq] for seq, tx, rx in got]
        achieved_d = [rx - tx - b50 for _, tx, rx in got]
        d, p = ks_test(achieved_d, cdf)
        row["normal_reorder"] = (err_summary(errs) if errs else {}) | {
            "lost": n - len(got), "ks_D": round(d, 4), "ks_p": float(f"{p:.3g}"),
            "mean_ms": round(statistics.fmean(achieved_d) / MS, 3),
            "sd_ms": round(statistics.pstdev(achieved_d) / MS, 3)}
        got, _ = one_way(live.topo, 7002, n, pps)
        achieved_d = [rx - tx - b50 for _, tx, rx in got]
        d, p = ks_test(achieved_d, cdf)
        seqs = [s for s, _, _ in sorted(got, key=lambda g: g[2])]
        row["normal_ordered"] = {"lost": n - len(got), "ks_D": round(d, 4), "ks_p": float(f"{p:.3g}"),
                                 "mean_ms": round(statistics.fmean(achieved_d) / MS, 3),
                                 "sd_ms": round(statistics.pstdev(achieved_d) / MS, 3),
                                 "p1_ms": round(pct(achieved_d, 0.01) / MS, 3),
                                 "in_order": seqs == sorted(seqs)}
        row["pool_full"] = live.stats()["pool_full"]
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


def bench_loss(live: Live | None, n: int, out: dict) -> None:
    from tests.test_timing import lost_flags
    models = {
        "random 10%": ("{loss: {probability: 10%}}", 0.10),
        "gilbert-elliott p=1% r=10% h=0 k=1": ("{loss: {model: gilbert-elliott, p: 1%, r: 10%}}", 0.01 / 0.11),
        "gilbert-elliott p=5% r=50% h=20% k=99%": (
            "{loss: {model: gilbert-elliott, p: 5%, r: 50%, h: 20%, k: 99%}}",
            (0.5 / 0.55) * 0.01 + (0.05 / 0.55) * 0.8),
    }
    for name, (action, expected) in models.items():
        flags, _ = lost_flags(f"[{action}]", n=n, seed=3)
        row = {"model": name, "configured": round(expected, 5), "frames": n,
               "sampling_rel_sd": round(loss_rel_sd(action, n), 4),
               "offline": round(sum(flags) / n, 5), "offline_rel_err": round(sum(flags) / n / expected - 1, 4)}
        if live:
            live.start(ring_config(f"  - {{name: l, match: {{ip_proto: udp, dst_port: 7100}}, actions: [{action}]}}\n"))
            got, _ = one_way(live.topo, 7100, n, 10_000, threaded=True)
            lost = (n - len(got)) / n
            st = live.stats()
            row |= {"live": round(lost, 5), "live_rel_err": round(lost / expected - 1, 4),
                    "live_engine_lost": st["rules"][0]["lost"],
                    "live_other_drops": n - len(got) - st["rules"][0]["lost"]}
        out.setdefault("loss", []).append(row)
        print(json.dumps(row), flush=True)


def bench_rate(live: Live | None, out: dict) -> None:
    size = 1000 - 42   # UDP payload: 1000-byte frames
    for bitrate, bps in (("10mbit", 10e6), ("50mbit", 50e6)):
        pps_cap = bps / 8000
        n = int(pps_cap * 2 * 3)  # 3 s offered at twice the rate
        live.start(ring_config(f"  - {{name: r, match: {{ip_proto: udp, dst_port: 7200}}, "
                               f"actions: [{{rate: {{bitrate: {bitrate}, limit: 100}}}}]}}\n"))
        got, offered = one_way(live.topo, 7200, n, pps_cap * 2, size=size)
        rx = sorted(r for _, _, r in got)
        achieved = (len(rx) - 1) * 8000 / ((rx[-1] - rx[0]) / 1e9)
        st = live.stats()
        row = {"bitrate": bitrate, "offered_pps": round(offered), "frames": n, "received": len(got),
               "achieved_bps": round(achieved), "rel_err": round(achieved / bps - 1, 4),
               "queue_drops": st["rules"][0]["queue_drops"],
               "accounted": st["rules"][0]["queue_drops"] + len(got) == n}
        out.setdefault("rate", []).append(row)
        print(json.dumps(row), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench_timing")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=["delay", "loss", "rate"])
    ap.add_argument("--offline", action="store_true", help="loss offline only (no namespaces)")
    ap.add_argument("--json")
    ap.add_argument("--rt", action="store_true", help="run the bridge SCHED_FIFO (chrt -f 50)")
    ap.add_argument("--busy-poll", type=int, default=0, metavar="US", help="run the bridge with --busy-poll US")
    ap.add_argument("--rt-generator", action="store_true", help="the generator SCHED_FIFO 40 too (harmful)")
    args = ap.parse_args(argv)
    parts = args.only or ["delay", "loss", "rate"]
    out: dict = {"load": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"load average {os.getloadavg()}", flush=True)
    global RT_GENERATOR
    RT_GENERATOR = args.rt_generator
    live = None if args.offline else Live(rt=args.rt)
    if live:
        live.busy_poll = args.busy_poll
    out["busy_poll_us"] = args.busy_poll
    out["rt"] = args.rt
    try:
        if "delay" in parts and live:
            bench_delay(live, [1000, 10_000], 2.0 if args.quick else 10.0, out)
        if "loss" in parts:
            bench_loss(live, 20_000 if args.quick else 100_000, out)
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
