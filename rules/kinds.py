"""The kinds of value a field table names: each binds a parser to its bounds, or combines other kinds.

A table (rules/fields.py) says `Int(0, 63)` or `Record({...})` once; the loader
calls the kind's parse(node), and rules/schema.py renders the same kind, with
the same bounds, as JSON Schema. The first kinds are single values
(rules/values.py parses them); the rest are the structures of a rule file.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reshaper.rules.model import Action, Invalid, Port
from reshaper.rules.values import (is_null, node_text, parse_address, parse_at, parse_bitrate, parse_bool, parse_choice,
                                   parse_flags, parse_hex, parse_int, parse_mac, parse_network, parse_probability,
                                   parse_ranges, parse_single_mac, parse_text, parse_time, read_mapping)

# ---- single values ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Int:
    lo: int
    hi: int
    what: str = "an integer"

    def parse(self, node: Node) -> int:
        return parse_int(node, self.lo, self.hi, self.what)


@dataclasses.dataclass(frozen=True)
class Ranges:
    """One value, a range "lo-hi", a name, or a list of those."""
    lo: int
    hi: int
    most: int                          # values or ranges in a list
    names: dict[str, int] | None = None

    def parse(self, node: Node) -> list[tuple[int, int]]:
        return parse_ranges(node, self.lo, self.hi, self.most, self.names)


@dataclasses.dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    def parse(self, node: Node) -> str:
        return parse_choice(node, self.choices)


class Bool:
    def parse(self, node: Node) -> bool:
        return parse_bool(node)


@dataclasses.dataclass(frozen=True)
class Time:
    most_ns: int

    def parse(self, node: Node) -> int:
        return parse_time(node, self.most_ns)


class Probability:
    def parse(self, node: Node) -> float:
        return parse_probability(node)


@dataclasses.dataclass(frozen=True)
class Bitrate:
    most: int  # bits per second

    def parse(self, node: Node) -> int:
        return parse_bitrate(node, self.most)


@dataclasses.dataclass(frozen=True)
class Mac:
    mask: bool  # a /mask may follow (matches), or not (set)

    def parse(self, node: Node) -> tuple[bytes, bytes] | bytes:
        return parse_mac(node) if self.mask else parse_single_mac(node)


class Network:
    def parse(self, node: Node) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_network(node)


class Address:
    def parse(self, node: Node) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return parse_address(node)


@dataclasses.dataclass(frozen=True)
class Hex:
    what: str
    most: int  # bytes

    def parse(self, node: Node) -> bytes:
        return parse_hex(node, self.what, self.most)


@dataclasses.dataclass(frozen=True)
class Flags:
    flags: dict[str, int]  # name -> bit

    def parse(self, node: Node) -> tuple[int, int]:
        return parse_flags(node, self.flags)


@dataclasses.dataclass(frozen=True)
class Text:
    pattern: str   # the whole text, stripped, must match
    expected: str  # what the error says was expected

    def parse(self, node: Node) -> str:
        return parse_text(node, self.pattern, self.expected)


# ---- structures ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a mapping: the kind of its value, what it means, whether it must be given, its default."""
    value: Any  # a kind below, or one of rules/fields.py: .parse(node)
    description: str
    required: bool = False
    default: Any = None


@dataclasses.dataclass(frozen=True)
class Record:
    """A mapping of fields, each parsed by its kind; those not given take their default. null is {}."""
    fields: dict[str, Field]

    def parse(self, node: Node) -> dict[str, Any]:
        if is_null(node):
            node = MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
        if not self.fields and not (isinstance(node, MappingNode) and not node.value):
            raise Invalid("expected no parameters")
        spec = read_mapping(node, self.fields)
        params = {}
        for key, field in self.fields.items():
            if key in spec:
                try:
                    params[key] = parse_at(spec[key], field.value.parse)
                except Invalid as exc:
                    raise Invalid(f"{key}: {exc}", exc.node) from None
            else:
                params[key] = field.default
        return params

    def optional(self) -> bool:
        """Whether every field may be left out (an action of these may be a bare word)."""
        return not any(field.required for field in self.fields.values())


@dataclasses.dataclass(frozen=True)
class BytesSpec:
    """Bytes at an offset from a base, with a mask as long as the value (all ones when not given)."""
    fields: dict[str, Field]

    def parse(self, node: Node) -> dict[str, Any]:
        spec = read_mapping(node, self.fields)
        out = {key: parse_at(spec[key], self.fields[key].value.parse) if key in spec else self.fields[key].default
               for key in ("offset", "base", "value")}
        if "mask" in spec:
            out["mask"] = parse_at(spec["mask"], self.fields["mask"].value.parse)
            if len(out["mask"]) != len(out["value"]):
                raise Invalid(f"expected a mask as long as the value ({len(out['value'])} bytes), "
                              f"got {len(out['mask'])}", spec["mask"])
        else:
            out["mask"] = b"\xff" * len(out["value"])
        return out


