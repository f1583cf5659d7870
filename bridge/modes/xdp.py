"""`reshaper run --mode xdp`: ring mode's forwarder on AF_XDP sockets.

A tiny XDP program (ring/bpf/xsk_redirect.c) on each port's interface hands
every frame to the forwarder's AF_XDP socket before the kernel makes a socket
buffer of it; the same C loop as ring mode (ring/forwarder.c) runs the engine
on it and sends it out of the other port's socket (ring/xsk.c). Native XDP
where the driver has it (veth, virtio-net, the BeagleBone's cpsw), else the
generic hook; the status line says which.

Set-up is ring mode's (GRO off, ports brought up), and the state file also
names the interfaces that get the program, so a killed run's is taken off at
the next start. Frames reach XDP before VLAN untagging, so it carries plain
ports only (a VLAN interface such as eth0.100 is one): trunk form is refused.
An interface must have one receive queue (one socket serves it); a frame must
fit a page with the kernel's headroom (MTU up to about 3,800).
"""
from __future__ import annotations

from reshaper.bridge.modes.ring import RingAppliance
from reshaper.rules.model import Config, Diagnostic


class XdpAppliance(RingAppliance):
    mode = "xdp"

    @staticmethod
    def limits(config: Config) -> list[Diagnostic]:
        """Trunk form: the XDP program sees a frame before the kernel looks at its tag."""
        return [Diagnostic.at(config.path, port.node.start_mark if port.node else None,
                              f"port {name}: xdp mode carries plain ports only, not VLAN {port.vlan} on trunk "
                              f"{port.interface}: name the VLAN interface ({port.interface}.{port.vlan}) "
                              "or use --mode ring")
                for name, port in sorted(config.ports.items()) if port.vlan is not None]

    @staticmethod
    def restore(saved: dict) -> None:
        """Ring mode's restore, and the XDP program of a run that was killed taken off its interfaces."""
        from reshaper.ring import lib

        for iface in saved.get("xdp", []):
            lib.rs_xsk_detach_ours(iface.encode())
        RingAppliance.restore(saved)

    def set_up(self, program: bytes) -> None:
        self.changed["xdp"] = sorted({p.interface for p in self.config.ports.values()})
        super().set_up(program)

    def carrier(self) -> int:
        from reshaper.ring import lib

        return lib.RS_CARRIER_XDP

    def summary(self) -> str:
        attached = "; ".join(f"{name}: {self.forwarder.xdp_attachment(i)}"
                             for i, name in enumerate(sorted(self.config.ports)))
        return f"{super().summary()} ({attached})"
