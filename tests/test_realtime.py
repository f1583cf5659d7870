"""`reshaper run --realtime [--cpu N]` (bridge/realtime.py): what it refuses, and why, before
any set-up; and live, the forwarding thread SCHED_FIFO on its CPU with the memory locked while
frames cross exactly as without it."""
import os
import resource
import subprocess
import sys
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper.bridge.cli import format_stats
from reshaper.bridge.netns import HOST_A, HOST_B
from reshaper.bridge.privileges import CAP_IPC_LOCK, CAP_NET_ADMIN, CAP_SYS_NICE
from reshaper.bridge.realtime import PRIORITY, Process, Realtime, RealtimeError, apply, cpu_list, plan
from tests.helpers.frames import MAC_A, MAC_B, PLAIN, ours, rebuilt, write_config
from tests.helpers.live import LiveAppliance

INFINITY = resource.RLIM_INFINITY
FIFO = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
# a root shell's: every capability, RT throttling at the kernel's default, the limits of a login
ROOT = Process(cpus=frozenset({0, 1}), policy=os.SCHED_OTHER, priority=0,
               capabilities=(1 << CAP_SYS_NICE) | (1 << CAP_IPC_LOCK) | (1 << CAP_NET_ADMIN),
               rtprio_limit=0, memlock_limit=8 << 20, rt_runtime_us=950000, rt_period_us=1000000)
USER = Process(cpus=frozenset({0, 1}), policy=os.SCHED_OTHER, priority=0, capabilities=0, rtprio_limit=0,
               memlock_limit=8 << 20, rt_runtime_us=950000, rt_period_us=1000000)
# what deploy/beaglebone/reshaper.service gives: SCHED_FIFO from the service manager, no memory limit,
# /proc/sys hidden (ProcSubset=pid), no CAP_SYS_NICE nor CAP_IPC_LOCK
UNIT = Process(cpus=frozenset({0}), policy=FIFO, priority=PRIORITY, capabilities=1 << CAP_NET_ADMIN,
               rtprio_limit=0, memlock_limit=INFINITY, rt_runtime_us=None, rt_period_us=None,
               rt_unread="/proc/sys/kernel/sched_rt_runtime_us: No such file or directory")
THROTTLING_OFF = ("real-time throttling is off (kernel.sched_rt_runtime_us = -1, of a period of 1000000): a "
                  "SCHED_FIFO forwarder under a full load of frames would keep every other task off its CPU (on a "
                  "one-core board: sshd, the service manager, everything); set it back to the kernel's default "
                  "(sysctl kernel.sched_rt_runtime_us=950000) or run without --realtime")
NO_NICE = (f"SCHED_FIFO priority {PRIORITY} needs CAP_SYS_NICE or a real-time priority limit of at least {PRIORITY} "
           "(ulimit -r; LimitRTPRIO= in a systemd unit); this process has neither (limit 0)")
NO_LOCK = ("locking the process's memory (mlockall) needs an unlimited locked-memory limit (ulimit -l unlimited; "
           "LimitMEMLOCK=infinity in a systemd unit) or CAP_IPC_LOCK; this process has neither (limit 8192 KiB)")


def refusal(*args, **kwargs) -> list[str]:
    with pytest.raises(RealtimeError) as refused:
        plan(*args, **kwargs)
    return str(refused.value).splitlines()


def test_nothing_asked_nothing_planned():
    assert plan(False, None, process=USER) is None


def test_root_gets_sched_fifo_and_keeps_cap_ipc_lock_for_what_it_locks_later():
    # the locked-memory limit is finite: later allocations are locked only while CAP_IPC_LOCK is held
    assert plan(True, 1, process=ROOT) == Realtime(FIFO, PRIORITY, 1, True, (CAP_IPC_LOCK,), ())
    unlimited = Process(**{**ROOT.__dict__, "memlock_limit": INFINITY})
    assert plan(True, None, process=unlimited) == Realtime(FIFO, PRIORITY, None, True, (), ())


def test_limits_instead_of_capabilities():
    limits = Process(**{**USER.__dict__, "rtprio_limit": PRIORITY, "memlock_limit": INFINITY})
    assert plan(True, None, process=limits) == Realtime(FIFO, PRIORITY, None, True, (), ())


