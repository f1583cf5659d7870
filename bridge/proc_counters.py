"""The kernel's own counters a benchmark trial compares, read before and after it: interface
statistics (IFLA_STATS64), per-CPU time (/proc/stat), receive softirqs and frames received per
CPU, backlog drops. Here, in the appliance, because `reshaper bench --board` reads them on the
board too (bridge/bench_agent.py), whose wheel leaves the benchmark out (setup.py)."""
from __future__ import annotations

import re


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
