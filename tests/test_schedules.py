"""Schedules (docs/schedules.md): a rule's actions change with time, in phases the engine picks by each
frame's arrival time. Offline through `reshaper apply` (both of its loops) and the engine, where times
are exact; the errors of rule files and schedule files; the verifier on hand-broken phases; live in ring
mode, where a UDP stream's measured delay follows the phases."""
from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper._native import lib
from reshaper.bridge.apply import apply_capture
from reshaper.bridge.control import read_stats
from reshaper.bridge.watch import format_line
from reshaper.lab.stamped import one_way
from reshaper.rules.binding import Engine, ProgramError, program_verify
from reshaper.rules.config import load_config
from tests.helpers.captures import read_outputs, write_capture
from tests.helpers.config_errors import PORTS, at, errors, reshaper_check
from tests.helpers.live import LiveAppliance

S, MS = 10**9, 10**6
FLAKY = PORTS + """rules:
  - name: flaky
    match: {ip_proto: udp}
    actions: [{delay: {time: 20ms}}]
    schedule:
      repeat: true
      phases:
        - {for: 10s}
        - {for: 2s, actions: [drop]}
        - {for: 8s, actions: [{delay: {time: 200ms}}, {set: {dscp: 46}}]}
"""


def udp(n: int, dscp: int = 0) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src="10.0.0.1", dst="10.0.0.2", tos=dscp << 2) / UDP(sport=4000, dport=9) / f"frame {n}")


def run_apply(tmp_path, text: str, arrivals: list[int], python_loop: bool) -> list[tuple[int, bytes]]:
    (tmp_path / "r.yaml").write_text(text)
    write_capture(tmp_path / "in.pcap", [(t, udp(i)) for i, t in enumerate(arrivals)])
    apply_capture(load_config(str(tmp_path / "r.yaml")), str(tmp_path / "in.pcap"), str(tmp_path / "out.pcap"), "a",
          python_loop=python_loop)
    return read_outputs(tmp_path / "out.pcap")


@pytest.mark.parametrize("python_loop", [False, True], ids=["C loop", "python loop"])
def test_each_phase_treats_its_frames_and_repeat_wraps(tmp_path, python_loop):
    """Time zero is the capture's first frame (here at 0). 10 s of the rule's own 20 ms delay, a 2 s
    outage, 8 s of 200 ms with DSCP 46, then again: each frame gets the phase of its arrival, to the ns."""
    arrivals = [0, 5 * S, 10 * S - 1, 10 * S, 12 * S - 1, 12 * S, 19 * S, 20 * S + 500 * MS, 30 * S + 500 * MS,
                32 * S, 41 * S]
    out = run_apply(tmp_path, FLAKY, arrivals, python_loop)
    assert out == [(0 + 20 * MS, udp(0)), (5 * S + 20 * MS, udp(1)), (10 * S - 1 + 20 * MS, udp(2)),
                   (12 * S + 200 * MS, udp(5, dscp=46)), (19 * S + 200 * MS, udp(6, dscp=46)),
                   (20 * S + 520 * MS, udp(7)),
                   (32 * S + 200 * MS, udp(9, dscp=46)), (41 * S + 20 * MS, udp(10))]


def test_frames_delayed_before_a_change_keep_their_departure_and_later_ones_queue_behind(tmp_path):
    """At 20 s the delay falls from 200 ms to 20 ms: the frame of 19.99 s leaves at 20.19 s as it was
    given, and the frame of 20 s, due at 20.02 s, leaves after it (a rule's frames never overtake one
    another unless its delays say reorder_on_jitter)."""
    out = run_apply(tmp_path, FLAKY, [0, 19_990 * MS, 20 * S, 20 * S + 300 * MS], python_loop=False)
    assert [t for t, _ in out] == [20 * MS, 20_190 * MS, 20_190 * MS, 20_320 * MS]


def test_without_repeat_the_last_phase_holds(tmp_path):
    text = FLAKY.replace("repeat: true", "repeat: false")
    out = run_apply(tmp_path, text, [0, 11 * S, 25 * S, 3600 * S], python_loop=False)
    assert out == [(20 * MS, udp(0)), (25 * S + 200 * MS, udp(2, dscp=46)), (3600 * S + 200 * MS, udp(3, dscp=46))]


