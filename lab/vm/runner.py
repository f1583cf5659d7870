"""Boot Debian's own x86_64 kernel under qemu (TCG) and run shell commands in it.

Why: the development kernel has no loadable modules, no 8021q and no netem, so
kernel-module tests and netem comparisons run in a VM. Everything downloaded or
built lives in ~/.cache/reshaper/vm (RESHAPER_VM_CACHE overrides); a prepared
cache never touches the network again.

Guest layout: an initramfs with busybox, the real ip/tc with their libraries,
the modules in MODULES and an agent script (/init). Host /usr and /etc are
mounted read-only over 9p, so host binaries (python3, bash, kmod, iptables...)
run unchanged. A per-VM control folder (9p, read-write) carries commands in and
exit status, output and the kernel log out. There is no network device.
"""
from __future__ import annotations

import bz2
import ctypes
import fcntl
import functools
import hashlib
import lzma
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple

RUNNER_VERSION = "2"  # bump when the initramfs contents or layout change
CACHE = Path(os.environ.get("RESHAPER_VM_CACHE", Path.home() / ".cache/reshaper/vm"))
HOST_TOOLS = {  # binary -> Debian package providing it
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "depmod": "kmod",
    "make": "make",
    "gcc-12": "gcc-12",
    "iptables": "iptables",  # NFQUEUE comparisons run host iptables in the guest
    # what Debian's dkms depends on: the guest installs dkms against the host's package database
    # (lab/vm/kmod.py dkms_install), so the host's /usr must have them
    "dpkg-architecture": "dpkg-dev",
    "patch": "patch",
    "lsb_release": "lsb-release",
}
BUSYBOX = "/bin/busybox"
# Loaded at boot (9p transport) plus what the tests need; dependencies
# (stp, llc, nf_tables, x_tables, nfnetlink, netfs...) are resolved by modprobe.
BOOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
MODULES = BOOT_MODULES + [
    "8021q", "bridge", "br_netfilter", "veth", "dummy",
    "sch_netem", "sch_tbf", "sch_htb", "sch_ingress", "cls_u32", "cls_matchall",
    "act_mirred", "act_gact",
    "nf_tables", "nft_compat", "ip_tables", "iptable_filter", "ip6_tables", "ip6table_filter",
    "x_tables", "xt_physdev", "xt_NFQUEUE", "nfnetlink_queue", "overlay",
]
PROBLEM_RE = re.compile(r"\bBUG\b|\bWARNING:|\bOops\b|Kernel panic|general protection fault|"
                        r"UBSAN:|KASAN:|refcount_t:|list_(add|del) corruption|Call Trace:")


class VMError(RuntimeError):
    pass


class RunResult(NamedTuple):
    status: int
    output: str


class VMResult(NamedTuple):
    status: int
    output: str
    kernel_log: str


# ---------------------------------------------------------------- host setup

def _sh(*cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def missing_host_packages() -> list[str]:
    return sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})


def _apt(*args: str) -> None:
    """apt-get with a retry after `apt-get update` (stale or missing lists)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # root-owned cache dirs are not readable by _apt: skip the sandbox warning
    cmd = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", *args]
    if subprocess.run(cmd, env=env, cwd=CACHE / "debs").returncode != 0:
        subprocess.run(["apt-get", "-q", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, cwd=CACHE / "debs", check=True)


def install_host_tools() -> None:
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    if missing := missing_host_packages():
        _apt("install", "-y", "--no-install-recommends", *missing)


def vm_available() -> bool:
    """True when the host tools are there (the cache is built on first use)."""
    return not missing_host_packages() and Path(BUSYBOX).exists()


# ---------------------------------------------------------------- kernel cache

APT_LISTS = Path("/var/lib/apt/lists")
APT_LISTS_MAX_AGE = 6 * 3600  # s: older package lists are refreshed before asking for the newest kernel
HEADERS_BUILT_AGAINST: dict[str, str] = {}  # flavour -> ABI, for the test session's summary


def _version_key(version: str) -> list:
    return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", version)]


def apt_lists_time() -> float:
    """When the package lists were last fetched (0: never)."""
    return max((p.stat().st_mtime for p in APT_LISTS.glob("*_InRelease")), default=0.0)


def refresh_apt_lists(max_age: float = APT_LISTS_MAX_AGE) -> None:
    if time.time() - apt_lists_time() > max_age:
        # a half-synced mirror index (seen for bookworm-security armhf) must not stop us
        subprocess.run(["apt-get", "-q", "update"], check=False, stdout=subprocess.DEVNULL)


def newest_kernel_abi(meta: str, flavour: str) -> str | None:
    """The ABI (6.1.0-57-amd64) that Debian's metapackage (linux-image-amd64) points
    at now: the point release users get next. None when apt cannot say."""
    refresh_apt_lists()
    r = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True)
    m = re.search(rf"Depends: linux-image-(\S+-{flavour})\b", r.stdout)
    return m.group(1) if m else None


def pick_kernel(pinned: str | None, meta: str, flavour: str, cached: list[str]) -> str:
    """A pinned ABI, else the archive's newest, else (apt unreachable) the newest cached."""
    if pinned:
        return pinned
    if newest := newest_kernel_abi(meta, flavour):
        return newest
    if cached:
        newest_cached = max(cached, key=_version_key)
        print(f"warning: apt does not say which {meta} is newest; using the cached {newest_cached}",
              file=sys.stderr)
        return newest_cached
    raise VMError(f"cannot find the kernel version: apt-cache depends {meta} names none")


