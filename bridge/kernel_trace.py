"""Kernel mode's trace: the module's tracepoint reshaper:reshaper_frame (kmod/rs_trace.h), read
from tracefs.

Each reader makes a tracefs instance of its own, instances/reshaper-trace-PID, with its own ring
buffer, clock and event switch, so the global buffer and other tracers (perf, bpftrace, trace-cmd)
are left as they are. Its clock is `mono`, so timestamps are CLOCK_MONOTONIC, the clock of ring
mode's records; its event filter keeps, in the kernel, the frames of one network namespace (and of
one rule). The instance is removed when the generator ends, however it ends; one that a killed
reader left behind is removed by the next reader that starts.

tracefs prints the mono clock in microseconds: time_ns is a whole number of microseconds. The
event is taken after the engine ran the frame, within microseconds of its arrival. tracefs is
root's: reading it needs root (or its files' owner).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator

from reshaper.bridge.trace import TraceError
from reshaper.rules.binding import PORTS

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")   # where it is mounted, else with debugfs
EVENT = "events/reshaper/reshaper_frame"
INSTANCE = "reshaper-trace-"            # + the reader's pid
MODULE = "/sys/module/reshaper"         # there while the module is loaded
PORT_NAMES = {number: name for name, number in PORTS.items()}
# the fields of TP_printk (kmod/rs_trace.h), in its order
FIELDS = ("netns", "port", "rule", "verdict", "reason", "copies", "len", "delay_ns", "head")
# a line of trace_pipe: COMM-PID [CPU] FLAGS SECONDS.FRACTION: reshaper_frame: FIELDS (a comm is at
# most 15 characters, too short to hold what is matched here)
RECORD = re.compile(r" (\d+)\.(\d+): reshaper_frame: (.*)$")
# what trace_pipe prints where the kernel overwrote events before they were read
LOST = re.compile(r"^CPU:\d+ \[LOST (\d+ )?EVENTS\]$")


class TracefsError(TraceError):
    """tracefs is not there, refuses, or has no reshaper event; the text names the file."""


def _fail(path: str, exc: OSError) -> TracefsError:
    hint = ": tracefs needs root" if isinstance(exc, PermissionError) else ""
    return TracefsError(f"{path}: {exc.strerror}{hint}")


def find_tracefs(given: str | None = None) -> str:
    """Where tracefs is mounted (given, else TRACEFS in turn), with the module's event there."""
    denied = None
    for path in ([given] if given else TRACEFS):
        try:
            os.stat(os.path.join(path, "instances"))
            break
        except PermissionError as exc:
            denied = denied or _fail(path, exc)
        except OSError:
            pass
    else:
        raise denied or TracefsError(f"tracefs is not mounted on {' or '.join([given] if given else TRACEFS)}: "
                                     f"mount -t tracefs nodev {TRACEFS[0]} (`ip netns exec` mounts a /sys "
                                     "without it)")
    if not os.path.isdir(os.path.join(path, EVENT)):
        if not os.path.isdir(MODULE):
            raise TracefsError(f"no {os.path.join(path, EVENT)}: the reshaper kernel module is not loaded")
        raise TracefsError(f"no {os.path.join(path, EVENT)}: the reshaper module has no tracepoint: "
                           "load a module built from this version")
    return path


def parse_line(line: str) -> dict | None:
    """One line of trace_pipe as a record; None for a line that is not one of the event.
    ValueError for an event line this version does not read."""
    m = RECORD.search(line.rstrip("\n"))
    if m is None:
        return None
    seconds, fraction, fields = m.groups()
    values = dict(field.partition("=")[::2] for field in fields.split(" "))
    if tuple(values) != FIELDS:
        raise ValueError(f"not the fields of this version's event ({' '.join(FIELDS)}): {line.strip()!r}")
    port = int(values["port"])
    if port not in PORT_NAMES:
        raise ValueError(f"port {port} is neither port: {line.strip()!r}")
    return {"time_ns": int(seconds) * 10**9 + int(fraction) * 10**(9 - len(fraction)),
            "port": PORT_NAMES[port], "len": int(values["len"]), "rule": int(values["rule"]),
            "verdict": int(values["verdict"]), "reason": int(values["reason"]),
            "copies": int(values["copies"]), "delay_ns": int(values["delay_ns"]),
            "head": bytes.fromhex(values["head"])}