def test_a_user_without_capabilities_or_limits_is_told_both():
    assert refusal(True, None, process=USER) == [NO_NICE, NO_LOCK]
    low = Process(**{**USER.__dict__, "rtprio_limit": PRIORITY - 1, "memlock_limit": INFINITY})
    assert refusal(True, None, process=low) == [NO_NICE.replace("(limit 0)", f"(limit {PRIORITY - 1})")]


def test_no_realtime_without_throttling():
    off = Process(**{**ROOT.__dict__, "rt_runtime_us": -1})
    assert refusal(True, None, process=off) == [THROTTLING_OFF]
    whole = Process(**{**ROOT.__dict__, "rt_runtime_us": 1000000})   # all of every period: off as well
    assert refusal(True, None, process=whole)[0].startswith(
        "real-time throttling is off (kernel.sched_rt_runtime_us = 1000000, of a period of 1000000)")
    hidden = Process(**{**ROOT.__dict__, "rt_runtime_us": None, "rt_period_us": None, "rt_unread": UNIT.rt_unread})
    assert refusal(True, None, process=hidden) == [
        f"cannot tell whether real-time throttling is on ({UNIT.rt_unread}); without it a SCHED_FIFO forwarder "
        "under a full load of frames would keep every other task off its CPU"]


def test_busy_poll_and_realtime_exclude_each_other():
    assert refusal(True, None, 5000, process=ROOT) == [
        "--busy-poll 5000 with --realtime: a SCHED_FIFO thread that polls instead of sleeping keeps every other task "
        "off its CPU for as long as frames come less than 5000 us apart; give one or the other"]
    assert plan(False, None, 5000, process=ROOT) is None


def test_cpu_must_be_one_the_process_may_run_on():
    assert refusal(False, 2, process=ROOT) == ["--cpu 2: this process may run on CPUs 0-1 only"]
    assert refusal(False, -1, process=ROOT) == ["--cpu -1: this process may run on CPUs 0-1 only"]
    # --cpu alone pins, and needs no privilege
    assert plan(False, 0, process=USER) == Realtime(None, 0, 0, False, (), ())
    assert cpu_list({0, 1, 2, 3, 6, 8, 9}) == "0-3,6,8-9"


def test_every_problem_at_once():
    off = Process(**{**USER.__dict__, "rt_runtime_us": -1})
    assert refusal(True, 7, 10, process=off) == [
        "--busy-poll 10 with --realtime: a SCHED_FIFO thread that polls instead of sleeping keeps every other task "
        "off its CPU for as long as frames come less than 10 us apart; give one or the other",
        "--cpu 7: this process may run on CPUs 0-1 only", THROTTLING_OFF, NO_NICE, NO_LOCK]


def test_the_service_managers_scheduling_stands():
    """The board's unit: SCHED_FIFO set by systemd before the sandbox (which hides /proc/sys and the
    scheduling calls); the daemon only locks memory, and says what it could not check."""
    assert plan(True, None, process=UNIT) == Realtime(
        None, PRIORITY, None, True, (), (f"SCHED_FIFO {PRIORITY} was set when reshaper started; kept",
                                         f"real-time throttling not checked ({UNIT.rt_unread})"))
    # chrt without --reset-on-fork: the flag is added (same policy and priority: no privilege needed)
    chrt = Process(**{**USER.__dict__, "policy": os.SCHED_RR, "priority": 5, "memlock_limit": INFINITY})
    assert plan(True, None, process=chrt) == Realtime(
        os.SCHED_RR | os.SCHED_RESET_ON_FORK, 5, None, True, (), ("SCHED_RR 5 was set when reshaper started; kept",))


def test_apply_undoes_what_it_did_when_the_kernel_refuses_a_later_step():
    """Affinity and policy are per thread: this runs on a thread of its own."""
    seen = {}

    def attempt():
        before = os.sched_getaffinity(0)
        with pytest.raises(RealtimeError) as refused:
            apply(Realtime(FIFO, 1000, min(before), False, (), ()))   # no such priority: EINVAL, whoever asks
        seen.update(error=str(refused.value), affinity=os.sched_getaffinity(0), before=before,
                    policy=os.sched_getscheduler(0))

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    assert seen["error"] == "SCHED_FIFO priority 1000: Invalid argument; none of --realtime and --cpu is applied"
    assert (seen["affinity"], seen["policy"]) == (seen["before"], os.SCHED_OTHER)


