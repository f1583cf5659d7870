"""An emulated BeagleBone for deploy tests: the armhf Debian rootfs (armhf.py)
booted with systemd on qemu-system-arm's virt board, as deploy.sh finds a real one.

    with Board() as board:                      # boots; ssh answers
        board.ssh("systemctl is-active reshaper")
        board.trunk.send(frame); board.trunk.receive(...)

Like a BeagleBone managed over its USB network, the board has two NICs:
  * eth0, the VLAN trunk (the port a managed switch would feed): a tap device, trunk0,
    in a network namespace of its own (TRUNK_NETNS), where `trunk` sends and receives
    frames and `reshaper bench --board` puts its hosts (VLAN interfaces on trunk0);
  * eth1, management: qemu user-mode networking, isolated (restrict=on), whose
    only way in is sshd forwarded to a free port on 127.0.0.1.
Root logs in with a key made for the image; the host key is known in advance,
so ssh checks it (StrictHostKeyChecking=yes) and no password exists anywhere.

The disk is an ext4 image of the rootfs plus the kernel's modules, built once
per rootfs and kernel in ~/.cache/reshaper/armhf/board-*; each boot writes to a
qemu snapshot, so every Board starts from the same clean image (a guest reboot
keeps the snapshot: persistence across reboots can be tested).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from reshaper.bench.topology import ns_write
from reshaper.bridge.netns import Namespace
from reshaper.lab.frame_tap import FrameTap

from . import armhf
from reshaper.lab.vm.runner import _pdeathsig

VERSION = "1"  # bump when the image's customisation changes
TRUNK_MAC = "52:54:00:be:00:01"
# one board at a time (armhf._one_system), so one fixed name: a killed run's is replaced
TRUNK_NETNS, TRUNK_IFNAME = "rsboard-trunk", "trunk0"
# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
MGMT_MAC = "52:54:00:be:00:02"
BOOT_MODULES = ["virtio_mmio", "virtio_blk", "crc32c_generic", "ext4"]  # ext4 needs crc32c (soft dependency)
# busybox init: enough to find the disk, then systemd takes over
INIT = r"""#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in @MODULES@; do modprobe $m || echo "init: modprobe $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "init: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd
"""
INTERFACES = """# management (on a BeagleBone: the USB network, usb0); eth0 is left to deploy.sh
auto lo
iface lo inet loopback

auto eth1
iface eth1 inet static
  address 10.0.2.15/24
  gateway 10.0.2.2
"""


class BoardError(RuntimeError):
    pass


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image() -> dict:
    """The board's disk image, initramfs and keys, built once (about 6 s) per rootfs and kernel."""
    krel = armhf.kernel_release()
    zimage, kimage = armhf.kernel_image(krel)
    tar = armhf.ensure_rootfs_tarball()
    key = hashlib.sha256(repr((VERSION, krel, tar.name, INIT, INTERFACES)).encode()).hexdigest()[:10]
    d = armhf.CACHE / f"board-{key}"
    paths = {"krel": krel, "kernel": zimage, "disk": d / "disk.img", "key": d / "id_ed25519",
             "host_key": d / "ssh_host_ed25519_key.pub",
             "initrd": armhf.initramfs(krel, {}, "", init=INIT, modules=BOOT_MODULES)}
    if (d / "done").exists():
        return paths
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (d / "done").exists():
            return paths
        root = armhf.rootfs(d / "root")
        shutil.copytree(kimage / "lib/modules" / krel, root / "lib/modules" / krel, symlinks=True)
        etc = root / "etc"
        (etc / "hostname").write_text("beaglebone\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 beaglebone\n")
        (etc / "fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
        (etc / "network/interfaces").write_text(INTERFACES)
        # this image's own keys: the host key is known before the first connection
        for old in (etc / "ssh").glob("ssh_host_*"):
            old.unlink()
        for f in (paths["key"], paths["key"].with_suffix(".pub")):
            f.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reshaper-board-host",
                        "-f", str(etc / "ssh/ssh_host_ed25519_key")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reshaper-board-test",
                        "-f", str(paths["key"])], check=True)
        shutil.copy(etc / "ssh/ssh_host_ed25519_key.pub", paths["host_key"])
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(paths["key"].with_suffix(".pub"), ssh_dir / "authorized_keys")
        (ssh_dir / "authorized_keys").chmod(0o600)
        tmp = d / "disk.img.tmp"
        tmp.unlink(missing_ok=True)
        subprocess.run(["truncate", "-s", "3G", str(tmp)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "board", "-d", str(root), str(tmp)], check=True)
        tmp.rename(paths["disk"])
        shutil.rmtree(root)
        (d / "done").touch()
        for stale in armhf.CACHE.glob("board-*"):   # images of an older rootfs, kernel or layout
            if stale != d:
                shutil.rmtree(stale, ignore_errors=True)
    return paths


class Trunk(FrameTap):
    """The board's eth0 from here: the tap trunk0 in namespace TRUNK_NETNS, its file (fd)
    handed to qemu; frames sent and received on it as a FrameTap's. The namespace's own
    stack stays silent (no IPv6, no addresses)."""

    def __init__(self):
        self.ns = Namespace(TRUNK_NETNS).create()
        for key in ("all", "default"):
            ns_write(self.ns, f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "1")
        with self.ns.entered():   # a tap is made in the namespace /dev/net/tun was opened in
            self.fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", TRUNK_IFNAME.encode(), IFF_TAP | IFF_NO_PI))
        self.ns.set_link(TRUNK_IFNAME, state="up")
        super().__init__(self.ns, TRUNK_IFNAME)

    def close(self) -> None:
        super().close()
        os.close(self.fd)
        self.ns.remove()


