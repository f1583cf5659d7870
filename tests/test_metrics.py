"""`reshaper run --metrics`: Prometheus' text format from the running appliance, live in each
user-space mode (kernel mode: tests/kmod/test_kmod.py), against `reshaper stats --json`
taken when the traffic has stopped; the Grafana dashboard in docs/ asks only for what is served."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper.bridge.control import read_stats
from reshaper.bridge.metrics import parse_listen
from tests.helpers.frames import write_config
from tests.helpers.live import LiveAppliance

DASHBOARD = Path(__file__).resolve().parents[1] / "docs/grafana-dashboard.json"
PORT = 9464
FRAMES = 30
RULES = """version: 1
ports: {a: a1, b: b1}
rules:
  - name: slow
    match: {ip_proto: udp, dst_port: 9}
    actions: [{delay: {time: 2ms}}]
  - name: lossy
    match: {ip_proto: udp, dst_port: 10}
    actions: [{loss: {probability: 100%}}]
"""


def scrape(ns, url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape, from inside namespace ns."""
    text = ns.run([sys.executable, "-c", "import sys, urllib.request; "
                   "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())", url],
                  capture_output=True, text=True, check=True).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def frame(dport: int) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2")
                 / UDP(sport=4000, dport=dport) / b"measured")


def still_scrape(topo, appliance, tries: int = 20) -> tuple[dict, dict]:
    """A scrape and `stats` that saw the same counters: stats before and after the scrape agree. The
    hosts keep their default IPv6 (router solicitations, MLD reports), whose frames the engine counts
    too, at moments of their own."""
    for _ in range(tries):
        before = read_stats(appliance.control)
        got = scrape(topo.br, f"http://127.0.0.1:{PORT}/metrics")
        after = read_stats(appliance.control)
        if (before["engine"], before["rules"], before["ports"]) == (after["engine"], after["rules"], after["ports"]):
            return got, after
        time.sleep(0.2)
    raise AssertionError(f"the counters moved during each of {tries} scrapes")


@pytest.mark.parametrize("mode", ["ring", "xdp", "nfqueue"])
def test_the_numbers_are_those_of_stats(topo, taps, tmp_path, mode):
    tap_a, tap_b = taps
    config = write_config(tmp_path, RULES)
    with LiveAppliance(topo.br, config, tmp_path, mode=mode, extra=("--metrics", str(PORT))) as appliance:
        for _ in range(FRAMES):
            tap_a.send(frame(9))
            tap_a.send(frame(10))
        assert len(tap_b.receive(FRAMES, timeout=10, match=lambda f: f == frame(9))) == FRAMES
        got, stats = still_scrape(topo, appliance)
    labels = (("mode", mode),)
    assert got[("reshaper_info", (("config", str(config)), ("mode", mode)))] == 1
    for key, name in (("frames_in", "frames"), ("forwarded", "forwarded_frames"), ("dropped", "dropped_frames"),
                      ("unmatched", "unmatched_frames"), ("malformed", "malformed_frames"),
                      ("direction", "direction_dropped_frames")):
        assert got[(f"reshaper_engine_{name}_total", labels)] == stats["engine"][key]
    slow, lossy = (labels + (("rule", r),) for r in ("slow", "lossy"))
    assert got[("reshaper_rule_matched_frames_total", slow)] == got[("reshaper_rule_delayed_frames_total", slow)] \
        == FRAMES == stats["rules"][0]["delayed"]
    assert got[("reshaper_rule_matched_frames_total", lossy)] == got[("reshaper_rule_lost_frames_total", lossy)] \
        == FRAMES == stats["rules"][1]["lost"]
    seen = len(frame(9)) - (14 if mode == "nfqueue" else 0)   # NFQUEUE hands over the IP packet
    assert got[("reshaper_rule_matched_bytes_total", slow)] == stats["rules"][0]["bytes"] == FRAMES * seen
    for port in "ab":
        where = (("interface", f"{port}1"), ("mode", mode), ("port", port), ("vlan", ""))
        served = {name[len("reshaper_port_"):-len("_total")]: value for (name, lab), value in got.items()
                  if name.startswith("reshaper_port_") and lab == where}
        assert served == {k: v for k, v in stats["ports"][port].items() if k not in ("interface", "vlan",
                                                                                       "bridge_port")}
    assert got[("reshaper_reloads_total", labels)] == 0
    assert got[("reshaper_queued_frames", labels)] == stats["queued"]


