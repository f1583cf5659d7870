"""Python hooks: the escape hatch for reshaping the declarative actions can't say.

A rule's last action may be `python: {call: "package.module:function", ...}`.
The engine runs the rule's other actions; the carrier then hands the frame
to the function, for that rule's frames only:

    def function(frame, ctx) -> frame | [frames] | None

`frame` is a scapy packet (Ether; IP/IPv6 in nfqueue mode) or, with
`raw: true`, bytes. `ctx` has port ("a"/"b"), rule, timestamp_ns, mode.
The function returns the frame (changed or not), a list of frames (several
leave, in order), or None (dropped). A frame wrapped in Reply(...) leaves
by the port it came in on (e.g. an answer to an ARP request). Lengths may
change: IP/UDP lengths and checksums are recomputed afterwards unless the
action says `fix_checksums: false`.

A hook that raises, or returns after its timeout, is counted (errors,
timeouts) and the frame follows `on_error`: pass (unchanged) or drop.
Modules load only from the directories of `hooks_path` (the file's, or
--hooks-path): never from the working directory or sys.path.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import time
import traceback

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from bridge.appliance import SetupError
from rules.config import Config

HOOK_COUNTERS = ("calls", "errors", "timeouts", "dropped", "frames_out", "replies")
_LOADED: set[str] = set()  # top-level modules load_hook imported from hooks_path


class HookLoadError(SetupError):
    pass


class Reply:
    """A frame that leaves by the port its trigger came in on."""

    def __init__(self, frame):
        self.frame = frame


@dataclasses.dataclass(frozen=True)
class HookContext:
    port: str
    rule: str
    timestamp_ns: int
    mode: str


def load_hook(call: str, paths: list[str]):
    """The function named "package.module:function", found only under paths."""
    module_name, _, function = call.partition(":")
    top = module_name.split(".")[0]
    roots = [os.path.abspath(p) for p in paths]
    if top in _LOADED:
        # ours from an earlier load: load afresh, so a reload picks up edited hooks
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
        _LOADED.discard(top)
    loaded = sys.modules.get(top)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None) or ""
        if not any(os.path.abspath(origin).startswith(root + os.sep) for root in roots):
            raise HookLoadError(f"hook module {top!r} is already imported from elsewhere ({origin or 'built in'}); "
                                f"rename the hook module")
    else:
        spec = importlib.machinery.PathFinder.find_spec(top, roots)
        if spec is None:
            raise HookLoadError(f"no module {top!r} in hooks_path ({', '.join(roots)})")
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        _LOADED.add(top)
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            del sys.modules[top]
            _LOADED.discard(top)
            raise HookLoadError(f"loading {top!r} failed: {exc.__class__.__name__}: {exc}") from None
    try:
        module = importlib.import_module(module_name)  # submodules resolve inside the package found above
        fn = getattr(module, function)
    except (ImportError, AttributeError) as exc:
        raise HookLoadError(f"cannot load hook {call!r}: {exc}") from None
    if not callable(fn):
        raise HookLoadError(f"hook {call!r} is not a function")
    return fn


def fix_lengths_and_checksums(packet: Packet) -> bytes:
    """Lets scapy recompute IP/UDP lengths and IP/TCP/UDP/ICMP checksums."""
    for layer, fields in ((IP, ("len", "chksum")), (IPv6, ("plen",)), (UDP, ("len", "chksum")),
                          (TCP, ("chksum",)), (ICMP, ("chksum",))):
        current = packet.getlayer(layer)
        while current is not None:
            for field in fields:
                setattr(current, field, None)
            current = current.payload.getlayer(layer) if current.payload else None
    return bytes(packet)


@dataclasses.dataclass
class Hook:
    rule: str
    fn: object
    timeout_ns: int
    raw: bool
    on_error: str
    fix_checksums: bool
    counters: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(HOOK_COUNTERS, 0))


class Hooks:
    """The hooks of a configuration, by rule index."""

    def __init__(self, config: Config, mode: str):
        self.mode = mode
        self.by_rule: dict[int, Hook] = {}
        for index, rule in enumerate(config.rules):
            action = rule.action("python")
            if action is None:
                continue
            p = action.params
            try:
                fn = load_hook(p["call"], config.hooks_path)
            except HookLoadError as exc:
                mark = action.node.start_mark
                raise HookLoadError(f"{config.path}:{mark.line + 1}:{mark.column + 1}: error: "
                                    f"rule {rule.name!r}: {exc}") from None
            self.by_rule[index] = Hook(rule.name, fn, p["timeout"], p["raw"], p["on_error"], p["fix_checksums"])

    def __bool__(self) -> bool:
        return bool(self.by_rule)

    def counters(self) -> dict[str, dict]:
        return {hook.rule: dict(hook.counters) for hook in self.by_rule.values()}

    def run(self, rule: int, frame: bytes, port: str, timestamp_ns: int, l3: bool = False) -> list[tuple[bool, bytes]]:
        """The frames a hook makes of frame: (back by the ingress port?, bytes), in order."""
        hook = self.by_rule[rule]
        c = hook.counters
        c["calls"] += 1
        ctx = HookContext(port, hook.rule, timestamp_ns, self.mode)
        try:
            arg = frame if hook.raw else (IP(frame) if frame[0] >> 4 == 4 else IPv6(frame)) if l3 else Ether(frame)
            start = time.monotonic_ns()
            result = hook.fn(arg, ctx)
            elapsed = time.monotonic_ns() - start  # the hook's own time: not parsing or checksums
            out = self._frames(result, hook, l3)
        except Exception:  # a hook's failure is the frame's, never the bridge's
            c["errors"] += 1
            if c["errors"] <= 10:
                print(f"reshaper: hook of rule {hook.rule!r} raised:\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)
            return self._on_error(hook, frame)
        if elapsed > hook.timeout_ns:
            c["timeouts"] += 1
            return self._on_error(hook, frame)
        if not out:
            c["dropped"] += 1
        c["frames_out"] += sum(1 for back, _ in out if not back)
        c["replies"] += sum(1 for back, _ in out if back)
        return out

    @staticmethod
    def _on_error(hook: Hook, frame: bytes) -> list[tuple[bool, bytes]]:
        if hook.on_error == "drop":
            hook.counters["dropped"] += 1
            return []
        hook.counters["frames_out"] += 1
        return [(False, frame)]

    @staticmethod
    def _frames(result, hook: Hook, l3: bool) -> list[tuple[bool, bytes]]:
        if result is None:
            return []
        items = result if isinstance(result, list) else [result]
        out = []
        for item in items:
            back = isinstance(item, Reply)
            if back:
                item = item.frame
            if isinstance(item, (bytes, bytearray)):
                data = bytes(item)
                if hook.fix_checksums:
                    packet = (IP(data) if data[0] >> 4 == 4 else IPv6(data)) if l3 else Ether(data)
                    data = fix_lengths_and_checksums(packet)
            elif isinstance(item, Packet):
                data = fix_lengths_and_checksums(item) if hook.fix_checksums else bytes(item)
            else:
                raise TypeError(f"a hook returns a frame (bytes or scapy packet), a list of them or None, "
                                f"not {type(item).__name__}")
            out.append((back, data))
        return out
