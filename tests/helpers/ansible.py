"""deploy/ansible's playbook run as a user runs it: its ansible.cfg, an Ansible home of the test's own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ANSIBLE = Path(__file__).resolve().parents[2] / "deploy/ansible"


def run_playbook(tmp_path: Path, inventory: Path | str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """ansible-playbook -i INVENTORY deploy/ansible/site.yml ARGS, from the test environment's ansible-core."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / "ansible"),
               ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           str(ANSIBLE / "site.yml"), *args], env=env, capture_output=True, text=True, timeout=timeout)
