"""`reshaper run CONFIG --mode M`: validate, then hand over to the mode."""
from __future__ import annotations

import sys

from reshaper.bridge import modes
from reshaper.bridge.appliance import SetupError, log
from reshaper.rules.config import load_config
from reshaper.rules.model import ConfigError


def run(config_path: str, mode: str, control: str | None, status_interval: float, seed: int,
        hooks_path: list[str] | None = None, busy_poll_us: int = 0) -> int:
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
    try:
        return Mode(config, control, status_interval, seed, hooks_path, busy_poll_us).run()
    except SetupError as exc:
        log(str(exc))
        return 1
