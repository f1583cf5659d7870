"""Kernel mode's trace reader (bridge/kernel_trace.py) without a kernel: trace_pipe's lines as the
module's tracepoint prints them (taken from the test VM's kernel), the instances of readers that
no longer run, and what it says when tracefs or the event is not there. The reader against the
module itself: tests/kmod/test_kmod.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from reshaper._native import lib
from reshaper.bridge import kernel_trace as kt
from reshaper.bridge.trace import TraceError
from tests.helpers.tracepoint import tp_printk

# the sender's softirq (comm python, pid 218) on CPU 0, flags ..s1., clock mono
DROPPED = ("          python-218     [000] ..s1.    14.706850: reshaper_frame: netns=4026532213 port=1 rule=0 "
           "verdict=1 reason=2 copies=0 len=52 delay_ns=0 head=02000000000202000000000108004500002600010000401166c4"
           "0a0000010a00000203e800090012d3bd00010203040506070809\n")
FROM_B = ("          python-218     [000] ..s1.    14.709416: reshaper_frame: netns=4026532213 port=2 rule=2 verdict=0 "
          "reason=0 copies=1 len=52 delay_ns=0 head=0200000000020200000000010800450000260001000040116"
          "6c40a0000010a00000203e8000a0012d3bc00010203040506070809\n")


def test_the_reader_takes_the_fields_the_module_prints():
    assert tuple(re.findall(r"(\w+)=%", tp_printk())) == kt.FIELDS


def test_a_line_of_trace_pipe_is_a_record():
    rec = kt.parse_line(DROPPED)
    head = bytes.fromhex(DROPPED.rsplit("head=", 1)[1])
    assert rec == {"time_ns": 14_706_850_000, "port": "a", "len": 52, "rule": 0, "verdict": lib.RS_V_DROP,
                   "reason": lib.RS_R_RULE, "copies": 0, "delay_ns": 0, "head": head}
    assert list(rec) == ["time_ns", "port", "len", "rule", "verdict", "reason", "copies", "delay_ns", "head"]
    assert len(head) == 52 and head[12:14] == b"\x08\x00"
    rec = kt.parse_line(FROM_B)
    assert (rec["port"], rec["rule"], rec["verdict"], rec["reason"], rec["copies"], rec["delay_ns"]) == \
        ("b", 2, lib.RS_V_FORWARD, lib.RS_R_NONE, 1, 0)


def test_a_comm_with_spaces_no_context_flags_and_no_rule():
    """A task's name may hold spaces and dashes; irq-info off drops the flags column; rule -1: none."""
    line = ("  ip netns -ex-9-12345 [001]  98765.000001: reshaper_frame: netns=1 port=1 rule=-1 verdict=1 reason=1 "
            "copies=0 len=14 delay_ns=0 head=ffffffffffff02000000000188b5\n")
    rec = kt.parse_line(line)
    assert rec["time_ns"] == 98_765_000_001_000 and rec["rule"] == -1 and rec["reason"] == lib.RS_R_DEFAULT
    assert rec["head"] == bytes.fromhex("ffffffffffff02000000000188b5")


def test_other_lines_are_not_records():
    for line in ("", "\n", "# tracer: nop\n", "CPU:1 [LOST 12 EVENTS]\n",
                 "  python-218 [000] ..s1. 14.706850: net_dev_xmit: dev=h0 skbaddr=0 len=60 rc=0\n"):
        assert kt.parse_line(line) is None, line
    assert kt.lost_events("CPU:1 [LOST 12 EVENTS]\n") == 12
    assert kt.lost_events("CPU:0 [LOST EVENTS]\n") == 1   # at least one, the kernel did not count
    assert kt.lost_events(DROPPED) is None


def test_an_event_of_another_version_is_refused():
    with pytest.raises(ValueError, match="not the fields of this version's event"):
        kt.parse_line(DROPPED.replace(" copies=0", ""))
    with pytest.raises(ValueError, match="port 3 is neither port"):
        kt.parse_line(DROPPED.replace("port=1", "port=3"))


def test_instances_of_readers_gone_are_removed(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    instances = tmp_path / "instances"
    for name in (f"reshaper-trace-{gone.pid}", f"reshaper-trace-{os.getpid()}", "reshaper-trace-x", "someone-else"):
        (instances / name).mkdir(parents=True)
    assert kt.remove_stale_instances(str(tmp_path)) == [str(instances / f"reshaper-trace-{gone.pid}")]
    assert sorted(p.name for p in instances.iterdir()) == [f"reshaper-trace-{os.getpid()}", "reshaper-trace-x",
                                                          "someone-else"]


def test_no_tracefs_no_module_no_event(tmp_path, monkeypatch):
    with pytest.raises(TraceError, match=f"tracefs is not mounted on {tmp_path}: mount -t tracefs"):
        kt.find_tracefs(str(tmp_path))
    (tmp_path / "instances").mkdir()
    monkeypatch.setattr(kt, "MODULE", str(tmp_path / "module"))
    with pytest.raises(kt.TracefsError, match="the reshaper kernel module is not loaded"):
        kt.find_tracefs(str(tmp_path))
    (tmp_path / "module").mkdir()
    with pytest.raises(kt.TracefsError, match="has no tracepoint: load a module built from this version"):
        list(kt.kernel_trace(1, tracefs=str(tmp_path)))
    (tmp_path / kt.EVENT).mkdir(parents=True)
    assert kt.find_tracefs(str(tmp_path)) == str(tmp_path)
