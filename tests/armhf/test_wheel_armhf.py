"""The armhf wheel in an armhf Debian (debootstrap rootfs, cached as a tarball)
under qemu-user: pip installs it into a venv without a compiler (Debian's
python3-cffi-backend, -yaml, -scapy, -pyroute2 underneath, as on the board),
both extensions load, and every golden case run through `reshaper apply` on
armhf gives the golden frames and the same report, byte for byte, as x86. The
engine's counters carry past 2**32 there, where rs_count adds their words apart
(tests/helpers/counter_carry.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reshaper.lab.vm import armhf
from tests.helpers import counter_carry
from tests.helpers.captures import read_outputs
from tests.helpers.golden import CASES, Case, mismatches

pytestmark = pytest.mark.armhf
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(bb_build):
    t0 = time.monotonic()
    r = armhf.rootfs(armhf.CACHE / "rootfs-wheel-test")
    print(f"rootfs ready in {time.monotonic() - t0:.1f} s")
    yield r
    shutil.rmtree(r, ignore_errors=True)


def test_wheel_installs_and_passes_golden_cases(bb_build, root, tmp_path):
    work = root / "work"
    work.mkdir()
    shutil.copy(bb_build["wheel"], work)
    shutil.copytree(bb_build["wheel"].parent / "deps", work / "deps")
    shutil.copy(counter_carry.__file__, work / "counter_carry.py")
    cases = [Case(p) for p in CASES]
    for case in cases:
        d = work / case.name
        d.mkdir()
        (d / "rules.yaml").write_text(case.config)
        case.write_inputs(d / "in.pcap")
        (d / "args").write_text(f"--from {case.from_port} --seed {case.seed}")
    t0 = time.monotonic()
    r = armhf.chroot_run(root, f"""
        cd /   # not beside the case folders: venv's ensurepip would import them as modules
        python3 -m venv --system-site-packages /opt/reshaper/venv
        cd /work
        # as install.sh does: the bundle's pure-Python deps, then the wheel, no compiler, no index
        /opt/reshaper/venv/bin/pip install -q --no-deps --no-index --disable-pip-version-check deps/*.whl
        /opt/reshaper/venv/bin/pip install -q --no-deps --no-index --disable-pip-version-check {bb_build['wheel'].name}
        rm -rf deps
        ! command -v gcc cc
        /opt/reshaper/venv/bin/python -c 'import platform, reshaper._native, netfilterqueue; print("ARCH", platform.machine(), reshaper._native.__file__)'
        # one Python start for all cases (each costs seconds under qemu-user): the CLI's own main()
        /opt/reshaper/venv/bin/python - <<'PY'
import contextlib, io, os, sys
from reshaper.bridge.cli import main
for d in sorted(os.listdir(".")):
    if not os.path.isdir(d) or d == "deps":
        continue
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(["apply", d + "/rules.yaml", d + "/in.pcap", d + "/out.pcap", *open(d + "/args").read().split()])
    except SystemExit as e:
        rc = e.code
    except Exception as e:
        rc = repr(e)
    open(d + "/report", "w").write(out.getvalue())
    if rc not in (0, None):
        print("FAILED", d, rc)
import runpy
runpy.run_path("counter_carry.py", run_name="__main__")
PY
        echo DONE
    """, timeout=1800)
    seconds = time.monotonic() - t0
    assert r.returncode == 0 and "DONE" in r.stdout, r.stdout + r.stderr
    assert "ARCH armv7l" in r.stdout and "_native.abi3.so" in r.stdout, r.stdout
    assert "FAILED" not in r.stdout, r.stdout + "".join(
        (work / c.name / "report").read_text() for c in cases if f"FAILED {c.name}" in r.stdout)
    counts = [line for line in r.stdout.splitlines() if line.startswith("COUNTS ")]
    assert len(counts) == 1, r.stdout
    assert json.loads(counts[0].removeprefix("COUNTS ")) == counter_carry.EXPECTED
    problems = []
    for case in cases:
        d = work / case.name
        if p := mismatches(case, read_outputs(d / "out.pcap")):
            problems.append(f"--- {case.name} (armhf)\n" + "\n".join(p))
        # x86 on the same input: same frames and the same report
        x86 = tmp_path / f"{case.name}.pcap"
        proc = subprocess.run([sys.executable, "-m", "reshaper", "apply", str(d / "rules.yaml"), str(d / "in.pcap"),
                               str(x86), *(d / "args").read_text().split()],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr
        if read_outputs(x86) != read_outputs(d / "out.pcap"):
            problems.append(f"--- {case.name}: armhf frames differ from x86")
        if proc.stdout != (d / "report").read_text():
            problems.append(f"--- {case.name}: armhf report differs from x86:\n{(d / 'report').read_text()}\n"
                            f"x86:\n{proc.stdout}")
    assert not problems, "\n".join(problems)
    print(f"{len(cases)} golden cases on armhf (qemu-user) in {seconds:.1f} s")
