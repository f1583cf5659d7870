"""`reshaper run --mode xdp`: ring mode's forwarder on AF_XDP sockets.

A tiny XDP program (ring/bpf/xsk_redirect.c) on each port's interface hands
every frame to the forwarder's AF_XDP socket before the kernel makes a socket
buffer of it; the same C loop as ring mode (ring/forwarder.c) runs the engine
on it and sends it out of the other port's socket (ring/xsk.c). Native XDP
where the driver has it (veth, virtio-net, the BeagleBone's cpsw), else the
generic hook; the status line says which.

Set-up is ring mode's (GRO off, ports brought up). The program is attached
through a BPF link that the process holds, so the kernel takes it off when the
process ends, killed or not: nothing of it is left for a state file. Frames
reach XDP before VLAN untagging, so it carries plain ports only (a VLAN
interface such as eth0.100 is one): trunk form is refused.
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

    def carrier(self) -> int:
        from reshaper.ring import lib

        return lib.RS_CARRIER_XDP

    def summary(self) -> str:
        attached = "; ".join(f"{name}: {self.forwarder.xdp_attachment(i)}"
                             for i, name in enumerate(sorted(self.config.ports)))
        return f"{super().summary()} ({attached})"
