"""`reshaper run` as a child process, for the demo, the live tests and the benchmark.

RunningAppliance builds the command line, starts it (in a network namespace
when given one), waits until its control socket answers `stats` (the
appliance opens it once set-up is done: bridge/appliance.py) and stops it
with a signal, killing it when it does not exit in time.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from reshaper.bridge.control import read_stats


class RunningAppliance:
    """`reshaper run CONFIG [--mode MODE] --control CONTROL`, without status lines.

    mode: None for the command's default; ns: a Namespace (bridge/netns.py) to
    run it in; log_path: a file its output (stdout and stderr) is appended to,
    else it inherits ours; env: its environment (a dict, changeable until
    start); prefix: words put before the interpreter (taskset, chrt); extra:
    more `run` options.
    """

    def __init__(self, config, control: str, mode: str | None = None, *, ns=None, log_path=None,
                 env: dict | None = None, prefix=(), extra=()):
        self.ns = ns
        self.control = str(control)
        self.log_path = Path(log_path) if log_path is not None else None
        self.env = env
        mode_args = ["--mode", mode] if mode else []
        self.argv = [*prefix, sys.executable, "-m", "reshaper", "run", str(config), *mode_args,
                     "--control", self.control, "--status-interval", "0", *extra]
        self.what = " ".join(["reshaper run", *mode_args])  # what errors call it
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 15.0) -> "RunningAppliance":
        """Starts it and returns once `stats` answers; RuntimeError (with its log) when it
        exits first or does not answer within timeout seconds."""
        if self.log_path is not None:
            self._log = open(self.log_path, "a")
        popen = self.ns.popen if self.ns is not None else subprocess.Popen
        self.proc = popen(self.argv, stdout=self._log, stderr=self._log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._failed(f"exited with status {self.proc.returncode}")
            try:
                read_stats(self.control)
                return self
            except OSError:
                time.sleep(0.05)
        self._failed(f"did not answer on {self.control} within {timeout:g} s")

    def _failed(self, what: str):
        message = f"{self.what} {what}"
        if self.log_path is not None:
            message += f": {self.log()}"
        self.stop()
        raise RuntimeError(message)

    def stats(self) -> dict:
        return read_stats(self.control)

    def log(self) -> str:
        """What it wrote so far ('' without a log file)."""
        return self.log_path.read_text() if self.log_path is not None and self.log_path.exists() else ""

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Sends sig and waits timeout seconds for it to exit, then kills it; its exit status."""
        if self.proc is None:
            return 0
        try:
            if self.proc.poll() is not None:
                return self.proc.returncode
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> "RunningAppliance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
