"""The bench's settings on a namespace topology (bridge/netns.py): sysctls and RPS as seen
from inside a namespace, static neighbours, the interface state every mode is measured in, and
the placement of the device under test's receive (placed(), shared by `reshaper bench` and
bench/ring.py) with the check that it held (report.py words it)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

from reshaper.bench.settings import (FWD_CPU, GEN_CPU, HOG, PLACEMENT_MAX_GEN_RX_PER_FRAME, REALTIME, USER_HZ,
                                     single_core)
from reshaper.bridge.realtime import PRIORITY

NUD_PERMANENT = 0x80


def ns_write(ns, path: str, value: str) -> None:
    """Writes a /proc/sys/net file as seen from inside a namespace."""
    ns.run(["/bin/sh", "-c", f"test -e {path} && echo {value} > {path} || true"], check=True)


def ns_sysfs_write(ns, path: str, value: str) -> None:
    """Writes a /sys file as the namespace sees it: its own sysfs, mounted in a private mount namespace."""
    ns.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            f"mount -t sysfs sysfs /sys && echo {value} > /sys/{path}"], check=True)


def set_rps(ns, ifname: str, mask: int) -> None:
    """RPS mask of a port's receive queue."""
    ns_sysfs_write(ns, f"class/net/{ifname}/queues/rx-0/rps_cpus", f"{mask:x}")


def napi_threads(ifnames=None) -> dict[int, str]:
    """The kernel threads of threaded NAPI on the device under test's ports (DUT_INGRESS): {pid: name}."""
    prefixes = tuple(f"napi/{ifname}-" for ifname in (ifnames or DUT_INGRESS))
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if name.startswith(prefixes):
                found[int(pid)] = name
    return found


def threaded_napi(topo, placement: str) -> None:
    """XDP mode's receive in a placement, once its program is attached: native XDP runs before
    RPS, in the NAPI context of the sending veth's CPU, so single-core makes the ports' NAPI
    threaded (possible only while XDP gives them NAPI) and pins the threads to FWD_CPU (under
    --realtime, at the forwarder's priority)."""
    for ifname in DUT_INGRESS:
        # split: not threaded, also where an earlier single-core run left the device so (the setting
        # outlives the NAPI instances, made anew with each program)
        ns_sysfs_write(topo.br, f"class/net/{ifname}/threaded", "1" if single_core(placement) else "0")
    if not single_core(placement):
        return
    threads = napi_threads()
    if not threads:
        raise RuntimeError(f"no NAPI threads for {', '.join(DUT_INGRESS)} after threaded=1")
    for pid in threads:
        os.sched_setaffinity(pid, {FWD_CPU})
        if REALTIME[0]:
            # beside a SCHED_FIFO forwarder a SCHED_OTHER thread would never run: the same priority,
            # so that each runs its batch to the end in turn, neither preempting the other
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(PRIORITY))


def static_neighbours(topo) -> None:
    """a and b know each other's MAC: the probe needs no ARP (one-way forwarders work too)."""
    from reshaper.bridge.netns import HOST_A, HOST_B

    macs = {}
    for ns, ifname in ((topo.a, "a0"), (topo.b, "b0")):
        with ns.ipr() as ipr:
            macs[ifname] = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")
    for ns, ifname, peer_ip, peer in ((topo.a, "a0", HOST_B["v4"], "b0"), (topo.b, "b0", HOST_A["v4"], "a0")):
        with ns.ipr() as ipr:
            ipr.neigh("replace", dst=peer_ip, lladdr=macs[peer], ifindex=ipr.link_lookup(ifname=ifname)[0],
                      state=NUD_PERMANENT)


OFFLOADS = "GRO/GSO/TSO off on a1, b1; TSO/GSO off on a0, b0"


def prepare(topo) -> None:
    """The same interfaces for every mode: OFFLOADS (what ring mode sets on its ports; hosts that
    send wire-size frames), static neighbours, and no stray IPv6 frames (router solicitations,
    MLD) from the bridge namespace's own devices."""
    from reshaper.bridge.offloads import GRO, GSO, TSO, set_offloads

    for ifname in ("a1", "b1"):
        with topo.br.entered():
            set_offloads(ifname, GRO | GSO | TSO, False)
    # Topology leaves veth's defaults on the hosts
    for ns, ifname in ((topo.a, "a0"), (topo.b, "b0")):
        with ns.entered():
            set_offloads(ifname, GSO | TSO, False)
    static_neighbours(topo)
    for key in ("all", "default", "a1", "b1"):
        ns_write(topo.br, f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "1")


# where frames enter the device under test: a1 from the generator, b1 from the sink's side (ping
# replies); what a forwarder sends on b1 is received by b0 on the forwarder's own CPU already
DUT_INGRESS = ("a1", "b1")
PLACEMENT_RPS = {"single-core": f"RPS on {', '.join(DUT_INGRESS)} to CPU {FWD_CPU} (xdp: their NAPI threaded, the threads "
                 f"pinned there)", "split": "none"}
