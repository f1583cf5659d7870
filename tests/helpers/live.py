"""Helpers for tests of the appliance live, in network namespaces (the hosts' frame
taps are lab/frame_tap.py's FrameTap, shared with the emulated board).

LiveAppliance: `reshaper run` in the bridge namespace (bridge/launcher.py), its
files in the test's tmp_path.
"""
from __future__ import annotations

import os

from reshaper.bridge.launcher import RunningAppliance
from reshaper.bridge.netns import Namespace


class LiveAppliance(RunningAppliance):
    """`reshaper run CONFIG` in namespace ns; its control socket, log and run dir in tmp_path."""

    def __init__(self, ns: Namespace, config_path, tmp_path, mode: str | None = None, extra=()):
        super().__init__(config_path, tmp_path / f"{ns.name}.sock", mode, ns=ns, log_path=tmp_path / f"{ns.name}.log",
                         env={**os.environ, "RESHAPER_RUN_DIR": str(tmp_path / "run")}, extra=extra)
