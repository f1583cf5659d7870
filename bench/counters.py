"""The counters a trial compares, read before and after it: interface statistics
(IFLA_STATS64), per-CPU time (/proc/stat), receive softirqs and frames received per CPU,
backlog drops, and the forwarder process's CPU time; a snapshot of all of them and the
difference of two."""
from __future__ import annotations

import os
import re
import time


def link_stats(ipr, ifname: str) -> dict:
    link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
    return dict(link.get_attr("IFLA_STATS64"))


def cpu_times() -> dict[int, dict[str, int]]:
    """Per CPU, ticks of /proc/stat."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                out[int(m.group(1))] = dict(zip(names, map(int, m.group(2).split())))
    return out


def net_rx_softirqs() -> dict[int, int]:
    with open("/proc/softirqs") as f:
        lines = f.read().splitlines()
    cpus = [int(c[3:]) for c in lines[0].split()]
    for line in lines[1:]:
        fields = line.split()
        if fields[0] == "NET_RX:":
            return dict(zip(cpus, map(int, fields[1:])))
    return {}


def softnet_dropped() -> int:
    """Frames dropped because a CPU's input backlog was full (all CPUs, /proc/net/softnet_stat)."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return sum(int(line.split()[1], 16) for line in f if line.strip())
    except OSError:
        return 0


def frames_received() -> dict[int, int]:
    """Per CPU, frames its receive path took in (/proc/net/softnet_stat's first column, counted
    in __netif_receive_skb_core on the CPU that runs it; the CPU index is column 13 where the
    kernel writes it, else the line's order)."""
    out = {}
    try:
        with open("/proc/net/softnet_stat") as f:
            for i, line in enumerate(f):
                fields = line.split()
                if fields:
                    out[int(fields[12], 16) if len(fields) > 12 else i] = int(fields[0], 16)
    except OSError:
        pass
    return out


def user_system_ticks(pid: int) -> tuple[int, int]:
    """A process's (or kernel thread's) utime and stime, in ticks, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def proc_cpu(pid: int) -> dict:
    """utime+stime (ticks), on-CPU ns of all threads (schedstat), context switches."""
    utime, stime = user_system_ticks(pid)
    run_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns += int(f.read().split()[0])
        except OSError:
            pass
    ctx = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                key, value = line.split(":")
                ctx[key.split("_")[0]] = int(value)
    return {"ticks": utime + stime, "utime": utime, "stime": stime, "run_ns": run_ns, **ctx}


def napi_cpu() -> dict:
    """Per NAPI thread of the device under test's ports (XDP mode, single-core): utime+stime ticks,
    and the CPUs it may run on (topology.threaded_napi pins them)."""
    from reshaper.bench.topology import napi_threads

    out = {}
    for pid, name in napi_threads().items():
        try:
            out[name] = {"ticks": sum(user_system_ticks(pid)), "cpus": sorted(os.sched_getaffinity(pid))}
        except OSError:
            pass   # gone since
    return out


class Counters:
    """Snapshots of everything a trial compares: links, CPUs, softirqs, the forwarder."""

    def __init__(self, topo):
        self.ipr = {"a": topo.a.ipr(), "br": topo.br.ipr(), "b": topo.b.ipr()}

    def close(self) -> None:
        for ipr in self.ipr.values():
            ipr.close()

    def snap(self, dut) -> dict:
        s = {"t": time.monotonic(),
             "links": {"a0": link_stats(self.ipr["a"], "a0"), "a1": link_stats(self.ipr["br"], "a1"),
                       "b1": link_stats(self.ipr["br"], "b1"), "b0": link_stats(self.ipr["b"], "b0")},
             "cpu": cpu_times(), "net_rx": net_rx_softirqs(), "rx_frames": frames_received(),
             "backlog_dropped": softnet_dropped(), "napi": napi_cpu(),
             "dut": dut.counters()}
        if dut.pid:
            try:
                s["proc"] = proc_cpu(dut.pid)
            except OSError:
                pass
        return s


def subtract(a, b):
    """a - b over nested dicts of numbers (what is not numeric is left out)."""
    if isinstance(a, dict):
        return {k: subtract(v, b.get(k, 0) if isinstance(b, dict) else 0) for k, v in a.items()
                if isinstance(v, (dict, int, float)) and not isinstance(v, bool)}
    return a - (b if isinstance(b, (int, float)) else 0)