def test_keep_time_counts_from_the_first_load():
    """Engine.start(load, first): a reload at 100 s restarts the schedule of one rule, and the one that
    says keep_time goes on counting from the first load."""
    config = load_config("r.yaml", PORTS + """rules:
  - name: kept
    match: {dst_port: 9, ip_proto: udp}
    schedule: {keep_time: true, phases: [{for: 60s, actions: [drop]}, {for: 60s}]}
  - name: restarted
    match: {ip_proto: udp}
    schedule: {phases: [{for: 60s, actions: [drop]}, {for: 60s}]}
""")
    engine = Engine(config.program)
    engine.start(100 * S, 0)
    assert engine.time_zero() == (100 * S, 0)
    kept, _ = engine.run(udp(0), "a", 101 * S)
    other = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=4000, dport=10))
    restarted, _ = engine.run(other, "a", 101 * S)
    assert (kept.rule, kept.forward, restarted.rule, restarted.forward) == (0, True, 1, False)


def test_a_schedule_file_becomes_phases(tmp_path):
    """One phase a row of for,delay,jitter,loss; an empty cell is 0; no repeat: the last row holds."""
    (tmp_path / "path.csv").write_text("# recorded on the uplink\nfor, delay, loss\n1s, 10ms,\n"
                                       "2s, 50ms, 0%\n500ms, , 100%\n1s, 5ms, 0\n")
    text = PORTS + "rules:\n  - name: recorded\n    match: {ip_proto: udp}\n    schedule: {file: path.csv}\n"
    out = run_apply(tmp_path, text, [0, 999 * MS, S, 3 * S + 100 * MS, 3 * S + 600 * MS, 10 * S],
                    python_loop=False)
    assert out == [(10 * MS, udp(0)), (999 * MS + 10 * MS, udp(1)), (S + 50 * MS, udp(2)),
                   (3 * S + 605 * MS, udp(4)), (10 * S + 5 * MS, udp(5))]


def test_stats_and_watch_show_the_phase_now():
    from reshaper.bridge.appliance import rule_phase

    config = load_config("r.yaml", FLAKY)
    now = time.monotonic_ns()
    assert rule_phase(config.rules[0], (now - 11 * S, now - 11 * S)) == {"phase": 1, "phases": 3}
    assert rule_phase(config.rules[0], (now - 21 * S, now - 1000 * S)) == {"phase": 0, "phases": 3}
    step = {"time": 0, "restarted": False, "reloaded": False,
            "engine": {"frames_in": 3, "forwarded": 2, "dropped": 1},
            "rules": [{"name": "flaky", "matched": 3, "dropped": 1, "lost": 0, "queue_drops": 0, "delayed": 2,
                       "phase": 1, "phases": 3}]}
    assert format_line(step).endswith(" | flaky: 3 matched 1 dropped 2 delayed phase 2/3")


# ---- errors: in the rule file, and in the schedule file it names ----

def test_schedule_errors_name_their_place():
    text = PORTS + """rules:
  - name: both
    schedule: {file: x.csv, phases: [{for: 1s}]}
  - name: neither
    schedule: {repeat: true}
  - name: zero
    schedule: {phases: [{for: 0s}, {for: 1s, actions: [python: {call: "m:f"}]}]}
  - name: mixed
    actions: [{delay: {time: 1ms, reorder_on_jitter: true}}]
    schedule: {phases: [{for: 1s, actions: [{delay: {time: 1ms}}, drop, dec_ttl]}], keep_time: 1}
  - name: empty
    schedule: {phases: []}
"""
    assert errors(text) == [
        at(text, "{file: x.csv", "rule 'both': schedule: expected phases or a file of them, not both"),
        at(text, "{repeat: true}", "rule 'neither': schedule: expected phases or a file of them, got neither"),
        at(text, "0s}", "rule 'zero': schedule: phases[0]: for: expected a phase longer than 0"),
        at(text, "python:", "rule 'zero': schedule: phases[1]: python: a hook cannot be in a phase (it would run "
                            "in some phases and not in others); give the rule its own hook"),
        at(text, "{delay: {time: 1ms}}", "rule 'mixed': delay: expected the same reorder_on_jitter in every "
                                         "delay of a scheduled rule (the rule's own and its phases')"),
        at(text, "dec_ttl]", "rule 'mixed': schedule: phases[0]: dec_ttl: actions after drop never run"),
        at(text, "1}\n", "rule 'mixed': schedule: keep_time: expected true or false, got '1'"),
        at(text, "[]}", "rule 'empty': schedule: phases: expected a list of phases like - {for: 10s, actions: "
                        "[drop]}, got an empty list"),
    ]


