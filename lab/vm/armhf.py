"""armhf: Debian's armmp kernel under qemu-system-arm, and an armhf Debian rootfs
under qemu-user, for the BeagleBone build (deploy/beaglebone/) and its tests.

Everything lives in ~/.cache/reshaper/armhf (RESHAPER_ARMHF_CACHE), shared with
deploy/beaglebone/build.sh: .deb files (`apt-get download`, never installed:
armhf kernel headers through apt would remove the host gcc), the unpacked
kernel, initramfs images, the debootstrap rootfs as a tarball.

    from reshaper.lab.vm import armhf
    out = armhf.boot_script("echo hello", files={"/x": b"..."})   # busybox initramfs, console output
    root = armhf.rootfs()                                           # unpacked armhf Debian, chroot-able

The initramfs is busybox-static:armhf (dpkg -x), the kernel's modules in
MODULES with their dependencies, and whatever files a test adds; /init runs
/test.sh, prints `RESHAPER-EXIT <status>` on the console and powers off. There
is no Python in the guest: tests bring static helpers (cross-compiled C).
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from reshaper.lab.vm.runner import (_copy_modules, _cpio_newc, _pdeathsig, _unpack, kernel_problems, pick_kernel,
                     prune_other_abis)

CACHE = Path(os.environ.get("RESHAPER_ARMHF_CACHE", Path.home() / ".cache/reshaper/armhf"))
CROSS = "arm-linux-gnueabihf-"
VERSION = "1"  # bump when the initramfs layout changes
HOST_TOOLS = {  # binary -> Debian package
    "qemu-system-arm": "qemu-system-arm",
    "qemu-arm-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "debootstrap": "debootstrap",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf",
    "depmod": "kmod",
    "ssh": "openssh-client",   # deploy.sh to the emulated board (board.py)
    "mkfs.ext4": "e2fsprogs",
}
HOST_FILES = {"/usr/arm-linux-gnueabihf/include/stdio.h": "libc6-dev-armhf-cross"}
MODULES = ["8021q", "bridge", "veth"]
# the debootstrap rootfs: what the wheel test, callgrind and the emulated board need
# (systemd, udev, sshd, ifupdown, and D-Bus, which networkctl needs, as on a BeagleBoard.org
# image: the same rootfs boots as the emulated board; what install.sh would fetch with apt, as
# the board is offline: libxdp1 and libbpf1, which the wheel's extension links in every mode,
# iptables and libnetfilter-queue1 for nfqueue mode; linux-perf, which a board benchmark
# (bench/board.py) profiles the board with where it is installed)
ROOTFS_PACKAGES = ["python3", "python3-venv", "python3-cffi-backend", "python3-yaml", "python3-scapy",
                   "python3-pyroute2", "valgrind", "iproute2", "kmod", "systemd-sysv", "udev",
                   "openssh-server", "ifupdown", "dbus", "procps", "iptables", "libnetfilter-queue1",
                   "libxdp1", "libbpf1", "linux-perf"]
SUITE = "bookworm"
MIRROR = os.environ.get("RESHAPER_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class ArmError(RuntimeError):
    pass


def _sh(*cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def missing_host_packages() -> list[str]:
    pkgs = {pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)}
    pkgs |= {pkg for path, pkg in HOST_FILES.items() if not Path(path).exists()}
    return sorted(pkgs)


def _apt_update() -> None:
    # a half-synced mirror index (seen for bookworm-security armhf) must not stop us
    subprocess.run(["apt-get", "-q", "update"], check=False)


def ensure_armhf_apt() -> None:
    """dpkg knows armhf, so `apt-get download NAME:armhf` works (nothing armhf is installed)."""
    if "armhf" not in _sh("dpkg", "--print-foreign-architectures").split():
        subprocess.run(["dpkg", "--add-architecture", "armhf"], check=True)
        _apt_update()
    if subprocess.run(["apt-cache", "show", "busybox-static:armhf"], capture_output=True).returncode:
        _apt_update()


def binfmt_ready() -> bool:
    return Path("/proc/sys/fs/binfmt_misc/qemu-arm").exists() and \
        "enabled" in Path("/proc/sys/fs/binfmt_misc/qemu-arm").read_text()


def enable_binfmt() -> None:
    """qemu-arm through binfmt_misc (flag F: works inside chroots)."""
    if binfmt_ready():
        return
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False)
    subprocess.run(["update-binfmts", "--enable", "qemu-arm"], check=False)
    if not binfmt_ready():
        raise ArmError("binfmt_misc for qemu-arm is not available (mount binfmt_misc; update-binfmts --enable qemu-arm)")


def install_host_tools() -> None:
    if missing := missing_host_packages():
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "-q", "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env).returncode:
            _apt_update()
            subprocess.run(cmd, env=env, check=True)
    ensure_armhf_apt()
    enable_binfmt()


def deb(spec: str) -> Path:
    """NAME[:ARCH][=VERSION] -> the cached .deb, downloaded once."""
    name = spec.split("=")[0].split(":")[0]
    d = CACHE / "debs"
    d.mkdir(parents=True, exist_ok=True)
    found = sorted(d.glob(f"{name}_*.deb"))
    if not found:
        ensure_armhf_apt()
        subprocess.run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", spec], cwd=d, check=True)
        found = sorted(d.glob(f"{name}_*.deb"))
    return found[-1]


def unpack(dest: Path, specs: list[str]) -> Path:
    """The armhf packages unpacked into dest (the x86 runner's unpacking, armhf downloads)."""
    return _unpack(dest, specs, fetch=deb)


@functools.cache
def kernel_release() -> str:
    """6.1.0-N-armmp: the newest in the archive (RESHAPER_ARMHF_KERNEL pins one), the
    release build.sh builds the module for and the emulated board boots."""
    ensure_armhf_apt()
    return pick_kernel(os.environ.get("RESHAPER_ARMHF_KERNEL"), "linux-image-armmp:armhf", "armmp",
                       [p.name for p in (CACHE / "kernel").glob("*-armmp")])


def kernel_image(krel: str) -> tuple[Path, Path]:
    """(zImage, modules tree root) of linux-image-KREL:armhf, modules indexed."""
    image = unpack(CACHE / "kernel" / krel / "image", [f"linux-image-{krel}:armhf"])
    if not (image / "lib/modules" / krel / "modules.dep").exists():
        subprocess.run(["depmod", "-b", str(image), krel], check=True)
    return image / "boot" / f"vmlinuz-{krel}", image


def busybox() -> Path:
    return unpack(CACHE / "busybox", ["busybox-static:armhf"]) / "bin/busybox"


def cross_compile(source: Path, name: str, flags: tuple[str, ...] = ("-O2",)) -> Path:
    """A static armhf binary, cached by source and flags."""
    key = hashlib.sha256(source.read_bytes() + repr(flags).encode()).hexdigest()[:12]
    out = CACHE / "bin" / f"{name}-{key}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([f"{CROSS}gcc", "-static", "-Wall", *flags, "-o", f"{out}.tmp", str(source)],
                       check=True)
        os.rename(f"{out}.tmp", out)
    return out


