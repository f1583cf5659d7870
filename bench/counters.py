"""The counters a trial compares, read before and after it: interface statistics
(IFLA_STATS64), per-CPU time (/proc/stat), receive softirqs and frames received per CPU,
backlog drops, and the forwarder process's CPU time; a snapshot of all of them and the
difference of two."""
from __future__ import annotations

import os
import time

from reshaper.bridge.proc_counters import cpu_times, frames_received, link_stats, net_rx_softirqs, softnet_dropped


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
    whole_cpu = False   # CPU per frame: the forwarder's own (bench/trial.py), this machine runs more

    def __init__(self, topo):
        self.ipr = {"a": topo.a.ipr(), "br": topo.br.ipr(), "b": topo.b.ipr()}

    def close(self) -> None:
        for ipr in self.ipr.values():
            ipr.close()

    def settle(self) -> None:
        """After the generator: until the frames still in flight (queues, rings) have arrived."""
        time.sleep(0.2)

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
