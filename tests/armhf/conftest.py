"""armhf tests share one run of deploy/beaglebone/build.sh (into the armhf cache,
not dist/): the wheel, the module and the Debian packages they test are the ones the board gets."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from reshaper.lab.vm import armhf
from reshaper.lab.vm.runner import HEADERS_BUILT_AGAINST

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bb_build() -> dict:
    missing = armhf.missing_host_packages()
    assert not missing, f"missing host packages {missing}: run make setup"
    armhf.enable_binfmt()
    out = armhf.CACHE / "test-dist"
    krel = armhf.kernel_release()
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(REPO / "deploy/beaglebone/build.sh"), "--out", str(out),
                        "--kernel-release", krel], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = sorted(out.glob("reshaper-*-cp311-cp311-linux_armv7l.whl"))
    kos = sorted(out.glob("reshaper-*.ko"))
    bundles = sorted(out.glob("reshaper-beaglebone-*.tar.gz"))
    debs = {deb.name.split("_")[0]: deb for deb in out.glob("*.deb")}
    assert len(wheels) == 1 and len(kos) == 1 and len(bundles) == 1, r.stdout
    assert sorted(debs) == ["reshaper", "reshaper-dkms", f"reshaper-modules-{krel}"], r.stdout
    print(f"build.sh: {time.monotonic() - t0:.1f} s, module for {krel}")
    HEADERS_BUILT_AGAINST["armmp"] = krel
    kdir = armhf.CACHE / "kernel" / krel / "headers/usr/src" / f"linux-headers-{krel}"
    return {"wheel": wheels[0], "ko": kos[0], "bundle": bundles[0], "debs": debs, "out": out,
            "log": r.stdout, "krel": krel, "kdir": kdir}