INIT = r"""#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null
for m in @MODULES@; do modprobe $m || echo "init: modprobe $m failed"; done
echo RESHAPER-START
sh /test.sh </dev/null 2>&1
echo "RESHAPER-EXIT $?"
dmesg | grep -E 'BUG|WARNING|Oops|panic|Call Trace|reshaper' | sed 's/^/KLOG /'
poweroff -f
"""


def initramfs(krel: str, files: dict[str, bytes | Path], script: str, init: str = INIT,
              modules: list[str] = MODULES) -> Path:
    """busybox + the kernel's modules (with dependencies) + files {guest path: content};
    /init = init (@MODULES@ replaced by the module list), /test.sh = script."""
    _, image = kernel_image(krel)
    bb = busybox()
    blobs = {k: (v.read_bytes() if isinstance(v, Path) else v) for k, v in files.items()}
    h = hashlib.sha256(repr((VERSION, krel, modules, init, script)).encode())
    for k in sorted(blobs):
        h.update(k.encode() + b"\0" + blobs[k])
    out = CACHE / "initramfs" / f"{krel}-{h.hexdigest()[:12]}.cpio"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp)
        for d in ["bin", "proc", "sys", "dev", "tmp", "run", "newroot"]:
            (root / d).mkdir()
        shutil.copy(bb, root / "bin/busybox")
        applets = _sh("qemu-arm-static", str(bb), "--list").split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", root / "bin" / a)
        _copy_modules(image, krel, modules, root)
        for path, data in blobs.items():
            p = root / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(0o755)
        (root / "init").write_text(init.replace("@MODULES@", " ".join(modules)))
        (root / "init").chmod(0o755)
        (root / "test.sh").write_text(script)
        data = _cpio_newc(root, [("dev/console", 0o20600, 5, 1), ("dev/null", 0o20666, 1, 3)])
    out.with_suffix(".tmp").write_bytes(data)
    out.with_suffix(".tmp").rename(out)
    return out


class BootResult:
    def __init__(self, status: int, output: str, console: str, seconds: float):
        self.status, self.output, self.console, self.seconds = status, output, console, seconds

    @property
    def kernel_problems(self) -> list[str]:
        return [line for line in self.console.splitlines()
                if kernel_problems(line) and "RESHAPER" not in line and "echo" not in line]


