"""deploy/beaglebone/reshaper-vlans, the script install.sh and the Ansible role make the VLAN
interfaces with, here rather than on the emulated board (tests/armhf/test_board_deploy.py runs it
there, with the real ifupdown and systemd-networkd): the files it writes for each manager, byte
for byte, what it removes, what it says, and its refusals. Each session runs in its own mount
and network namespaces, with a folder of its own over /etc. This machine's kernel has no 8021q,
and no ifupdown or systemd-networkd runs here, so stand-ins make the ports as veth links: ifup's
from its argument, networkctl's from the VLAN= lines of the drop-in the script wrote."""
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy/beaglebone/reshaper-vlans"

IFUP = """#!/bin/sh
[ "$1" = --force ] && shift
ip link add "$1" type veth peer name "p$1"
"""
SYSTEMCTL = """#!/bin/sh
[ "$*" = "is-active -q systemd-networkd" ] && [ -n "$NETWORK_FILE" ]
"""
NETWORKCTL = """#!/bin/sh
echo "$*" >>/etc/networkctl.log
case $1 in
  status) [ -n "$NETWORK_FILE" ] && echo "       Network File: $NETWORK_FILE" ;;
  reconfigure) for port in $(sed -n 's/^VLAN=//p' /etc/systemd/network/*.d/reshaper-vlans.conf); do
      ip link add "$port" type veth peer name "p$port"; done ;;
esac
"""
IFUPDOWN_FILE = """\
# reshaper's ports, the VLANs 100 200 on eth0 (reshaper-vlans). The trunk port comes up first, with no address.

auto eth0.100
iface eth0.100 inet manual
  pre-up ip link set eth0 up
  pre-up ip link show eth0.100 >/dev/null 2>&1 || ip link add link eth0 name eth0.100 type vlan id 100
  up ip link set eth0.100 up
  post-down ip link del eth0.100

auto eth0.200
iface eth0.200 inet manual
  pre-up ip link set eth0 up
  pre-up ip link show eth0.200 >/dev/null 2>&1 || ip link add link eth0 name eth0.200 type vlan id 200
  up ip link set eth0.200 up
  post-down ip link del eth0.200
"""
NETDEV_100 = "[NetDev]\nName=eth0.100\nKind=vlan\n\n[VLAN]\nId=100\n"
NETWORK_100 = ("[Match]\nName=eth0.100\n\n[Link]\nRequiredForOnline=no\n\n[Network]\nLinkLocalAddressing=no\n"
               "LLDP=no\nEmitLLDP=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n")


@pytest.fixture
def etc(tmp_path):
    """The session's /etc, with stand-ins on PATH beside it."""
    (tmp_path / "etc/systemd/network").mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    for name, text in {"ifup": IFUP, "systemctl": SYSTEMCTL, "networkctl": NETWORKCTL}.items():
        (tmp_path / "bin" / name).write_text(text)
        (tmp_path / "bin" / name).chmod(0o755)
    return tmp_path / "etc"