def lost_events(line: str) -> int | None:
    """Events the kernel overwrote before they were read, from trace_pipe's line that says so
    (1, at least, when it does not say how many); None for another line."""
    m = LOST.match(line.rstrip("\n"))
    return None if m is None else int(m.group(1) or 1)


def remove_stale_instances(tracefs: str) -> list[str]:
    """Removes the instances of readers that no longer run (killed before they could); returns them."""
    instances = os.path.join(tracefs, "instances")
    try:
        names = os.listdir(instances)
    except OSError as exc:
        raise _fail(instances, exc) from None
    removed = []
    for name in names:
        pid = name.removeprefix(INSTANCE)
        if name.startswith(INSTANCE) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.rmdir(os.path.join(instances, name))
                removed.append(os.path.join(instances, name))
            except OSError:   # in use after all (a reader in another pid namespace)
                pass
    return removed


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise _fail(path, exc) from None


def _remove_instance(instance: str, check: bool) -> None:
    """Event off, instance gone; check: a failure to remove it is an error (else, already failing, ignored)."""
    try:
        _write(os.path.join(instance, EVENT, "enable"), "0")
    except TracefsError:
        pass   # the module went, and its event with it
    try:
        os.rmdir(instance)
    except OSError as exc:
        if check:
            raise _fail(instance, exc) from None


def kernel_trace(netns: int, rule: int | None = None, count: int | None = None, tracefs: str | None = None,
                 lost: list[int] | None = None) -> Iterator[dict]:
    """The frames the module ran in network namespace netns (its inode), of rule (its index; None:
    all, -1: those no rule matched), count of them (None: until stopped), each
    {"time_ns", "port", "len", "rule", "verdict", "reason", "copies", "delay_ns", "head"}: time_ns
    CLOCK_MONOTONIC, port "a" or "b", rule -1 for none, verdict RS_V_*, reason RS_R_*, len and head
    (its first bytes, at most RS_TRACE_HEAD) as the frame arrived. lost: [n], n grown by the events
    the kernel overwrote before they were read. TracefsError when tracing cannot start or go on."""
    if count is not None and count <= 0:
        return
    root = find_tracefs(tracefs)
    remove_stale_instances(root)
    instance = os.path.join(root, "instances", f"{INSTANCE}{os.getpid()}")
    try:
        os.mkdir(instance)
    except OSError as exc:
        raise _fail(instance, exc) from None
    try:
        yield from _read(instance, netns, rule, count, lost)
    except BaseException:
        _remove_instance(instance, check=False)
        raise
    _remove_instance(instance, check=True)


def _read(instance: str, netns: int, rule: int | None, count: int | None, lost: list[int] | None) -> Iterator[dict]:
    _write(os.path.join(instance, "trace_clock"), "mono")
    where = f"netns == {netns}" + ("" if rule is None else f" && rule == {rule}")
    _write(os.path.join(instance, EVENT, "filter"), where)   # the kernel drops the others
    pipe = os.path.join(instance, "trace_pipe")
    try:
        f = open(pipe, "rb")
    except OSError as exc:
        raise _fail(pipe, exc) from None
    with f:
        _write(os.path.join(instance, EVENT, "enable"), "1")
        n = 0
        while count is None or n < count:
            try:
                line = f.readline().decode(errors="replace")   # a comm is any bytes
            except OSError as exc:
                raise _fail(pipe, exc) from None
            if not line:
                raise TracefsError(f"{pipe}: ended (the instance's tracing_on was turned off)")
            try:
                record = parse_line(line)
            except ValueError as exc:
                raise TracefsError(f"{pipe}: {exc}: load a module built from this version") from None
            if record is None:
                if lost is not None and (k := lost_events(line)) is not None:
                    lost[0] += k
                continue
            n += 1
            yield record
