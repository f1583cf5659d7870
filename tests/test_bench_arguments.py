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
