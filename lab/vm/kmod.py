"""Host side of the kernel-module tests (tests/kmod) and benchmarks (bench/kernel.py,
`reshaper bench --vm`, bench/timing.py --vm): build the module (cached by source hash),
bundle the pure-Python dependencies, set up the guest and lay out its topology.

Guest topology (per namespace pair; `br` and `h`, optionally `br2`/`h2`):

    ns h:  h0  <---- veth ---->  eth0  :ns br
                                  |-- eth0.100 --+
                                  |-- eth0.200 --+-- rsbr0 (reshaper run --mode kernel)

The host end h0 sends frames tagged 100 (port a) or 200 (port b) and sees
what the bridge sends back out the other VLAN interface: exactly the golden
cases' trunk-form frames. Trunk-form ports make `reshaper run` create the
VLAN interfaces itself; VLAN-interface-form configs name them directly.

Python under TCG is slow to start (pyroute2 over 9p took 40 s): its pure
Python dependencies go into one zip that the guest copies to tmpfs and puts
first on PYTHONPATH (10 s then; the stdlib-only agent starts in about 2 s).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from reshaper.lab import REPO

from reshaper.lab.vm.runner import CACHE as VM_CACHE, kdir, kernel_version

CACHE = Path(os.environ.get("RESHAPER_KMOD_CACHE", VM_CACHE.parent / "kmod"))
GUEST_DIR = "/kmod"          # where the cache folder of this build is shared
PY = f"{REPO}/.venv/bin/python"
AGENT = Path(__file__).with_name("agent.py")   # run in the guest by path: the standard library only


def _digest(root: Path, extra: str = "") -> str:
    """Hash of every file under root (paths and contents) and extra."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def build_module(kver: str | None = None) -> Path:
    """reshaper.ko for the VM kernel, built once per source hash; returns its folder
    (which also holds the guest's Python bundle). The hash is over the DKMS tree
    (`make -C kmod dkms-src`): kmod/Makefile names the sources, none is missed."""
    kver = kver or kernel_version()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        src = Path(tmp) / "src"
        subprocess.run(["make", "-s", "-C", str(REPO / "kmod"), "dkms-src", f"DEST={src}"], check=True,
                       capture_output=True)
        out = CACHE / f"{kver}-{_digest(src, kver)}"
        if (out / "reshaper.ko").exists():
            return out
        r = subprocess.run(["make", "-C", str(kdir(kver)), f"M={src}", "modules"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"module build failed:\n{r.stdout}\n{r.stderr}")
        warnings = [line for line in r.stderr.splitlines() if "warning:" in line]
        if warnings:
            raise RuntimeError("module build warnings:\n" + "\n".join(warnings))
        staged = Path(tmp) / "out"
        staged.mkdir()
        shutil.copy(src / "reshaper.ko", staged / "reshaper.ko")
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return out


def python_bundle(dest: Path) -> Path:
    """pyroute2, yaml and prometheus_client (`run --metrics`) compiled into one zip (dest/pydeps.zip),
    rebuilt when they change."""
    import importlib.metadata

    import prometheus_client
    import pyroute2
    import yaml

    site = Path(pyroute2.__file__).parent.parent
    key = (f"{pyroute2.__version__} {yaml.__version__} {importlib.metadata.version('prometheus_client')} "
           f"{Path(pyroute2.__file__).stat().st_mtime_ns}")
    zpath, stamp = dest / "pydeps.zip", dest / "pydeps.key"
    if zpath.exists() and stamp.exists() and stamp.read_text() == key:
        return zpath
    tmp = dest / "pydeps.zip.tmp"
    with zipfile.PyZipFile(tmp, "w") as z:
        z.writepy(str(site / "pyroute2"))
        z.writepy(str(Path(yaml.__file__).parent))
        z.writepy(str(Path(prometheus_client.__file__).parent))
    tmp.rename(zpath)
    stamp.write_text(key)
    return zpath


def shares(build: Path) -> dict[str, str]:
    return {str(REPO): str(REPO), str(build): GUEST_DIR}


# Run first in the guest: the Python bundle, helpers, the bridge's modules. Later commands
# source /tmp/env.sh. GUEST_SETUP also loads the module built here; tests/kmod installs
# the reshaper-dkms package instead (dkms_install).
GUEST_ENV = f"""
set -e
cp {GUEST_DIR}/pydeps.zip /tmp/pydeps.zip
cat >/tmp/env.sh <<'EOF'
export PYTHONPATH=/tmp/pydeps.zip
export RESHAPER_KMOD={GUEST_DIR}/reshaper.ko
PY={PY}
AGENT={AGENT}
cd {REPO}
# topology NS_BR NS_H: veth h0 (in NS_H) <-> eth0 (in NS_BR), IPv6 off (no stray frames)
topology() {{
  ip netns add $1; ip netns add $2
  for n in $1 $2; do
    ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n $n link set lo up
  done
  ip link add eth0 netns $1 type veth peer name h0 netns $2
  ip -n $1 link set eth0 up; ip -n $2 link set h0 up
}}
EOF
. /tmp/env.sh
modprobe bridge; modprobe 8021q
"""
GUEST_SETUP = GUEST_ENV + "insmod $RESHAPER_KMOD\n"

DKMS_GUEST_DIR = "/dkms"    # the packages and the host's package database (dkms_share)


def dkms_share(dest: Path, packages: list[Path]) -> dict[str, str]:
    """Shares for dkms_install: dest, with the packages and a copy of the host's package database
    (what the host's /usr, the guest's, has installed), at DKMS_GUEST_DIR; the unpacked headers of
    the VM's kernel at their own path (runner.kdir's Makefile names it)."""
    for deb in packages:
        shutil.copy(deb, dest / deb.name)
    subprocess.run(["tar", "cf", str(dest / "dpkg.tar"), "-C", "/var/lib", "dpkg"], check=True)
    headers = kdir().parents[2]    # .../headers/usr/src/linux-headers-KVER
    return {str(dest): DKMS_GUEST_DIR, str(headers): str(headers)}


def dkms_install(packages: list[Path]) -> str:
    """The guest script that installs packages (dkms and reshaper-dkms) with dpkg, as a Debian
    host does: the guest's /usr and /etc are the host's, read-only (lab/vm/runner.py), so dpkg
    writes into overlays held in RAM, and the running kernel's headers are the unpacked ones.
    DKMS builds the module there and installs it in /lib/modules/KVER/updates/dkms."""
    debs = " ".join(f"{DKMS_GUEST_DIR}/{deb.name}" for deb in packages)
    return f"""
set -e
modprobe overlay
for d in usr etc; do
  mkdir -p /run/overlay/$d/upper /run/overlay/$d/work
  mount -t overlay overlay -o lowerdir=/$d,upperdir=/run/overlay/$d/upper,workdir=/run/overlay/$d/work /$d
done
mkdir -p /var/lib /var/log /var/cache
tar xf {DKMS_GUEST_DIR}/dpkg.tar -C /var/lib
ln -s {kdir()} /lib/modules/$(uname -r)/build
DEBIAN_FRONTEND=noninteractive dpkg -i {debs}
"""


def run_command(config: str, control: str, extra: str = "") -> str:
    """The appliance, as the operator starts it."""
    return f"$PY -m reshaper run {config} --mode kernel --control {control} {extra}"
