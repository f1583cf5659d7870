"""What loading a configuration gives (Config and its parts) and how it reports what is wrong.

Every part keeps the YAML node it came from, so that a check made after parsing
(rules/checks.py, a mode's limits) still names FILE:LINE:COL. A value parser
raises Invalid at a node; the Checker turns it into a Diagnostic and goes on,
so that one pass reports every error; ConfigError carries them all.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from yaml.error import Mark
from yaml.nodes import Node

# ---- the result ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Port:
    name: str                # "a" or "b"
    interface: str           # eth0.100, or eth0 in trunk form
    vlan: int | None = None  # set in trunk form: the tag this port adds/removes
    node: Node | None = dataclasses.field(default=None, compare=False, repr=False)  # where a mode's limits point

    def describe(self) -> str:
        if self.vlan is None:
            return f"{self.interface} (VLAN interface or plain port)"
        return f"{self.interface} vlan {self.vlan} (trunk form)"


@dataclasses.dataclass
class Match:
    """One match field: its key, parsed value and the node it came from."""
    field: str
    value: Any
    node: Node


@dataclasses.dataclass
class Action:
    kind: str                       # set, dec_ttl, delay, ...
    params: dict[str, Any]
    node: Node


@dataclasses.dataclass
class Phase:
    """One phase of a schedule: its length and its actions (None: the rule's own)."""
    duration_ns: int
    actions: list[Action] | None
    node: Node | None               # its node, or None for a row of a schedule file


@dataclasses.dataclass
class Schedule:
    phases: list[Phase]
    repeat: bool
    keep_time: bool
    node: Node
    file: str | None = None  # the schedule file it was read from, as the rule file names it

    @property
    def cycle_ns(self) -> int:
        return sum(p.duration_ns for p in self.phases)

    def phase_at(self, elapsed_ns: int) -> int:
        """The index of the phase at elapsed_ns from time zero, as the engine finds it
        (rules/engine/engine.c, rs_phase_find): before zero the first; without repeat the last holds."""
        t = max(elapsed_ns, 0)
        if self.repeat:
            t %= self.cycle_ns
        for i, phase in enumerate(self.phases):
            if t < phase.duration_ns:
                return i
            t -= phase.duration_ns
        return len(self.phases) - 1


@dataclasses.dataclass
class Rule:
    name: str
    from_port: str                  # a | b | any
    matches: list[Match]
    actions: list[Action]
    node: Node
    schedule: Schedule | None = None

    def match(self, field: str) -> Match | None:
        return next((m for m in self.matches if m.field == field), None)

    def action(self, kind: str) -> Action | None:
        return next((a for a in self.actions if a.kind == kind), None)

    def action_lists(self) -> list[list[Action]]:
        """Every list of actions the rule may run: its own, then each of its schedule's phases' that has one."""
        phases = self.schedule.phases if self.schedule else []
        return [self.actions] + [p.actions for p in phases if p.actions is not None]


@dataclasses.dataclass
class Config:
    path: str
    ports: dict[str, Port]
    forward: str
    default: str
    malformed: str
    rules: list[Rule]
    hooks_path: list[str] = dataclasses.field(default_factory=list)  # where python hooks may come from
    rules_node: Node | None = None  # the rules list: where what is wrong with the whole program is reported
    program: bytes = b""  # the compiled program, verified: load_config makes it once for every user

    def files(self) -> list[str]:
        """The files the rule file names and reads (schedule files, delivery traces), each once, as it
        names them (relative to it): what must go with it where it is deployed."""
        names = []
        for rule in self.rules:
            if rule.schedule and rule.schedule.file:
                names.append(rule.schedule.file)
            names += [a.params["trace"] for actions in rule.action_lists() for a in actions
                      if a.kind == "rate" and a.params.get("trace")]
        return list(dict.fromkeys(names))


# ---- errors ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: error: {self.message}"

    @classmethod
    def at(cls, path: str, mark: Mark | None, message: str) -> Diagnostic:
        """At a YAML mark (a node's start_mark); at 1:1 without one."""
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return cls(path, line, column, message)


class ConfigError(Exception):
    """A configuration that failed validation; .diagnostics holds every error."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.path, d.line, d.column))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class Invalid(Exception):
    """Raised inside a value parser; turned into a Diagnostic at the node."""

    def __init__(self, message: str, node: Node | None = None):
        super().__init__(message)
        self.node = node


class Checker:
    """The errors found in one file so far, each at its node."""

    def __init__(self, path: str):
        self.path = path
        self.errors: list[Diagnostic] = []

    def error(self, node: Node | None, message: str) -> None:
        self.errors.append(Diagnostic.at(self.path, node.start_mark if node is not None else None, message))

    def parse(self, node: Node, parser, *args, context: str = "") -> Any:
        """Runs parser on node; on failure records the error and returns None."""
        try:
            return parser(node, *args)
        except Invalid as exc:
            self.error(exc.node or node, f"{context}{exc}")
        except Exception as exc:  # a value no parser foresaw is still an error at its node, not a traceback
            self.error(node, f"{context}cannot read this value ({type(exc).__name__}: {exc})")
        return None