@pytest.mark.parametrize("csv,where,message", [
    ("for,delay\n1s,10ms\n2s,10parsecs\n", (3, 4), "delay: expected a time with a unit (e.g. 250us, 20ms, 1s), "
                                                   "got '10parsecs'"),
    ("for,delay,delay\n", (1, 11), "expected a header naming each column once, from for, delay, jitter, loss; "
                                   "got 'delay'"),
    ("delay,loss\n10ms,1%\n", (1, 1), "expected a column 'for' (each phase's length)"),
    ("for, loss\n1s, 150%\n", (2, 5), "loss: expected a probability between 0% and 100%, got '150%'"),
    ("for,loss\n1s,1%,7\n", (2, 7), "expected 2 cells (for, loss), got 3"),
    ("for,delay\n,10ms\n", (2, 1), "expected the phase's length (the 'for' cell)"),
    ("for,delay\n0ms,1ms\n", (2, 1), "for: expected a phase longer than 0, got '0ms'"),
    ("# nothing\n\n", (1, 1), "expected a header naming the columns, then at least one phase"),
    ("for\n" + "1ms\n" * (lib.RS_MAX_PHASES + 1), (lib.RS_MAX_PHASES + 2, 1),
     f"expected at most {lib.RS_MAX_PHASES} phases"),
])
def test_a_bad_schedule_file_is_named_at_its_line_and_column(tmp_path, csv, where, message):
    (tmp_path / "s.csv").write_text(csv)
    text = PORTS + "rules:\n  - name: r\n    schedule: {file: s.csv}\n"
    path = tmp_path / "r.yaml"
    path.write_text(text)
    result = reshaper_check(path)
    line, col = where
    assert result.returncode == 1
    assert result.stderr.splitlines()[:2] == [  # in the order of their files' names
        f"{path}:5:22: error: rule 'r': schedule: file: s.csv is not a schedule (its errors name its lines)",
        f"{tmp_path / 's.csv'}:{line}:{col}: error: {message}"]


def test_a_missing_schedule_file_is_named(tmp_path):
    (tmp_path / "r.yaml").write_text(PORTS + "rules:\n  - name: r\n    schedule: {file: gone.csv}\n")
    result = reshaper_check(tmp_path / "r.yaml")
    assert f"{tmp_path / 'gone.csv'}:1:1: error: cannot read the file: No such file or directory" in result.stderr


# ---- the verifier, on phases broken by hand ----

def scheduled(phases: bytes, n: int, flags: int = lib.RS_RF_SCHEDULE) -> bytes:
    """A one-rule program, no matches and no own actions, with these phases."""
    rule = struct.pack("<HBBBBH", 8 + len(phases), 0, flags, 0, 0, n) + phases
    return struct.pack("<IHHHHI", lib.RS_MAGIC, lib.RS_VERSION, lib.RS_PF_FWD_A_TO_B, 1, 0, 16 + len(rule)) + rule


def phase(ns: int, ops: bytes = b"", nops: int = 0, flags: int = 0, extra: int = 0) -> bytes:
    return struct.pack("<QBBH", ns, nops, flags, lib.RS_PHASE_HDR_LEN + len(ops) + extra) + ops


DROP = bytes([lib.RS_A_DROP, 0])
REORDER = bytes([lib.RS_A_REORDER, 8]) + struct.pack("<II", 1, 1)


@pytest.mark.parametrize("prog,error", [
    (scheduled(phase(S), 0), lib.RS_E_RULES),                                  # no phases counted
    (scheduled(phase(S), 2), lib.RS_E_RULES),                                  # one fewer than counted
    (scheduled(phase(0), 1), lib.RS_E_OPERAND),                                # no length
    (scheduled(phase(lib.RS_MAX_PHASE_NS + 1), 1), lib.RS_E_OPERAND),
    (scheduled(phase(S, DROP, 1, lib.RS_PHF_OWN), 1), lib.RS_E_OPERAND),       # the rule's own, and ops
    (scheduled(phase(S, flags=0x80), 1), lib.RS_E_FLAGS),
    (scheduled(phase(S, DROP, 1, extra=2), 1), lib.RS_E_RULES),                # length past the rule
    (scheduled(phase(S, DROP, 2), 1), lib.RS_E_RULES),                         # more ops than bytes
    (scheduled(phase(S, bytes([lib.RS_M_HAS_VLAN, 0]), 1), 1), lib.RS_E_OPCODE),  # a match op in a phase
    (scheduled(phase(S, REORDER, 1), 1), lib.RS_E_ORDER),                      # reorder, no delay after it
    (scheduled(b"", 0, lib.RS_RF_REPEAT), lib.RS_E_FLAGS),                     # repeat without a schedule
    (scheduled(b"", 1, 0), lib.RS_E_FLAGS),                                    # phases without the flag
])
def test_broken_phases_are_refused(prog, error):
    with pytest.raises(ProgramError) as info:
        program_verify(prog)
    assert info.value.code == error


