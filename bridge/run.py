"""`reshaper run --mode ring`: the appliance on PACKET_MMAP rings.

Set-up (pyroute2): the port interfaces must exist; a port that is down is
brought up; GRO/GSO/TSO are turned off so that no frame larger than the MTU
reaches the rings. What it changes is written to a state file first, so
that the next start puts back what a killed run left behind. Then the C loop
runs in slices of RUN_SLICE_MS with the GIL released; between slices Python
handles SIGHUP (reload), SIGTERM/SIGINT (exit) and the status line.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from pyroute2 import IPRoute

from bridge.control import RUN_DIR, ControlServer, default_control_path, netns_id
from rules.compiler import compile_rules
from rules.config import Config, ConfigError, load_config

RUN_SLICE_MS = 100
IFF_UP = 0x1


class SetupError(Exception):
    pass


def log(message: str) -> None:
    print(f"reshaper: {message}", file=sys.stderr, flush=True)


# ---- interface settings, recorded so a killed run can be undone ---------------

def _state_path(config: Config) -> str:
    ifaces = sorted({p.interface for p in config.ports.values()})
    return os.path.join(RUN_DIR, f"ring-{netns_id()}-{'-'.join(ifaces)}.json")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_settings(saved: dict) -> None:
    """Puts interfaces back as a state file recorded them (offloads, link state)."""
    from ring import RingError, set_offloads

    for iface, bits in saved.get("offloads", {}).items():
        try:
            if bits:
                set_offloads(iface, bits, True)
        except RingError:
            pass  # gone since: nothing to restore
    with IPRoute() as ipr:
        for iface in saved.get("brought_up", []):
            found = ipr.link_lookup(ifname=iface)
            if found:
                ipr.link("set", index=found[0], state="down")


def clean_stale_state(path: str) -> None:
    """A state file whose process is gone: undo what that run changed."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return
    if saved.get("pid") != os.getpid() and _pid_alive(saved.get("pid", 0)):
        raise SetupError(f"another reshaper (pid {saved['pid']}) runs on these ports; state in {path}")
    log(f"a previous run (pid {saved.get('pid')}) did not exit cleanly: restoring its interface settings")
    restore_settings(saved)
    os.unlink(path)


def prepare_ports(config: Config) -> tuple[dict[str, int], dict]:
    """Checks the port interfaces; returns their MTUs and what was changed."""
    from ring import GRO, GSO, TSO, RingError, set_offloads

    changed = {"pid": os.getpid(), "offloads": {}, "brought_up": []}
    mtus = {}
    with IPRoute() as ipr:
        for name, port in config.ports.items():
            found = ipr.link_lookup(ifname=port.interface)
            if not found:
                hint = ""
                if "." in port.interface:
                    parent, _, vid = port.interface.rpartition(".")
                    hint = f" (create it: ip link add link {parent} name {port.interface} type vlan id {vid})"
                raise SetupError(f"port {name}: no interface {port.interface}{hint}")
            link = ipr.get_links(found[0])[0]
            mtus[name] = link.get("mtu") or link.get_attr("IFLA_MTU")
            if not link["flags"] & IFF_UP:
                changed["brought_up"].append(port.interface)
    for iface in sorted({p.interface for p in config.ports.values()}):
        try:
            # recorded before anything is changed, so a crash in between is undone too
            changed["offloads"][iface] = set_offloads(iface, GRO | GSO | TSO, False)
        except RingError as exc:
            raise SetupError(f"cannot turn off GRO/GSO/TSO on {iface}: {exc}") from None
    with IPRoute() as ipr:
        for iface in changed["brought_up"]:
            ipr.link("set", index=ipr.link_lookup(ifname=iface)[0], state="up")
    return mtus, changed


# ---- the appliance ---------------------------------------------------------------

