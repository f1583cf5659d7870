"""`reshaper run --mode ring`: the appliance on PACKET_MMAP rings.

Set-up (pyroute2): the port interfaces must exist; a port that is down is
brought up; GRO/GSO/TSO are turned off so that no frame larger than the MTU
reaches the rings. The C loop (ring/ring.c) then runs in slices with the GIL
released; between slices Python reloads, answers `stats` and prints status.
"""
from __future__ import annotations

from pyroute2 import IPRoute

from bridge.appliance import Appliance, SetupError

IFF_UP = 0x1


def restore(saved: dict) -> None:
    """Puts interfaces back as the state file recorded them (offloads, link state)."""
    from ring import RingError, set_offloads

    for iface, bits in saved.get("offloads", {}).items():
        try:
            if bits:
                set_offloads(iface, bits, True)
        except RingError:
            pass  # gone since: nothing to restore
    with IPRoute() as ipr:
        for iface in saved.get("brought_up", []):
            found = ipr.link_lookup(ifname=iface)
            if found:
                ipr.link("set", index=found[0], state="down")


def interface_mtus(config) -> tuple[dict[str, int], list[str]]:
    """The MTU of each port's interface and the interfaces that are down; a missing one is an error."""
    mtus, down = {}, []
    with IPRoute() as ipr:
        for name, port in sorted(config.ports.items()):
            found = ipr.link_lookup(ifname=port.interface)
            if not found:
                hint = ""
                if "." in port.interface:
                    parent, _, vid = port.interface.rpartition(".")
                    hint = f" (create it: ip link add link {parent} name {port.interface} type vlan id {vid})"
                raise SetupError(f"port {name}: no interface {port.interface}{hint}")
            link = ipr.get_links(found[0])[0]
            mtus[name] = link.get_attr("IFLA_MTU")
            if not link["flags"] & IFF_UP and port.interface not in down:
                down.append(port.interface)
    return mtus, down


class RingAppliance(Appliance):
    mode = "ring"
    drop_counters = ("ring_drops", "tx_full", "oversize")

    def set_up(self, program: bytes) -> None:
        from ring import GRO, GSO, TSO, RingBridge, RingError, RingPort, set_offloads

        mtus, down = interface_mtus(self.config)
        self.changed.update(offloads={}, brought_up=[])
        for iface in sorted({p.interface for p in self.config.ports.values()}):
            try:
                self.changed["offloads"][iface] = set_offloads(iface, GRO | GSO | TSO, False)
            except RingError as exc:
                raise SetupError(f"cannot turn off GRO/GSO/TSO on {iface}: {exc}") from None
            self.record()
        self.changed["brought_up"] = down
        self.record()
        with IPRoute() as ipr:
            for iface in down:
                ipr.link("set", index=ipr.link_lookup(ifname=iface)[0], state="up")
        a, b = (RingPort(p.interface, p.vlan, mtus[n]) for n, p in sorted(self.config.ports.items()))
        self.bridge = RingBridge(a, b)

    def load(self, program: bytes, config):
        if any(rule.action("python") for rule in config.rules):
            raise SetupError("python hooks are not carried by ring mode yet: use --mode nfqueue or apply")
        return self.bridge.load(program, self.seed)

    def forward(self) -> None:
        self.bridge.run(self.slice_ms)

    def data_stats(self) -> dict:
        return self.bridge.stats()

    def tear_down(self) -> None:
        if getattr(self, "bridge", None):
            self.bridge.close()
