"""`reshaper bench --quick`: a short run in network namespaces (about a minute) in the default
placement, and a shorter one of the Linux bridge in both, checked for completeness and
consistency (the placement check included), not for figures (this machine is shared)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reshaper.bench.naive_forwarder import naive_forward  # noqa: F401  (importable without root)
from reshaper.bench.settings import FWD_CPU, PLACEMENT_MAX_GEN_RX_PER_FRAME

REPO = Path(__file__).resolve().parent.parent
MODES = ["ring", "xdp", "nfqueue", "linux-bridge", "python", "kernel"]   # kernel: explained, not measured, here
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


@pytest.fixture(scope="module")
def both_placements(tmp_path_factory):
    """The Linux bridge alone in both placements (about 15 s)."""
    out = tmp_path_factory.mktemp("bench-both")
    proc = subprocess.run([sys.executable, "-m", "reshaper", "bench", "--quick", "--modes", "linux-bridge",
                           "--placement", "both", "--no-plots", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        return out, json.load(f)


def measured(results):
    """(mode, placement, size, measurement) of every mode measured."""
    for mode, m in results["modes"].items():
        for placement, p in m.get("placements", {}).items():
            for size, s in p["sizes"].items():
                yield mode, placement, size, s


def test_every_mode_present_or_explained(bench):
    _, results, _ = bench
    assert set(results["modes"]) == set(MODES)
    for mode, m in results["modes"].items():
        if m["status"] == "unavailable":
            assert m["reason"], mode
        else:
            assert m["status"] == "ok", (mode, m)
            assert set(m["placements"]) == {"single-core"}, mode   # the default, alone under --quick
            assert set(m["placements"]["single-core"]["sizes"]) == {"64"}, mode
    if not os.path.exists("/proc/modules"):
        kernel = results["modes"]["kernel"]
        assert kernel["status"] == "unavailable" and "--vm" in kernel["reason"]
    report = (bench[0] / "report.md").read_text()
    for mode in MODES:
        assert f"**{mode}**" in report


def test_samples_consistent(bench):
    _, results, _ = bench
    for mode, placement, size, s in measured(results):
        trials = [s["saturation"], *s["search"], *s["latency"].values(), *s["overload"].values()]
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
    sat = {mode: s["saturation"] for mode, _, _, s in measured(results)}
    ring = sat["ring"]["drops"]
    assert {"ring_rx_ring_drops", "ring_tx_full", "ring_oversize", "engine_dropped"} <= set(ring)
    assert "nfqueue_queue_dropped" in sat["nfqueue"]["drops"]
    assert "python_socket_drops" in sat["python"]["drops"]


def test_every_result_has_its_placement_checked(bench):
    _, results, _ = bench
    assert results["placements"] == ["single-core"] and results["placement"]["headline"] == "single-core"
    report = (bench[0] / "report.md").read_text()
    assert "headline figures are **single-core**" in report and "## Placement check" in report
    for mode, placement, size, s in measured(results):
        assert placement == s["placement"] == "single-core", mode
        for t in [s["saturation"], *s["search"], *s["latency"].values()]:
            assert t["placement"] == "single-core"
            check = t["placement_check"]
            for key in ("generator_rx_frames", "forwarder_rx_frames", "generator_net_rx", "forwarder_net_rx",
                        "generator_softirq_ns_per_frame"):
                assert check[key] is not None and check[key] >= 0, (mode, key, check)
            assert set(check["forwarder_ns_per_frame"]) == {"softirq", "system", "user"}
            # XDP mode's receive runs in its ports' NAPI threads, pinned to the forwarder's CPU; no other
            # mode's ports have any
            threads = check["napi_threads"]
            if mode == "xdp":
                assert threads and all(cpus == [FWD_CPU] for cpus in threads.values()), threads
            else:
                assert threads == {}, (mode, threads)
    for r in results["summary"]["rows"]:
        assert r["placement"] == "single-core"
        c = r["placement_check"]
        assert c["generator_rx_per_frame"] is not None and c["generator_net_rx_per_frame"] is not None, r["mode"]
        assert c["napi_thread_cpus"] == ([FWD_CPU] if r["mode"] == "xdp" else []), r["mode"]
        assert c["held"] is (c["generator_rx_per_frame"] <= PLACEMENT_MAX_GEN_RX_PER_FRAME), r["mode"]
        # the report says, per mode, whether it held, with a WARNING when it did not
        line = next(x for x in report.splitlines()
                    if x.startswith(f"* {r['mode']} at {r['size']} B in single-core:"))
        assert f"frames received per forwarded frame: {c['generator_rx_per_frame']:.2f}" in line
        assert "NET_RX softirqs per forwarded frame" in line
        assert line.endswith(": held.") if c["held"] else "WARNING" in report, line


def test_both_placements_side_by_side(both_placements):
    out, results = both_placements
    assert results["placements"] == ["single-core", "split"]
    m = results["modes"]["linux-bridge"]
    assert set(m["placements"]) == {"single-core", "split"}
    rows = {r["placement"]: r for r in results["summary"]["rows"]}
    assert set(rows) == {"single-core", "split"}
    # in split the generator's CPU runs the Linux bridge's whole receive: a1's and b0's frames
    assert rows["split"]["placement_check"]["generator_rx_per_frame"] >= 1.0
    assert rows["split"]["placement_check"]["held"] is None
    assert rows["single-core"]["placement_check"]["held"] is True   # RPS moved all of it to the forwarder's CPU
    assert rows["single-core"]["vs_linux_bridge"]["loss_free"] == pytest.approx(1.0)
    assert rows["split"]["vs_linux_bridge"]["loss_free"] == pytest.approx(1.0)   # against itself, same placement
    report = (out / "report.md").read_text()
    assert "| 64 | linux-bridge | single-core |" in report and "| 64 | linux-bridge | split |" in report
    assert "* linux-bridge at 64 B in split:" in report


def test_overload_past_the_loss_free_rate_shows_livelock_or_not(bench):
    _, results, _ = bench
    report = (bench[0] / "report.md").read_text()
    assert "## Overload: delivered past the loss-free rate" in report
    rows = {(r["mode"], r["placement"]): r for r in results["summary"]["rows"]}
    for mode, placement, size, s in measured(results):
        overloaded = s["loss_free_pps"] > 0 and not s["generator_limited"]
        assert set(s["overload"]) == ({"1.5", "3.0"} if overloaded else set()), mode
        for factor, t in s["overload"].items():
            assert t["overload_factor"] == float(factor)
            assert t["requested_pps"] == pytest.approx(float(factor) * s["loss_free_pps"], abs=1)
            row = rows[(mode, placement)]["overload"][factor]
            assert row["of_loss_free"] == pytest.approx(t["delivered_pps"] / s["loss_free_pps"])
        if overloaded:
            worst = min(o["of_loss_free"] for o in rows[(mode, placement)]["overload"].values())
            verdict = "**livelock**" if worst < 0.9 else "holds"
            assert any(line.startswith(f"| {size} | {mode} | {placement} |") and line.endswith(f"| {verdict} |")
                       for line in report.splitlines()), (mode, verdict)


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

