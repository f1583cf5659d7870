"""`reshaper stats --watch INTERVAL`: what the running instance did in each interval.

One line (or, with --json, one JSON object) per interval, stamped with the wall
clock, so that an experiment's log lines up with the application's own
measurements: per rule the frames it matched, dropped (its drop action, loss,
a full rate queue) and delayed in that interval, and the engine's frames in and
out. Samples are taken on a fixed grid of the monotonic clock, so lines do not
drift when one is late.

A successful reload starts the engine's counters from zero (bridge/appliance.py
installs a new state), as does a restart: an interval in which either happened
counts from then on and says so ("reloaded", "restarted"); what was counted
between the sample before and the reload is not seen.
"""
from __future__ import annotations

import datetime
import json
import time

from reshaper.rules.binding import GLOBAL_COUNTERS, RULE_COUNTERS

# what a rule's drops are: its drop action, loss, a full rate queue (struct rs_rule_state)
DROPS = ("dropped", "lost", "queue_drops")


def interval(before: dict, after: dict, elapsed_s: float, wall_time: float) -> dict:
    """What happened between two snapshots of `reshaper stats --json`."""
    restarted = before["pid"] != after["pid"] or after["uptime_s"] < before["uptime_s"]
    reloaded = not restarted and after["reloads"] != before["reloads"]
    since_zero = restarted or reloaded
    old_rules = {rule["name"]: rule for rule in before["rules"]}

    def change(old: dict | None, new: dict, names) -> dict:
        return {k: new[k] - (0 if since_zero or old is None else old[k]) for k in names}

    rules = []
    for rule in after["rules"]:
        counts = change(old_rules.get(rule["name"]), rule, RULE_COUNTERS)
        gauges = {k: v for k, v in rule.items() if k != "name" and k not in RULE_COUNTERS}
        rules.append({"name": rule["name"], **counts, **gauges})
    return {"time": round(wall_time, 3), "interval_s": round(elapsed_s, 3), "restarted": restarted,
            "reloaded": reloaded, "engine": change(before["engine"], after["engine"], GLOBAL_COUNTERS),
            "rules": rules}


def format_line(step: dict) -> str:
    """One interval in a line: local time, the engine's frames, then each rule's (and its schedule's phase
    at the end of the interval, counted from 1)."""
    clock = datetime.datetime.fromtimestamp(step["time"]).strftime("%H:%M:%S.%f")[:-3]
    engine = step["engine"]
    parts = [f"{clock} in {engine['frames_in']} fwd {engine['forwarded']} drop {engine['dropped']}"]
    if step["restarted"] or step["reloaded"]:
        parts[0] += " (restarted)" if step["restarted"] else " (reloaded)"
    for rule in step["rules"]:
        phase = f" phase {rule['phase'] + 1}/{rule['phases']}" if "phase" in rule else ""
        parts.append(f"{rule['name']}: {rule['matched']} matched {sum(rule[k] for k in DROPS)} dropped "
                     f"{rule['delayed']} delayed{phase}")
    return " | ".join(parts)


def watch(read, every_s: float, as_json: bool, count: int | None, out) -> None:
    """Samples read() (a snapshot, as `reshaper stats --json` prints it) every every_s seconds and
    writes each interval to out, count times (None: until interrupted). A sample that comes late
    skips the grid points it missed instead of catching up."""
    before, then = read(), time.monotonic()
    start, tick, written = then, 1, 0
    while count is None or written < count:
        time.sleep(max(0.0, start + tick * every_s - time.monotonic()))
        after, now = read(), time.monotonic()
        step = interval(before, after, now - then, time.time())
        out.write((json.dumps(step) if as_json else format_line(step)) + "\n")
        out.flush()
        written += 1
        before, then = after, now
        tick = int((now - start) / every_s) + 1
