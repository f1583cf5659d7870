"""deploy/ansible without a board: the playbook and its example inventory parse, and settings the
role cannot carry out are refused before it touches a board (the role on the emulated board:
tests/armhf/test_board_deploy.py)."""
import json
import sys

import pytest

from tests.helpers.ansible import ANSIBLE, run_playbook as playbook

pytestmark = pytest.mark.unit


def test_playbook_and_example_inventory_parse(tmp_path):
    r = playbook(tmp_path, str(ANSIBLE / "inventory.example.yml"), "--syntax-check")
    assert r.returncode == 0, r.stdout + r.stderr
    r = playbook(tmp_path, str(ANSIBLE / "inventory.example.yml"), "--list-hosts")
    assert sorted(r.stdout.split()[-2:]) == ["bbb-lossy", "bbb-voice"], r.stdout


@pytest.mark.parametrize("setting", [{"reshaper_mode": "kernel"}, {"reshaper_vlans": ["100a"]},
                                     {"reshaper_package": "/tmp/reshaper.tar.gz"}])
def test_settings_the_role_cannot_carry_out_are_refused_first(tmp_path, setting):
    board = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
             "reshaper_package": "/nowhere/reshaper_0.1.0_armhf.deb", "reshaper_vlans": [100, 200],
             "reshaper_rules": "/nowhere/rules.yaml", **setting}
    (tmp_path / "inventory.json").write_text(json.dumps({"reshaper_boards": {"hosts": {"board": board}}}))
    r = playbook(tmp_path, str(tmp_path / "inventory.json"))
    assert r.returncode == 2, r.stdout
    assert "TASK [reshaper : Settings the role can carry out]" in r.stdout
    assert "reshaper_package must be a reshaper_VER_ARCH.deb, reshaper_mode ring, xdp or nfqueue" in r.stdout
    assert "TASK [reshaper : What the board has]" not in r.stdout