def test_refused_before_any_set_up(tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, PLAIN)
    r = subprocess.run([sys.executable, "-m", "reshaper", "run", str(config), "--realtime", "--busy-poll", "50",
                        "--status-interval", "0"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RESHAPER_RUN_DIR": str(run_dir)})
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        "reshaper: --busy-poll 50 with --realtime: a SCHED_FIFO thread that polls instead of sleeping keeps every "
        "other task off its CPU for as long as frames come less than 50 us apart; give one or the other")
    assert not run_dir.exists()   # no state file, no control socket: nothing was set up


def test_cpu_takes_a_number():
    r = subprocess.run([sys.executable, "-m", "reshaper", "run", "x.yaml", "--cpu", "one"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "argument --cpu: invalid int value: 'one'" in r.stderr


# ---- live ----------------------------------------------------------------------------------

RULES = PLAIN + "rules:\n  - {name: to-9000, from: a, match: {ip_proto: udp, dst_port: 7}, " \
                "actions: [{set: {dst_port: 9000}}]}\n"


def status_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def assert_realtime_and_forwarding(appliance, tap_a, tap_b, cpu: int) -> None:
    pid = appliance.stats()["pid"]
    # the thread that forwards is the main one (bridge/appliance.py: Appliance.run)
    assert os.sched_getscheduler(pid) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert os.sched_getparam(pid).sched_priority == PRIORITY
    assert os.sched_getaffinity(pid) == {cpu}
    # the threads it started (control socket, hooks): ordinary scheduling, on its CPU
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert others, "the control thread"
    assert {(os.sched_getscheduler(t), frozenset(os.sched_getaffinity(t))) for t in others} == \
        {(os.SCHED_OTHER, frozenset({cpu}))}
    status = status_of(pid)
    locked_kb = int(status["VmLck"].split()[0])
    assert locked_kb > 0, status["VmLck"]
    # CAP_IPC_LOCK kept only where the locked-memory limit is finite (bridge/realtime.py)
    limited = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] != INFINITY
    assert int(status["CapEff"], 16) == (1 << CAP_NET_ADMIN) | ((1 << CAP_IPC_LOCK) if limited else 0)
    stats = appliance.stats()
    forwarder = stats["forwarder"]
    assert (forwarder["policy"], forwarder["priority"], forwarder["cpus"]) == ("SCHED_FIFO", PRIORITY, str(cpu))
    assert forwarder["locked_kb"] > 0
    assert f"\nforwarder: SCHED_FIFO {PRIORITY} on CPUs {cpu}, " in format_stats(stats)
    print(f"forwarder SCHED_FIFO {PRIORITY} on CPU {cpu}; VmLck {status['VmLck'].strip()}, "
          f"VmRSS {status['VmRSS'].strip()}")

    udp = Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / UDP(sport=1234, dport=7) / b"rt"
    tap_a.send(bytes(udp))
    expected = udp.copy()
    expected[UDP].dport = 9000
    assert tap_b.receive(1, match=ours) == [rebuilt(expected)]
    back = Ether(src=MAC_B, dst=MAC_A) / IP(src=HOST_B["v4"], dst=HOST_A["v4"]) / UDP(sport=7, dport=1234) / b"rt"
    tap_b.send(bytes(back))
    assert tap_a.receive(1, match=ours) == [bytes(back)]


@pytest.mark.parametrize("mode", ["ring", "nfqueue"])
def test_forwarder_runs_sched_fifo_pinned_with_memory_locked(tmp_path, topo, taps, mode):
    cpu = max(os.sched_getaffinity(0))   # CPU 1 on a two-core machine
    tap_a, tap_b = taps
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path, mode=mode,
                       extra=["--realtime", "--cpu", str(cpu)]) as appliance:
        assert_realtime_and_forwarding(appliance, tap_a, tap_b, cpu)
    assert f"reshaper: forwarding thread SCHED_FIFO priority {PRIORITY} on CPUs {cpu}, memory locked (mlockall)" \
        in appliance.log().splitlines()