@functools.cache
def kernel_version() -> str:
    """ABI like 6.1.0-57-amd64: the newest in the archive (RESHAPER_VM_KERNEL pins one),
    so that a new point release breaks our build before it breaks a user's."""
    return pick_kernel(os.environ.get("RESHAPER_VM_KERNEL"), "linux-image-amd64", "amd64",
                       [p.parent.parent.name for p in CACHE.glob("*-amd64/image/boot")])


ABI_NAME = re.compile(r"\b(\d+\.\d+\.0-\d+)-(?:amd64|armmp|common)(?![a-z0-9-])")


def prune_other_abis(folder: Path, kver: str) -> None:
    """Remove what folder caches for kernel ABIs other than kver's (6.1.0-50-amd64 trees,
    linux-headers-6.1.0-50-common debs...): each ABI is hundreds of MB."""
    keep = kver.rsplit("-", 1)[0]
    for old in folder.glob("*"):
        if (m := ABI_NAME.search(old.name)) and m.group(1) != keep:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _deb(spec: str) -> Path:
    """NAME or NAME=VERSION -> the cached .deb, downloaded once."""
    name, _, version = spec.partition("=")
    pattern = f"{name}_{version or '*'}_*.deb"
    found = sorted((CACHE / "debs").glob(pattern))
    if not found:
        _apt("download", spec)
        found = sorted((CACHE / "debs").glob(pattern))
    return found[-1]


def _unpack(dest: Path, packages: list[str], fetch=_deb) -> Path:
    """dpkg -x the packages (each a .deb from fetch(name)) into dest, atomically
    (a half-unpacked tree never counts)."""
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for p in packages:
            subprocess.run(["dpkg", "-x", str(fetch(p)), str(tmp)], check=True)
        tmp.rename(dest)
    return dest


