"""`reshaper run --mode kernel`: the rules run in the reshaper kernel module.

The module (kmod/) hooks the Linux bridge at NF_BR_POST_ROUTING in every
network namespace and is driven over generic netlink (bridge/kernel_genl.py):
LOAD a program with the names of the two bridge ports, CLEAR it, GET_STATS.
This file is the appliance around it:

* what it cannot carry (limits): python hooks, and a program larger than the
  netlink attribute it is sent in;
* ports: a VLAN interface (`a: eth0.100`) is used as it is; the trunk form
  (`{interface: eth0, vlan: 100}`) gets a VLAN interface `eth0.100` made for
  it (PCP kept through identity QoS maps), removed again at exit;
* a bridge (RESHAPER_BRIDGE, default rsbr0) is made, or reused when it exists,
  with the two ports enslaved, as a wire (bridge/linux_bridge.py);
* the module is loaded when the family is missing: RESHAPER_KMOD (a .ko path),
  else kmod/reshaper.ko of this tree, else `modprobe reshaper`;
* SIGHUP reloads (validated by the compiler and by the kernel's verifier: a
  refused program leaves the running one), SIGTERM/SIGINT clear the program
  and undo what this run changed; the state file lets the next start do it
  after a crash (bridge/appliance.py).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

from reshaper._native import lib
from reshaper.bridge.appliance import Appliance, SetupError
from reshaper.rules.model import Config, Diagnostic

BRIDGE = os.environ.get("RESHAPER_BRIDGE", "rsbr0")
REPO = Path(__file__).resolve().parents[2]
# the program goes to the module in one netlink attribute (kmod/reshaper_genl.h)
KERNEL_MAX_PROGRAM_LEN = lib.RESHAPER_MAX_PROGRAM_LEN


# ---- the module ------------------------------------------------------------------------

def module_loaded() -> bool:
    return Path("/sys/module/reshaper").exists()


def find_module() -> str | None:
    """The .ko to insmod: RESHAPER_KMOD, else a build in kmod/ of this tree."""
    for candidate in (os.environ.get("RESHAPER_KMOD"), REPO / "kmod" / "reshaper.ko"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def ensure_module() -> None:
    """Loads the module unless it is loaded (its dependencies, bridge, by modprobe)."""
    from reshaper.bridge.kernel_genl import KernelError

    if module_loaded():
        return
    ko = find_module()
    subprocess.run(["modprobe", "bridge"], capture_output=True)
    cmd = ["insmod", ko] if ko else ["modprobe", "reshaper"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and not module_loaded():
        raise KernelError(f"cannot load the reshaper module ({' '.join(cmd)}): {r.stderr.strip()}"
                          + ("" if ko else "; build it (make -C kmod) or set RESHAPER_KMOD"))


# ---- the ports and the bridge -------------------------------------------------------------

def port_ifname(port) -> str:
    """The interface the bridge enslaves: a trunk-form port gets IFACE.VID."""
    return port.interface if port.vlan is None else f"{port.interface}.{port.vlan}"


def _add_vlan(ipr, ifname: str, parent: str, vid: int) -> None:
    identity = {"attrs": [("IFLA_VLAN_QOS_MAPPING", {"from": i, "to": i}) for i in range(8)]}
    ipr.link("add", ifname=ifname, kind="vlan", link=ipr.link_lookup(ifname=parent)[0], vlan_id=vid,
             vlan_ingress_qos=identity, vlan_egress_qos=identity)


def set_up_bridge(config: Config, changed: dict, record) -> dict[str, str]:
    """Makes the VLAN interfaces of trunk-form ports, then BRIDGE with the two port
    interfaces; every change goes into changed, recorded (record()) before it is made.
    Returns port -> bridge port name."""
    from pyroute2 import IPRoute

    from reshaper.bridge import linux_bridge

    ports = {n: port_ifname(p) for n, p in sorted(config.ports.items())}
    changed.update(made_vlans=[], linux_bridge={})
    with IPRoute() as ipr:
        for name, port in sorted(config.ports.items()):
            ifname = ports[name]
            if len(ifname) > 15:
                raise SetupError(f"port {name}: interface name {ifname} is longer than 15 characters")
            if not ipr.link_lookup(ifname=port.interface):
                raise SetupError(f"port {name}: no interface {port.interface}")
            if port.vlan is not None and not ipr.link_lookup(ifname=ifname):
                changed["made_vlans"].append(ifname)
                record()
                _add_vlan(ipr, ifname, port.interface, port.vlan)
    parents = tuple(sorted({p.interface for p in config.ports.values()} - set(ports.values())))
    linux_bridge.set_up(changed["linux_bridge"], record, BRIDGE, ports, lower=parents, hint=" (set RESHAPER_BRIDGE)")
    return ports


# ---- the appliance ---------------------------------------------------------------------------

class KernelAppliance(Appliance):
    mode = "kernel"
    namespace_wide = True   # one program per network namespace in the module
    user_space = False      # the module forwards, in the kernel's softirq
    drop_counters = ("dropped", "oversize", "errors")

    @staticmethod
    def limits(config: Config) -> list[Diagnostic]:
        """Python hooks, and a program larger than one netlink attribute."""
        problems = []
        for rule in config.rules:
            hook = rule.action("python")
            if hook is not None:
                problems.append(Diagnostic.at(
                    config.path, hook.node.start_mark, f"rule {rule.name!r}: python hooks run in user space; the "
                                                       "kernel module cannot call them (use --mode ring or nfqueue)"))
        length = len(config.program)
        if length > KERNEL_MAX_PROGRAM_LEN:
            problems.append(Diagnostic.at(
                config.path, config.rules_node.start_mark if config.rules_node else None,
                f"expected rules that compile to at most {KERNEL_MAX_PROGRAM_LEN} bytes for the kernel module, these "
                f"take {length} (the program goes in one netlink attribute; use --mode ring or nfqueue)"))
        return problems

    @staticmethod
    def restore(saved: dict) -> None:
        """Clears the program and undoes what set_up_bridge recorded."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        from reshaper.bridge import linux_bridge
        from reshaper.bridge.kernel_genl import KernelError, ReshaperSocket

        if module_loaded():
            with contextlib.suppress(KernelError, NetlinkError, OSError), ReshaperSocket() as sock:
                sock.clear()
        linux_bridge.restore(linux_bridge.saved_state(saved))
        with IPRoute() as ipr:
            for ifname in saved.get("made_vlans", []):
                with contextlib.suppress(NetlinkError, IndexError):
                    ipr.link("del", index=ipr.link_lookup(ifname=ifname)[0])

    def set_up(self, program: bytes) -> None:
        from reshaper.bridge.kernel_genl import ReshaperSocket

        ensure_module()
        self.sock = ReshaperSocket()
        self._lock = threading.Lock()  # the control thread and the main loop share the socket
        self.bridge_ports = set_up_bridge(self.config, self.changed, self.record)

    @staticmethod
    def same_ports(old: Config, new: Config) -> bool:
        # eth0.100 and {interface: eth0, vlan: 100} are the same bridge port
        return {n: port_ifname(p) for n, p in old.ports.items()} == {n: port_ifname(p) for n, p in new.ports.items()}

    def load(self, program: bytes, config: Config):
        """The kernel verifies too: a refused program leaves the running one (KernelError)."""
        with self._lock:
            self.sock.load(program, self.bridge_ports["a"], self.bridge_ports["b"], self.seed)
        return KernelCounters(self)

    def forward(self) -> None:
        time.sleep(self.slice_ms / 1000)  # the kernel forwards; this process only answers

    def kernel_stats(self) -> dict:
        with self._lock:
            return self.sock.stats()

    def data_stats(self) -> dict:
        from reshaper.bridge.kernel_genl import PORT_COUNTERS

        k = self.kernel_stats()
        ports = {name: {"bridge_port": self.bridge_ports[name], **(k["ports"].get(name) or
                                                                  dict.fromkeys(PORT_COUNTERS, 0))}
                 for name in ("a", "b")}
        return {"bridge": BRIDGE, "ports": ports, "queued": k["queued"], "queue_drops": k["queue_drops"]}

    def trace_open(self, rule: str | None):
        """No session here: the module's tracepoint is read by the client itself (bridge/trace.py)."""
        return None

    def trace_kernel_info(self) -> dict:
        """What the client needs to read the tracepoint: this namespace, the running rules' names."""
        from reshaper.bridge.control import netns_id

        with self.swap_lock:
            return {"mode": self.mode, "tracefs": True, "netns": netns_id(), "config": self.config.path,
                    "rules": [r.name for r in self.config.rules]}

    def tear_down(self) -> None:
        from reshaper.bridge.kernel_genl import KernelError

        if getattr(self, "sock", None):
            with contextlib.suppress(KernelError), self._lock:
                self.sock.clear()
            self.sock.close()


class KernelCounters:
    """The engine counters of the program in the kernel, shaped like reshaper.rules.binding.Engine's."""

    def __init__(self, appliance: KernelAppliance):
        self.appliance = appliance
        self._last: tuple[float, dict] = (0.0, {})

    def _stats(self) -> dict:
        # one netlink request serves a whole snapshot (engine, then each rule)
        at, stats = self._last
        if time.monotonic() - at > 0.05:
            stats = self.appliance.kernel_stats()
            self._last = (time.monotonic(), stats)
        return stats

    def counters(self) -> dict:
        return self._stats()["engine"]

    def rule_counters(self, index: int) -> dict:
        return self._stats()["rules"][index]

    def time_zero(self) -> tuple[int, int] | None:
        """The module's (kmod/rs_genl.c sets it at LOAD on ktime_get_ns, CLOCK_MONOTONIC)."""
        return self._stats()["time_zero"]
