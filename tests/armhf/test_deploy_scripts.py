"""deploy/beaglebone scripts and deploy/debian's packages, on this machine (no
board): the scripts parse, the unit is well formed, deploy.sh refuses a bad rule
file before it touches the network, lintian passes the packages. The deploy and
the package install on an emulated board are test_board_deploy.py."""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from reshaper.bridge.modes import MODES
from reshaper.bridge.realtime import PRIORITY as REALTIME_PRIORITY
from tests.helpers.debian import assert_lintian_clean, deb_control_file, deb_field, deb_file, deb_paths
from tests.helpers.deploy import EXPOSURE_MAX, EXPOSURE_MAX_XDP, exposure

REPO = Path(__file__).resolve().parents[2]
BB = REPO / "deploy/beaglebone"


def test_scripts_parse():
    for name in ("build.sh", "deploy.sh", "install.sh"):
        r = subprocess.run(["bash", "-n", str(BB / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


def test_scripts_take_every_mode():
    """deploy.sh and install.sh check --mode against a list of their own: it is bridge/modes' list."""
    for name in ("deploy.sh", "install.sh"):
        listed = re.search(r"^case \$MODE in ([a-z|]+)\) ;;", (BB / name).read_text(), re.M).group(1)
        assert sorted(listed.split("|")) == sorted(MODES), name


def test_example_rules_valid_in_every_mode():
    for mode in MODES:
        r = subprocess.run([str(REPO / ".venv/bin/reshaper"), "check", str(BB / "rules.example.yaml"), "--mode", mode],
                           capture_output=True, text=True)
        assert r.returncode == 0, (mode, r.stdout, r.stderr)


def test_unit_is_hardened():
    unit = (BB / "reshaper.service").read_text()
    for line in ("Type=notify",
                 "ExecStart=/opt/reshaper/venv/bin/reshaper run /etc/reshaper/rules.yaml --mode ${RESHAPER_MODE} --realtime",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/run/reshaper", "PrivateDevices=yes",
                 "ProtectKernelTunables=yes", "RestrictNamespaces=yes", "MemoryDenyWriteExecute=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_PACKET AF_INET",
                 "SystemCallFilter=@system-service",
                 # --realtime: the service manager makes it SCHED_FIFO at the daemon's own priority
                 "CPUSchedulingPolicy=fifo", f"CPUSchedulingPriority={REALTIME_PRIORITY}",
                 "CPUSchedulingResetOnFork=yes", "LimitMEMLOCK=infinity", "RestrictRealtime=yes"):
        assert line in unit.splitlines(), line


def offline_exposure(folder: Path) -> tuple[tuple[float, str], str]:
    """systemd-analyze's rating of folder/reshaper.service with its drop-ins there, and its report."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (Debian package systemd)"
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", "reshaper.service"],
                       cwd=folder, capture_output=True, text=True)
    return exposure(r.stdout), r.stdout


def test_unit_security_exposure(tmp_path):
    """systemd-analyze's rating of the unit file, offline: this machine's systemd is Debian 12's,
    as the board's. test_board_deploy.py rates the installed unit on the emulated board."""
    shutil.copy(BB / "reshaper.service", tmp_path)
    (level, rating), report = offline_exposure(tmp_path)
    print(f"systemd-analyze security (offline): {level} {rating}")
    assert level <= EXPOSURE_MAX, report


def test_xdp_dropin_adds_what_xdp_mode_needs_only(tmp_path):
    """XDP mode's drop-in, as install.sh puts it beside the unit: CAP_BPF, bpf() and AF_XDP, and
    systemd-analyze's rating of the two together."""
    dropin = (BB / "reshaper-xdp.conf").read_text().splitlines()
    settings = [line for line in dropin if line and not line.startswith("#")]
    assert settings == ["[Service]", "CapabilityBoundingSet=CAP_BPF", "SystemCallFilter=bpf",
                        "RestrictAddressFamilies=AF_XDP"]
    assert "install -m 0644 reshaper-xdp.conf $dropins/xdp.conf" in (BB / "install.sh").read_text()
    shutil.copy(BB / "reshaper.service", tmp_path)
    (tmp_path / "reshaper.service.d").mkdir()
    shutil.copy(BB / "reshaper-xdp.conf", tmp_path / "reshaper.service.d/xdp.conf")
    (level, rating), report = offline_exposure(tmp_path)
    print(f"systemd-analyze security with XDP mode's drop-in (offline): {level} {rating}")
    for granted in ("Service may load BPF programs", "(e.g. bpf is allowed)", "Service may allocate exotic sockets"):
        assert granted in report, (granted, report)
    assert level <= EXPOSURE_MAX_XDP, report


def test_deploy_refuses_bad_rules_without_connecting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nports: {a: eth0.100, b: eth0.200}\nrules:\n  - name: x\n    actions: [{set: {dscp: 99}}]\n")
    # validation fails first; were it to connect, it would only reach a closed local port
    r = subprocess.run(["bash", str(BB / "deploy.sh"), "root@127.0.0.1", str(bad), "--mode", "ring", "--port", "9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing deployed" in r.stderr and "connecting" not in r.stdout, r.stdout + r.stderr
    assert "dscp" in r.stdout + r.stderr


def test_build_for_a_kernel_headers_tree(bb_build, tmp_path):
    """--kernel-headers DIR (a board's own kernel): the module is built against that tree and
    named for its release. Here the tree is Debian's armmp one build.sh unpacked for bb_build."""
    krel, tree = bb_build["krel"], bb_build["kdir"]
    r = subprocess.run(["bash", str(BB / "build.sh"), "--kernel-headers", str(tree), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ko = tmp_path / f"reshaper-0.1.0-{krel}.ko"
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True, text=True).stdout
    assert vermagic.split()[0] == krel and "ARMv7" in vermagic.split(), vermagic
    assert f"kernel={krel}" in subprocess.run(["tar", "xzOf", str(tmp_path / "reshaper-beaglebone-0.1.0.tar.gz"),
                                               "reshaper-beaglebone-0.1.0/BUILD-INFO"],
                                              capture_output=True, text=True).stdout


def test_bundle_dkms_tree_is_where_install_sh_takes_it(bb_build):
    """install.sh copies dkms/reshaper-VERSION to /usr/src for `dkms install`: the bundle has
    that folder, with the engine beside the module sources (kmod/Makefile dkms-src)."""
    names = subprocess.run(["tar", "tzf", str(bb_build["bundle"])], capture_output=True, text=True,
                           check=True).stdout.split()
    assert 'cp -r "dkms/reshaper-$dver" /usr/src/' in (BB / "install.sh").read_text()
    top = "reshaper-beaglebone-0.1.0/dkms/reshaper-0.1.0/"
    for name in ("dkms.conf", "Kbuild", "reshaper_main.c", "engine/engine.c"):
        assert top + name in names, sorted(n for n in names if "/dkms/" in n)


def test_board_wheel_carries_the_appliance_only(bb_build):
    """The board gets no benchmark and no test lab (setup.py, RESHAPER_APPLIANCE_ONLY), so no
    matplotlib: it is required only by the bench extra."""
    with zipfile.ZipFile(bb_build["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "reshaper/bridge/cli.py" in names and any(n.startswith("reshaper/rules/") for n in names), names
    assert not [n for n in names if n.startswith(("reshaper/bench/", "reshaper/lab/", "tests/"))], names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    matplotlib = [line for line in requires if "matplotlib" in line]
    assert matplotlib and all('extra == "bench"' in line for line in matplotlib), requires


def test_board_wheel_has_xdp_mode(bb_build, tmp_path):
    """The board's extension links armhf libxdp and libbpf (build.sh passes them to the cross build),
    so XDP mode is in it: without them reshaper/_ffi_build.py would build it without."""
    with zipfile.ZipFile(bb_build["wheel"]) as wheel:
        so = next(n for n in wheel.namelist() if n.startswith("reshaper/_native") and n.endswith(".so"))
        wheel.extract(so, tmp_path)
    dynamic = subprocess.run(["readelf", "-d", str(tmp_path / so)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", dynamic)
    assert "libxdp.so.1" in needed and "libbpf.so.1" in needed, needed
    assert "] wheel: XDP mode in; the extension needs " in bb_build["log"], bb_build["log"]


def test_debian_packages_pass_lintian(bb_build):
    """Debian's own checker finds no error and no warning in either package (deploy/debian)."""
    assert_lintian_clean(bb_build["debs"].values())


def test_debian_package_holds_the_appliance_in_usr(bb_build):
    """The appliance in /usr, nothing in /opt; Debian's Python modules and libraries as
    dependencies, the newer scapy and pyroute2 and the unpackaged NetfilterQueue privately in
    /usr/lib/reshaper; the bundle's unit with the package's paths, installed disabled."""
    deb = bb_build["debs"]["reshaper"]
    assert (deb_field(deb, "Architecture"), deb_field(deb, "Version")) == ("armhf", "0.1.0")
    depends = [d.split()[0] for d in deb_field(deb, "Depends").split(", ")]
    for dep in ("python3", "python3-cffi-backend", "python3-yaml", "libxdp1", "libbpf1", "libnetfilter-queue1"):
        assert dep in depends, depends
    paths = deb_paths(deb)
    for path in ("./usr/bin/reshaper", "./lib/systemd/system/reshaper.service", "./etc/reshaper/reshaper.env",
                 "./usr/lib/reshaper/reshaper/_native.abi3.so", "./usr/lib/reshaper/scapy/__init__.py",
                 "./usr/lib/reshaper/pyroute2/__init__.py", "./usr/lib/reshaper/netfilterqueue/__init__.py",
                 "./usr/lib/reshaper/reshaper-0.1.0.dist-info/METADATA", "./usr/share/man/man1/reshaper.1.gz",
                 "./usr/share/reshaper/xdp.conf", "./usr/share/doc/reshaper/copyright"):
        assert path in paths, sorted(paths)
    # what nfqueue mode loads and sets: the files install.sh uses, for the operator and deploy/ansible
    for name, source in (("nfqueue-modules.conf", "reshaper-nfqueue.modules"),
                         ("nfqueue-sysctl.conf", "reshaper-nfqueue.sysctl")):
        assert deb_file(deb, f"./usr/share/reshaper/{name}") == (BB / source).read_text()
    assert not [p for p in paths if p.startswith("./opt/") or "__pycache__" in p
                or p.startswith("./usr/lib/reshaper/reshaper/bench/")]
    unit = deb_file(deb, "./lib/systemd/system/reshaper.service")
    assert "ExecStart=/usr/bin/reshaper run /etc/reshaper/rules.yaml --mode ${RESHAPER_MODE} --realtime\n" in unit
    def rest(text: str) -> list[str]:   # the unit but for the lines naming where reshaper is
        return [line for line in text.splitlines()
                if "bin/reshaper" not in line and not line.startswith("Documentation=")]
    assert rest(unit) == rest((BB / "reshaper.service").read_text())
    # installed disabled: the maintainer scripts never enable it, and start it only to restart it
    postinst = deb_control_file(deb, "postinst")
    assert " enable " not in postinst and "deb-systemd-invoke try-restart reshaper.service" in postinst, postinst


def test_debian_dkms_package_is_the_module_source_for_dkms(bb_build):
    deb = bb_build["debs"]["reshaper-dkms"]
    assert (deb_field(deb, "Architecture"), deb_field(deb, "Depends")) == ("all", "dkms (>= 2.1.0.0)")
    paths = deb_paths(deb)
    for name in ("dkms.conf", "Kbuild", "reshaper_main.c", "engine/engine.c"):
        assert f"./usr/src/reshaper-0.1.0/{name}" in paths, sorted(paths)
    assert 'PACKAGE_VERSION="0.1.0"\n' in deb_file(deb, "./usr/src/reshaper-0.1.0/dkms.conf")
    postinst = deb_control_file(deb, "postinst")
    assert "/usr/lib/dkms/common.postinst reshaper 0.1.0 " in postinst, postinst


def test_debian_modules_package_is_the_bundles_module_for_its_kernel(bb_build):
    """The module the bundle carries, as a package named for its kernel release (for boards
    without a compiler or headers: deploy/ansible's kernel mode); depmod indexes it."""
    krel = bb_build["krel"]
    deb = bb_build["debs"][f"reshaper-modules-{krel}"]
    assert (deb_field(deb, "Architecture"), deb_field(deb, "Version"), deb_field(deb, "Conflicts")) == \
        ("armhf", "0.1.0", "reshaper-dkms")
    md5sums = deb_control_file(deb, "md5sums")
    assert f"{hashlib.md5(bb_build['ko'].read_bytes()).hexdigest()}  lib/modules/{krel}/updates/reshaper.ko\n" \
        in md5sums, md5sums
    assert f"depmod -a {krel}\n" in deb_control_file(deb, "postinst")
    assert f"depmod -a {krel}\n" in deb_control_file(deb, "postrm")