class Board:
    """One emulated board (qemu-system-arm, one Cortex-A15 core like the A8's one, 512 MB)."""

    def __init__(self, memory_mb: int = 512, boot_timeout: float = 600):
        self.memory_mb, self.boot_timeout = memory_mb, boot_timeout
        self.proc: subprocess.Popen | None = None
        self.boot_seconds = 0.0

    def __enter__(self) -> "Board":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def host(self) -> str:
        return "root@127.0.0.1"

    def ssh_options(self) -> list[str]:
        """For ssh and for deploy.sh (RESHAPER_SSH_OPTS): this image's key and host key only,
        one shared connection (a key exchange costs seconds on the emulated CPU)."""
        return ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.tmp}/cm", "-o", "ControlPersist=300"]

    def start(self) -> None:
        paths = image()
        self._tmp = tempfile.TemporaryDirectory(prefix="reshaper-board-")
        self.tmp = Path(self._tmp.name)
        self.key = paths["key"]
        self.ssh_port = _free_port(socket.SOCK_STREAM)
        self.known_hosts = self.tmp / "known_hosts"
        host_key = " ".join(paths["host_key"].read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {host_key}\n")
        self._lock = armhf._one_system()
        self._lock.__enter__()
        try:
            self.trunk = Trunk()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.console = self.tmp / "console.log"
        # eth0 is the virtio-mmio device with the highest address: qemu's virt board hands them
        # out from the top, so the device given last here comes first in the guest
        cmd = ["qemu-system-arm", "-M", "virt,highmem=off", "-cpu", "cortex-a15", "-accel", "tcg",
               "-smp", "1", "-m", str(self.memory_mb), "-nodefaults", "-no-user-config",
               "-display", "none", "-serial", f"file:{self.console}",
               "-kernel", str(paths["kernel"]), "-initrd", str(paths["initrd"]),
               "-append", "console=ttyAMA0 loglevel=4 panic=-1 rdinit=/init net.ifnames=0",
               "-drive", f"if=none,id=disk,file={paths['disk']},format=raw,snapshot=on",
               "-device", "virtio-blk-device,drive=disk",
               "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
               "-device", f"virtio-net-device,netdev=mgmt,mac={MGMT_MAC}",
               "-netdev", f"tap,id=trunk,fd={self.trunk.fd}",
               "-device", f"virtio-net-device,netdev=trunk,mac={TRUNK_MAC}"]
        t0 = time.monotonic()
        self._qemu_out = open(self.tmp / "qemu.out", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._qemu_out,
                                     stderr=subprocess.STDOUT, preexec_fn=_pdeathsig, pass_fds=(self.trunk.fd,))
        try:
            self.wait_for_ssh(self.boot_timeout)
        except BaseException:
            self.close(timeout=0)
            raise
        self.boot_seconds = time.monotonic() - t0

    def console_tail(self, n: int = 6000) -> str:
        return self.console.read_text(errors="replace")[-n:] if self.console.exists() else ""

    def wait_for_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BoardError(f"qemu exited ({self.proc.returncode}):\n"
                                 + (self.tmp / "qemu.out").read_text(errors="replace") + self.console_tail())
            try:   # slirp accepts at once and holds the connection while the guest boots
                r = self.ssh("true", timeout=20, check=False, connect_timeout=10)
                if r.returncode == 0:
                    return
                why = r.stderr
            except subprocess.TimeoutExpired:
                why = "no answer in 20 s"
            if time.monotonic() > deadline:
                raise BoardError(f"no ssh after {timeout:.0f}s: {why}\n--- console ---\n"
                                 + self.console_tail())
            time.sleep(2)

    def _login_options(self, connect_timeout: int) -> list[str]:
        """ssh's and scp's options but the port (ssh -p, scp -P)."""
        return ["-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", *self.ssh_options()]

    def ssh(self, command: str, timeout: float = 300, check: bool = True,
            connect_timeout: int = 30) -> subprocess.CompletedProcess:
        argv = ["ssh", "-p", str(self.ssh_port), *self._login_options(connect_timeout), self.host, command]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise BoardError(f"ssh {command!r}: status {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def put(self, files: list[Path], directory: str, timeout: float = 300) -> None:
        """Copy local files into a directory on the board."""
        r = subprocess.run(["scp", "-q", "-P", str(self.ssh_port), *self._login_options(30),
                            *map(str, files), f"{self.host}:{directory}/"],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise BoardError(f"scp to {directory}: status {r.returncode}\n{r.stderr}")

    def reboot(self) -> None:
        """A guest reboot: same qemu, same (snapshot) disk."""
        self.ssh("systemctl reboot", check=False, timeout=60)
        self._close_master()
        time.sleep(5)
        t0 = time.monotonic()
        self.wait_for_ssh(self.boot_timeout)
        self.boot_seconds = time.monotonic() - t0

    def _close_master(self) -> None:
        subprocess.run(["ssh", "-o", f"ControlPath={self.tmp}/cm", "-O", "exit", self.host],
                       capture_output=True, timeout=30)

    def close(self, timeout: float = 120) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None and timeout:
                self.ssh("systemctl poweroff", check=False, timeout=30, connect_timeout=10)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._close_master()
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
            self._qemu_out.close()
            self.trunk.close()
            self._lock.__exit__(None, None, None)
            self.console_log = self.console_tail(200_000)
            self._tmp.cleanup()


if __name__ == "__main__":
    t0 = time.monotonic()
    print({k: str(v) for k, v in image().items()}, f"{time.monotonic() - t0:.1f}s")
