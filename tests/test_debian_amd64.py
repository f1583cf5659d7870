"""The amd64 Debian packages (deploy/debian/build-amd64.sh), built from the tree: lintian passes
them, and the package's reshaper, unpacked (never installed on this machine), runs under
Debian's own python3 with Debian's cffi backend and PyYAML: `check` and `apply` give what the
development install gives. The armhf package on an emulated board is tests/armhf."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import wrpcap

from tests.helpers.debian import assert_lintian_clean, deb_field, deb_paths

pytestmark = pytest.mark.packages
REPO = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = "/usr/bin/python3"   # bookworm's 3.11, with python3-cffi-backend and python3-yaml (Makefile)
RULES = REPO / "examples/five-rules.yaml"
# frames from port a (VLAN 100) for each of the five rules and for none
FRAMES = [Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / Dot1Q(vlan=100) / IP(src="10.0.0.5", dst=dst) / l4
          for dst, l4 in [("10.0.1.1", TCP(dport=23)), ("10.0.1.1", TCP(dport=8042, flags="PA")),
                          ("10.0.1.1", TCP(dport=443, flags="S")), ("10.0.1.53", UDP(dport=53) / b"query"),
                          ("10.0.1.1", UDP(dport=9) / b"other")]]


def test_amd64_packages_pass_lintian(amd64_debs):
    assert_lintian_clean(amd64_debs.values())


def test_amd64_package_runs_under_debians_python(amd64_debs, tmp_path):
    deb = amd64_debs["reshaper"]
    assert (deb_field(deb, "Architecture"), deb_field(deb, "Version")) == ("amd64", "0.1.0")
    assert "./usr/lib/reshaper/reshaper/_native.abi3.so" in deb_paths(deb)
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    # the package's /usr/bin/reshaper, its private directory where it was unpacked
    launcher = (root / "usr/bin/reshaper").read_text()
    assert launcher.startswith("#!/usr/bin/python3\n") and 'sys.path.insert(0, "/usr/lib/reshaper")' in launcher
    (tmp_path / "reshaper").write_text(launcher.replace("/usr/lib/reshaper", str(root / "usr/lib/reshaper")))

    packaged_reshaper = [DEBIAN_PYTHON, "-I", str(tmp_path / "reshaper")]
    developed_reshaper = [sys.executable, "-m", "reshaper"]

    def run(reshaper: list[str], *args: str) -> str:
        r = subprocess.run([*reshaper, *args], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return r.stdout

    check = ("check", str(RULES), "--mode", "ring")
    assert run(packaged_reshaper, *check) == run(developed_reshaper, *check)
    # the same frames out, byte for byte, and the same counts
    wrpcap(str(tmp_path / "in.pcap"), FRAMES)
    apply = ("apply", str(RULES), "in.pcap")
    assert run(packaged_reshaper, *apply, "packaged.pcap") == run(developed_reshaper, *apply, "developed.pcap")
    packaged = (tmp_path / "packaged.pcap").read_bytes()
    assert packaged.count(b"\x02\x00\x00\x00\x00\x0b") == 4   # telnet dropped
    assert packaged == (tmp_path / "developed.pcap").read_bytes()
    # and Debian's cffi backend is what it ran on, not the development one
    backend = subprocess.run([DEBIAN_PYTHON, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                              "import reshaper._native, _cffi_backend; print(_cffi_backend.__file__)",
                              str(root / "usr/lib/reshaper")], capture_output=True, text=True)
    assert backend.stdout.startswith("/usr/lib/python3/dist-packages/_cffi_backend"), backend.stdout + backend.stderr
