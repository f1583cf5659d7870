"""The board's side of `reshaper bench --board` (bench/board.py starts it over SSH, as root):
one JSON request a line on stdin, one JSON answer a line on stdout, so that a trial's counters
cost a read of /proc and one netlink dump, not an SSH login and a Python start each.

    {"cmd": "facts"}                      kernel, CPU, board model, perf, the service's mode, rules
    {"cmd": "snap", "ports": [A, B]}      /proc/stat, softirqs, softnet, A's and B's IFLA_STATS64,
                                          the service's `reshaper stats` (None while it is stopped)
    {"cmd": "mode", "mode": M}            the service switched to M (install.sh --switch-mode, which
                                          waits until it answers), or for linux-bridge the service
                                          stopped and a plain bridge (bridge/linux_bridge.py's wire)
                                          made between A and B
    {"cmd": "perf_start", "seconds": S} / {"cmd": "perf_stop"}
                                          perf record -a for S seconds around a trial; its top symbols
    {"cmd": "restore"}                    the board as the agent found it: the bridge gone, the
                                          service back in its mode (and stopped if it was)

The agent restores the board by itself when its input ends (the host's bench ended or its SSH
connection was cut) or it gets SIGTERM or SIGHUP, so an interrupted bench leaves the board as
it was. Here, not in reshaper.bench, because the board's wheel leaves the benchmark out (setup.py).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from reshaper.bridge.proc_counters import cpu_times, frames_received, link_stats, net_rx_softirqs, softnet_dropped

ENV_FILE = "/etc/reshaper/reshaper.env"       # deploy/beaglebone/install.sh writes the mode there
INSTALL_CONF = "/etc/reshaper/install.conf"
RULES = "/etc/reshaper/rules.yaml"
SWITCH = ["bash", "/opt/reshaper/bundle/install.sh", "--switch-mode", "--mode"]
BASELINE_BRIDGE = "rsbench0"
BRIDGE_NF = ("iptables", "ip6tables", "arptables")
# where a board says what it is; qemu's virt machine names itself so
MODEL_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")
EMULATED_MODELS = ("linux,dummy-virt", "QEMU")
PERF_TOP = 20
PERF_MIN_PERCENT = 0.5
PERF_START_MOST_S = 60.0   # perf record's set-up (reading every process's maps) on an emulated Cortex


def read(path: str, default: str = "") -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def shell_vars(path: str) -> dict[str, str]:
    """NAME=value lines (install.sh's files; values quoted by printf %q at most)."""
    out = {}
    for line in read(path).splitlines():
        m = re.match(r"([A-Z_]+)=(.*)", line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip("'\"")
    return out


def service_active() -> bool:
    return subprocess.run(["systemctl", "is-active", "-q", "reshaper"]).returncode == 0


def service_stats() -> dict | None:
    from reshaper.bridge.control import instances_here, read_stats

    for path in instances_here():
        try:
            return read_stats(path, timeout=10.0)
        except (OSError, ValueError):
            pass
    return None


def workload_started(perf: subprocess.Popen, most_s: float) -> bool:
    """Whether `perf record ... -- sleep S` runs its `sleep` (within most_s): perf forks it first and
    lets it exec only once its events are enabled, after a set-up that took longer than a 2 s trial
    on the emulated board, so a profile begun by the clock missed most of the trial's frames."""
    end = time.monotonic() + most_s
    while perf.poll() is None and time.monotonic() < end:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            comm, _, rest = read(f"/proc/{pid}/stat").partition("(")[2].rpartition(")")
            if comm == "sleep" and rest.split()[1:2] == [str(perf.pid)]:
                return True
        time.sleep(0.1)
    return False


def facts() -> dict:
    cpuinfo = read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "?")
    board = next((read(p).strip("\0\n ") for p in MODEL_FILES if read(p)), "?")
    install = shell_vars(INSTALL_CONF)
    try:
        from importlib.metadata import version
        ours = version("reshaper")
    except Exception:
        ours = "?"
    return {"kernel": platform.release(), "kernel_version": platform.version(), "machine": platform.machine(),
            "nproc": os.cpu_count(), "cpu_model": model, "board_model": board,
            "emulated": any(m in board for m in EMULATED_MODELS), "perf": shutil.which("perf"),
            "user_hz": os.sysconf("SC_CLK_TCK"), "reshaper": ours,
            "mode": shell_vars(ENV_FILE).get("RESHAPER_MODE", "ring"), "service_active": service_active(),
            "interface": install.get("LAST_IFACE", ""), "vlans": install.get("LAST_VLANS", ""),
            "rules": read(RULES)}


class Agent:
    def __init__(self):
        self.found = facts()
        self.bridge_state: dict | None = None
        self.bridge_nf: dict[str, str] = {}
        self.perf: subprocess.Popen | None = None
        self.perf_dir = tempfile.mkdtemp(prefix="reshaper-bench-perf-")
        self.perf_event = ""
        self.mode = self.found["mode"] if self.found["service_active"] else None

    # ---- requests
    def snap(self, ports: list[str]) -> dict:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            links = {ifname: link_stats(ipr, ifname) for ifname in ports}
        dut = service_stats() if self.mode not in (None, "linux-bridge") else None
        # the agent's own CPU time in ticks, read with /proc/stat: the host takes it out of the board's
        own = os.times()
        hz = os.sysconf("SC_CLK_TCK")
        return {"t": time.monotonic(), "cpu": cpu_times(), "net_rx": net_rx_softirqs(), "rx_frames": frames_received(),
                "backlog_dropped": softnet_dropped(), "links": links, "dut": dut,
                "agent": {"user": round((own.user + own.children_user) * hz),
                          "system": round((own.system + own.children_system) * hz)}}

    def switch(self, mode: str, ports: list[str] | None = None) -> dict:
        if mode == self.mode:
            return {"mode": mode, "log": "already"}
        if mode == "linux-bridge":
            subprocess.run(["systemctl", "stop", "reshaper"], check=True)
            self.mode = None
            self.bridge_up(ports or [])
            self.mode = mode
            return {"mode": mode, "log": f"service stopped; bridge {BASELINE_BRIDGE}: {' '.join(ports or [])}"}
        self.bridge_down()
        r = subprocess.run([*SWITCH, mode], capture_output=True, text=True)
        self.mode = mode if r.returncode == 0 else None
        if r.returncode:
            raise RuntimeError(f"install.sh --switch-mode --mode {mode} failed: {(r.stdout + r.stderr)[-1500:]}")
        return {"mode": mode, "log": r.stdout[-1500:]}

    def bridge_up(self, ports: list[str]) -> None:
        from reshaper.bridge import linux_bridge

        # bridged frames skip iptables, as in the local bench's baseline (bench/devices.py)
        for proto in BRIDGE_NF:
            path = f"/proc/sys/net/bridge/bridge-nf-call-{proto}"
            if os.path.exists(path):
                self.bridge_nf[path] = read(path).strip()
                with open(path, "w") as f:
                    f.write("0")
        self.bridge_state = {}
        linux_bridge.set_up(self.bridge_state, lambda: None, BASELINE_BRIDGE,
                            {"a": ports[0], "b": ports[1]})

    def bridge_down(self) -> None:
        from reshaper.bridge import linux_bridge

        if self.bridge_state is not None:
            linux_bridge.restore(self.bridge_state)
            self.bridge_state = None
        for path, value in self.bridge_nf.items():
            with open(path, "w") as f:
                f.write(value)
        self.bridge_nf = {}

    def perf_start(self, seconds: float) -> dict:
        if not self.found["perf"]:
            return {"perf": None}
        out = os.path.join(self.perf_dir, "perf.data")
        # the PMU's cycles where the board has one (a BeagleBone's Cortex-A8 does), else the timer;
        # an emulator's PMU counts guest instructions, not time (qemu's gave 14 samples in 3 s).
        # For a set time over `sleep`, answered once it runs (workload_started), so that the
        # profile covers the trial that follows
        for event in ("cpu-clock",) if self.found["emulated"] else ("cycles", "cpu-clock"):
            self.perf = subprocess.Popen(["perf", "record", "-q", "-a", "-e", event, "-F", "999", "-o", out,
                                          "--", "sleep", f"{seconds:.1f}"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if workload_started(self.perf, PERF_START_MOST_S):
                self.perf_event = event
                return {"perf": event}
            if self.perf.poll() is None:
                self.perf.kill()
                self.perf.wait()
                err = f"perf record did not start sampling within {PERF_START_MOST_S:.0f} s"
                break
            err = self.perf.stderr.read()
        self.perf = None
        return {"perf": None, "error": err.strip()[-500:]}

    def perf_stop(self) -> dict:
        if self.perf is None:
            return {"symbols": []}
        self.perf.wait()
        self.perf = None
        out = os.path.join(self.perf_dir, "perf.data")
        r = subprocess.run(["perf", "report", "-i", out, "--stdio", "--no-children", "--sort", "dso,sym",
                            "--percent-limit", str(PERF_MIN_PERCENT)], capture_output=True, text=True, timeout=600)
        symbols = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[([k.])\]\s+(.*)", line)
            if m:
                symbols.append({"percent": float(m.group(1)), "dso": m.group(2),
                                "kernel": m.group(3) == "k", "symbol": m.group(4).strip()})
        samples = re.search(r"# Samples: (\S+)", r.stdout)
        os.unlink(out)
        return {"event": self.perf_event, "samples": samples.group(1) if samples else "?",
                "symbols": symbols[:PERF_TOP], "error": r.stderr.strip()[-300:] if r.returncode else ""}

    def restore(self) -> dict:
        if self.perf is not None:
            self.perf.kill()
            self.perf.wait()
            self.perf = None
        self.bridge_down()
        want = self.found["mode"]
        if self.mode != want:
            self.switch(want)
        if not self.found["service_active"]:
            subprocess.run(["systemctl", "stop", "reshaper"])
        shutil.rmtree(self.perf_dir, ignore_errors=True)
        return {"mode": want, "service_active": service_active()}

    def handle(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "facts":
            return self.found
        if cmd == "snap":
            return self.snap(request["ports"])
        if cmd == "mode":
            return self.switch(request["mode"], request.get("ports"))
        if cmd == "perf_start":
            return self.perf_start(request["seconds"])
        if cmd == "perf_stop":
            return self.perf_stop()
        if cmd == "restore":
            return self.restore()
        raise ValueError(f"unknown request {cmd!r}")


def main() -> int:
    agent = Agent()

    def on_signal(*_):
        raise SystemExit(1)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                answer = {"ok": True, **agent.handle(request)}
            except Exception as exc:   # the host reports it; the agent goes on
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        agent.restore()   # changes nothing when the host's own restore came last
    return 0


if __name__ == "__main__":
    sys.exit(main())
