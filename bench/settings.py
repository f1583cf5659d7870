"""What every part of `reshaper bench` agrees on: the modes it compares, which CPU runs
what, the loss threshold and load points of a measurement, and the progress log."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from reshaper.bridge.modes import MODES

CACHE = Path(os.environ.get("RESHAPER_CACHE", Path.home() / ".cache" / "reshaper")) / "bench"

# the appliance's modes (bridge/modes/), then the baselines, then NFQUEUE's yardsticks (on request)
BASELINES = ("linux-bridge", "python")
YARDSTICKS = ("bridge-netfilter", "nfqueue-accept")
ALL_MODES = (*MODES, *BASELINES, *YARDSTICKS)
DEFAULT_MODES = (*MODES, *BASELINES)
QUICK_MODES = tuple(m for m in DEFAULT_MODES if m != "kernel")   # --quick: what runs on any kernel
KERNEL_PATHS = ("kernel", "linux-bridge")   # CPU per frame: softirq time, not a process's

# the generator (and this process: probe, bookkeeping) on one CPU, the device under test on another
GEN_CPU, FWD_CPU = 0, 1
RT_PREFIX: list[str] = []   # --rt: ["chrt", "-f", "50"] for the user-space forwarders

LOSS_FREE = 0.001          # RFC 2544 style: loss below 0.1 %
LOAD_POINTS = (0.1, 0.5, 0.9)   # latency at these fractions of the loss-free rate
USER_HZ = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
