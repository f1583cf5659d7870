"""Dropping capabilities works also where the bounding set cannot shrink (a systemd unit
whose CapabilityBoundingSet leaves out CAP_SETPCAP, as deploy/beaglebone's does)."""
import subprocess
import sys

import pytest

from reshaper.bridge.privileges import CAP_NET_ADMIN

pytestmark = pytest.mark.live   # root: the bounding set and CAP_NET_ADMIN to drop to


def test_drop_capabilities_without_cap_setpcap():
    code = ("from reshaper.bridge.privileges import drop_capabilities; drop_capabilities()\n"
            "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
            "print(status['CapEff'], status['CapPrm'], status['NoNewPrivs'])\n")
    result = subprocess.run(["setpriv", "--bounding-set=-setpcap", sys.executable, "-c", code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    eff, prm, nnp = result.stdout.split()
    assert (int(eff, 16), int(prm, 16), nnp) == (1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN, "1")
