"""deploy/ansible without a board: the playbook and its example inventory parse, and settings the
role cannot carry out are refused before it touches a board (the role on the emulated board:
tests/armhf/test_board_deploy.py)."""
import json
import platform
import sys

import pytest

from tests.helpers.ansible import ANSIBLE, run_playbook as playbook

pytestmark = pytest.mark.unit


def test_playbook_and_example_inventory_parse(tmp_path):
    r = playbook(tmp_path, str(ANSIBLE / "inventory.example.yml"), "--syntax-check")
    assert r.returncode == 0, r.stdout + r.stderr
    r = playbook(tmp_path, str(ANSIBLE / "inventory.example.yml"), "--list-hosts")
    assert sorted(r.stdout.split()[-3:]) == ["bbb-kernel", "bbb-lossy", "bbb-voice"], r.stdout


def this_machine_as_board(tmp_path, **settings) -> str:
    """An inventory of one board, this machine (ansible_connection local), with settings."""
    board = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
             "reshaper_package": "/nowhere/reshaper_0.1.0_armhf.deb", "reshaper_vlans": [100, 200],
             "reshaper_rules": "/nowhere/rules.yaml", **settings}
    (tmp_path / "inventory.json").write_text(json.dumps({"reshaper_boards": {"hosts": {"board": board}}}))
    return str(tmp_path / "inventory.json")


@pytest.mark.parametrize("setting", [{"reshaper_mode": "kernel"}, {"reshaper_mode": "bridge"},
                                     {"reshaper_mode": "kernel", "reshaper_module_package": "/nowhere/reshaper.ko"},
                                     {"reshaper_vlans": ["100a"]}, {"reshaper_package": "/tmp/reshaper.tar.gz"}])
def test_settings_the_role_cannot_carry_out_are_refused_first(tmp_path, setting):
    r = playbook(tmp_path, this_machine_as_board(tmp_path, **setting))
    assert r.returncode == 2, r.stdout
    assert "TASK [reshaper : Settings the role can carry out]" in r.stdout
    assert "reshaper_package must be a reshaper_VER_ARCH.deb, reshaper_mode ring, xdp, nfqueue or kernel " \
           "(kernel mode with reshaper_module_package, a reshaper-modules-KREL_VER_ARCH.deb)" in r.stdout, r.stdout
    assert "TASK [reshaper : What the board has]" not in r.stdout


def test_a_module_package_for_another_kernel_is_refused_before_anything_changes(tmp_path):
    """The probe (read only) runs on this machine; the module package's release is not its kernel's."""
    r = playbook(tmp_path, this_machine_as_board(
        tmp_path, reshaper_mode="kernel", reshaper_module_package="/nowhere/reshaper-modules-6.1.0-99-armmp_0.1.0_armhf.deb"))
    assert r.returncode == 2, r.stdout
    assert "reshaper-modules-6.1.0-99-armmp_0.1.0_armhf.deb holds the module for kernel 6.1.0-99-armmp; board runs " \
           f"{platform.release()}: build it for that release (deploy/beaglebone/build.sh --kernel-release " \
           f"{platform.release()})" in r.stdout, r.stdout
    assert "TASK [reshaper : The packages on the board]" not in r.stdout
