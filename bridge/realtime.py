"""`reshaper run --realtime [--cpu N]`: the forwarding thread SCHED_FIFO, the process's memory locked.

A user-space mode forwards on the thread that runs Appliance.run (bridge/appliance.py):
ring mode's C loop, nfqueue's verdicts, any Appliance alike. plan() works out, from
the options and what this process may do, what will change, and refuses with every
missing thing named (RealtimeError) before any set-up; apply() then makes it so on the
calling thread, all or nothing.

Threads started afterwards (the control socket's, the hooks') run SCHED_OTHER
(SCHED_RESET_ON_FORK), on the forwarder's CPU under --cpu, as under `taskset`.
"""
from __future__ import annotations

import dataclasses
import os
import resource

from reshaper._native import lib
from reshaper.bridge.privileges import CAP_IPC_LOCK, CAP_SYS_NICE, effective_capabilities

# Below the kernel's threaded interrupt handlers, which run SCHED_FIFO 50: on threadirqs
# and PREEMPT_RT kernels they carry the receive that feeds the forwarder, so they must
# preempt it, never wait for it. 20 leaves room on both sides: for NAPI threads an
# operator raises (chrt) between the forwarder and them, for other real-time work below.
PRIORITY = 20

RT_RUNTIME = "/proc/sys/kernel/sched_rt_runtime_us"
RT_PERIOD = "/proc/sys/kernel/sched_rt_period_us"
KERNEL_RT_RUNTIME = 950000   # the kernel's default: real-time tasks get 0.95 s of each 1 s period at most

POLICY_NAMES = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR",
                os.SCHED_BATCH: "SCHED_BATCH", os.SCHED_IDLE: "SCHED_IDLE"}
REAL_TIME = (os.SCHED_FIFO, os.SCHED_RR)


class RealtimeError(Exception):
    """--realtime or --cpu cannot be had here; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class Realtime:
    """What apply() does to the forwarding thread."""
    policy: int | None      # the sched_setscheduler() policy to set (with SCHED_RESET_ON_FORK); None: left as it is
    priority: int           # its real-time priority (0: not real-time)
    cpu: int | None         # --cpu
    lock_memory: bool       # mlockall (--realtime)
    keep: tuple[int, ...]   # capabilities the drop after set-up must keep (bridge/privileges.py)
    notes: tuple[str, ...]  # said once applied


def cpu_list(cpus) -> str:
    """CPUs as ranges, as the kernel writes them: 0-3,6."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


@dataclasses.dataclass(frozen=True)
class Process:
    """What plan() goes by: this process's limits and the kernel's throttling (here() reads them)."""
    cpus: frozenset[int]        # where it may run (its affinity)
    policy: int                 # sched_getscheduler(), SCHED_RESET_ON_FORK included
    priority: int
    capabilities: int           # the effective set, 1 << CAP_*
    rtprio_limit: int           # RLIMIT_RTPRIO's soft limit
    memlock_limit: int          # RLIMIT_MEMLOCK's soft limit, bytes (resource.RLIM_INFINITY)
    rt_runtime_us: int | None   # kernel.sched_rt_runtime_us; None: unread, rt_unread says why
    rt_period_us: int | None
    rt_unread: str | None = None


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def here() -> Process:
    """The calling thread's Process."""
    try:
        runtime, period, unread = _read_int(RT_RUNTIME), _read_int(RT_PERIOD), None
    except (OSError, ValueError) as exc:   # a sandbox that shows /proc/<pid> only (systemd's ProcSubset=pid)
        runtime = period = None
        unread = f"{RT_RUNTIME}: {getattr(exc, 'strerror', None) or exc}"
    return Process(frozenset(os.sched_getaffinity(0)), os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
                   effective_capabilities(), resource.getrlimit(resource.RLIMIT_RTPRIO)[0],
                   resource.getrlimit(resource.RLIMIT_MEMLOCK)[0], runtime, period, unread)


def _limit(value: int, unit: int = 1) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value // unit)