def session(etc: Path, *runs: str, network_file: str = "") -> list[tuple[int, list[str]]]:
    """Each of runs (the script's arguments) in turn, in one pair of fresh namespaces with a trunk
    port eth0: (exit status, lines of output) of each."""
    steps = "".join(f'{SCRIPT} {args} >{etc}/out.{i} 2>&1; echo $? >{etc}/rc.{i}\n' for i, args in enumerate(runs))
    subprocess.run(["unshare", "-m", "-n", "bash", "-c",
                    f"set -e; mount --bind {etc} /etc; ip link add eth0 type veth peer name p0; set +e\n{steps}"],
                   check=True, env={"PATH": f"{etc.parent}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "NETWORK_FILE": network_file})
    return [(int((etc / f"rc.{i}").read_text()), (etc / f"out.{i}").read_text().splitlines())
            for i in range(len(runs))]


def test_ifupdown_file_written_once_and_ports_brought_up(etc):
    (etc / "network").mkdir()
    (etc / "network/interfaces").write_text("auto lo\niface lo inet loopback\n")
    (etc / "systemd/network/20-reshaper-eth0.300.netdev").write_text(NETDEV_100)   # networkd's, from before
    first, second, check = session(etc, "eth0 100 200", "eth0 100 200", "--check eth0 100")
    assert first == (0, ["vlans: ifupdown (/etc/network/interfaces.d/reshaper-vlans)", "files: changed",
                         "links: made eth0.100 eth0.200"])
    assert (etc / "network/interfaces.d/reshaper-vlans").read_text() == IFUPDOWN_FILE
    assert (etc / "network/interfaces").read_text().endswith("\nsource /etc/network/interfaces.d/*\n")
    assert list((etc / "systemd/network").iterdir()) == []
    assert second == (0, ["vlans: ifupdown (/etc/network/interfaces.d/reshaper-vlans)", "files: same",
                          "links: there"])
    # one VLAN fewer, with --check: it would change the file; nothing is written
    assert check == (0, ["vlans: ifupdown (/etc/network/interfaces.d/reshaper-vlans)", "files: changed",
                         "links: there"])
    assert (etc / "network/interfaces.d/reshaper-vlans").read_text() == IFUPDOWN_FILE
    assert (etc / "network/interfaces").read_text().count("source ") == 1


def test_networkd_files_and_the_drop_in_beside_the_trunk_ports_network_file(etc):
    """The trunk port's network file is the distribution's, in /usr/lib: its drop-in goes in
    /etc. ifupdown's file and a VLAN of ours no longer wanted are removed."""
    network_file = "/usr/lib/systemd/network/80-trunk.network"
    (etc / "network/interfaces.d").mkdir(parents=True)
    (etc / "network/interfaces").write_text("source /etc/network/interfaces.d/*\n")
    (etc / "network/interfaces.d/reshaper-vlans").write_text(IFUPDOWN_FILE)
    (etc / "systemd/network/20-reshaper-eth0.300.network").write_text(NETWORK_100)
    first, second = session(etc, "eth0 100 200", "eth0 100 200", network_file=network_file)
    said = f"vlans: systemd-networkd ({network_file} + /etc/systemd/network/80-trunk.network.d/reshaper-vlans.conf)"
    assert first == (0, [said, "files: changed", "links: made eth0.100 eth0.200"])
    assert sorted(p.name for p in (etc / "systemd/network").iterdir()) == \
        ["20-reshaper-eth0.100.netdev", "20-reshaper-eth0.100.network", "20-reshaper-eth0.200.netdev",
         "20-reshaper-eth0.200.network", "80-trunk.network.d"]
    assert (etc / "systemd/network/20-reshaper-eth0.100.netdev").read_text() == NETDEV_100
    assert (etc / "systemd/network/20-reshaper-eth0.100.network").read_text() == NETWORK_100
    assert (etc / "systemd/network/80-trunk.network.d/reshaper-vlans.conf").read_text() == \
        "[Network]\nVLAN=eth0.100\nVLAN=eth0.200\n"
    assert not (etc / "network/interfaces.d/reshaper-vlans").exists()
    # networkd reloaded once, for the first run's files; the second had nothing to do
    assert second == (0, [said, "files: same", "links: there"])
    assert (etc / "networkctl.log").read_text().splitlines() == \
        ["status eth0", "reload", "reconfigure eth0", "status eth0"]


def test_refusals_name_what_is_wrong(etc):
    neither, vlan, iface, usage = session(etc, "eth0 100 200", "eth0 100 1x", "eth9 100", "eth0")
    assert neither == (1, ["reshaper-vlans: neither systemd-networkd manages eth0 nor /etc/network/interfaces "
                           "exists: make the VLAN interfaces eth0.100 eth0.200 with the board's network manager"])
    assert vlan == (1, ["reshaper-vlans: not a VLAN id: 1x"])
    assert iface == (1, ["reshaper-vlans: no interface eth9"])
    assert usage == (2, ["usage: reshaper-vlans [--check] IFACE VLAN..."])
    assert list((etc / "systemd/network").iterdir()) == []
