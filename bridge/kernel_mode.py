"""`reshaper run --mode kernel`: the rules run in the reshaper kernel module.

The module (kmod/) hooks the Linux bridge at NF_BR_POST_ROUTING in every
network namespace and is driven over generic netlink (family "reshaper",
kmod/reshaper_genl.h): LOAD a program with the names of the two bridge ports,
CLEAR it, GET_STATS. This file is the user-space side of that family
(pyroute2's GenericNetlinkSocket) and the appliance around it:

* ports: a VLAN interface (`a: eth0.100`) is used as it is; the trunk form
  (`{interface: eth0, vlan: 100}`) gets a VLAN interface `eth0.100` made for
  it (PCP kept through identity QoS maps), removed again at exit;
* a bridge (RESHAPER_BRIDGE, default rsbr0) is made, or reused when it exists,
  with the two ports enslaved; ageing 0 (a two-port hub: no learning surprises)
  and link-local groups forwarded (group_fwd_mask, all but 01:80:c2:00:00:00-02);
* the module is loaded when the family is missing: RESHAPER_KMOD (a .ko path),
  else kmod/reshaper.ko of this tree, else `modprobe reshaper`;
* SIGHUP reloads (validated by the compiler and by the kernel's verifier: a
  refused program leaves the running one), SIGTERM/SIGINT clear the program
  and remove what this run created; the state file lets the next start do it
  after a crash (bridge/appliance.py).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from reshaper.bridge.appliance import WIRE_BRIDGE, Appliance
from reshaper.bridge.kernel_genl import PORT_COUNTERS, KernelError, ReshaperSocket
from reshaper.rules.config import Config

BRIDGE = os.environ.get("RESHAPER_BRIDGE", "rsbr0")
REPO = Path(__file__).resolve().parent.parent
IFF_UP = 0x1


# ---- one-shot helpers ------------------------------------------------------------------

def load(program: bytes, port_a: str, port_b: str, seed: int = 0) -> None:
    with ReshaperSocket() as s:
        s.load(program, port_a, port_b, seed)


def clear() -> None:
    with ReshaperSocket() as s:
        s.clear()


def get_stats() -> dict:
    with ReshaperSocket() as s:
        return s.stats()


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
    if module_loaded():
        return
    ko = find_module()
    subprocess.run(["modprobe", "bridge"], capture_output=True)
    cmd = ["insmod", ko] if ko else ["modprobe", "reshaper"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and not module_loaded():
        raise KernelError(f"cannot load the reshaper module ({' '.join(cmd)}): {r.stderr.strip()}"
                          + ("" if ko else "; build it (make -C kmod) or set RESHAPER_KMOD"))


# ---- the bridge ----------------------------------------------------------------------------

def port_ifname(port) -> str:
    """The interface the bridge enslaves: a trunk-form port gets IFACE.VID."""
    return port.interface if port.vlan is None else f"{port.interface}.{port.vlan}"


def _add_vlan(ipr: IPRoute, ifname: str, parent: str, vid: int) -> None:
    identity = {"attrs": [("IFLA_VLAN_QOS_MAPPING", {"from": i, "to": i}) for i in range(8)]}
    ipr.link("add", ifname=ifname, kind="vlan", link=ipr.link_lookup(ifname=parent)[0], vlan_id=vid,
             vlan_ingress_qos=identity, vlan_egress_qos=identity)


def set_up_bridge(config: Config, changed: dict, record) -> dict[str, str]:
    """Makes (or reuses) BRIDGE with the two port interfaces; every change goes into
    changed, recorded (record()) before it is made. Returns port -> bridge port name."""
    ports = {n: port_ifname(p) for n, p in sorted(config.ports.items())}
    changed.update(bridge=BRIDGE, made_vlans=[], made_bridge=False, enslaved=[], brought_up=[])
    with IPRoute() as ipr:
        for name, port in sorted(config.ports.items()):
            ifname = ports[name]
            if len(ifname) > 15:
                raise KernelError(f"port {name}: interface name {ifname} is longer than 15 characters")
            if not ipr.link_lookup(ifname=port.interface):
                raise KernelError(f"port {name}: no interface {port.interface}")
            if port.vlan is not None and not ipr.link_lookup(ifname=ifname):
                changed["made_vlans"].append(ifname)
                record()
                _add_vlan(ipr, ifname, port.interface, port.vlan)
        found = ipr.link_lookup(ifname=BRIDGE)
        if found:
            if ipr.get_links(found[0])[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
                raise KernelError(f"{BRIDGE} exists and is not a bridge (set RESHAPER_BRIDGE)")
        else:
            changed["made_bridge"] = True
            record()
            ipr.link("add", ifname=BRIDGE, kind="bridge", br_stp_state=0, **WIRE_BRIDGE)
        br = ipr.link_lookup(ifname=BRIDGE)[0]
        for ifname in [*ports.values(), *{p.interface for p in config.ports.values()}]:
            idx = ipr.link_lookup(ifname=ifname)[0]
            link = ipr.get_links(idx)[0]
            if ifname in ports.values():
                master = link.get_attr("IFLA_MASTER")
                if master and master != br:
                    raise KernelError(f"{ifname} is a port of another bridge or bond (index {master})")
                if not master:
                    changed["enslaved"].append(ifname)
                    record()
                    ipr.link("set", index=idx, master=br)
            if not link["flags"] & IFF_UP:
                changed["brought_up"].append(ifname)
                record()
                ipr.link("set", index=idx, state="up")
        ipr.link("set", index=br, state="up")
    return ports


def restore(saved: dict) -> None:
    """Clears the program and undoes what set_up_bridge recorded."""
    if module_loaded():
        with contextlib.suppress(KernelError, NetlinkError, OSError):
            clear()
    with IPRoute() as ipr:
        made = saved.get("made_vlans", []) + ([saved["bridge"]] if saved.get("made_bridge") else [])
        for ifname in made:
            with contextlib.suppress(NetlinkError, IndexError):
                ipr.link("del", index=ipr.link_lookup(ifname=ifname)[0])
        if not saved.get("made_bridge"):
            for ifname in saved.get("enslaved", []):
                with contextlib.suppress(NetlinkError, IndexError):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], master=0)
        for ifname in saved.get("brought_up", []):
            with contextlib.suppress(NetlinkError, IndexError):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="down")


# ---- the appliance ---------------------------------------------------------------------------

class KernelAppliance(Appliance):
    mode = "kernel"
    namespace_wide = True   # one program per network namespace in the module
    drop_counters = ("dropped", "oversize", "errors")

    def set_up(self, program: bytes) -> None:
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
        k = self.kernel_stats()
        ports = {name: {"bridge_port": self.bridge_ports[name], **(k["ports"].get(name) or
                                                                  dict.fromkeys(PORT_COUNTERS, 0))}
                 for name in ("a", "b")}
        return {"bridge": BRIDGE, "ports": ports, "queued": k["queued"], "queue_drops": k["queue_drops"]}

    def tear_down(self) -> None:
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
