"""Fixtures of the live tests: a fresh namespace topology, and taps on its hosts' interfaces;
every test classed by what it needs (pyproject.toml's markers: live, vm, armhf, packages, else unit);
the session's closing lines name the kernel headers the module was built against."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from reshaper.bridge.netns import Topology
from reshaper.lab.frame_tap import FrameTap
from reshaper.lab.vm.runner import HEADERS_BUILT_AGAINST, apt_lists_time

# the helpers' asserts report the values they compared, as a test module's do (before any imports them)
pytest.register_assert_rewrite("tests.helpers")

# what a test needs beyond this machine's user: its mark names it (pyproject.toml)
NEEDS = ("live", "vm", "armhf", "packages")
# fixtures that set up what a mark names: a test using one is classed by it without saying so
FIXTURE_NEEDS = {"topo": "live", "taps": "live", "bb_build": "armhf", "amd64_debs": "packages"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def amd64_debs(tmp_path_factory) -> dict[str, Path]:
    """The amd64 Debian packages (deploy/debian/build-amd64.sh), by package name: one build for
    tests/test_debian_amd64.py and the VM that installs reshaper-dkms (tests/kmod)."""
    out = tmp_path_factory.mktemp("debian")
    r = subprocess.run(["bash", str(REPO / "deploy/debian/build-amd64.sh"), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    built = {deb.name.split("_")[0]: deb for deb in out.glob("*.deb")}
    assert sorted(built) == ["reshaper", "reshaper-dkms"], r.stdout
    return built


@pytest.fixture
def topo():
    # named per process: two test runs on one machine never share (and tear down) a namespace
    with Topology(f"rt{os.getpid()}") as t:
        yield t


@pytest.fixture
def taps(topo):
    a, b = FrameTap(topo.a, "a0"), FrameTap(topo.b, "b0")
    yield a, b
    a.close()
    b.close()


@pytest.hookimpl(tryfirst=True)   # before -m selects on the marks
def pytest_collection_modifyitems(items):
    """Marks from the fixtures a test uses; unit for a test that needs none of NEEDS."""
    for item in items:
        for fixture, need in FIXTURE_NEEDS.items():
            if fixture in item.fixturenames:
                item.add_marker(need)
        needs = [need for need in NEEDS if item.get_closest_marker(need)]
        if needs and item.get_closest_marker("unit"):
            raise pytest.UsageError(f"{item.nodeid}: marked unit, but needs {', '.join(needs)}")
        if not needs:
            item.add_marker("unit")


def pytest_terminal_summary(terminalreporter):
    if HEADERS_BUILT_AGAINST:
        built = ", ".join(f"{flavour} {abi}" for flavour, abi in sorted(HEADERS_BUILT_AGAINST.items()))
        lists = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(apt_lists_time()))
        terminalreporter.write_line(f"kernel module built against: {built} "
                                    f"(apt package lists of {lists})")
