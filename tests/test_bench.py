"""`reshaper bench --quick`: a short run in network namespaces (about 30 s), checked for
completeness and consistency, not for figures (this machine is shared)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reshaper.bench.naive_forwarder import naive_forward  # noqa: F401  (importable without root)

REPO = Path(__file__).resolve().parent.parent
MODES = ["ring", "nfqueue", "linux-bridge", "python", "kernel"]   # kernel: explained, not measured, here
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, AF_PACKET)"),
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs"),
]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "reshaper", "bench", "--quick", "--modes", ",".join(MODES),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        return out, json.load(f), proc.stderr


def test_every_mode_present_or_explained(bench):
    _, results, _ = bench
    assert set(results["modes"]) == set(MODES)
    for mode, m in results["modes"].items():
        if m["status"] == "unavailable":
            assert m["reason"], mode
        else:
            assert m["status"] == "ok", (mode, m)
            assert set(m["sizes"]) == {"64"}, mode
    if not os.path.exists("/proc/modules"):
        kernel = results["modes"]["kernel"]
        assert kernel["status"] == "unavailable" and "--vm" in kernel["reason"]
    report = (bench[0] / "report.md").read_text()
    for mode in MODES:
        assert f"**{mode}**" in report


def test_samples_consistent(bench):
    _, results, _ = bench
    for mode, m in results["modes"].items():
        for size, s in m.get("sizes", {}).items():
            trials = [s["saturation"], *s["search"], *s["latency"].values()]
            for t in trials:
                assert 0 <= t["delivered"] <= t["sent"], (mode, t["requested_pps"], t["sent"], t["delivered"])
                assert t["sent"] > 0
                assert 0 <= t["loss"] <= 1
                assert set(t["drops"]) >= {"a1_rx_dropped", "b1_tx_dropped", "unexplained"}
                assert t["cpu"]["source"]
            sat = s["saturation"]
            assert s["loss_free_pps"] <= sat["offered_pps"] * 1.01
            if s["loss_free_pps"] > 0:
                assert set(s["latency"]) == {"0.1", "0.5", "0.9"}, mode
            for frac, t in s["latency"].items():
                lat = t["latency"]
                assert lat["probe_received"] <= lat["probe_sent"]
                assert lat["probe_received"] > 0, (mode, frac, "no probe arrived")
                assert len(lat["samples_us"]) == lat["probe_received"]
                assert lat["min_us"] <= lat["p50_us"] <= lat["p99_us"] <= lat["p99.9_us"] <= lat["max_us"], lat
                assert lat["min_us"] > 0
    # drops by where: the mode's own counters are there
    ring = results["modes"]["ring"]["sizes"]["64"]["saturation"]["drops"]
    assert {"ring_rx_ring_drops", "ring_tx_full", "ring_oversize", "engine_dropped"} <= set(ring)
    nfq = results["modes"]["nfqueue"]["sizes"]["64"]["saturation"]["drops"]
    assert "nfqueue_queue_dropped" in nfq
    assert "python_socket_drops" in results["modes"]["python"]["sizes"]["64"]["saturation"]["drops"]


def test_summary_and_ratios(bench):
    _, results, _ = bench
    rows = {(r["mode"], r["size"]): r for r in results["summary"]["rows"]}
    base = rows[("linux-bridge", 64)]
    assert base["vs_linux_bridge"]["loss_free"] == pytest.approx(1.0)
    for mode in ("ring", "nfqueue", "python"):
        r = rows[(mode, 64)]
        assert r["cpu_ns_per_frame"] is not None and r["cpu_ns_per_frame"] > 0
        assert r["vs_linux_bridge"]["saturation"] is not None


def test_description_and_rule_file(bench):
    _, results, _ = bench
    assert "five-rules" in results["rule_file"]["path"]
    assert "block-telnet" in results["rule_file"]["text"]
    assert "a: a1" in results["rule_file"]["as_run"] or "a1" in results["rule_file"]["as_run"]
    for key in ("nproc", "kernel", "loadavg", "qemu_running"):
        assert key in results["machine_before"] and key in results["machine_after"]
    assert results["versions"]["python"]


def test_plots_written(bench):
    out, results, _ = bench
    for name in ("throughput.png", "latency_cdf.png", "cpu_per_frame.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name
        assert f"]({name})" in (out / "report.md").read_text()


def test_progress_on_stderr(bench):
    _, _, stderr = bench
    assert "saturation" in stderr and "latency at" in stderr

