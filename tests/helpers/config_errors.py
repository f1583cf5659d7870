"""The diagnostics a bad rule file gives, as the tests write them: a file loaded as r.yaml,
the FILE:LINE:COL: error: line expected at a token of its text (tests/test_config_errors.py,
tests/test_hostile_rules.py); `reshaper check` run as a user runs it."""
import subprocess
import sys
import textwrap

import pytest

from reshaper.rules.config import load_config
from reshaper.rules.model import ConfigError

PORTS = "version: 1\nports: {a: eth0.100, b: eth0.200}\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config("r.yaml", textwrap.dedent(text))
    return [str(d) for d in info.value.diagnostics]


def at(text: str, token: str, message: str, start: int = 0) -> str:
    """The diagnostic expected at the first occurrence of token in text (from offset start)."""
    offset = text.index(token, start)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"r.yaml:{line}:{column}: error: {message}"


def rule_text(rule: str) -> str:
    """A file with one rule, written in flow style on line 4."""
    return PORTS + "rules:\n  - " + rule + "\n"


def reshaper_check(path, *args: str) -> subprocess.CompletedProcess:
    """`reshaper check PATH ARGS` as a user runs it: exit status, stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "reshaper", "check", str(path), *args],
                          capture_output=True, text=True)
