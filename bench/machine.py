"""The machine a bench runs on, as its report records it: CPUs, kernel, load, what else
is busy (a shared machine skews figures), whether a VM runs, and software versions."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from reshaper.lab import REPO


def qemu_running() -> bool:
    return "qemu" in subprocess.run(["ps", "-eo", "comm"], capture_output=True, text=True).stdout


def machine(top: bool = True) -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    busy = []
    if top and shutil.which("top"):
        # %CPU over one second (ps shows lifetime averages): the second of top's two samples
        text = subprocess.run(["top", "-b", "-n", "2", "-d", "1", "-w", "200"], capture_output=True,
                              text=True).stdout
        for line in text.split("PID USER")[-1].splitlines()[1:]:
            f = line.split()
            try:
                if len(f) >= 12 and float(f[8].replace(",", ".")) >= 5.0:
                    busy.append(f"{f[11]} {f[8]} %")
            except ValueError:
                pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "kernel_version": platform.version(),
            "machine": platform.machine(), "cpu_model": model,
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "busy_processes": busy[:6], "qemu_running": qemu_running(),
            "modules_loadable": os.path.exists("/proc/modules")}


def versions() -> dict:
    """Versions from package metadata: nothing is imported (matplotlib under the VM's TCG is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": sys.version.split()[0]}
    for dist in ("reshaper", "pyroute2", "PyYAML", "scapy", "cffi", "netfilterqueue", "matplotlib"):
        try:
            v[dist] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        v["git"] = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=5).stdout.strip() or "?"
    except Exception:
        pass
    return v
