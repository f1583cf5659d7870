"""The systemd unit's security rating (deploy/beaglebone/reshaper.service), read the same
way offline (tests/armhf/test_deploy_scripts.py) and on the emulated board
(tests/armhf/test_board_deploy.py)."""
from __future__ import annotations

import re

# `systemd-analyze security reshaper.service`: 5.3 MEDIUM before the unit was hardened,
# 2.0 OK since (at most 4.9 is "OK")
EXPOSURE_MAX = 2.0
# with XDP mode's drop-in (deploy/beaglebone/reshaper-xdp.conf): CAP_BPF, bpf(), and AF_XDP (an
# "exotic" family to systemd-analyze)
EXPOSURE_MAX_XDP = 2.2


def exposure(report: str) -> tuple[float, str]:
    """(level, rating) from systemd-analyze security's last line."""
    # the arrow is "->" where the locale is not UTF-8 (a plain ssh session on the board)
    m = re.search(r"^(?:→|->) Overall exposure level for reshaper\.service: (\d+\.\d) (\w+)", report, re.M)
    assert m, report
    return float(m.group(1)), m.group(2)
