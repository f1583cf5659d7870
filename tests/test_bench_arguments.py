"""`reshaper bench` refuses what it cannot run before it sets anything up (the run itself:
tests/test_bench.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

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


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reshaper", "bench", *args], cwd=REPO, capture_output=True, text=True)


def test_board_arguments_are_checked_before_anything_is_set_up():
    r = bench("--board", "root@bbb", "--vlans", "100,200")
    assert (r.returncode, r.stderr) == (2, "reshaper bench: --board needs --trunk IF and --vlans A,B\n")
    for vlans in ("100", "100,100", "100,5000", "a,b"):
        r = bench("--board", "root@bbb", "--trunk", "eth1", "--vlans", vlans)
        assert (r.returncode, r.stderr) == (2, "reshaper bench: --vlans wants two different VLAN ids 1..4094, "
                                               "e.g. 100,200\n"), vlans
    r = bench("--board", "root@bbb", "--trunk", "eth1", "--vlans", "100,200", "--modes", "ring,python")
    assert r.returncode == 2
    assert r.stderr == "reshaper bench: unknown modes python (known with --board: ring,xdp,nfqueue,kernel,linux-bridge)\n"
    r = bench("--board", "root@bbb", "--trunk", "eth1", "--vlans", "100,200", "--vm")
    assert r.returncode == 2 and "no CONFIG, --vm or --placement with it" in r.stderr
    r = bench("--trunk", "eth1", "--modes", "ring")
    assert (r.returncode, r.stderr) == (2, "reshaper bench: --trunk, --trunk-netns and --vlans go with --board\n")


@pytest.mark.live
def test_a_board_that_does_not_answer_is_a_clear_error_and_nothing_is_left(tmp_path):
    import socket

    from pyroute2 import netns

    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = bench("--board", "root@127.0.0.1", "--port", str(port), "--trunk", "lo", "--vlans", "100,200",
              "--out", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("reshaper bench: board agent, facts: ssh: connect to host 127.0.0.1 port "
                               f"{port}: Connection refused"), r.stderr
    assert not (tmp_path / "out").exists()
    assert not {"rsbd-a", "rsbd-b"} & set(netns.listnetns())


def board_results(kernel: str) -> dict:
    """A --board run in which no mode could be measured: what the report says around the figures."""
    return {"command": "reshaper bench --board root@bbb", "started": "s", "finished": "f", "versions": {},
            "machine_before": {"nproc": 2, "cpu_model": "x86", "kernel": "6.1"},
            "board": {"host": "root@bbb", "board_model": "TI AM335x BeagleBone Black", "nproc": 1,
                      "cpu_model": "ARMv7 Processor rev 2 (v7l)", "machine": "armv7l", "kernel": kernel,
                      "kernel_version": "#1", "reshaper": "0.1.0", "ports": ["eth0.100", "eth0.200"],
                      "trunk": "eth1", "vlans": [100, 200], "emulated": False,
                      "restored": {"mode": "ring", "service_active": True}},
            "rule_file": {"path": "/etc/reshaper/rules.yaml (the board's)"},
            "modes": {"kernel": {"status": "unavailable", "reason": "install.sh --switch-mode --mode kernel failed"}},
            "placements": ["board"], "summary": {"rows": []}, "frames": {"mix": ["no-rule"]},
            "args": {"duration": 3, "search_duration": 2, "search_steps": 6}}


def test_board_report_warns_of_the_cache_flush_below_linux_4_11():
    from reshaper.bench.board_report import board_report

    old = board_report(board_results("4.4.155-ti-r155"))
    assert "**WARNING: kernel 4.4.155-ti-r155 is older than 4.11.**" in old
    assert "* **kernel**: not measured: install.sh --switch-mode --mode kernel failed" in old
    assert "The board was put back in ring mode, service active." in old
    assert "Emulated" not in old
    new = board_report(board_results("6.1.0-27-armmp"))
    assert "WARNING" not in new and "Kernel 6.1.0-27-armmp is 4.11 or later" in new
    assert board_report(board_results("4.11.0")).count("4.11 or later") == 1