def boot_script(script: str, files: dict[str, bytes | Path] | None = None, timeout: float = 300,
                memory_mb: int = 512, krel: str | None = None) -> BootResult:
    """Boot the armmp kernel on qemu's virt board with a busybox initramfs, run
    script as /test.sh, return its status and output (from the serial console)."""
    krel = krel or kernel_release()
    zimage, _ = kernel_image(krel)
    initrd = initramfs(krel, files or {}, script)
    with tempfile.TemporaryDirectory(prefix="reshaper-arm-") as tmp:
        console = Path(tmp) / "console.log"
        cmd = ["qemu-system-arm", "-M", "virt,highmem=off", "-cpu", "cortex-a15", "-accel", "tcg",
               "-smp", "1", "-m", str(memory_mb), "-nodefaults", "-no-user-config", "-display", "none",
               "-nic", "none", "-no-reboot", "-serial", f"file:{console}",
               "-kernel", str(zimage), "-initrd", str(initrd),
               "-append", "console=ttyAMA0 loglevel=4 panic=-1 rdinit=/init"]
        t0 = time.monotonic()
        with open(Path(tmp) / "qemu.out", "wb") as qout, _one_system():
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qout, stderr=subprocess.STDOUT,
                                    preexec_fn=_pdeathsig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                raise ArmError(f"armhf VM timed out after {timeout:.0f}s:\n"
                               + console.read_text(errors="replace")[-6000:])
        seconds = time.monotonic() - t0
        text = console.read_text(errors="replace").replace("\r", "")
    m = re.search(r"^RESHAPER-EXIT (\d+)", text, re.M)
    if not m:
        raise ArmError(f"armhf VM did not finish its script:\n{text[-6000:]}")
    body = text.split("RESHAPER-START\n", 1)[-1].split("\nRESHAPER-EXIT", 1)[0]
    return BootResult(int(m.group(1)), body, text, seconds)


class _one_system:
    """One qemu-system at a time from these helpers (2 shared cores)."""

    def __enter__(self):
        CACHE.mkdir(parents=True, exist_ok=True)
        self.f = open(CACHE / ".qemu-system.lock", "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.f.close()


# ---------------------------------------------------------------- rootfs (qemu-user)

def rootfs_tarball() -> Path:
    key = hashlib.sha256(repr((SUITE, sorted(ROOTFS_PACKAGES))).encode()).hexdigest()[:10]
    return CACHE / f"rootfs-{SUITE}-{key}.tar"


def ensure_rootfs_tarball() -> Path:
    """An armhf Debian (debootstrap --variant=minbase + ROOTFS_PACKAGES) as a cached
    tarball: made once (about 8 minutes here: the second stage runs under qemu-user)."""
    enable_binfmt()
    tar = rootfs_tarball()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tar.exists():
            work = CACHE / "debootstrap.tmp"
            shutil.rmtree(work, ignore_errors=True)
            r = subprocess.run(["debootstrap", "--arch=armhf", "--variant=minbase",
                                f"--include={','.join(ROOTFS_PACKAGES)}", SUITE, str(work), MIRROR],
                               capture_output=True, text=True)
            if r.returncode:
                raise ArmError(f"debootstrap failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            subprocess.run(["chroot", str(work), "apt-get", "clean"], check=False)
            subprocess.run(["tar", "cf", f"{tar}.tmp", "--numeric-owner", "-C", str(work), "."], check=True)
            os.rename(f"{tar}.tmp", tar)
            shutil.rmtree(work, ignore_errors=True)
            for stale in CACHE.glob(f"rootfs-{SUITE}-*.tar"):   # made for another package list
                if stale != tar:
                    stale.unlink()
    return tar


def rootfs(dest: Path | None = None) -> Path:
    """A fresh unpacked copy of the rootfs tarball (dest, default CACHE/rootfs)."""
    tar = ensure_rootfs_tarball()
    dest = dest or CACHE / "rootfs"
    for sub in ("proc", "sys", "dev"):  # a previous run may have died with mounts
        subprocess.run(["umount", "-l", str(dest / sub)], capture_output=True)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "xf", str(tar), "--numeric-owner", "-C", str(dest)], check=True)
    return dest


def chroot_run(root: Path, script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """bash script in the armhf rootfs (qemu-arm through binfmt_misc), /proc mounted."""
    (root / "proc").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        return subprocess.run(["chroot", str(root), "/bin/bash", "-ec", script], capture_output=True,
                              text=True, timeout=timeout,
                              env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                   "HOME": "/root", "LANG": "C.UTF-8"})
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], capture_output=True)


def prepare(install: bool = True) -> dict:
    """Host tools, kernel, busybox, rootfs tarball: what `make setup` runs."""
    if install:
        install_host_tools()
    if missing := missing_host_packages():
        raise ArmError(f"missing host packages: {' '.join(missing)}")
    enable_binfmt()
    krel = kernel_release()
    for folder in ("kernel", "debs", "kmod-build"):
        prune_other_abis(CACHE / folder, krel)
    zimage, _ = kernel_image(krel)
    busybox()
    return {"krel": krel, "kernel": zimage, "rootfs": ensure_rootfs_tarball()}


if __name__ == "__main__":
    t0 = time.monotonic()
    for k, v in prepare().items():
        print(f"{k}: {v}")
    print(f"armhf prepared in {time.monotonic() - t0:.1f}s (cache {CACHE})")
