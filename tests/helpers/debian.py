"""A Debian package read without installing it (dpkg-deb), and lintian's verdict on packages."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True).stdout.strip()


def deb_file(deb: Path, path: str) -> str:
    """One file of a package's data, read without installing it."""
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    return subprocess.run(["tar", "xO", path], input=tar, capture_output=True, check=True).stdout.decode()


def deb_control_file(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-I", str(deb), name], capture_output=True, text=True, check=True).stdout


def deb_paths(deb: Path) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    return {line.split()[5] for line in listing.splitlines()}


def assert_lintian_clean(debs: Iterable[Path]) -> None:
    """Debian's own checker: no error and no warning (its informational tags are printed)."""
    r = subprocess.run(["lintian", "--fail-on", "error,warning", *map(str, debs)], capture_output=True, text=True,
                       timeout=900)
    print(r.stdout)
    assert r.returncode == 0 and not re.search(r"^[EW]: ", r.stdout, re.M), r.stdout + r.stderr
