"""Fixtures of the live tests: a fresh namespace topology, and taps on its hosts' interfaces;
the session's closing lines name the kernel headers the module was built against."""
import os
import time

import pytest

from reshaper.bridge.netns import Topology
from tests.live import FrameTap
from tests.vm.runner import HEADERS_BUILT_AGAINST, apt_lists_time


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


def pytest_terminal_summary(terminalreporter):
    if HEADERS_BUILT_AGAINST:
        built = ", ".join(f"{flavour} {abi}" for flavour, abi in sorted(HEADERS_BUILT_AGAINST.items()))
        lists = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(apt_lists_time()))
        terminalreporter.write_line(f"kernel module built against: {built} "
                                    f"(apt package lists of {lists})")
