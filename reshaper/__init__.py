"""reshaper: a packet-reshaping bridge appliance.

The import package maps the repository's folders (pyproject.toml, package-dir):
reshaper.rules from rules/ (the rule language and its compiler), reshaper.ring
from ring/ (ring mode's C data path), reshaper.bridge from bridge/ (the
appliance: command line, modes, control), reshaper.examples from examples/.
docs/ARCHITECTURE.md draws the arrows between them.
"""
