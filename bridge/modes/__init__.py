"""The modes of `reshaper run`, by name: the one list of carriers.

Each mode is an Appliance subclass (bridge/appliance.py) in a module of its
own here. It declares its name (`mode`), whether it holds what a network
namespace has one of (`namespace_wide`), what it cannot carry (`limits`,
which `check --mode` and `run` ask), how it sets up, forwards, reports and
tears down, and how it undoes a run's changes from a state file (`restore`).
A new carrier is a module here and a line in MODES.

`check` asks every mode for its limits, and the command line lists them: so
the mode modules import what set-up needs (pyroute2, the ring, the netlink
family, netfilterqueue) inside the functions that use it, and importing this
package loads none of it.
"""
from __future__ import annotations

from reshaper.bridge.appliance import Appliance
from reshaper.bridge.modes.kernel import KernelAppliance
from reshaper.bridge.modes.nfqueue import NfqueueAppliance
from reshaper.bridge.modes.ring import RingAppliance
from reshaper.bridge.modes.xdp import XdpAppliance

# in the order `check` lists them; ring first, the default
MODES: dict[str, type[Appliance]] = {
    mode.mode: mode for mode in (RingAppliance, XdpAppliance, NfqueueAppliance, KernelAppliance)}
DEFAULT = "ring"


def get(name: str) -> type[Appliance]:
    """The mode called name (KeyError for none)."""
    return MODES[name]