def kdir(kver: str | None = None) -> Path:
    """Headers tree for `make -C KDIR M=...`, unpacked (not installed: apt would
    pull in other things) and with its absolute include path made relative."""
    kver = kver or kernel_version()
    base = kver.rsplit("-", 1)[0]
    series = ".".join(base.split(".")[:2])
    root = CACHE / kver / "headers"
    if not root.exists():
        headers = _deb(f"linux-headers-{kver}")
        # the build tools of the same upstream version as the headers, not an older cached one
        version = _sh("dpkg-deb", "-f", str(headers), "Version").strip()
        _unpack(root, [f"linux-headers-{kver}", f"linux-headers-{base}-common",
                       f"linux-kbuild-{series}={version}"])
    tree = root / "usr/src" / f"linux-headers-{kver}"
    mk = tree / "Makefile"
    text = mk.read_text()  # "include /usr/src/linux-headers-X-common/Makefile"
    fixed = re.sub(r"^include \S*/usr/src/", f"include {root}/usr/src/", text, flags=re.M)
    if fixed != text:
        mk.write_text(fixed)
    HEADERS_BUILT_AGAINST["amd64"] = kver
    return tree


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF inside a bzImage (Python take on scripts/extract-vmlinux).
    The setup header gives the payload's offset; the magic scan is the fallback."""
    def inflate(blob: bytes) -> bytes | None:
        try:
            if blob.startswith(b"\xfd7zXZ\x00"):
                return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(blob)
            if blob.startswith(b"\x1f\x8b\x08"):
                return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob)
            if blob.startswith(b"BZh"):
                return bz2.BZ2Decompressor().decompress(blob)
            if blob.startswith(b"\x28\xb5\x2f\xfd") and shutil.which("zstd"):
                return subprocess.run(["zstd", "-dcq"], input=blob, capture_output=True).stdout
            if blob.startswith(b"\x5d\x00\x00"):
                return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(blob)
        except (lzma.LZMAError, zlib.error, OSError, EOFError):
            return None
        return None

    starts = []
    if bzimage[0x202:0x206] == b"HdrS":
        setup_sects = bzimage[0x1F1] or 4
        offset, length = struct.unpack_from("<II", bzimage, 0x248)
        start = (setup_sects + 1) * 512 + offset
        starts.append((start, start + length))
    for magic in (b"\xfd7zXZ\x00", b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd", b"BZh", b"\x5d\x00\x00"):
        starts += [(m.start(), len(bzimage)) for m in re.finditer(re.escape(magic), bzimage)][:8]
    for a, b in starts:
        out = inflate(bzimage[a:b])
        if out and out[:4] == b"\x7fELF":
            return out
    return None


def kernel_image(kver: str) -> Path:
    """vmlinux when it can be extracted (boots seconds faster under TCG), else bzImage."""
    image = _unpack(CACHE / kver / "image", [f"linux-image-{kver}"])
    vmlinux = CACHE / kver / "vmlinux"
    bzimage = image / "boot" / f"vmlinuz-{kver}"
    if not vmlinux.exists() and not (CACHE / kver / "vmlinux.failed").exists():
        data = extract_vmlinux(bzimage.read_bytes())
        if data:
            vmlinux.with_suffix(".tmp").write_bytes(data)
            vmlinux.with_suffix(".tmp").rename(vmlinux)
        else:
            (CACHE / kver / "vmlinux.failed").touch()
    return vmlinux if vmlinux.exists() else bzimage


# ---------------------------------------------------------------- initramfs

def _libs(binary: str) -> list[str]:
    """Shared libraries of a host binary (ldd), loader included."""
    out = _sh("ldd", binary)
    return sorted(set(re.findall(r"(/\S+\.so[.\d]*)\s", out)))


def _cpio_newc(root: Path, extra_nodes: list[tuple[str, int, int, int]]) -> bytes:
    """newc archive of root plus device nodes (name, mode, major, minor): writing
    it ourselves needs no mknod and gives uid 0 for every file."""
    out = bytearray()
    ino = 1

    def entry(name: str, mode: int, data: bytes = b"", rmaj: int = 0, rmin: int = 0) -> None:
        nonlocal ino
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(name) + 1, 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4) + data + b"\0" * (-len(data) % 4))
        ino += 1

    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for n in sorted(dirs) + sorted(files):
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                entry(rel, st.st_mode, os.readlink(p).encode())
            elif p.is_dir():
                entry(rel, st.st_mode)
            else:
                entry(rel, st.st_mode, p.read_bytes())
    for name, mode, major, minor in extra_nodes:
        entry(name, mode, rmaj=major, rmin=minor)
    entry("TRAILER!!!", 0)
    return bytes(out) + b"\0" * (-len(out) % 512)


