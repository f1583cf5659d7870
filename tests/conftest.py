"""Fixtures of the live tests: a fresh namespace topology, and taps on its hosts' interfaces."""
import pytest

from bridge.netns import Topology
from tests.live import FrameTap


@pytest.fixture
def topo():
    with Topology("rt") as t:
        yield t


@pytest.fixture
def taps(topo):
    a, b = FrameTap(topo.a, "a0"), FrameTap(topo.b, "b0")
    yield a, b
    a.close()
    b.close()
