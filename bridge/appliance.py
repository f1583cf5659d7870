"""What every mode of `reshaper run` shares: state file, control socket, signals, reload, loop.

A mode (bridge/modes/, where the registry names them) subclasses Appliance
and provides limits (what of a configuration it cannot run), set_up (records
every change it makes into self.changed before making it), load (a compiled
program), forward (one slice of forwarding), data_stats, status and
tear_down; and restore(saved), which undoes what a state file records: at
exit, and at the next start when a run was killed.

The state file is written before anything is changed, so a crash at any
point leaves a record of what to undo.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from reshaper.bridge.control import RUN_DIR, ControlServer, default_control_path, netns_id
from reshaper.bridge.realtime import Realtime, RealtimeError, apply, scheduling
from reshaper.rules.config import load_config
from reshaper.rules.model import Config, ConfigError, Diagnostic

STATUS_PREFIX = "reshaper: "



def rule_phase(rule, time_zero: tuple[int, int] | None) -> dict:
    """A scheduled rule's phase now, as the engine will find it for a frame arriving now (its index
    from 0, and the number of phases); {} for a rule without a schedule."""
    if rule.schedule is None:
        return {}
    phase = 0
    if time_zero is not None:
        load, first = time_zero
        phase = rule.schedule.phase_at(time.monotonic_ns() - (first if rule.schedule.keep_time else load))
    return {"phase": phase, "phases": len(rule.schedule.phases)}

class SetupError(Exception):
    pass


def log(message: str) -> None:
    print(f"{STATUS_PREFIX}{message}", file=sys.stderr, flush=True)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) what the service is doing; nothing when not under systemd.
    The protocol is one datagram to $NOTIFY_SOCKET ('@' names an abstract socket)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:   # a notification lost is not worth stopping the bridge for
        log(f"sd_notify: {exc}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def clean_stale_state(config: Config, namespace_wide: bool) -> None:
    """Refuses to start beside a live instance that holds these ports, or (namespace_wide)
    beside another instance of a mode that holds what a namespace has one of; undoes what
    killed runs left behind there."""
    from reshaper.bridge.modes import get as mode_named  # here: the modes import this module

    ifaces = {p.interface for p in config.ports.values()}
    if not os.path.isdir(RUN_DIR):
        return
    for name in sorted(os.listdir(RUN_DIR)):
        if not (name.startswith(f"state-{netns_id()}-") and name.endswith(".json")):
            continue
        path = os.path.join(RUN_DIR, name)
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            continue
        shared = sorted(ifaces & set(saved.get("interfaces", [])))
        if not shared and not (namespace_wide and saved.get("namespace_wide")):
            continue
        if _pid_alive(saved.get("pid", 0)):
            what = (f"on {', '.join(shared)}" if shared else
                    f"in {saved.get('mode')} mode in this network namespace, which has one {saved.get('mode')} "
                    f"data path")
            raise SetupError(f"another reshaper (pid {saved['pid']}) runs {what}; state in {path}")
        log(f"a previous run (pid {saved.get('pid')}, {saved.get('mode')} mode) did not exit cleanly: "
            f"restoring its interface settings")
        mode_named(saved["mode"]).restore(saved)
        os.unlink(path)


class Appliance:
    mode = ""
    namespace_wide = False  # the mode holds what a namespace has one of (the module's program, NFQUEUE numbers)
    user_space = True       # frames cross the thread that runs run(): what --realtime and --cpu apply to
    slice_ms = 100
    drop_counters: tuple[str, ...] = ()  # port counters the status line adds up as drops

    def __init__(self, config: Config, control_path: str | None, status_interval: float, seed: int,
                 hooks_path: list[str] | None = None, busy_poll_us: int = 0, realtime: Realtime | None = None,
                 metrics: tuple[str, int] | None = None):
        self.config = config
        self.metrics_address = metrics  # --metrics: (address, port) to serve Prometheus' format on
        self.metrics = None
        self.realtime = realtime  # --realtime, --cpu: checked already (bridge/run.py), applied by run()
        self.forwarder_tid = 0  # the thread that forwards: run()'s
        self.busy_poll_us = busy_poll_us  # ring mode: poll this long after the last frame before sleeping
        self.hooks_path = hooks_path  # from the command line, beside the file's own
        ifaces = sorted({p.interface for p in config.ports.values()})
        self.control_path = control_path or default_control_path(ifaces)
        self.status_interval = status_interval
        self.seed = seed
        self.engine = None
        self.control = None
        self.tracer = None  # the TraceSession of a `reshaper trace` client (bridge/trace.py)
        self.reloads = self.reloads_refused = 0
        self.last_reload_error: str | None = None
        self.swap_lock = threading.Lock()  # held while a reload swaps engine and config, and by snapshot()
        self.started = time.time()
        self.first_load_ns: int | None = None  # the first program's load, on CLOCK_MONOTONIC (time_zero)
        self._reload = self._stop = False
        self.state_path = os.path.join(RUN_DIR, f"state-{netns_id()}-{'-'.join(ifaces)}.json")
        self.changed = {"mode": self.mode, "pid": os.getpid(), "interfaces": ifaces,
                        "namespace_wide": self.namespace_wide}

    # ---- for the modes ----
    @staticmethod
    def limits(config: Config) -> list[Diagnostic]:
        """What of config this mode cannot run, each at its place in the file (`check --mode`)."""
        return []

    @staticmethod
    def restore(saved: dict) -> None:
        """Undoes what a state file (self.changed, as recorded) says a run changed."""
        raise NotImplementedError

    def record(self) -> None:
        """Writes self.changed: call before every change it will describe."""
        with open(self.state_path, "w") as f:
            json.dump(self.changed, f)

    def set_up(self, program: bytes) -> None:
        raise NotImplementedError

    def load(self, program: bytes, config: Config):
        """Makes program (of config) the running one; returns its Engine (counters)."""
        raise NotImplementedError

    def forward(self) -> None:
        raise NotImplementedError

    def data_stats(self) -> dict:
        raise NotImplementedError

    def status(self, previous: dict, elapsed: float) -> tuple[str, dict]:
        stats = self.data_stats()
        parts = []
        for name in "ab":
            now, before = stats["ports"][name], previous.get(name, {})
            rx = (now["rx"] - before.get("rx", 0)) / elapsed
            tx = (now["tx"] - before.get("tx", 0)) / elapsed
            drops = sum(now[k] for k in self.drop_counters)
            parts.append(f"{name}: rx {rx:,.0f}/s tx {tx:,.0f}/s drops {drops}")
        return "; ".join(parts) + f"; queued {stats.get('queued', 0)}", stats["ports"]

    def tear_down(self) -> None:
        raise NotImplementedError

    # tracing (`reshaper trace`, bridge/trace.py): what a mode's data path records
    trace_l3 = False   # its records hold IP packets (nfqueue mode), not frames

    def trace_start(self, rule: int) -> None:
        """Records the frames of rule (an index of the running program; -1: every frame) from now on."""
        raise NotImplementedError

    def trace_stop(self) -> None:
        raise NotImplementedError

    def trace_take(self) -> list:
        """The TraceRecords recorded since the last call."""
        raise NotImplementedError

    def trace_lost(self) -> int:
        """Frames not recorded since the start: the buffer was full."""
        raise NotImplementedError

    @staticmethod
    def same_ports(old: Config, new: Config) -> bool:
        """Whether a reload keeps the ports (else it is refused: the set-up is per port)."""
        return {n: (p.interface, p.vlan) for n, p in old.ports.items()} == \
            {n: (p.interface, p.vlan) for n, p in new.ports.items()}

    # ---- shared ----
    def time_zero(self) -> tuple[int, int]:
        """Time zero of the schedules of a program loaded now, on CLOCK_MONOTONIC as the carriers' frame
        times: now, and the first load's, from which keep_time schedules count (Engine.start)."""
        now = time.monotonic_ns()
        if self.first_load_ns is None:
            self.first_load_ns = now
        return now, self.first_load_ns

    def snapshot(self) -> dict:
        """Counters, as `reshaper stats` shows them."""
        with self.swap_lock:
            stats = self.data_stats()
            engine, config = self.engine, self.config
            zero = engine.time_zero()
            for name, port in config.ports.items():
                stats["ports"][name].update(interface=port.interface, vlan=port.vlan)
            return {
                "mode": self.mode, "pid": os.getpid(), "config": config.path,
                "uptime_s": round(time.time() - self.started, 3),
                "reloads": self.reloads, "reloads_refused": self.reloads_refused,
                "last_reload_error": self.last_reload_error,
                "forwarder": scheduling(self.forwarder_tid) if self.user_space else None,
                **stats,
                "engine": engine.counters(),
                # time zero of the schedules, this load's and the first's (CLOCK_MONOTONIC ns; docs/schedules.md)
                "schedule_time_zero_ns": zero,
                "rules": [{"name": rule.name, **engine.rule_counters(i), **rule_phase(rule, zero)}
                          for i, rule in enumerate(config.rules)],
                "hooks": self.hooks.counters() if getattr(self, "hooks", None) else {},
                # a `reshaper trace` client reading now (kernel mode's read tracefs: not seen here)
                "trace": {"rule": self.tracer.rule} if self.tracer else None,
            }

    def trace_open(self, rule: str | None):
        """A client's trace of rule (a name; None: every frame): its TraceSession, one at a time."""
        from reshaper.bridge.trace import TraceError, TraceSession

        with self.swap_lock:
            if self.tracer is not None:
                raise TraceError("another `reshaper trace` is reading this instance; one at a time")
            session = TraceSession(self, rule)
            index = session.rule_index(self.config)
            self.trace_take()   # what an earlier client left unread: off since, so nothing newer
            self.trace_start(index)
            self.tracer = session
        return session

    def trace_close(self, session) -> None:
        with self.swap_lock:
            if self.tracer is session:
                self.tracer = None
                self.trace_stop()

    def summary(self) -> str:
        ports = ", ".join(f"{n} = {p.interface}{f' vlan {p.vlan}' if p.vlan else ''}"
                          for n, p in sorted(self.config.ports.items()))
        reload = (f"; last reload refused: {self.last_reload_error.splitlines()[0]}"
                  if self.last_reload_error else "")
        return f"{self.mode} mode: {ports}; {len(self.config.rules)} rules{reload}"

    def reload(self) -> None:
        """Loads, checks, compiles and installs the file again. Whatever fails on the way
        (a bad file, a program the engine or the kernel refuses, a hook that does not load,
        a bug of ours), the running program stays; the error is logged and `stats` shows it."""
        try:
            config = load_config(self.config.path, hooks_path=self.hooks_path)
            problems = self.limits(config)
            if problems:
                raise ConfigError(problems)
            if not self.same_ports(self.config, config):
                raise SetupError("ports changed: restart reshaper to move it to other interfaces")
            program = config.program
            # between two slices of forwarding: no frame sees a half-loaded program. Under the
            # lock: the control thread never sees one program's rules with another's counters
            # (kernel mode's counters are the module's, which has the new program once load returns)
            with self.swap_lock:
                old = self.config
                self.engine, self.config = self.load(program, config), config
                if self.tracer is not None:
                    self.tracer.reloaded(old, config)
                self.reloads += 1
                self.last_reload_error = None
        except ConfigError as exc:
            for d in exc.diagnostics:
                log(str(d))
            self._refused(str(exc), "reload refused; the previous rules keep running")
            return
        except Exception as exc:  # noqa: BLE001 - see the docstring
            error = str(exc) if isinstance(exc, SetupError) else f"{type(exc).__name__}: {exc}"
            self._refused(error, f"reload refused: {error}; the previous rules keep running")
            return
        log(f"reloaded {config.path}: {len(config.rules)} rules")

    def _refused(self, error: str, message: str) -> None:
        with self.swap_lock:
            self.last_reload_error = error
            self.reloads_refused += 1
        log(message)

    def run(self) -> int:
        from reshaper.bridge.privileges import CAP_NET_ADMIN, drop_capabilities

        os.makedirs(RUN_DIR, exist_ok=True)
        clean_stale_state(self.config, self.namespace_wide)
        program = self.config.program
        self.forwarder_tid = threading.get_native_id()
        if self.realtime:
            # before set-up, while the capabilities it may need are there: a refusal leaves nothing to undo
            try:
                log(apply(self.realtime))
            except RealtimeError as exc:
                log(str(exc))
                sd_notify(f"STATUS={exc}")
                return 1
        self.record()
        try:
            self.set_up(program)
            self.port_indexes = {iface: index for iface, index in self.port_interfaces().values()}
            self.engine = self.load(program, self.config)
            self.control = ControlServer(self.control_path, self.snapshot, self.serve_trace)
            if self.metrics_address:
                from reshaper.bridge.metrics import MetricsServer, url_host

                try:
                    self.metrics = MetricsServer(self.metrics_address, self.snapshot)
                except OSError as exc:
                    raise SetupError(f"--metrics: cannot listen on {url_host(*self.metrics_address)}: "
                                     f"{exc.strerror or exc}") from exc
            # sockets are open; only undoing the set-up at exit needs a privilege (and locked
            # memory may need CAP_IPC_LOCK: bridge/realtime.py). Capabilities are per thread:
            # drop them before the control thread starts.
            drop_capabilities((CAP_NET_ADMIN, *(self.realtime.keep if self.realtime else ())))
            self.control.start()
            if self.metrics:
                self.metrics.start()
            signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_reload", True))
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
            signal.signal(signal.SIGINT, lambda *_: setattr(self, "_stop", True))
            log(f"{self.summary()}; stats on {self.control_path}"
                + (f", metrics on {self.metrics.url}" if self.metrics else ""))
            sd_notify(f"READY=1\nSTATUS={self.summary()}")
            self._loop()
            return 0
        except (SetupError, OSError) as exc:
            log(str(exc))
            sd_notify(f"STATUS={exc}")
            return 1
        finally:
            if self.control:
                self.control.close()
            with self.swap_lock:
                self.tracer = None   # a trace thread still running reads nothing of what tear_down frees
            if self.metrics:
                self.metrics.close()
            self.tear_down()
            self.restore(self.changed)
            try:
                os.unlink(self.state_path)
            except FileNotFoundError:
                pass

    def serve_trace(self, conn, request: dict, stopping) -> None:
        from reshaper.bridge.trace import serve

        serve(conn, self, request, stopping)

    def port_interfaces(self) -> dict[str, tuple[str, int]]:
        """{port: (interface, ifindex)} as they are now (ifindex 0: no such interface)."""
        found = {}
        for name, port in sorted(self.config.ports.items()):
            try:
                found[name] = (port.interface, socket.if_nametoindex(port.interface))
            except OSError:
                found[name] = (port.interface, 0)
        return found

    def check_ports(self) -> None:
        """A port interface deleted under us (a USB NIC unplugged, its namespace gone, or made
        anew with another index) leaves sockets and the module's program on a dead device:
        SetupError, so that the run ends non-zero and the service manager starts it again.
        Indexes are kept by interface name: a reload may name a port's interface otherwise
        (kernel mode takes eth0.100 for {interface: eth0, vlan: 100}); it checked it exists."""
        for name, (iface, index) in self.port_interfaces().items():
            known = self.port_indexes.setdefault(iface, index)
            if index != known or not index:
                raise SetupError(f"port {name}: interface {iface} went away"
                                 + (" and came back as another interface" if index else "")
                                 + "; exiting so that reshaper starts again on the interface as it is now")

    def _loop(self) -> None:
        last = time.monotonic()
        previous: dict = {}
        while not self._stop:
            self.check_ports()
            self.forward()
            if self._reload:
                self._reload = False
                sd_notify("RELOADING=1")
                self.reload()
                sd_notify(f"READY=1\nSTATUS={self.summary()}")
            now = time.monotonic()
            if self.status_interval and now - last >= self.status_interval:
                line, previous = self.status(previous, now - last)
                log(line)
                last = now
        sd_notify("STOPPING=1")
        log("exiting")
