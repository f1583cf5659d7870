"""`reshaper stats --watch`: one line (or JSON object) per interval of what happened in it.

Against a control socket serving scripted snapshots (what each interval must say,
reloads and restarts included), and live: ring mode forwarding a known number of
frames while the watch runs, whose intervals add up to exactly those frames."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper.bridge.control import ControlServer, read_stats
from reshaper.rules.binding import GLOBAL_COUNTERS, RULE_COUNTERS
from tests.helpers.frames import write_config
from tests.helpers.live import LiveAppliance


def snapshot(pid: int, uptime_s: float, reloads: int, frames_in: int, web: dict) -> dict:
    """What `stats --json` holds that the watch reads: one rule, web, with the counters given."""
    engine = dict.fromkeys(GLOBAL_COUNTERS, 0) | {"frames_in": frames_in, "forwarded": frames_in - 1,
                                                  "dropped": 1}
    rule = {"name": "web", **dict.fromkeys(RULE_COUNTERS, 0), **web, "queue_depth": 3, "held": 2}
    return {"mode": "ring", "pid": pid, "uptime_s": uptime_s, "reloads": reloads, "engine": engine,
            "rules": [rule]}


def watch(tmp_path, snapshots: list[dict], *args: str) -> subprocess.CompletedProcess:
    """`stats --watch` against a control socket that serves snapshots in turn (the last one again)."""
    served = iter(snapshots)
    last = {}

    def serve() -> dict:
        last["s"] = next(served, last.get("s"))
        return last["s"]

    server = ControlServer(str(tmp_path / "c.sock"), serve)
    server.start()
    try:
        return subprocess.run([sys.executable, "-m", "reshaper", "stats", "--control", server.path, *args],
                              capture_output=True, text=True, timeout=30)
    finally:
        server.close()


def test_each_interval_counts_what_happened_in_it(tmp_path):
    r = watch(tmp_path, [
        snapshot(7, 10.0, 0, 100, {"matched": 50, "bytes": 5000, "delayed": 40, "lost": 2}),
        snapshot(7, 10.1, 0, 130, {"matched": 70, "bytes": 7000, "delayed": 55, "lost": 3, "dropped": 1}),
        # a reload installed a new state: its counters start from zero
        snapshot(7, 10.2, 1, 12, {"matched": 6, "bytes": 600, "delayed": 5}),
        # another process on the socket: a restart
        snapshot(9, 0.1, 0, 4, {"matched": 2, "bytes": 200, "delayed": 2}),
    ], "--watch", "20ms", "--json", "--count", "3")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(s["restarted"], s["reloaded"], s["engine"]["frames_in"]) for s in steps] == \
        [(False, False, 30), (False, True, 12), (True, False, 4)]
    web = [s["rules"][0] for s in steps]
    assert [(w["matched"], w["bytes"], w["delayed"], w["lost"], w["dropped"]) for w in web] == \
        [(20, 2000, 15, 1, 1), (6, 600, 5, 0, 0), (2, 200, 2, 0, 0)]
    assert all(w["name"] == "web" and w["queue_depth"] == 3 and w["held"] == 2 for w in web)   # gauges as they are
    assert all(a["time"] <= b["time"] for a, b in zip(steps, steps[1:]))
    assert all(s["interval_s"] > 0 for s in steps)


def test_a_line_of_text_per_interval(tmp_path):
    r = watch(tmp_path, [snapshot(7, 10.0, 0, 100, {"matched": 50, "delayed": 40}),
                         snapshot(7, 11.0, 1, 5, {"matched": 3, "delayed": 2, "lost": 1, "queue_drops": 1})],
              "--watch", "50ms", "--count", "1")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} in 5 fwd 4 drop 1 \(reloaded\) \| "
                        r"web: 3 matched 2 dropped 2 delayed\n", r.stdout), r.stdout


def test_an_instance_that_goes_away_ends_the_watch(tmp_path):
    server = ControlServer(str(tmp_path / "c.sock"), lambda: snapshot(7, 1.0, 0, 1, {}))
    server.start()
    proc = subprocess.Popen([sys.executable, "-m", "reshaper", "stats", "--control", server.path, "--watch", "50ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(tuple("012"))   # a line of time: it watches
    finally:
        server.close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.startswith(f"reshaper stats: no running instance answers on {server.path}: ")


@pytest.mark.parametrize("args, error", [
    (("--watch", "1"), "--watch expected a time with a unit (e.g. 250us, 20ms, 1s), got '1'"),
    (("--watch", "5ms"), "--watch expected a time of at least 10ms, got '5ms'"),
    (("--watch", "2h"), "--watch expected a time with a unit (e.g. 250us, 20ms, 1s), got '2h'"),
    (("--watch", "4000s"), "--watch expected a time of at most 3600s, got '4000s'"),
    (("--count", "2"), "--count takes a number of intervals of --watch, at least 1"),
    (("--watch", "1s", "--count", "0"), "--count takes a number of intervals of --watch, at least 1"),
])
def test_bad_arguments_say_what_was_expected(args, error):
    r = subprocess.run([sys.executable, "-m", "reshaper", "stats", *args], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (2, f"reshaper stats: {error}\n")


FRAMES = 40


def test_intervals_add_up_to_the_frames_forwarded_live(topo, taps, tmp_path):
    """Ring mode delays every UDP frame to port 9; the watch runs while 40 of them cross, and its
    intervals add up to exactly 40 matched and delayed, as `stats` counts them at the end. The watch
    ends (SIGINT, as Ctrl-C) two intervals after the last frame left: every frame was matched before."""
    config = write_config(tmp_path, "version: 1\nports: {a: a1, b: b1}\nrules:\n"
                                    "  - name: slow\n    match: {ip_proto: udp, dst_port: 9}\n"
                                    "    actions: [{delay: {time: 5ms}}]\n")
    tap_a, tap_b = taps
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2")
                  / UDP(sport=4000, dport=9) / b"watched")
    with LiveAppliance(topo.br, config, tmp_path, mode="ring") as appliance:
        watcher = subprocess.Popen([sys.executable, "-m", "reshaper", "stats", "--control", appliance.control,
                                    "--watch", "100ms", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            steps = [json.loads(watcher.stdout.readline())]   # it watches
            for _ in range(FRAMES):
                tap_a.send(frame)
            assert len(tap_b.receive(FRAMES, timeout=10, match=lambda f: f == frame)) == FRAMES
            left = time.time()
            while sum(step["time"] > left for step in steps) < 2:
                steps.append(json.loads(watcher.stdout.readline()))
            watcher.send_signal(signal.SIGINT)
            out, err = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
        final = read_stats(appliance.control)
    assert watcher.returncode == 0, err
    slow = [step["rules"][0] for step in steps + [json.loads(line) for line in out.splitlines()]]
    assert slow[0]["matched"] == 0
    assert sum(s["matched"] for s in slow) == sum(s["delayed"] for s in slow) == FRAMES
    assert final["rules"][0]["matched"] == FRAMES
