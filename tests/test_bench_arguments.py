"""`reshaper bench` refuses what it cannot run before it sets anything up (the run itself:
tests/test_bench.py)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "reshaper", "bench", "--modes", "ring,warp"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown modes warp" in r.stderr


def test_bad_placement():
    r = subprocess.run([sys.executable, "-m", "reshaper", "bench", "--placement", "dual"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "--placement: invalid choice: 'dual'" in r.stderr and "single-core" in r.stderr and "split" in r.stderr


def test_placements_asked():
    from reshaper.bench.settings import DEFAULT_PLACEMENT, placements_asked

    assert DEFAULT_PLACEMENT == "single-core"
    assert placements_asked("both") == ["single-core", "split"]   # the headline first
    assert placements_asked("split") == ["split"]
    assert placements_asked("hog") == ["single-core", "single-core+hog"]   # a busy loop beside, against idle


def test_shared_cpu_section_judges_each_mode_against_itself_idle():
    from reshaper.bench.report import shared_cpu_section

    def row(mode, placement, lfr, p99):
        return {"mode": mode, "size": 64, "placement": placement, "loss_free_pps": lfr,
                "latency": {"0.5": {"p99_us": p99}}}
    rows = [row("ring", "single-core", 200e3, 100.0), row("ring", "single-core+hog", 170e3, 190.0),
            row("xdp", "single-core", 300e3, 100.0), row("xdp", "single-core+hog", 150e3, 90.0),
            row("linux-bridge", "single-core", 400e3, 50.0)]   # no hog row: not judged
    lines = shared_cpu_section({"args": {"realtime": True}}, rows)
    assert "The forwarders ran SCHED_FIFO (`--realtime`)." in " ".join(lines)
    assert "| 64 | ring | 200.0 | 170.0 | 0.85 | 100 | 190 | 1.90 | met |" in lines
    assert "| 64 | xdp | 300.0 | 150.0 | 0.50 | 100 | 90 | 0.90 | **not met** |" in lines
    assert not any("linux-bridge" in line for line in lines)