def test_served_on_loopback_only_unless_an_address_is_given(topo, tmp_path):
    """--metrics PORT listens on 127.0.0.1 (the address of no interface), and nothing listens
    without --metrics."""
    def listening() -> set[str]:
        out = topo.br.run(["cat", "/proc/net/tcp", "/proc/net/tcp6"], capture_output=True, text=True).stdout
        return {f[1] for f in (line.split() for line in out.splitlines()[1:]) if len(f) > 3 and f[3] == "0A"}

    config = write_config(tmp_path, "version: 1\nports: {a: a1, b: b1}\n")
    with LiveAppliance(topo.br, config, tmp_path, mode="ring"):
        assert listening() == set()
    with LiveAppliance(topo.br, config, tmp_path, mode="ring", extra=("--metrics", str(PORT))):
        assert listening() == {f"0100007F:{PORT:04X}"}


def test_a_port_in_use_is_refused_and_leaves_nothing(topo, tmp_path):
    config = write_config(tmp_path, "version: 1\nports: {a: a1, b: b1}\n")
    holder = topo.br.popen([sys.executable, "-c", "import socket, sys, time; s = socket.socket(); "
                            f"s.bind(('127.0.0.1', {PORT})); s.listen(); print(flush=True); time.sleep(60)"],
                           stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        r = topo.br.run([sys.executable, "-m", "reshaper", "run", str(config), "--metrics", str(PORT),
                         "--control", str(tmp_path / "c.sock"), "--status-interval", "0"],
                        capture_output=True, text=True, timeout=60,
                        env={**os.environ, "RESHAPER_RUN_DIR": str(tmp_path / "run")})
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1
    assert f"--metrics: cannot listen on 127.0.0.1:{PORT}: Address already in use" in r.stderr, r.stderr
    assert not (tmp_path / "c.sock").exists()
    assert list((tmp_path / "run").glob("state-*")) == []


@pytest.mark.parametrize("text, address", [("9464", ("127.0.0.1", 9464)), ("0.0.0.0:9100", ("0.0.0.0", 9100)),
                                           ("[::1]:9464", ("::1", 9464))])
def test_listen_address(text, address):
    assert parse_listen(text) == address


@pytest.mark.parametrize("text", ["http", "localhost:9464", ":9464", "0", "65536", "10.0.0.1:"])
def test_a_bad_listen_address_says_what_it_takes(text):
    r = subprocess.run([sys.executable, "-m", "reshaper", "run", "any.yaml", "--metrics", text],
                       capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (2, "reshaper run: --metrics expected [ADDR:]PORT (e.g. 9464, "
                                           f"0.0.0.0:9464, [::1]:9464), got {text!r}\n")


def test_the_dashboard_asks_only_for_served_metrics():
    """Every metric a panel of docs/grafana-dashboard.json queries is one the collector serves, over
    a snapshot of ring mode's shape (the one with the most: delay pool, held frames)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from reshaper.bridge.metrics import SnapshotCollector
    from reshaper.rules.binding import GLOBAL_COUNTERS, RULE_COUNTERS

    snapshot = {"mode": "ring", "config": "rules.yaml", "reloads": 1, "reloads_refused": 1,
                "last_reload_error": "rules.yaml:3:5: bad", "engine": dict.fromkeys(GLOBAL_COUNTERS, 0),
                "rules": [{"name": "slow", **dict.fromkeys(RULE_COUNTERS, 0), "queue_depth": 0, "held": 0,
                           "phase": 1, "phases": 3}],
                "ports": {"a": {"interface": "eth0", "vlan": 100, "rx": 0}}, "queued": 0, "pool_frames": 64,
                "pool_full": 0, "not_ours": 0}
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot))
    served = {s.name for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    asked = {m for e in exprs for m in re.findall(r"\b(reshaper_[a-z_]+)\b", e)}
    assert len(exprs) >= 6 and asked <= served, asked - served