INIT = r"""#!/bb/busybox sh
# PID 1: mount, load the 9p transport, then serve commands from /ctl until told
# to stop (or idle too long), dump the kernel log, power off. Always powers off.
export PATH=/bb
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
for m in @BOOT_MODULES@; do modprobe $m || echo "init: modprobe $m failed"; done
o=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $o,cache=none ctl /ctl || { echo "init: no /ctl"; poweroff -f; }
mount -t 9p -o $o,cache=loose,ro usr /usr || echo "init: no /usr" >>/ctl/boot.log
mount -t 9p -o $o,cache=loose,ro etc /etc || echo "init: no /etc" >>/ctl/boot.log
if [ -x /usr/bin/env ]; then
  # look merged-/usr like the host: its /usr holds absolute links such as
  # /usr/sbin/modprobe -> /bin/kmod. /lib stays ours for /lib/modules.
  ln -s usr/bin /bin; ln -s usr/sbin /sbin
  for p in /usr/lib/*; do [ -e /lib/${p##*/} ] || ln -s $p /lib/; done
else
  ln -s bb /bin; ln -s bb /sbin
fi
# /ctl/shares: "tag guest-path" per line, read-write
while read tag path; do
  mkdir -p "$path" && mount -t 9p -o $o,cache=none "$tag" "$path" || echo "init: share $tag failed" >>/ctl/boot.log
done </ctl/shares
ln -s /proc/self/fd /dev/fd
hostname reshaper-vm
ip link set lo up
export HOME=/root LANG=C.UTF-8 TERM=dumb PYTHONDONTWRITEBYTECODE=1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bb
# busybox sh runs its own `ip` applet whatever PATH says: user commands run in
# host bash when /usr is there; in busybox sh the functions pick the real ones.
ip() { /bb/ip "$@"; }; tc() { /bb/tc "$@"; }
sh=/usr/bin/bash; [ -x $sh ] || sh="/bb/busybox sh"
echo ready >/ctl/ready
n=1 idle=0
while [ ! -e /ctl/poweroff ] && [ $idle -lt @IDLE_TICKS@ ]; do
  if [ -e /ctl/cmd-$n.sh ]; then
    t=$(cat /ctl/cmd-$n.timeout)
    (cd /; timeout -s KILL $t $sh /ctl/cmd-$n.sh </dev/null >/ctl/out-$n 2>&1; echo $? >/ctl/rc-$n.tmp)
    mv /ctl/rc-$n.tmp /ctl/rc-$n
    n=$((n + 1)) idle=0
  else
    sleep 0.1; idle=$((idle + 1))
  fi
done
dmesg >/ctl/kernel.log.tmp && mv /ctl/kernel.log.tmp /ctl/kernel.log
sync
poweroff -f
"""


def _host_fingerprint(paths: list[str]) -> str:
    """Host files copied into the initramfs: a libc or iproute2 upgrade must
    rebuild it, or the guest would mix old copies with the new /usr."""
    return "".join(f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns};" for p in paths)


