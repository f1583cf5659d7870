"""The C of reshaper._native outside the engine (ring/*.c, reshaper/*.c, bridge/modes/*.c) names what it
shares rs_*: the extension is loaded into every Python process that imports reshaper, beside other
libraries. (The engine's own names: tests/test_engine_names.py.)"""
import re
import subprocess
from pathlib import Path

import reshaper._native

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted(REPO.glob("ring/*.c")) + sorted(REPO.glob("reshaper/*.c")) + sorted(REPO.glob("bridge/modes/*.c"))
INCLUDES = [f"-I{REPO / d}" for d in ("rules/engine", "ring", "reshaper", "bridge/modes")]


def global_names(nm_output: str) -> set[str]:
    return {line.split()[-1] for line in nm_output.splitlines() if re.match(r"\S+ [A-Z] ", line)}


def test_every_function_a_unit_shares_is_prefixed(tmp_path):
    assert {p.name for p in UNITS} >= {"forwarder.c", "link.c", "offloads.c", "privileges.c", "nfqueue_packet.c"}
    for unit in UNITS:
        obj = tmp_path / f"{unit.stem}.o"
        subprocess.run(["gcc", "-std=gnu11", "-c", *INCLUDES, str(unit), "-o", str(obj)], check=True)
        names = global_names(subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True,
                                            text=True, check=True).stdout)
        assert names and [n for n in names if not n.startswith("rs_")] == [], unit.name


def test_the_extension_exports_only_its_interface():
    """The units' calls of each other are hidden (ring/ring_internal.h); only ring.h, offloads.h,
    privileges.h and the engine's interface are exported, with Python's entry point."""
    exported = global_names(subprocess.run(["nm", "-D", "--defined-only", reshaper._native.__file__],
                                           capture_output=True, text=True, check=True).stdout)
    assert {"rs_forwarder_open", "rs_set_offloads", "rs_drop_capabilities", "rs_run", "rs_nfq_run"} <= exported
    assert "rs_emit" not in exported and "rs_link_open" not in exported
    assert [n for n in exported if not n.startswith("rs_")] == ["PyInit__native"]
