"""`reshaper run CONFIG --mode M`: validate, then hand over to the mode."""
from __future__ import annotations

import sys

from reshaper.bridge import modes
from reshaper.bridge.appliance import SetupError, log
from reshaper.bridge.realtime import RealtimeError, plan
from reshaper.rules.config import load_config
from reshaper.rules.model import ConfigError


def run(config_path: str, mode: str, control: str | None, status_interval: float, seed: int,
        hooks_path: list[str] | None = None, busy_poll_us: int = 0, realtime: bool = False,
        cpu: int | None = None, metrics: tuple[str, int] | None = None) -> int:
    Mode = modes.get(mode)
    try:
        config = load_config(config_path, hooks_path=hooks_path)
        problems = Mode.limits(config)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        return 1
    # --realtime and --cpu: everything they need is checked here, before any set-up
    rt = None
    if (realtime or cpu is not None) and not Mode.user_space:
        log(f"{mode} mode forwards in the kernel: --realtime and --cpu have no thread of this process to "
            "apply to, and change nothing")
    else:
        try:
            rt = plan(realtime, cpu, busy_poll_us)
        except RealtimeError as exc:
            for line in str(exc).splitlines():
                log(line)
            return 1
    try:
        return Mode(config, control, status_interval, seed, hooks_path, busy_poll_us, rt, metrics).run()
    except SetupError as exc:
        log(str(exc))
        return 1