def _copy_modules(image: Path, kver: str, modules: list[str], root: Path) -> None:
    """Each of modules, with its dependencies, from the unpacked kernel tree image into
    the initramfs tree root; then a fresh index (depmod)."""
    mods = image / "lib/modules" / kver
    dst = root / "lib/modules" / kver
    dst.mkdir(parents=True)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (mods / name).exists():
            shutil.copy(mods / name, dst / name)
    for m in modules:
        deps = _sh("modprobe", "-d", str(image), "-S", kver, "--show-depends", m)
        for ko in re.findall(r"^insmod (\S+)", deps, re.M):
            rel = Path(ko).relative_to(mods)
            (dst / rel.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy(ko, dst / rel)
    subprocess.run(["depmod", "-b", str(root), kver], check=True)


def initramfs(kver: str, idle_timeout: int = 1800) -> Path:
    image = CACHE / kver / "image"
    bins = {"ip": "/usr/sbin/ip", "tc": "/usr/sbin/tc"}
    libs = sorted({lib for b in bins.values() for lib in _libs(b)})
    key = hashlib.sha256(repr((RUNNER_VERSION, kver, MODULES, INIT, idle_timeout,
                               _host_fingerprint([BUSYBOX, *bins.values(), *libs]))).encode())
    out = CACHE / kver / f"initramfs-{key.hexdigest()[:12]}.cpio"
    if out.exists():
        return out
    # modules.dep does not ship in the .deb: index the unpacked tree once
    mods = image / "lib/modules" / kver
    if not (mods / "modules.dep").exists():
        subprocess.run(["depmod", "-b", str(image), kver], check=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp)
        for d in ["bb/libexec", "bb/lib", "lib64", "proc", "sys", "dev", "tmp", "run", "ctl",
                  "usr", "etc", "root", "var/tmp", "mnt"]:
            (root / d).mkdir(parents=True, exist_ok=True)
        os.symlink("../run", root / "var/run")
        shutil.copy(BUSYBOX, root / "bb/busybox")
        for applet in _sh(BUSYBOX, "--list").split():
            if applet not in ("busybox", "ip", "tc"):
                os.symlink("busybox", root / "bb" / applet)
        # real ip/tc with their own libraries, usable before (or without) /usr
        for name, src in bins.items():
            shutil.copy(src, root / "bb/libexec" / name)
            wrapper = root / "bb" / name
            wrapper.write_text("#!/bb/busybox sh\nexec /lib64/ld-linux-x86-64.so.2 "
                               f"--library-path /bb/lib /bb/libexec/{name} \"$@\"\n")
            wrapper.chmod(0o755)
        for lib in libs:  # copied under the name ldd printed (follows symlinks)
            shutil.copy(lib, root / ("lib64" if "/ld-linux" in lib else "bb/lib") / Path(lib).name)
        _copy_modules(image, kver, MODULES, root)
        init = INIT.replace("@BOOT_MODULES@", " ".join(BOOT_MODULES))
        init = init.replace("@IDLE_TICKS@", str(idle_timeout * 10))
        (root / "init").write_text(init)
        (root / "init").chmod(0o755)
        data = _cpio_newc(root, [("dev/console", 0o20600, 5, 1),
                                 ("dev/null", 0o20666, 1, 3)])
    out.with_suffix(".tmp").write_bytes(data)
    out.with_suffix(".tmp").rename(out)
    for old in (CACHE / kver).glob("initramfs-*.cpio"):
        if old != out:
            old.unlink()
    return out


def prepare(install: bool = True, headers: bool = True) -> dict:
    """Idempotent: host tools, kernel, vmlinux, initramfs, headers and Debian's dkms package
    (lab/vm/kmod.py installs it in the guest). Returns paths."""
    if install:
        install_host_tools()
    if missing := missing_host_packages():
        raise VMError(f"missing host packages: {' '.join(missing)} (run: python -m reshaper.lab.vm prepare)")
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # concurrent pytest workers build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        kver = kernel_version()
        prune_other_abis(CACHE, kver)
        prune_other_abis(CACHE / "debs", kver)
        paths = {"kver": kver, "kernel": kernel_image(kver), "initrd": initramfs(kver)}
        if headers:
            paths["kdir"] = kdir(kver)
            paths["dkms"] = _deb("dkms")
    return paths


# ---------------------------------------------------------------- running

def kernel_problems(log: str) -> list[str]:
    """Lines of a kernel log that must fail a test: BUG, WARNING, Oops, panics..."""
    return [line for line in log.splitlines() if PROBLEM_RE.search(line)]


def assert_kernel_clean(log: str) -> None:
    if bad := kernel_problems(log):
        raise AssertionError("kernel log has problems:\n" + "\n".join(bad) + "\n---\n" + log[-4000:])


def _pdeathsig() -> None:
    # qemu dies with the Python process that started it (no orphaned VMs)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class VM:
    """One booted VM; run() any number of commands; leaving the block powers off.

    shares: {host_path: guest_path}, mounted read-write (use the same path on
    both sides to keep venvs and absolute paths working).
    one_tcg_thread: every vCPU on one host thread (-accel tcg,thread=single). Multi-threaded
    TCG (qemu 7.2) hangs a guest that patches its running kernel's text, as enabling or
    disabling a tracepoint does: one vCPU keeps trapping on text_poke_bp's int3 while the
    other waits for it (toggling a built-in event hangs it within a minute, no module loaded).
    """

    def __init__(self, shares: dict[str, str] | None = None, memory_mb: int = 1024,
                 cpus: int = 1, boot_timeout: float = 180, cmdline: str = "", one_tcg_thread: bool = False):
        self.shares = {str(Path(h).resolve()): g for h, g in (shares or {}).items()}
        self.memory_mb, self.cpus, self.boot_timeout, self.extra = memory_mb, cpus, boot_timeout, cmdline
        self.one_tcg_thread = one_tcg_thread
        self.proc: subprocess.Popen | None = None
        self.kernel_log = ""
        self.console_log = ""
        self.boot_seconds = 0.0
        self._n = 0

    def __enter__(self) -> "VM":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        paths = prepare(install=False, headers=False)
        self._tmp = tempfile.TemporaryDirectory(prefix="reshaper-vm-")
        self.ctl = Path(self._tmp.name) / "ctl"
        self.ctl.mkdir()
        self.console = Path(self._tmp.name) / "console.log"
        fs = [("ctl", str(self.ctl), False), ("usr", "/usr", True), ("etc", "/etc", True)]
        lines = []
        for i, (host, guest) in enumerate(self.shares.items()):
            fs.append((f"share{i}", host, False))
            lines.append(f"share{i} {guest}\n")
        (self.ctl / "shares").write_text("".join(lines))
        cmd = ["qemu-system-x86_64", "-M", "pc", "-accel", "tcg,thread=single" if self.one_tcg_thread else "tcg",
               "-cpu", "max",
               "-smp", str(self.cpus), "-m", str(self.memory_mb),
               "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
               "-nic", "none", "-no-reboot", "-serial", f"file:{self.console}",
               "-kernel", str(paths["kernel"]), "-initrd", str(paths["initrd"]),
               "-append", "console=ttyS0 loglevel=4 panic=-1 rdinit=/init "
                          "i8042.noaux i8042.nokbd i8042.nopnp " + self.extra]
        for tag, path, ro in fs:
            cmd += ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,"
                               f"multidevs=remap{',readonly=on' if ro else ''}"]
        t0 = time.monotonic()
        # qemu's own messages go to a file: an unread pipe could fill and stall it
        self._qemu_out = Path(self._tmp.name) / "qemu.out"
        with open(self._qemu_out, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        try:
            self._wait_for(self.ctl / "ready", self.boot_timeout, "boot")
            if (self.ctl / "boot.log").exists():
                raise VMError("guest set-up failed:\n" + (self.ctl / "boot.log").read_text()
                              + self._console())
        except BaseException:
            self.close(timeout=0)  # __exit__ never runs when __enter__ fails
            raise
        self.boot_seconds = time.monotonic() - t0

    def _console(self) -> str:
        return "\n--- console ---\n" + (self.console.read_text(errors="replace")[-6000:]
                                       if self.console.exists() else "")

    def _wait_for(self, path: Path, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                out = self._qemu_out.read_text(errors="replace")
                raise VMError(f"qemu exited ({self.proc.returncode}) during {what}: {out}{self._console()}")
            if time.monotonic() > deadline:
                self._kill()
                raise VMError(f"VM timed out after {timeout:.0f}s during {what}{self._console()}")
            time.sleep(0.05)

    def run(self, command: str, timeout: float = 120) -> RunResult:
        """Run a bash script in the guest as root; returns (exit_status, output).
        A command exceeding timeout is killed in the guest (status 137)."""
        if not self.proc or self.proc.poll() is not None:
            raise VMError("VM is not running")
        self._n += 1
        n = self._n
        (self.ctl / f"cmd-{n}.timeout").write_text(f"{max(1, math.ceil(timeout))}\n")
        tmp = self.ctl / f".cmd-{n}.sh"
        tmp.write_text(command + "\n")
        tmp.rename(self.ctl / f"cmd-{n}.sh")  # the guest only sees complete scripts
        # the guest kills at `timeout`; the host gives up (and kills qemu) later
        self._wait_for(self.ctl / f"rc-{n}", timeout + 30, f"command {command[:60]!r}")
        return RunResult(int((self.ctl / f"rc-{n}").read_text()),
                         (self.ctl / f"out-{n}").read_text(errors="replace"))

    def dmesg(self) -> str:
        return self.run("dmesg").output

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                (self.ctl / "poweroff").touch()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._kill()
            klog = self.ctl / "kernel.log"
            self.console_log = self.console.read_text(errors="replace") if self.console.exists() else ""
            # the guest's dmesg when it got to write it; the console always
            self.kernel_log = klog.read_text(errors="replace") if klog.exists() else self.console_log
            self.proc = None
            self._tmp.cleanup()


def run_in_vm(script: str, shares: dict[str, str] | None = None, timeout: float = 300,
              **kw) -> VMResult:
    """Single shot: boot, run script, power off."""
    with VM(shares, **kw) as vm:
        status, output = vm.run(script, timeout)
    return VMResult(status, output, vm.kernel_log)
