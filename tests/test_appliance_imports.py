"""The appliance stands alone: every module of reshaper.bridge, reshaper.rules and reshaper.ring
imports without the benchmark (reshaper.bench), the lab (reshaper.lab), the tests or matplotlib,
which the board's wheel does not carry (setup.py). No root, no network: a fresh interpreter
imports them all and reports what else got imported."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

APPLIANCE = ("reshaper.bridge", "reshaper.rules", "reshaper.ring", "reshaper.examples")
NOT_IN_THE_APPLIANCE = ("reshaper.bench", "reshaper.lab", "tests", "matplotlib")

IMPORT_ALL = f"""
import importlib, json, pkgutil, sys
imported = []
for name in ("reshaper", "reshaper.hook", "reshaper._native"):   # the root's modules but __main__ and the build
    importlib.import_module(name)
    imported.append(name)
for name in {APPLIANCE!r}:
    package = importlib.import_module(name)
    imported.append(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(module.name)
        imported.append(module.name)
print(json.dumps({{"imported": imported, "loaded": sorted(sys.modules)}}))
"""


def test_appliance_modules_import_nothing_of_the_lab_or_matplotlib():
    r = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.splitlines()[-1])
    # the walk reached the modes and the carriers, not only the packages' __init__
    assert {"reshaper.bridge.cli", "reshaper.bridge.run", "reshaper.rules.config", "reshaper.rules.compiler"} \
        <= set(seen["imported"]), seen["imported"]
    leaked = [m for m in seen["loaded"] if any(m == top or m.startswith(top + ".") for top in NOT_IN_THE_APPLIANCE)]
    assert leaked == [], leaked


# the board's wheel, imitated: reshaper.bench cannot be found
WITHOUT_THE_BENCH = """
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name == "reshaper.bench" or name.startswith("reshaper.bench."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
from reshaper.bridge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_bench_subcommand_without_the_benchmark_says_so():
    r = subprocess.run([sys.executable, "-c", WITHOUT_THE_BENCH, "bench", "--quick", "--modes", "ring"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "benchmark is not installed" in r.stderr and "reshaper[bench]" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-c", WITHOUT_THE_BENCH, "check", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr   # the other commands do not miss it


# the folders' names as top-level packages: they resolve in a checkout (its root is on sys.path
# under pytest) but not in an install, where only reshaper.* exists
FOLDER = r"(?:bridge|rules|ring|bench|lab)(?:\.\w+)*"
FOLDER_IMPORT = re.compile(rf"^[ \t]*(?:from[ \t]+{FOLDER}[ \t]+import\b|import[ \t]+{FOLDER}[ \t]*(?:$|,| as\b))", re.M)


def test_code_imports_the_folders_only_as_reshaper_subpackages():
    root = Path(__file__).resolve().parent.parent
    files = [p for folder in ("reshaper", "bridge", "rules", "ring", "bench", "lab", "examples", "tests")
             for p in (root / folder).rglob("*.py")]
    assert len(files) > 100, files
    offenders = [f"{p.relative_to(root)}:{text[:m.start()].count(chr(10)) + 1}"
                 for p in files for text in [p.read_text()] for m in FOLDER_IMPORT.finditer(text)]
    assert offenders == []
