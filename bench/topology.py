"""The bench's settings on a namespace topology (bridge/netns.py): sysctls and RPS as seen
from inside a namespace, static neighbours, and the interface state every mode is measured in."""
from __future__ import annotations

NUD_PERMANENT = 0x80


def ns_write(ns, path: str, value: str) -> None:
    """Writes a /proc/sys/net file as seen from inside a namespace."""
    ns.run(["/bin/sh", "-c", f"test -e {path} && echo {value} > {path} || true"], check=True)


def set_rps(ns, ifname: str, mask: int) -> None:
    """RPS mask of a port's receive queue: /sys of the namespace, mounted in a private mount namespace."""
    ns.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            f"mount -t sysfs sysfs /sys && echo {mask:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"],
           check=True)


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