def test_a_well_made_schedule_verifies_and_runs():
    prog = scheduled(phase(S, DROP, 1) + phase(S, flags=lib.RS_PHF_OWN), 2, lib.RS_RF_SCHEDULE | lib.RS_RF_REPEAT)
    engine = Engine(prog)
    verdicts = [engine.run(udp(0), "a", t)[0] for t in (0, S, 2 * S + 1)]
    assert [v.forward for v in verdicts] == [False, True, False]


# ---- live: ring mode ----

@pytest.mark.parametrize("mode", ["ring", "xdp", "nfqueue"])
def test_a_udp_stream_follows_the_phases_live(topo, tmp_path, mode):
    """A stamped UDP stream (100 datagrams/s) through the appliance while the rule goes from 10 ms to an
    outage to 60 ms: each datagram's measured one-way delay is its phase's (those sent within 5 ms of a
    change aside), the outage's are lost, and stats names the phase; the same in every user-space mode."""
    config = tmp_path / "r.yaml"
    config.write_text("version: 1\nports: {a: a1, b: b1}\nrules:\n  - name: uplink\n"
                      "    match: {ip_proto: udp, dst_port: 5001}\n    actions: [{delay: {time: 10ms}}]\n"
                      "    schedule:\n      phases:\n        - {for: 1500ms}\n        - {for: 1s, actions: [drop]}\n"
                      "        - {for: 3600s, actions: [{delay: {time: 60ms}}]}\n")
    with LiveAppliance(topo.br, str(config), tmp_path, mode=mode) as appliance:
        before = read_stats(appliance.control)
        load, _ = before["schedule_time_zero_ns"]
        # CLOCK_MONOTONIC (the engine's) into CLOCK_REALTIME (the stamps')
        zero = load + time.clock_gettime_ns(time.CLOCK_REALTIME) - time.monotonic_ns()
        got, _ = one_way(topo, 5001, 400, 100.0)
        after = read_stats(appliance.control)
    assert before["rules"][0]["phase"] == 0 and after["rules"][0]["phase"] == 2
    sent = {seq: tx for seq, tx, _ in got}
    by_phase = {0: [], 1: [], 2: []}
    for seq, tx, rx in got:
        elapsed = tx - zero
        if min(abs(elapsed - 1500 * MS), abs(elapsed - 2500 * MS)) < 5 * MS:
            continue
        by_phase[0 if elapsed < 1500 * MS else 1 if elapsed < 2500 * MS else 2].append((rx - tx) / MS)
    assert by_phase[1] == []
    # What a datagram took beyond its phase's delay is this machine's own path: never negative,
    # typically under 5 ms, and never the 50 ms that would mean the other phase's delay.
    beyond = {p: sorted(d - delay for d in by_phase[p]) for p, delay in ((0, 10), (2, 60))}
    for p, extra in beyond.items():
        assert len(extra) > 50 and extra[0] >= 0 and extra[-1] < 50 and extra[len(extra) // 2] < 5, (p, extra)
    rule = after["rules"][0]
    assert rule["matched"] == 400 and rule["dropped"] == 400 - len(sent) and 95 <= rule["dropped"] <= 105


def test_explain_tells_the_phase_a_frame_arrives_in(tmp_path):
    """`reshaper explain --pcap`: the frames before run with their times, so the frame meets the phase of
    its arrival, and the actions are that phase's."""
    (tmp_path / "r.yaml").write_text(FLAKY)
    write_capture(tmp_path / "in.pcap", [(0, udp(0)), (13 * S, udp(1))])
    result = subprocess.run([sys.executable, "-m", "reshaper", "explain", str(tmp_path / "r.yaml"), "--pcap",
                             str(tmp_path / "in.pcap"), "--frame", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("actions of flaky, in phase 3 of 3 of its schedule:")
    assert lines[start + 1].startswith(f"  delay ({tmp_path / 'r.yaml'}:12:31): ")
    assert lines[start + 2].startswith(f"  set ({tmp_path / 'r.yaml'}:12:55): IP.tos 0x0 -> 0xb8"), lines


def test_mode_limits_and_the_delay_pool_see_the_phases():
    """A phase's actions are held to the mode's limits as the rule's own are, and ring mode's delay
    buffers are sized for the phase that holds the most."""
    from reshaper.bridge import modes
    from reshaper.bridge.modes.ring import pool_plan

    text = PORTS + """rules:
  - name: later
    actions: [{delay: {time: 1ms}}]
    schedule: {phases: [{for: 1s}, {for: 1s, actions: [{duplicate: {copies: 1}}, {delay: {time: 200ms}}]}]}
"""
    config = load_config("r.yaml", text)
    assert [str(d) for d in modes.MODES["nfqueue"].limits(config)] == [
        at(text, "{duplicate", "rule 'later': duplicate: a queue verdict passes one packet, NFQUEUE cannot send "
                               "copies (use --mode ring or kernel)")]
    frames, why = pool_plan(config, {"a": 100, "b": 100})
    assert why == ["rule later: 200 ms x 297,619 frames/s (200 Mbit/s of 84-byte frames) = 59524 frames"]
    assert frames == 59524


def test_a_reload_restarts_a_schedule_unless_it_keeps_its_time(topo, tmp_path):
    """Ring mode, SIGHUP: the new program's time zero is the reload (phase 0 again), and the first
    load's stays the first; with keep_time the rule goes on in the phase the first load's time gives."""
    import signal

    config = tmp_path / "r.yaml"
    rules = ("version: 1\nports: {a: a1, b: b1}\nrules:\n  - name: r\n    match: {ip_proto: udp}\n"
             "    schedule: {KEEP phases: [{for: 1s, actions: [drop]}, {for: 3600s}]}\n")
    config.write_text(rules.replace("KEEP ", ""))
    with LiveAppliance(topo.br, str(config), tmp_path, mode="ring") as appliance:
        first = read_stats(appliance.control)
        time.sleep(1.2)
        assert read_stats(appliance.control)["rules"][0]["phase"] == 1

        def reload(text: str) -> dict:
            before = read_stats(appliance.control)["reloads"]
            config.write_text(text)
            appliance.send_signal(signal.SIGHUP)
            for _ in range(100):
                st = read_stats(appliance.control)
                if st["reloads"] > before:
                    return st
                time.sleep(0.05)
            raise AssertionError("the reload was not taken")

        restarted = reload(rules.replace("KEEP ", "") + "  - {name: other, actions: []}\n")
        kept = reload(rules.replace("KEEP ", "keep_time: true, "))
    load0, first0 = first["schedule_time_zero_ns"]
    assert load0 == first0
    assert restarted["rules"][0]["phase"] == 0 and restarted["schedule_time_zero_ns"][1] == first0
    assert restarted["schedule_time_zero_ns"][0] > load0 + 1_000_000_000
    assert kept["rules"][0]["phase"] == 1 and kept["schedule_time_zero_ns"][1] == first0


def test_check_lists_the_files_a_rule_file_names(tmp_path):
    """`reshaper check --files`: what must go with the rule file (deploy.sh), each once, as it names them."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/p.csv").write_text("for\n1s\n")
    (tmp_path / "l.trace").write_text("1\n")
    (tmp_path / "r.yaml").write_text(PORTS + "rules:\n"
                                     "  - {name: a, match: {dst_port: 1, ip_proto: udp}, schedule: {file: sub/p.csv}}\n"
                                     "  - {name: b, actions: [{rate: {trace: l.trace}}],\n"
                                     "     schedule: {phases: [{for: 1s}, {for: 1s, actions: [{rate: {trace: l.trace}}]}]}}\n")
    result = reshaper_check(tmp_path / "r.yaml", "--files")
    assert (result.returncode, result.stdout, result.stderr) == (0, "sub/p.csv\nl.trace\n", "")


def test_check_as_the_file_it_is_about_to_become(tmp_path):
    """`reshaper check NEW --as PATH` (the Ansible role, before it puts NEW at PATH): errors name PATH,
    and the files the rule file names are the ones beside PATH."""
    live, incoming = tmp_path / "etc", tmp_path / "incoming"
    live.mkdir(), incoming.mkdir()
    (live / "p.csv").write_text("for\n1s\n")
    rules = PORTS + "rules:\n  - {name: a, match: {dst_port: 1, ip_proto: udp}, schedule: {file: p.csv}}\n"
    (incoming / "new.yaml").write_text(rules)
    result = reshaper_check(incoming / "new.yaml", "--as", str(live / "rules.yaml"))
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, f"{live}/rules.yaml: ok"), result.stderr
    result = reshaper_check(incoming / "new.yaml")   # on its own, the schedule file is not beside it
    assert result.returncode == 1 and f"{incoming}/new.yaml:" in result.stderr
    (incoming / "new.yaml").write_text(rules.replace("dst_port: 1", "dst_port: 70000"))
    result = reshaper_check(incoming / "new.yaml", "--as", str(live / "rules.yaml"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"{live}/rules.yaml:4:33: error: rule 'a': match.dst_port:"), result.stderr
