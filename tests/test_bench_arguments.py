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