@dataclasses.dataclass(frozen=True)
class SetFields:
    """The fields a set action rewrites, at least one, in the order given."""
    fields: dict[str, Field]

    def parse(self, node: Node) -> dict[str, Any]:
        spec = read_mapping(node, self.fields)
        if not spec:
            raise Invalid(f"expected at least one field to set, from {', '.join(self.fields)}", node)
        params = {}
        for key, value_node in spec.items():
            try:
                params[key] = parse_at(value_node, self.fields[key].value.parse)
            except Invalid as exc:
                raise Invalid(f"{key}: {exc}", exc.node) from None
        return params


@dataclasses.dataclass(frozen=True)
class Models:
    """Parameters that depend on a model key: {model: name, ...}; the first model when it is left out."""
    models: dict[str, Field]  # model name -> Field of a Record: its parameters and what the model is

    def parse(self, node: Node) -> dict[str, Any]:
        default = next(iter(self.models))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if node_text(key_node) == "model":
                    model = parse_choice(value_node, tuple(self.models))
                    rest = MappingNode(node.tag, [kv for kv in node.value if kv[0] is not key_node],
                                       node.start_mark, node.end_mark)
                    return {"model": model, **self.models[model].value.parse(rest)}
        return {"model": default, **self.models[default].value.parse(node)}


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A port: an interface (eth0.100), or in trunk form an interface and the VLAN the port adds and removes."""
    name: str
    interface: Field
    trunk: Field  # of a Record: interface and vlan

    def parse(self, node: Node) -> Port:
        if isinstance(node, MappingNode):
            fields = self.trunk.value.fields
            spec = read_mapping(node, fields)
            return Port(self.name, parse_at(spec["interface"], fields["interface"].value.parse),
                        parse_at(spec["vlan"], fields["vlan"].value.parse), node)
        return Port(self.name, self.interface.value.parse(node), node=node)


class Directories:
    """Directories python hooks may come from: one or a list, relative to the rule file's own."""

    def parse(self, node: Node, base: str) -> list[str]:
        items = node.value if isinstance(node, SequenceNode) else [node]
        paths = []
        for item in items:
            text = node_text(item)
            path = os.path.normpath(os.path.join(base, text))
            if not os.path.isdir(path):
                raise Invalid(f"expected a directory of python hooks, {text!r} is not one ({path})", item)
            paths.append(path)
        return paths


@dataclasses.dataclass(frozen=True)
class Listed:
    """A list of items of a kind; the loader walks it item by item, so that every item's errors are reported."""
    item: Any
    most: int | None = None


@dataclasses.dataclass(frozen=True)
class OrNull:
    """A kind, or null for none (the loader takes null as empty)."""
    kind: Any


class ActionItem:
    """One item of a rule's actions: a bare word, or a mapping of one action to its parameters.

    An action whose parameters all have defaults (a Record of optional fields) may be a bare word.
    """

    def __init__(self, actions: dict[str, Field]):
        self.actions = actions  # name -> Field of its parameters' kind
        self.bare = tuple(k for k, f in actions.items() if isinstance(f.value, Record) and f.value.optional())

    def parse(self, node: Node) -> Action:
        names = ", ".join(self.actions)
        if isinstance(node, ScalarNode):
            kind = node_text(node)
            if kind in self.bare:
                return Action(kind, {k: f.default for k, f in self.actions[kind].value.fields.items()}, node)
            if kind in self.actions:
                raise Invalid(f"action {kind!r} needs parameters, e.g. - {kind}: {{...}}")
            raise Invalid(f"unknown action {kind!r}; expected one of {names}")
        if not isinstance(node, MappingNode) or len(node.value) != 1:
            raise Invalid(f"expected an action: a bare word ({', '.join(self.bare)}) "
                          f"or a mapping with one key, one of {names}")
        key_node, params_node = node.value[0]
        kind = node_text(key_node)
        if kind not in self.actions:
            raise Invalid(f"unknown action {kind!r}; expected one of {names}", key_node)
        try:
            params = self.actions[kind].value.parse(params_node)
        except Invalid as exc:
            raise Invalid(f"{kind}: {exc}", exc.node or params_node) from None
        return Action(kind, params, node)
