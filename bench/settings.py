"""What every part of `reshaper bench` agrees on: the modes it compares, which CPU runs
what and the placements of the device under test's receive, the loss threshold and load
points of a measurement, and the progress log."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from reshaper.bridge.modes import MODES

CACHE = Path(os.environ.get("RESHAPER_CACHE", Path.home() / ".cache" / "reshaper")) / "bench"

# the appliance's modes (bridge/modes/), then the baselines, then NFQUEUE's yardsticks (on request)
BASELINES = ("linux-bridge", "python")
YARDSTICKS = ("bridge-netfilter", "nfqueue-accept")
# on request: ring mode while `reshaper trace` reads every frame (bridge/trace.py), against ring mode
TRACED = "ring-traced"
ALL_MODES = (*MODES, *BASELINES, *YARDSTICKS, TRACED)
# a mode's own yardstick: the report gives the mode's ratios to it (same run, size and placement)
YARDSTICK_OF = {"nfqueue": "nfqueue-accept", TRACED: "ring"}
DEFAULT_MODES = (*MODES, *BASELINES)
QUICK_MODES = tuple(m for m in DEFAULT_MODES if m != "kernel")   # --quick: what runs on any kernel
# --board (bench/board.py): the modes a deployed board switches between, and its baseline
BOARD_MODES = (*MODES, "linux-bridge")
DEFAULT_BOARD_MODES = tuple(m for m in BOARD_MODES if m != "xdp")
KERNEL_PATHS = ("kernel", "linux-bridge")   # CPU per frame: softirq time, not a process's

# the generator (and this process: probe, bookkeeping) on one CPU, the device under test on another
GEN_CPU, FWD_CPU = 0, 1
# where the device under test's receive work runs (topology.placed() applies one): veth runs a
# frame's receive on the sending CPU, so in `split` the generator's CPU receives for the device
# under test; `single-core` steers that receive to FWD_CPU (RPS), all of its work on one CPU as on
# the one-core board, and is the default of the headline figures; `single-core+hog` is single-core
# with a busy loop on FWD_CPU besides (topology.cpu_hog): a board that runs other work too
HOG = "single-core+hog"
PLACEMENTS = ("single-core", "split", HOG)
DEFAULT_PLACEMENT = "single-core"
# --placement both / hog: each mode in each placement of the set, in turn, the default first
PLACEMENT_SETS = {"both": ("single-core", "split"), "hog": ("single-core", HOG)}
PLACEMENT_CHOICES = (*PLACEMENTS, *PLACEMENT_SETS)

# single-core held when the generator's CPU received at most this many frames per forwarded frame
# over a measurement's trials: one that receives for the device under test takes in one (a1) or
# two (a1 and b0, the kernel paths) per frame; the margin absorbs this machine's other traffic
PLACEMENT_MAX_GEN_RX_PER_FRAME = 0.1
# --realtime: reshaper's modes run with `run --realtime` (bridge/realtime.py), the Python baselines
# under chrt at the same priority (RT_PREFIX)
REALTIME: list[bool] = [False]
RT_PREFIX: list[str] = []

LOSS_FREE = 0.001          # RFC 2544 style: loss below 0.1 %
LOAD_POINTS = (0.1, 0.5, 0.9)   # latency at these fractions of the loss-free rate
# offered at these multiples of the loss-free rate, a mode that livelocks delivers less than it did
# loss-free; LIVELOCK below this fraction of its loss-free rate delivered (issue 17's target: 0.9)
OVERLOAD_FACTORS = (1.5, 3.0)
LIVELOCK = 0.9
# issue 17's targets for a shared CPU (single-core+hog against single-core, same mode and size):
# loss-free rate at least this fraction of idle, p99 at half the loss-free rate at most this multiple
SHARED_CPU_MIN_LOSS_FREE = 0.8
SHARED_CPU_MAX_P99 = 2.0
USER_HZ = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def placements_asked(placement: str) -> list[str]:
    """The placements a --placement asks for, the headline one first."""
    return list(PLACEMENT_SETS.get(placement, (placement,)))


def single_core(placement: str) -> bool:
    """Whether a placement puts all of the device under test's work on FWD_CPU."""
    return placement in ("single-core", HOG)
