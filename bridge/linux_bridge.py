"""The Linux bridge device that nfqueue and kernel mode forward through.

set_up makes a bridge, or reuses one that exists, gives it WIRE_BRIDGE (and
the caller's own settings), enslaves the two port interfaces and brings up
what is down. Every change goes into a state dict, written (record()) before
it is made; restore(state) undoes exactly those changes, at exit or, from the
state file, at the next start after a crash (bridge/appliance.py). Which
bridge, under which name, is the mode's choice (bridge/modes/).
"""
from __future__ import annotations

import contextlib

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP

from reshaper.bridge.appliance import SetupError

# Every mode forwards every frame to the other port (docs/modes.md, "One forwarding
# behaviour"): no MAC learning (ageing 0), and link-local groups passed but
# 01:80:c2:00:00:00-02 (STP, pause, LACP), which the kernel never forwards
WIRE_BRIDGE = {"br_ageing_time": 0, "br_group_fwd_mask": 0xFFF8}


def common_master(ports: dict[str, str]) -> str | None:
    """The bridge (or bond) every port interface is a port of already, if there is one.
    ports: port name -> interface; SetupError names a port whose interface is missing."""
    masters = set()
    with IPRoute() as ipr:
        for name, ifname in sorted(ports.items()):
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise SetupError(f"port {name}: no interface {ifname}")
            masters.add(ipr.get_links(found[0])[0].get_attr("IFLA_MASTER"))
        if len(masters) != 1 or None in masters:
            return None
        return ipr.get_links(masters.pop())[0].get_attr("IFLA_IFNAME")


def set_up(state: dict, record, name: str, ports: dict[str, str], settings: dict | None = None,
           lower: tuple[str, ...] = (), hint: str = "") -> None:
    """Makes bridge `name` a wire between the port interfaces (port name -> interface).

    A bridge of that name is reused (its previous settings kept in state to put
    back), else made, without STP. settings (IFLA_BR_* as pyroute2 names them,
    br_...) go on top of WIRE_BRIDGE. lower: interfaces under the ports (a
    VLAN's parent) that must be up too. A port interface that is a port of
    another bridge or bond is refused. hint ends the error for a `name` that
    is not a bridge.
    """
    wanted = {**WIRE_BRIDGE, **(settings or {})}
    state.update(name=name, made=False, previous=None, enslaved=[], brought_up=[])
    with IPRoute() as ipr:
        for port, ifname in sorted(ports.items()):
            if not ipr.link_lookup(ifname=ifname):
                raise SetupError(f"port {port}: no interface {ifname}")
        found = ipr.link_lookup(ifname=name)
        if found:
            link = ipr.get_links(found[0])[0]
            if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
                raise SetupError(f"{name} exists and is not a bridge{hint}")
            info = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
            state["previous"] = {key: info.get_attr("IFLA_" + key.upper()) for key in wanted}
            record()
            ipr.link("set", index=found[0], kind="bridge", **wanted)
        else:
            state["made"] = True
            record()
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0, **wanted)
        bridge = ipr.link_lookup(ifname=name)[0]
        for ifname in [*(ports[port] for port in sorted(ports)), *lower]:
            index = ipr.link_lookup(ifname=ifname)[0]
            link = ipr.get_links(index)[0]
            if ifname in ports.values():
                master = link.get_attr("IFLA_MASTER")
                if master and master != bridge:
                    raise SetupError(f"{ifname} is a port of another bridge or bond (index {master})")
                if not master:
                    state["enslaved"].append(ifname)
                    record()
                    ipr.link("set", index=index, master=bridge)
            if not link["flags"] & IFF_UP and ifname not in state["brought_up"]:
                state["brought_up"].append(ifname)
                record()
                ipr.link("set", index=index, state="up")
        if not ipr.get_links(bridge)[0]["flags"] & IFF_UP:
            if not state["made"]:   # a bridge made here goes as a whole
                state["brought_up"].append(name)
                record()
            ipr.link("set", index=bridge, state="up")


def saved_state(saved: dict) -> dict:
    """This module's part of a mode's state file. A file written before this module existed
    (reshaper 0.1.0 up to the layout rework) kept it in the mode's own keys: nfqueue mode's
    bridge_created / bridge_reused, kernel mode's bridge / made_bridge / enslaved / brought_up;
    read those, so that a run killed before an upgrade is still cleaned up after it."""
    if "linux_bridge" in saved:
        return saved["linux_bridge"]
    if saved.get("bridge_created"):
        return {"name": saved["bridge_created"], "made": True}
    if saved.get("bridge_reused"):
        reused = saved["bridge_reused"]
        return {"name": reused["name"], "made": False,
                "previous": {"br_" + key: value for key, value in reused.items() if key != "name"}}
    if saved.get("bridge"):
        return {"name": saved["bridge"], "made": bool(saved.get("made_bridge")),
                "enslaved": saved.get("enslaved", []), "brought_up": saved.get("brought_up", [])}
    return {}


def restore(state: dict) -> None:
    """Undoes what set_up recorded in state: a bridge it made goes (its ports with it), a
    reused one gets its ports and settings back; interfaces it brought up go down."""
    if not state.get("name"):
        return
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=state["name"])
        if found and state.get("made"):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=found[0])
        elif found:
            for ifname in state.get("enslaved", []):
                with contextlib.suppress(NetlinkError, IndexError):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], master=0)
            previous = {k: v for k, v in (state.get("previous") or {}).items() if v is not None}
            if previous:
                with contextlib.suppress(NetlinkError):
                    ipr.link("set", index=found[0], kind="bridge", **previous)
        for ifname in state.get("brought_up", []):
            with contextlib.suppress(NetlinkError, IndexError):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="down")
