"""A rule file's bytes to YAML nodes, bounded, with every problem a ConfigError at FILE:LINE:COL.

The file is composed into nodes, not plain data, so that every later error can
name its place (a node's start_mark). The composer is bounded (BoundedLoader),
since a few bytes of aliases can stand for millions of nodes.
"""
from __future__ import annotations

import re

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import Node

from reshaper.rules.model import ConfigError, Diagnostic

# Bounds on what a file may make the loader build, far above any rule file: the largest program the
# engine takes (rules/engine/rs_program.h), written as verbosely as YAML allows, is about 95,000 nodes
# nested 7 deep (tests/test_hostile_rules.py loads the largest ones).
MAX_NODES = 150_000  # an alias counts as every node it repeats
MAX_ALIASES = 10_000
MAX_DEPTH = 32  # the composer recurses once per level


class _Refused(yaml.MarkedYAMLError):
    """A file the loader does not build (past a bound above, or a tag it cannot read), at problem_mark."""


class BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader with its composer bounded.

    An alias repeats a whole subtree, so that a small file can stand for millions of
    nodes for the checker to walk; each level of nesting is a level of recursion.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.nodes = self.aliases = self.depth = 0
        self.sizes: dict[str, int] = {}  # anchor -> nodes it stands for, once composed

    def _refuse(self, event, message: str) -> None:
        raise _Refused(problem=message, problem_mark=event.start_mark)

    def _count(self, event, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            self._refuse(event, f"the file stands for more than {MAX_NODES:,} YAML nodes (an alias counts as "
                                "every node it repeats); a rule file needs far fewer")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                self._refuse(event, f"more than {MAX_ALIASES:,} aliases (*name); a rule file needs far fewer")
            node = super().compose_node(parent, index)
            if event.anchor not in self.sizes:
                self._refuse(event, f"alias *{event.anchor} stands for a node it is inside of (an endless structure)")
            self._count(event, self.sizes[event.anchor])
            return node
        if event.tag not in (None, "!") and event.tag not in SafeConstructor.yaml_constructors:
            self._refuse(event, f"unknown tag {event.tag!r}; expected plain YAML values")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self._refuse(event, f"nested more than {MAX_DEPTH} levels deep; a rule file needs far fewer")
        self._count(event, 1)
        before = self.nodes
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.sizes[event.anchor] = self.nodes - before + 1
        return node


# the line breaks YAML counts, so that positions found here agree with its marks
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _position(text: str, offset: int) -> tuple[int, int]:
    """Line and column (from 1) of text[offset]."""
    line, start = 1, 0
    for m in _LINE_BREAK.finditer(text, 0, offset):
        line, start = line + 1, m.end()
    return line, offset - start + 1


def read_text(path: str) -> str:
    """The file's text; ConfigError when it cannot be read or is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError([Diagnostic(path, 1, 1, f"cannot read the file: {exc.strerror}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8")  # the decoder stopped at the first bad byte
        line, col = _position(before, len(before))
        raise ConfigError([Diagnostic(path, line, col, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte "
                                                       f"offset {exc.start} ({exc.reason})")]) from None


def compose(path: str, text: str) -> Node:
    """The document's root node; ConfigError when text is no YAML, is past a bound, or is empty."""
    try:
        root = yaml.compose(text, Loader=BoundedLoader)
    except _Refused as exc:
        raise ConfigError([Diagnostic.at(path, exc.problem_mark, exc.problem)]) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([Diagnostic.at(path, exc.problem_mark or exc.context_mark,
                                         f"not valid YAML: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow anywhere, such as a control character
        line, col = _position(text, exc.position)
        raise ConfigError([Diagnostic(path, line, col, f"not valid YAML: unacceptable character "
                                                       f"U+{exc.character:04X}: {exc.reason}")]) from None
    if root is None:
        raise ConfigError([Diagnostic(path, 1, 1, "the file is empty; expected a mapping with version: 1, ports and rules")])
    return root