PLACEMENT_RPS[HOG] = PLACEMENT_RPS["single-core"] + f", and a busy loop on CPU {FWD_CPU}"


@contextmanager
def cpu_hog(cpu: int):
    """A busy loop on cpu (SCHED_OTHER, nice 0, in this namespace) for the trials inside: the other
    work of a board that runs more than reshaper."""
    hog = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        yield hog.pid
    finally:
        hog.kill()
        hog.wait()


@contextmanager
def placed(topo, placement: str):
    """The device under test's receive placed (settings.PLACEMENTS) for the trials inside: in
    single-core RPS steers the ingress ports' receive to FWD_CPU, so the Linux bridge's whole
    path, the kernel module's, AF_PACKET's receive into ring mode's ring and the frames queued to
    NFQUEUE run there, where the forwarder runs; split changes nothing (veth receives on the
    sender's CPU); single-core+hog is single-core with cpu_hog on FWD_CPU, started before the
    device under test. Undone on the way out."""
    mask = 1 << FWD_CPU if single_core(placement) else 0
    try:
        for ifname in DUT_INGRESS:
            set_rps(topo.br, ifname, mask)
        if placement == HOG:
            with cpu_hog(FWD_CPU):
                yield
        else:
            yield
    finally:
        if mask:
            for ifname in DUT_INGRESS:
                set_rps(topo.br, ifname, 0)


def placement_check(placement: str, rx_frames: dict[int, int], net_rx: dict[int, int],
                    cpu: dict[int, dict[str, int]], delivered: int, napi: dict | None = None) -> dict:
    """Where a trial's receive work ran, from its per-CPU counter deltas: frames received
    (/proc/net/softnet_stat), NET_RX softirqs (/proc/softirqs) and softirq time (/proc/stat) per
    forwarded frame on the generator's CPU and the forwarder's, and the forwarder CPU's time per
    frame by kind. Frames received is what tells the placements apart: in single-core the
    generator's CPU still runs a NET_RX softirq whenever it hands a frame to an idle FWD_CPU
    backlog (to send the RPS interrupt), about one per frame at light load, but receives none.
    XDP mode's receive is not counted there: it runs in its ports' NAPI threads (napi:
    counters.napi_cpu()'s, their ticks over the trial), which must be allowed FWD_CPU only."""
    def per_frame(value):
        return value / delivered if delivered else None

    def ns(ticks):
        return per_frame(ticks / USER_HZ * 1e9)

    fwd = cpu.get(FWD_CPU, {})
    return {"placement": placement, "delivered": delivered,
            "generator_rx_frames": rx_frames.get(GEN_CPU, 0), "forwarder_rx_frames": rx_frames.get(FWD_CPU, 0),
            "generator_net_rx": net_rx.get(GEN_CPU, 0), "forwarder_net_rx": net_rx.get(FWD_CPU, 0),
            "generator_rx_per_frame": per_frame(rx_frames.get(GEN_CPU, 0)),
            "generator_net_rx_per_frame": per_frame(net_rx.get(GEN_CPU, 0)),
            "forwarder_net_rx_per_frame": per_frame(net_rx.get(FWD_CPU, 0)),
            "generator_softirq_ns_per_frame": ns(cpu.get(GEN_CPU, {}).get("softirq", 0)),
            "forwarder_ns_per_frame": {k: ns(fwd.get(k, 0)) for k in ("softirq", "system", "user")},
            "napi_threads": {name: t["cpus"] for name, t in (napi or {}).items()},
            "napi_thread_ns_per_frame": ns(sum(t["ticks"] for t in (napi or {}).values()))}


def placement_verdict(checks: list[dict]) -> dict:
    """Where the receive work of several trials in one placement ran (their placement_check()s):
    frames received and NET_RX softirqs on the generator's CPU per forwarded frame over all of
    them, and whether single-core held (settings.PLACEMENT_MAX_GEN_RX_PER_FRAME; None for split)."""
    delivered = sum(c["delivered"] for c in checks)

    def per_frame(key):
        return sum(c[key] for c in checks) / delivered if delivered else None

    rx = per_frame("generator_rx_frames")
    single = bool(checks) and single_core(checks[0]["placement"])
    napi_cpus = sorted({cpu for c in checks for cpus in c.get("napi_threads", {}).values() for cpu in cpus})
    return {"generator_rx_per_frame": rx, "generator_net_rx_per_frame": per_frame("generator_net_rx"),
            "trials": len(checks), "threshold": PLACEMENT_MAX_GEN_RX_PER_FRAME, "napi_thread_cpus": napi_cpus,
            "held": (rx is not None and rx <= PLACEMENT_MAX_GEN_RX_PER_FRAME and napi_cpus in ([], [FWD_CPU]))
            if single else None}
