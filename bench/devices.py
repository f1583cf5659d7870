"""The devices under test: one class per mode of `reshaper bench`, each with start(),
counters() (its own drop counters), stop() and pid (the process whose CPU time is
measured, None for the kernel paths). device_under_test(mode, ...) picks one.

  ring, nfqueue, kernel  `reshaper run --mode M` (bridge/launcher.py), pinned to FWD_CPU
  linux-bridge           a Linux bridge, no rules, br_netfilter hooks off, static FDB (the baseline)
  bridge-netfilter       the same with br_netfilter on and one iptables rule every frame passes
  nfqueue-accept         every bridged frame to NFQUEUE, a bare Python accept loop
  python                 the naive Python forwarder (naive_forwarder.py)
  ring-traced            ring mode with `reshaper trace --json` reading every frame, pinned beside it
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reshaper.bench.frames import DST_MAC
from reshaper.bench.settings import FWD_CPU, REALTIME, RT_PREFIX, TRACED
from reshaper.bench.topology import ns_write
from reshaper.bridge.modes.nfqueue import QUEUE_MAXLEN
from reshaper.lab import REPO

BRIDGE_DEV = "rsbench0"
AF_BRIDGE = 7
NTF_MASTER = 0x04
NUD_NOARP = 0x40
NFQUEUE_ACCEPT_QUEUE = 7190


class LinuxBridge:
    """A Linux bridge device with a1 and b1, no rules, br_netfilter hooks off, static FDB entry."""
    name = "linux-bridge"
    pid = None

    def __init__(self, topo):
        self.topo = topo

    def start(self) -> None:
        ns = self.topo.br
        for proto in ("iptables", "ip6tables", "arptables"):
            ns_write(ns, f"/proc/sys/net/bridge/bridge-nf-call-{proto}", "0")
        with ns.ipr() as ipr:
            found = ipr.link_lookup(ifname=BRIDGE_DEV)
            if found:
                ipr.link("del", index=found[0])
            ipr.link("add", ifname=BRIDGE_DEV, kind="bridge", br_stp_state=0, br_forward_delay=0)
            br = ipr.link_lookup(ifname=BRIDGE_DEV)[0]
            for ifname in ("a1", "b1"):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], master=br)
            ipr.link("set", index=br, state="up")
            b1 = ipr.link_lookup(ifname="b1")[0]
            ipr.neigh("add", family=AF_BRIDGE, ifindex=b1, lladdr=DST_MAC, state=NUD_NOARP, flags=NTF_MASTER)
        time.sleep(0.2)

    def counters(self) -> dict:
        return {}

    def stop(self) -> None:
        with self.topo.br.ipr() as ipr:
            found = ipr.link_lookup(ifname=BRIDGE_DEV)
            if found:
                ipr.link("del", index=found[0])


class BridgeNetfilter(LinuxBridge):
    """The Linux bridge with br_netfilter on and one iptables/ip6tables rule every bridged packet passes."""
    name = "bridge-netfilter"
    target = ["-j", "ACCEPT"]

    def _rule(self, op: str) -> None:
        for tool in ("iptables", "ip6tables"):
            self.topo.br.run([tool, "-w", op, "FORWARD", "-m", "physdev", "--physdev-is-bridged", *self.target],
                             check=op == "-I", capture_output=True)

    def start(self) -> None:
        super().start()
        for proto in ("iptables", "ip6tables"):
            ns_write(self.topo.br, f"/proc/sys/net/bridge/bridge-nf-call-{proto}", "1")
        self._rule("-I")

    def stop(self) -> None:
        self._rule("-D")
        for proto in ("iptables", "ip6tables"):
            ns_write(self.topo.br, f"/proc/sys/net/bridge/bridge-nf-call-{proto}", "0")
        super().stop()



class NfqueueAccept(BridgeNetfilter):
    """What many would write first: every bridged packet to NFQUEUE, a bare Python accept loop."""
    name = "nfqueue-accept"
    target = ["-j", "NFQUEUE", "--queue-num", str(NFQUEUE_ACCEPT_QUEUE), "--queue-bypass"]
    pid = None

    def start(self) -> None:
        code = ("from netfilterqueue import NetfilterQueue\n"
                "q = NetfilterQueue()\n"
                f"q.bind({NFQUEUE_ACCEPT_QUEUE}, lambda packet: packet.accept(), max_len={QUEUE_MAXLEN})\n"
                "q.run()\n")
        self.proc = self.topo.br.popen([*RT_PREFIX, "taskset", "-c", str(FWD_CPU), sys.executable, "-c", code],
                                       stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        time.sleep(0.5)  # bound before the rule sends it packets
        super().start()

    def stop(self) -> None:
        super().stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Reshaper:
    """`reshaper run CONFIG --mode M` in the bridge namespace, every thread pinned to FWD_CPU
    (taskset before it starts, so that the control thread inherits it too)."""

    def __init__(self, topo, mode: str, config: Path, tmp: Path):
        self.topo, self.name, self.mode, self.config, self.tmp = topo, mode, mode, config, tmp
        self.appliance = None
        self.pid = None

    def start(self, timeout: float = 240.0) -> None:   # python under the VM's TCG starts slowly
        from reshaper.bridge.launcher import RunningAppliance

        self.appliance = RunningAppliance(
            self.config, self.tmp / f"{self.name}.sock", self.mode, ns=self.topo.br,
            log_path=self.tmp / f"{self.name}.log", env={**os.environ, "RESHAPER_RUN_DIR": str(self.tmp / "run")},
            prefix=["taskset", "-c", str(FWD_CPU)], extra=["--realtime"] if REALTIME[0] else [])
        self.appliance.start(timeout)
        self.pid = self.appliance.proc.pid
        time.sleep(0.3)

    def counters(self) -> dict:
        out = {}
        for attempt in range(5):   # the control thread shares a saturated CPU: it may answer late
            try:
                out["reshaper"] = self.appliance.stats()
                break
            except OSError:
                time.sleep(0.2)
        if self.name == "nfqueue":
            # the queue's own counters, as seen in the forwarder's namespace
            try:
                with open(f"/proc/{self.pid}/net/netfilter/nfnetlink_queue") as f:
                    queues = {}
                    for line in f:
                        v = line.split()
                        queues[v[0]] = {"queue_total": int(v[2]), "queue_dropped": int(v[5]),
                                        "user_dropped": int(v[6])}
                    out["nfqueue"] = queues
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.appliance is not None:
            self.appliance.stop(timeout=15)
            self.appliance = None


class TracedReshaper(Reshaper):
    """Ring mode while a `reshaper trace --json` client reads every frame it can (to /dev/null), on
    FWD_CPU too: on the one-core board the reader takes its CPU time from the forwarder's."""

    def __init__(self, topo, config: Path, tmp: Path):
        super().__init__(topo, "ring", config, tmp)
        self.name = TRACED
        self.tracer = self._log = None

    def start(self, timeout: float = 240.0) -> None:
        super().start(timeout)
        self._log = open(self.tmp / "trace.log", "a")
        self.tracer = self.topo.br.popen(["taskset", "-c", str(FWD_CPU), sys.executable, "-m", "reshaper", "trace",
                                          "--json", "--control", str(self.appliance.control)],
                                         stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 30
        while self.appliance.stats()["trace"] is None:
            if self.tracer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("reshaper trace did not start: " + (self.tmp / "trace.log").read_text()[-800:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.tracer is not None and self.tracer.poll() is None:
            self.tracer.send_signal(signal.SIGINT)
            self.tracer.wait(10)
        if self._log is not None:
            self._log.close()
        self.tracer = self._log = None
        super().stop()


class NaivePython:
    """naive_forward() as its own process in the bridge namespace, pinned to FWD_CPU."""
    name = "python"

    def __init__(self, topo, tmp: Path):
        self.topo, self.tmp = topo, tmp
        self.stats_path = str(tmp / "naive.json")
        self.proc = None
        self.pid = None

    def start(self) -> None:
        argv = [*RT_PREFIX, "taskset", "-c", str(FWD_CPU), sys.executable, "-m", "reshaper.bench.naive_forwarder",
                "a1", "b1", self.stats_path]
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        self._err = open(self.tmp / "naive.log", "a")
        self.proc = self.topo.br.popen(argv, cwd=str(REPO), stderr=self._err)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while not os.path.exists(self.stats_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the naive Python forwarder did not start: "
                                   + (self.tmp / "naive.log").read_text()[-800:])
            time.sleep(0.05)

    def counters(self) -> dict:
        before = os.stat(self.stats_path).st_mtime_ns
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 2
        while os.stat(self.stats_path).st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(self.stats_path) as f:
            return {"python": json.load(f)}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def device_under_test(mode: str, topo, rules_path: Path, tmp: Path):
    """The device under test of one mode (settings.ALL_MODES), not started."""
    if mode == "linux-bridge":
        return LinuxBridge(topo)
    if mode == "bridge-netfilter":
        return BridgeNetfilter(topo)
    if mode == "nfqueue-accept":
        return NfqueueAccept(topo)
    if mode == "python":
        return NaivePython(topo, tmp)
    if mode == TRACED:
        return TracedReshaper(topo, rules_path, tmp)
    return Reshaper(topo, mode, rules_path, tmp)