class RingAppliance:
    def __init__(self, config: Config, control_path: str | None, status_interval: float, seed: int):
        self.config = config
        self.control_path = control_path or default_control_path()
        self.status_interval = status_interval
        self.seed = seed
        self.bridge = None
        self.control = None
        self.reloads = 0
        self.last_reload_error: str | None = None
        self.started = time.time()
        self._reload = self._stop = False

    # counters, as `reshaper stats` shows them
    def snapshot(self) -> dict:
        stats = self.bridge.stats()
        engine = self.bridge.engine
        for name, port in self.config.ports.items():
            stats["ports"][name].update(interface=port.interface, vlan=port.vlan)
        return {
            "mode": "ring", "pid": os.getpid(), "config": self.config.path,
            "uptime_s": round(time.time() - self.started, 3),
            "reloads": self.reloads, "last_reload_error": self.last_reload_error,
            **stats,
            "engine": engine.counters(),
            "rules": [{"name": rule.name, **engine.rule_counters(i)} for i, rule in enumerate(self.config.rules)],
        }

    def reload(self) -> None:
        """Validates first; on any error the running program stays."""
        try:
            config = load_config(self.config.path)
            if {n: (p.interface, p.vlan) for n, p in config.ports.items()} != \
               {n: (p.interface, p.vlan) for n, p in self.config.ports.items()}:
                raise SetupError("ports changed: restart reshaper to move it to other interfaces")
            program = compile_rules(config)
        except ConfigError as exc:
            self.last_reload_error = str(exc)
            for d in exc.diagnostics:
                log(str(d))
            log("reload refused; the previous rules keep running")
            return
        except SetupError as exc:
            self.last_reload_error = str(exc)
            log(f"reload refused: {exc}; the previous rules keep running")
            return
        # between two slices of the C loop: no frame sees a half-loaded program
        self.bridge.load(program, self.seed)
        self.config = config
        self.reloads += 1
        self.last_reload_error = None
        log(f"reloaded {config.path}: {len(config.rules)} rules")

    def status_line(self, previous: dict, elapsed: float) -> tuple[str, dict]:
        stats = self.bridge.stats()
        parts = []
        for name in "ab":
            now, before = stats["ports"][name], previous.get(name, {})
            rate = lambda key: (now[key] - before.get(key, 0)) / elapsed  # noqa: E731
            drops = now["ring_drops"] + now["tx_full"] + now["oversize"]
            parts.append(f"{name}: rx {rate('rx'):,.0f}/s tx {rate('tx'):,.0f}/s drops {drops}")
        return "; ".join(parts) + f"; queued {stats['queued']}", stats["ports"]

    def run(self) -> int:
        from ring import RingBridge, RingError, RingPort, drop_capabilities

        state_path = _state_path(self.config)
        os.makedirs(RUN_DIR, exist_ok=True)
        clean_stale_state(state_path)
        program = compile_rules(self.config)
        changed = {"pid": os.getpid()}
        try:
            with open(state_path, "w") as f:
                json.dump(changed, f)
            mtus, changed = prepare_ports(self.config)
            with open(state_path, "w") as f:
                json.dump(changed, f)
            a, b = (RingPort(p.interface, p.vlan, mtus[n]) for n, p in sorted(self.config.ports.items()))
            self.bridge = RingBridge(a, b)
            self.bridge.load(program, self.seed)
            self.control = ControlServer(self.control_path, self.snapshot)
            # sockets are open; only restoring interface settings at exit needs a privilege.
            # Capabilities are per thread: drop them before the control thread starts.
            drop_capabilities()
            self.control.start()
            signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_reload", True))
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
            signal.signal(signal.SIGINT, lambda *_: setattr(self, "_stop", True))
            log(f"ring mode: a = {a.interface}{f' vlan {a.vlan}' if a.vlan else ''}, "
                f"b = {b.interface}{f' vlan {b.vlan}' if b.vlan else ''}; {len(self.config.rules)} rules; "
                f"stats on {self.control_path}")
            self._loop()
            return 0
        except (SetupError, RingError) as exc:
            log(str(exc))
            return 1
        finally:
            if self.control:
                self.control.close()
            if self.bridge:
                self.bridge.close()
            restore_settings(changed)
            try:
                os.unlink(state_path)
            except FileNotFoundError:
                pass

    def _loop(self) -> None:
        last = time.monotonic()
        previous: dict = {}
        while not self._stop:
            self.bridge.run(RUN_SLICE_MS)
            if self._reload:
                self._reload = False
                self.reload()
            now = time.monotonic()
            if self.status_interval and now - last >= self.status_interval:
                line, previous = self.status_line(previous, now - last)
                log(line)
                last = now
        log("exiting")


def run(config_path: str, mode: str, control: str | None, status_interval: float, seed: int) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        return 1
    if mode != "ring":
        log(f"mode {mode} is not available yet in this version; use --mode ring")
        return 2
    try:
        return RingAppliance(config, control, status_interval, seed).run()
    except SetupError as exc:
        log(str(exc))
        return 1