def plan(realtime: bool, cpu: int | None, busy_poll_us: int = 0, process: Process | None = None) -> Realtime | None:
    """What --realtime and --cpu will change for a user-space mode (None: nothing); RealtimeError
    naming every missing thing when they cannot be had. Only reads (process: here()'s)."""
    if not realtime and cpu is None:
        return None
    p = process or here()
    problems, notes, keep = [], [], []
    if realtime and busy_poll_us:
        problems.append(f"--busy-poll {busy_poll_us} with --realtime: a SCHED_FIFO thread that polls instead of "
                        "sleeping keeps every other task off its CPU for as long as frames come less than "
                        f"{busy_poll_us} us apart; give one or the other")
    if cpu is not None and cpu not in p.cpus:
        problems.append(f"--cpu {cpu}: this process may run on CPUs {cpu_list(p.cpus)} only")
    policy, priority = None, 0
    if realtime:
        if p.rt_runtime_us is not None and (p.rt_runtime_us < 0 or p.rt_runtime_us >= p.rt_period_us):
            problems.append(
                f"real-time throttling is off (kernel.sched_rt_runtime_us = {p.rt_runtime_us}, of a period of "
                f"{p.rt_period_us}): a SCHED_FIFO forwarder under a full load of frames would keep every other "
                "task off its CPU (on a one-core board: sshd, the service manager, everything); set it back to "
                f"the kernel's default (sysctl kernel.sched_rt_runtime_us={KERNEL_RT_RUNTIME}) or run without "
                "--realtime")
        base = p.policy & ~os.SCHED_RESET_ON_FORK
        if base in REAL_TIME:
            # made real-time by whoever started us (a unit's CPUSchedulingPolicy=, chrt): their choice stands
            priority = p.priority
            notes.append(f"{POLICY_NAMES[base]} {priority} was set when reshaper started; kept")
            if not p.policy & os.SCHED_RESET_ON_FORK:
                policy = p.policy | os.SCHED_RESET_ON_FORK   # the same policy and priority: needs no privilege
            if p.rt_unread:
                notes.append(f"real-time throttling not checked ({p.rt_unread})")
        else:
            policy, priority = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, PRIORITY
            if p.rt_unread:
                problems.append(f"cannot tell whether real-time throttling is on ({p.rt_unread}); without it a "
                                "SCHED_FIFO forwarder under a full load of frames would keep every other task off "
                                "its CPU")
            if (not p.capabilities & (1 << CAP_SYS_NICE) and p.rtprio_limit != resource.RLIM_INFINITY
                    and p.rtprio_limit < PRIORITY):
                problems.append(f"SCHED_FIFO priority {PRIORITY} needs CAP_SYS_NICE or a real-time priority limit "
                                f"of at least {PRIORITY} (ulimit -r; LimitRTPRIO= in a systemd unit); this process "
                                f"has neither (limit {_limit(p.rtprio_limit)})")
        # MCL_FUTURE locks every later allocation too (the delay pool, the hooks' thread stacks), each checked
        # against RLIMIT_MEMLOCK unless the process holds CAP_IPC_LOCK at that moment: so the limit must be
        # unlimited, or the capability kept for the whole run; else an allocation fails mid-run (MemoryError)
        if p.memlock_limit != resource.RLIM_INFINITY:
            if p.capabilities & (1 << CAP_IPC_LOCK):
                keep.append(CAP_IPC_LOCK)
            else:
                problems.append("locking the process's memory (mlockall) needs an unlimited locked-memory limit "
                                "(ulimit -l unlimited; LimitMEMLOCK=infinity in a systemd unit) or CAP_IPC_LOCK; "
                                f"this process has neither (limit {_limit(p.memlock_limit, 1024)} KiB)")
    if problems:
        raise RealtimeError("\n".join(problems))
    return Realtime(policy, priority, cpu, realtime, tuple(keep), tuple(notes))


def apply(rt: Realtime) -> str:
    """Makes rt so on the calling thread, all or nothing (RealtimeError, with what the kernel
    refused); what it did, for the log."""
    undo = []
    try:
        if rt.lock_memory:
            step = "mlockall"
            rc = lib.rs_lock_memory()
            if rc < 0:
                raise OSError(-rc, os.strerror(-rc))
            undo.append(lib.rs_unlock_memory)
        if rt.cpu is not None:
            step = f"pinning to CPU {rt.cpu}"
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {rt.cpu})
            undo.append(lambda: os.sched_setaffinity(0, before))
        if rt.policy is not None:
            step = f"{POLICY_NAMES[rt.policy & ~os.SCHED_RESET_ON_FORK]} priority {rt.priority}"
            os.sched_setscheduler(0, rt.policy, os.sched_param(rt.priority))
    except OSError as exc:
        for step_back in reversed(undo):
            step_back()
        raise RealtimeError(f"{step}: {exc.strerror}; none of --realtime and --cpu is applied") from None
    now = scheduling(0)
    policy = now["policy"] + (f" priority {now['priority']}" if now["priority"] else "")
    locked = ", memory locked (mlockall)" if rt.lock_memory else ""
    return "; ".join([f"forwarding thread {policy} on CPUs {now['cpus']}{locked}", *rt.notes])


def scheduling(tid: int) -> dict:
    """Thread tid's policy, priority and CPUs, and the process's locked memory, as the kernel has them
    (0: the calling thread); for the log and `reshaper stats`."""
    policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    locked_kb = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmLck:"):
                locked_kb = int(line.split()[1])
    return {"policy": POLICY_NAMES.get(policy, str(policy)), "priority": os.sched_getparam(tid).sched_priority,
            "cpus": cpu_list(os.sched_getaffinity(tid)), "locked_kb": locked_kb}


def describe(s: dict) -> str:
    """One line of scheduling(): SCHED_FIFO 20 on CPUs 1, 25 MiB locked."""
    policy = s["policy"] + (f" {s['priority']}" if s["priority"] else "")
    return f"{policy} on CPUs {s['cpus']}, {s['locked_kb'] / 1024:.0f} MiB locked"
