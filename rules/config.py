"""Loading and validating a reshaper configuration (version 1).

The YAML is composed into nodes, not plain data, so that every error can name
FILE:LINE:COL; the composer is bounded (_Loader), since a few bytes of aliases
can stand for millions of nodes. Validation is complete before the program is
built: all errors are collected and reported together, and a file with any
error yields nothing. The engine's limits are checked at the rule or list that
passes them, with the sizes the compiler gives its ops.
"""
from __future__ import annotations

import dataclasses
import decimal
import ipaddress
import os
import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reshaper._native import lib

# ---- the result ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Port:
    name: str                # "a" or "b"
    interface: str           # eth0.100, or eth0 in trunk form
    vlan: int | None = None  # set in trunk form: the tag this port adds/removes

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
class Rule:
    name: str
    from_port: str                  # a | b | any
    matches: list[Match]
    actions: list[Action]
    node: Node

    def match(self, field: str) -> Match | None:
        return next((m for m in self.matches if m.field == field), None)

    def action(self, kind: str) -> Action | None:
        return next((a for a in self.actions if a.kind == kind), None)


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


class _Invalid(Exception):
    """Raised inside a field parser; turned into a Diagnostic at the node."""

    def __init__(self, message: str, node: Node | None = None):
        super().__init__(message)
        self.node = node


# ---- units and value parsers -----------------------------------------------------

_TIME_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_NUMBER = r"(\d+(?:\.\d+)?)"
MAX_TIME_NS = lib.RS_MAX_DELAY_NS
MAX_BITRATE = 2**64 - 1  # RS_A_RATE carries bits per second as a u64 (rules/engine/rs_program.h)
# kernel mode sends the program as one netlink attribute (RESHAPER_A_PROGRAM, kmod/reshaper_genl.h),
# whose length is a u16 that counts the attribute's own 4-byte header
NLA_HDRLEN = 4
KERNEL_MAX_PROGRAM_LEN = 0xFFFF - NLA_HDRLEN

ETH_TYPES = {"ipv4": 0x0800, "ipv6": 0x86DD, "arp": 0x0806}
VLAN_TPIDS = (0x8100, 0x88A8)
IP_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ece": 64, "cwr": 128}
DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
BASES = ("l2", "l3", "l4")


def _value(node: Node) -> Any:
    """The Python value of a scalar node, as YAML's safe loader resolves it.

    Its text when the loader cannot make that value (a date like 2024-13-01, an
    integer of more digits than int() reads): the parsers then say what they expected.
    """
    if not isinstance(node, ScalarNode):
        raise _Invalid(f"expected a single value, not a {_kind(node)}")
    try:
        # a constructor per value: one kept across loads keeps every node it constructed, so every file loaded
        return SafeConstructor().construct_object(node)
    except Exception:
        return _text(node)


def _text(node: Node) -> str:
    """A scalar's text as written: 10:22:33:44:55:66 stays a MAC, not a base-60 int."""
    if not isinstance(node, ScalarNode):
        raise _Invalid(f"expected a single value, not a {_kind(node)}")
    return str(node.value).strip()


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return "value"


def parse_time(node: Node) -> int:
    """'250us', '20ms', '1.5s' -> nanoseconds."""
    text = _text(node)
    m = re.fullmatch(_NUMBER + r"\s*(ns|us|µs|ms|s)", text)
    if not m:
        raise _Invalid(f"expected a time with a unit (e.g. 250us, 20ms, 1s), got {text!r}")
    ns = float(m.group(1)) * _TIME_UNITS[m.group(2)]
    if ns > MAX_TIME_NS:  # before round(): a number of hundreds of digits is an infinite float
        raise _Invalid(f"expected a time of at most {MAX_TIME_NS // _TIME_UNITS['s']}s, got {text!r}")
    return round(ns)


def parse_probability(node: Node) -> float:
    """'1%' or 0.01 -> 0.01."""
    text = _text(node)
    m = re.fullmatch(_NUMBER + r"\s*%", text)
    if m:
        value = float(m.group(1)) / 100
    else:
        value = _value(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a probability (e.g. 1% or 0.01), got {text!r}")
    if not 0.0 <= value <= 1.0:  # before float(): an integer of hundreds of digits is no float
        raise _Invalid(f"expected a probability between 0% and 100%, got {text!r}")
    return float(value)


def parse_bitrate(node: Node) -> int:
    """'10mbit', '512kbit' -> bits per second."""
    text = _text(node)
    m = re.fullmatch(_NUMBER + r"\s*(bit|kbit|mbit|gbit)", text.lower())
    if not m:
        raise _Invalid(f"expected a bit rate with a unit (e.g. 512kbit, 10mbit, 1gbit), got {text!r}")
    bps = decimal.Decimal(m.group(1)) * _RATE_UNITS[m.group(2)]  # exact to the last bit, where a float rounds
    if bps > MAX_BITRATE:
        raise _Invalid(f"expected a bit rate of at most {MAX_BITRATE}bit, got {text!r}")
    bps = round(bps)
    if bps <= 0:
        raise _Invalid(f"expected a bit rate above 0, got {text!r}")
    return bps


def parse_int(node: Node, lo: int, hi: int, what: str = "an integer") -> int:
    value = _value(node)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected {what} from {lo} to {hi}, got {_text(node)!r}")
    if not lo <= value <= hi:  # the text: str() of a 0x... integer of thousands of digits raises
        raise _Invalid(f"expected {what} from {lo} to {hi}, got {_text(node)}")
    return value


def parse_ranges(node: Node, lo: int, hi: int, names: dict[str, int] | None = None) -> list[tuple[int, int]]:
    """An integer, "1000-2000", a name, or a list of those -> [(lo, hi), ...]."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    if not items:
        raise _Invalid("expected at least one value")
    if len(items) > 16:
        raise _Invalid("expected at most 16 values or ranges")
    ranges = []
    for item in items:
        try:
            ranges.append(_parse_range(item, lo, hi, names))
        except _Invalid as exc:
            raise _Invalid(str(exc), exc.node or item) from None
    return ranges


def _parse_range(node: Node, lo: int, hi: int, names: dict[str, int] | None) -> tuple[int, int]:
    value = _value(node)
    named = f" or one of {', '.join(names)}" if names else ""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str) and names and value.lower() in names:
        first = last = names[value.lower()]
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d{1,10})\s*-\s*(\d{1,10})\s*", value)):
        first, last = int(m.group(1)), int(m.group(2))  # digits bounded: int() refuses thousands
        if first > last:
            raise _Invalid(f"expected a range low-high, got {value!r} (low above high)")
    else:
        raise _Invalid(f"expected an integer from {lo} to {hi}, a range like \"{lo}-{hi}\"{named}, "
                       f"got {_text(node)!r}")
    if not (lo <= first <= hi and lo <= last <= hi):
        raise _Invalid(f"expected values from {lo} to {hi}, got {_text(node)!r}")
    return first, last


def parse_mac(node: Node) -> tuple[bytes, bytes]:
    """'aa:bb:cc:dd:ee:ff' with an optional '/ff:ff:ff:00:00:00' or '/24' mask."""
    text = _text(node)
    addr, _, mask = text.partition("/")
    mac = _mac_bytes(addr)
    if mac is None:
        raise _Invalid(f"expected a MAC address like 02:00:00:00:00:01 (optional /mask), got {text!r}")
    if not mask:
        return mac, b"\xff" * 6
    if re.fullmatch(r"[0-9]{1,2}", mask) and int(mask) <= 48:
        bits = (1 << 48) - (1 << (48 - int(mask)))
        return mac, bits.to_bytes(6, "big")
    mask_bytes = _mac_bytes(mask)
    if mask_bytes is None:
        raise _Invalid(f"expected a MAC mask like ff:ff:ff:00:00:00 or a prefix length 0-48, got {mask!r}")
    return mac, mask_bytes


def _mac_bytes(text: str) -> bytes | None:
    if re.fullmatch(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}", text):
        return bytes(int(x, 16) for x in re.split(r"[:-]", text))
    return None


def parse_network(node: Node) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _text(node)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            net = ipaddress.ip_network(text, strict=False)
            raise _Invalid(f"expected a network address: {text} has host bits set (did you mean {net}?)")
        raise _Invalid(f"expected an IPv4 or IPv6 address or CIDR network, got {text!r}") from None


def parse_address(node: Node) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = _text(node)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _Invalid(f"expected one IPv4 or IPv6 address, got {text!r}") from None


def parse_hex(node: Node, what: str) -> bytes:
    text = _text(node)
    m = re.fullmatch(r"0x((?:[0-9a-fA-F]{2})+)", text)
    if not m:
        raise _Invalid(f"expected {what} as hex bytes like \"0x0800\", got {text!r}")
    data = bytes.fromhex(m.group(1))
    if len(data) > 32:
        raise _Invalid(f"expected at most 32 bytes of {what}, got {len(data)}")
    return data


def parse_tcp_flags(node: Node) -> tuple[int, int]:
    """'syn,!ack' -> (mask, value)."""
    text = _text(node)
    mask = value = 0
    for word in filter(None, (w.strip().lower() for w in text.split(","))):
        negate = word.startswith("!")
        flag = TCP_FLAGS.get(word.lstrip("!"))
        if flag is None or flag & mask:
            raise _Invalid(f"expected TCP flags like \"syn,!ack\" from {', '.join(TCP_FLAGS)} "
                           f"(each once, ! to require it clear), got {text!r}")
        mask |= flag
        value |= 0 if negate else flag
    if not mask:
        raise _Invalid("expected at least one TCP flag, like \"syn,!ack\"")
    return mask, value


def parse_choice(node: Node, choices: tuple[str, ...]) -> str:
    text = _text(node)
    if text not in choices:
        raise _Invalid(f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def parse_bool(node: Node) -> bool:
    value = _value(node)
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_text(node)!r}")
    return value


# ---- field tables -----------------------------------------------------------------

def _tpid(node: Node) -> int:
    value = _value(node)
    if value not in VLAN_TPIDS:
        raise _Invalid(f"expected a TPID of 0x8100 (802.1Q) or 0x88a8 (802.1ad), got {_text(node)!r}")
    return value


def _eth_type(node: Node) -> int | str:
    value = _value(node)
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,4}", value):
        value = int(value, 16)  # quoted hex, as bytes values are written
    if isinstance(value, str) and value.lower() in (*ETH_TYPES, "vlan"):
        return value.lower()
    if isinstance(value, int) and not isinstance(value, bool) and 0x0600 <= value <= 0xFFFF:
        return value
    raise _Invalid(f"expected ipv4, ipv6, arp, vlan or an ethertype from 0x0600 to 0xffff, got {_text(node)!r}")


def _bytes_spec(node: Node, value_required: bool = True) -> dict[str, Any]:
    spec = _mapping(node, {"offset": True, "base": False, "value": value_required, "mask": False})
    out = {
        "offset": _at(spec["offset"], parse_int, 0, 65534, "a byte offset"),
        "base": _at(spec["base"], parse_choice, BASES) if "base" in spec else "l2",
        "value": _at(spec["value"], parse_hex, "value"),
    }
    if "mask" in spec:
        out["mask"] = _at(spec["mask"], parse_hex, "mask")
        if len(out["mask"]) != len(out["value"]):
            raise _Invalid(f"expected a mask as long as the value ({len(out['value'])} bytes), "
                           f"got {len(out['mask'])}", spec["mask"])
    else:
        out["mask"] = b"\xff" * len(out["value"])
    return out


MATCH_FIELDS = {
    "eth_src": parse_mac,
    "eth_dst": parse_mac,
    "eth_type": _eth_type,
    "vlan": lambda n: parse_ranges(n, 0, 4095),
    "vlan_pcp": lambda n: parse_ranges(n, 0, 7),
    "ip_src": parse_network,
    "ip_dst": parse_network,
    "ip_proto": lambda n: parse_ranges(n, 0, 255, IP_PROTOS),
    "src_port": lambda n: parse_ranges(n, 0, 65535),
    "dst_port": lambda n: parse_ranges(n, 0, 65535),
    "tcp_flags": parse_tcp_flags,
    "dscp": lambda n: parse_ranges(n, 0, 63),
    "ttl": lambda n: parse_ranges(n, 0, 255),
    "length": lambda n: parse_ranges(n, 14, 65535),
    "bytes": _bytes_spec,
}

SET_FIELDS = {
    "eth_src": lambda n: _single_mac(n),
    "eth_dst": lambda n: _single_mac(n),
    "ip_src": parse_address,
    "ip_dst": parse_address,
    "dscp": lambda n: parse_int(n, 0, 63),
    "ecn": lambda n: parse_int(n, 0, 3),
    "ttl": lambda n: parse_int(n, 0, 255),
    "src_port": lambda n: parse_int(n, 0, 65535, "a port"),
    "dst_port": lambda n: parse_int(n, 0, 65535, "a port"),
    "vlan": lambda n: parse_int(n, 0, 4095, "a VLAN id"),
    "vlan_pcp": lambda n: parse_int(n, 0, 7, "a priority"),
}


def _single_mac(node: Node) -> bytes:
    mac = _mac_bytes(_text(node))
    if mac is None:
        raise _Invalid(f"expected a MAC address like 02:00:00:00:00:01, got {_text(node)!r}")
    return mac


# Each action: its parameters (name -> (parser, required, default)).
_P = tuple[Any, bool, Any]
ACTIONS: dict[str, dict[str, _P] | None] = {
    "set": None,       # a mapping of SET_FIELDS, handled apart
    "dec_ttl": {},
    "pop_vlan": {},
    "drop": {},
    "push_vlan": {
        "vlan": (lambda n: parse_int(n, 0, 4095, "a VLAN id"), True, None),
        "pcp": (lambda n: parse_int(n, 0, 7, "a priority"), False, 0),
        "tpid": (lambda n: _tpid(n), False, 0x8100),
    },
    "payload": None,   # a bytes spec, handled apart
    "truncate": {"length": (lambda n: parse_int(n, 14, 65535, "a frame length"), True, None)},
    "duplicate": {
        "copies": (lambda n: parse_int(n, 1, 16, "a number of extra copies"), False, 1),
        "probability": (parse_probability, False, 1.0),
    },
    "corrupt": {"probability": (parse_probability, True, None)},
    "loss": None,      # two models, handled apart
    "delay": {
        "time": (parse_time, True, None),
        "jitter": (parse_time, False, 0),
        "distribution": (lambda n: parse_choice(n, DISTRIBUTIONS), False, "uniform"),
        "correlation": (parse_probability, False, 0.0),
        "reorder_on_jitter": (parse_bool, False, False),
    },
    "reorder": {
        "probability": (parse_probability, True, None),
        "gap": (lambda n: parse_int(n, 1, 1_000_000, "a gap"), False, 1),
    },
    "python": {
        "call": (lambda n: _hook_call(n), True, None),
        "timeout": (parse_time, False, 2_000_000),
        "raw": (parse_bool, False, False),
        "on_error": (lambda n: parse_choice(n, ("pass", "drop")), False, "pass"),
        "fix_checksums": (parse_bool, False, True),
    },
    "rate": {
        "bitrate": (parse_bitrate, True, None),
        "overhead": (lambda n: parse_int(n, -64, 1024, "a per-frame overhead in bytes"), False, 0),
        "limit": (lambda n: parse_int(n, 1, 65535, "a queue limit in frames"), False, 1000),
    },
}
# actions whose parameters all have defaults may be written as a bare word
BARE_ACTIONS = tuple(k for k, v in ACTIONS.items()
                     if v is not None and not any(required for _, required, _ in v.values()))
LOSS_RANDOM = {
    "probability": (parse_probability, True, None),
    "correlation": (parse_probability, False, 0.0),
}
LOSS_GE = {
    "p": (parse_probability, True, None),
    "r": (parse_probability, True, None),
    "h": (parse_probability, False, 0.0),
    "k": (parse_probability, False, 1.0),
}
TIMING_ACTIONS = ("loss", "delay", "reorder", "rate")

TOP_KEYS = {"version": True, "ports": True, "forward": False, "default": False,
            "malformed": False, "hooks_path": False, "rules": False}
# timing a hook's frames would wait for: a hook rule's frames leave when the hook returns
NOT_WITH_HOOKS = ("delay", "reorder", "rate", "duplicate")
RULE_KEYS = {"name": True, "from": False, "match": False, "actions": False}


def _mapping(node: Node, keys: dict[str, bool], chk: "_Checker | None" = None,
             context: str = "") -> dict[str, Node]:
    """Checks a mapping's keys (name -> required); returns name -> value node.

    Without chk the first problem raises at the offending node; with chk every
    unknown, repeated or missing key is recorded and the known keys returned,
    so that one pass reports them all.
    """
    if not isinstance(node, MappingNode):
        raise _Invalid(f"expected a mapping with keys {', '.join(keys)}, got a {_kind(node)}", node)
    out: dict[str, Node] = {}
    problems: list[_Invalid] = []
    for key_node, value_node in node.value:
        key = _text(key_node)
        if key not in keys:
            problems.append(_Invalid(f"unknown key {key!r}; expected one of {', '.join(keys)}", key_node))
        elif key in out:
            problems.append(_Invalid(f"key {key!r} given twice", key_node))
        else:
            out[key] = value_node
    problems += [_Invalid(f"missing key {k!r}", node) for k, required in keys.items()
                 if required and k not in out]
    if problems and chk is None:
        raise problems[0]
    for problem in problems:
        chk.error(problem.node, f"{context}{problem}")
    return out


# ---- the loader ---------------------------------------------------------------------


class _Checker:
    def __init__(self, path: str):
        self.path = path
        self.errors: list[Diagnostic] = []

    def error(self, node: Node | None, message: str) -> None:
        self.errors.append(Diagnostic.at(self.path, node.start_mark if node is not None else None, message))

    def parse(self, node: Node, parser, *args, context: str = "") -> Any:
        """Runs parser on node; on failure records the error and returns None."""
        try:
            return parser(node, *args)
        except _Invalid as exc:
            self.error(exc.node or node, f"{context}{exc}")
        except Exception as exc:  # a value no parser foresaw is still an error at its node, not a traceback
            self.error(node, f"{context}cannot read this value ({type(exc).__name__}: {exc})")
        return None


def _hook_call(node: Node) -> str:
    text = _text(node)
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", text):
        raise _Invalid(f"expected a hook as \"package.module:function\", got {text!r}")
    return text


def _hooks_path(node: Node, base: str) -> list[str]:
    items = node.value if isinstance(node, SequenceNode) else [node]
    paths = []
    for item in items:
        text = _text(item)
        path = os.path.normpath(os.path.join(base, text))
        if not os.path.isdir(path):
            raise _Invalid(f"expected a directory of python hooks, {text!r} is not one ({path})", item)
        paths.append(path)
    return paths


# Bounds on what a file may make the loader build, far above any rule file: the largest program the
# engine takes (rules/engine/rs_program.h), written as verbosely as YAML allows, is about 60,000 nodes
# nested 7 deep (tests/test_hostile_rules.py loads one).
MAX_NODES = 100_000  # an alias counts as every node it repeats
MAX_ALIASES = 10_000
MAX_DEPTH = 32  # the composer recurses once per level


class _Refused(yaml.MarkedYAMLError):
    """A file the loader does not build (past a bound above, or a tag it cannot read), at problem_mark."""


class _Loader(yaml.SafeLoader):
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


def _read(path: str) -> str:
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


def load_config(path: str, text: str | None = None, hooks_path: list[str] | None = None) -> Config:
    """Reads and validates a configuration file; raises ConfigError with every problem.

    hooks_path adds directories python hooks may be loaded from to the file's own hooks_path.
    Whatever the file holds, ConfigError is the only exception; a Config returned compiles
    to a program the engine's verifier accepts.
    """
    if text is None:
        text = _read(path)
    try:
        return _load(path, text, hooks_path)
    except ConfigError:
        raise
    except Exception as exc:  # the last line of defence: a problem the checks above did not foresee
        raise ConfigError([Diagnostic(path, 1, 1, f"cannot check the file ({type(exc).__name__}: {exc})")]) from None


def _load(path: str, text: str, hooks_path: list[str] | None) -> Config:
    chk = _Checker(path)
    try:
        root = yaml.compose(text, Loader=_Loader)
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
    top = chk.parse(root, _mapping, TOP_KEYS, chk)
    if top is None or "version" not in top:
        raise ConfigError(chk.errors)

    version = chk.parse(top["version"], parse_int, 1, 1, "version")
    ports = _load_ports(chk, top["ports"]) if "ports" in top else {}
    forward = chk.parse(top["forward"], parse_choice, ("both", "a-to-b", "b-to-a")) if "forward" in top else "both"
    default = chk.parse(top["default"], parse_choice, ("forward", "drop")) if "default" in top else "forward"
    malformed = chk.parse(top["malformed"], parse_choice, ("pass", "drop")) if "malformed" in top else "pass"
    base = os.path.dirname(os.path.abspath(path))
    hooks = (chk.parse(top["hooks_path"], _hooks_path, base) or []) if "hooks_path" in top else []
    hooks += [os.path.abspath(h) for h in hooks_path or []]
    rules_node = top.get("rules")
    rules = _load_rules(chk, rules_node) if rules_node is not None else []
    for rule in rules:
        hook = rule.action("python")
        if hook is not None and not hooks:
            chk.error(hook.node, f"rule {rule.name!r}: python hooks are loaded only from directories you name: "
                                 "set hooks_path in the file (or give --hooks-path)")
    if chk.errors or version is None:
        raise ConfigError(chk.errors)
    config = Config(path, ports, forward, default, malformed, rules, hooks, rules_node)
    from reshaper.rules.compiler import compile_rules  # it imports this module
    config.program = compile_rules(config)  # what the checks missed and the engine refuses: a ConfigError too
    return config


def _load_ports(chk: _Checker, node: Node) -> dict[str, Port]:
    spec = chk.parse(node, _mapping, {"a": True, "b": True}, chk, "ports: ")
    if spec is None:
        return {}
    ports = {}
    for name, value in spec.items():
        port = chk.parse(value, _port, name)
        if port is not None:
            ports[name] = port
    if len(ports) == 2 and (ports["a"].interface, ports["a"].vlan) == (ports["b"].interface, ports["b"].vlan):
        chk.error(spec["b"], "expected port b to differ from port a (same interface and VLAN)")
    return ports


def _at(node: Node, parser, *args) -> Any:
    """parser(node, *args), with its error placed at node unless it names its own."""
    try:
        return parser(node, *args)
    except _Invalid as exc:
        raise _Invalid(str(exc), exc.node or node) from None


def _port(node: Node, name: str) -> Port:
    if isinstance(node, MappingNode):
        spec = _mapping(node, {"interface": True, "vlan": True})
        return Port(name, _at(spec["interface"], _interface), _at(spec["vlan"], parse_int, 1, 4094, "a VLAN id"))
    return Port(name, _interface(node))


def _interface(node: Node) -> str:
    text = _text(node)
    if not re.fullmatch(r"[A-Za-z0-9_.@:-]{1,15}", text):
        raise _Invalid(f"expected an interface name (1-15 characters, no spaces or '/'), got {text!r}")
    return text


def _load_rules(chk: _Checker, node: Node) -> list[Rule]:
    if not isinstance(node, SequenceNode):
        chk.error(node, f"expected a list of rules, got a {_kind(node)}")
        return []
    rules, names = [], {}
    for rule_node in node.value:
        rule = _load_rule(chk, rule_node)
        if rule is None:
            continue
        if rule.name in names:
            chk.error(rule.node, f"rule name {rule.name!r} already used by the rule at line {names[rule.name]}")
        else:
            names[rule.name] = rule.node.start_mark.line + 1
        rules.append(rule)
    _check_program(chk, rules, node)
    return rules


def _check_program(chk: _Checker, rules: list[Rule], node: Node) -> None:
    """The engine's limits on a program (rules/engine/rs_program.h), at the rule or the list past them;
    the compiler says how many ops and bytes each rule takes."""
    from reshaper.rules.compiler import compile_action, compile_match  # it imports this module
    length = lib.RS_HDR_LEN
    for rule in rules:
        ctx = f"rule {rule.name!r}: "
        try:
            ops = [compile_match(m) for m in rule.matches] + [op for a in rule.actions for op in compile_action(a)]
        except Exception as exc:  # a value the parsers let through and the program cannot carry
            chk.error(rule.node, f"{ctx}cannot be compiled ({type(exc).__name__}: {exc})")
            continue
        actions = len(ops) - len(rule.matches)
        if actions > lib.RS_MAX_OPS:
            per_field = " (a set takes one per field)" if rule.action("set") else ""
            chk.error(rule.node, f"{ctx}expected at most {lib.RS_MAX_OPS} actions in a rule, got {actions}{per_field}")
        length += lib.RS_RULE_HDR_LEN + sum(map(len, ops))
    if len(rules) > lib.RS_MAX_RULES:
        chk.error(node, f"expected at most {lib.RS_MAX_RULES} rules, got {len(rules)}")
    elif length > lib.RS_MAX_PROGRAM_LEN:
        chk.error(node, f"expected rules that compile to at most {lib.RS_MAX_PROGRAM_LEN} bytes, these take {length}")


def _load_rule(chk: _Checker, node: Node) -> Rule | None:
    spec = chk.parse(node, _mapping, RULE_KEYS, chk)
    if spec is None or "name" not in spec:
        return None
    name = chk.parse(spec["name"], _rule_name)
    from_port = chk.parse(spec["from"], parse_choice, ("a", "b", "any"), context="from: ") if "from" in spec else "any"
    ctx = f"rule {name!r}: " if name else ""
    matches = _load_matches(chk, spec["match"], ctx) if "match" in spec else []
    actions = _load_actions(chk, spec["actions"], ctx) if "actions" in spec else []
    rule = Rule(name or "", from_port or "any", matches, actions, node)
    _check_rule(chk, rule, ctx)
    return rule if name is not None and from_port is not None else None


def _rule_name(node: Node) -> str:
    text = _text(node)
    if not re.fullmatch(r"[a-z0-9_-]{1,32}", text):
        raise _Invalid(f"expected a rule name of 1-32 characters from a-z, 0-9, _ and -, got {text!r}")
    return text


def _load_matches(chk: _Checker, node: Node, ctx: str) -> list[Match]:
    if isinstance(node, ScalarNode) and node.tag.endswith(":null"):
        return []
    spec = chk.parse(node, _mapping, dict.fromkeys(MATCH_FIELDS, False), chk, ctx + "match: ",
                     context=ctx + "match: ")
    if spec is None:
        return []
    matches = []
    for field, value_node in spec.items():
        value = chk.parse(value_node, MATCH_FIELDS[field], context=f"{ctx}match.{field}: ")
        if value is not None:
            matches.append(Match(field, value, value_node))
    return matches


def _load_actions(chk: _Checker, node: Node, ctx: str) -> list[Action]:
    if not isinstance(node, SequenceNode):
        chk.error(node, f"{ctx}expected a list of actions (e.g. [dec_ttl] or - delay: {{time: 10ms}}), got a {_kind(node)}")
        return []
    actions = []
    for item in node.value:
        action = chk.parse(item, _action, context=ctx)
        if action is not None:
            actions.append(action)
    return actions


def _action(node: Node) -> Action:
    names = ", ".join(ACTIONS)
    if isinstance(node, ScalarNode):
        kind = _text(node)
        if kind in BARE_ACTIONS:
            return Action(kind, {k: default for k, (_, _, default) in ACTIONS[kind].items()}, node)
        if kind in ACTIONS:
            raise _Invalid(f"action {kind!r} needs parameters, e.g. - {kind}: {{...}}")
        raise _Invalid(f"unknown action {kind!r}; expected one of {names}")
    if not isinstance(node, MappingNode) or len(node.value) != 1:
        raise _Invalid(f"expected an action: a bare word ({', '.join(BARE_ACTIONS)}) "
                       f"or a mapping with one key, one of {names}")
    key_node, params_node = node.value[0]
    kind = _text(key_node)
    if kind not in ACTIONS:
        raise _Invalid(f"unknown action {kind!r}; expected one of {names}", key_node)
    prefix = f"{kind}: "
    try:
        if kind == "set":
            params = _set_params(params_node)
        elif kind == "payload":
            params = _bytes_spec(params_node)
        elif kind == "loss":
            params = _loss_params(params_node)
        else:
            params = _params(params_node, ACTIONS[kind])
    except _Invalid as exc:
        raise _Invalid(prefix + str(exc), exc.node or params_node) from None
    return Action(kind, params, node)


def _params(node: Node, table: dict[str, _P]) -> dict[str, Any]:
    if isinstance(node, ScalarNode) and node.tag.endswith(":null"):
        node = MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
    if not table and not (isinstance(node, MappingNode) and not node.value):
        raise _Invalid("expected no parameters")
    spec = _mapping(node, {k: required for k, (_, required, _) in table.items()})
    params = {}
    for key, (parser, _, default) in table.items():
        if key in spec:
            try:
                params[key] = _at(spec[key], parser)
            except _Invalid as exc:
                raise _Invalid(f"{key}: {exc}", exc.node) from None
        else:
            params[key] = default
    return params


def _set_params(node: Node) -> dict[str, Any]:
    spec = _mapping(node, dict.fromkeys(SET_FIELDS, False))
    if not spec:
        raise _Invalid(f"expected at least one field to set, from {', '.join(SET_FIELDS)}", node)
    params = {}
    for key, value_node in spec.items():
        try:
            params[key] = _at(value_node, SET_FIELDS[key])
        except _Invalid as exc:
            raise _Invalid(f"{key}: {exc}", exc.node) from None
    return params


def _loss_params(node: Node) -> dict[str, Any]:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if _text(key_node) == "model":
                model = parse_choice(value_node, ("random", "gilbert-elliott"))
                rest = MappingNode(node.tag, [kv for kv in node.value if kv[0] is not key_node],
                                   node.start_mark, node.end_mark)
                table = LOSS_GE if model == "gilbert-elliott" else LOSS_RANDOM
                return {"model": model, **_params(rest, table)}
    return {"model": "random", **_params(node, LOSS_RANDOM)}


# ---- combinations --------------------------------------------------------------------

L3_MATCH_FIELDS = ("ip_src", "ip_dst", "ip_proto", "src_port", "dst_port", "tcp_flags", "dscp", "ttl")
L4_PORT_PROTOS = (6, 17)  # the engine reads ports of TCP and UDP


def rule_family(rule: Rule) -> int | None:
    """4 or 6 when the rule's match pins the IP version, else None."""
    eth = rule.match("eth_type")
    if eth is not None and eth.value in ("ipv4", "ipv6"):
        return 4 if eth.value == "ipv4" else 6
    for field in ("ip_src", "ip_dst"):
        m = rule.match(field)
        if m is not None:
            return m.value.version
    return None


def _protos(rule: Rule) -> set[int] | None:
    m = rule.match("ip_proto")
    if m is None:
        return None
    return {p for lo, hi in m.value for p in range(lo, hi + 1)}


def _check_rule(chk: _Checker, rule: Rule, ctx: str) -> None:
    """Combinations that can never match or never apply."""
    eth = rule.match("eth_type")
    not_ip = eth is not None and eth.value not in ("ipv4", "ipv6")
    if not_ip:
        for m in rule.matches:
            if m.field in L3_MATCH_FIELDS:
                chk.error(m.node, f"{ctx}match.{m.field} makes no sense with eth_type: {eth.value} "
                                  f"(expected eth_type ipv4 or ipv6, or no eth_type)")
    family = 4 if eth is not None and eth.value == "ipv4" else 6 if eth is not None and eth.value == "ipv6" else None
    for field in ("ip_src", "ip_dst"):
        m = rule.match(field)
        if m is None:
            continue
        if family is not None and m.value.version != family:
            chk.error(m.node, f"{ctx}match.{field}: expected an IPv{family} network to go with "
                              f"{'eth_type: ipv4' if family == 4 else 'eth_type: ipv6 or the other address'}, "
                              f"got {m.value}")
        family = family or m.value.version
    protos = _protos(rule)
    proto_node = rule.match("ip_proto").node if protos is not None else None
    if protos is not None and family == 6 and 1 in protos and len(protos) == 1:
        chk.error(proto_node, f"{ctx}match.ip_proto: icmp is IPv4's; for IPv6 expected icmpv6 (58)")
    if protos is not None and family == 4 and 58 in protos and len(protos) == 1:
        chk.error(proto_node, f"{ctx}match.ip_proto: icmpv6 is IPv6's; for IPv4 expected icmp (1)")
    for field in ("src_port", "dst_port"):
        m = rule.match(field)
        if m is not None and protos is not None and not protos & set(L4_PORT_PROTOS):
            chk.error(m.node, f"{ctx}match.{field} needs ip_proto tcp or udp, not {_text(proto_node)}")
    m = rule.match("tcp_flags")
    if m is not None and protos is not None and 6 not in protos:
        chk.error(m.node, f"{ctx}match.tcp_flags needs ip_proto tcp, not {_text(proto_node)}")
    m = rule.match("bytes")
    if m is not None and m.value["base"] == "l4" and not_ip:
        chk.error(m.node, f"{ctx}match.bytes: base l4 makes no sense with eth_type: {eth.value}")

    seen: dict[str, Action] = {}
    for action in rule.actions:
        kind = action.kind
        if (kind in TIMING_ACTIONS or kind == "python") and kind in seen:
            chk.error(action.node, f"{ctx}expected at most one {kind} action in a rule "
                                   f"(the first is at line {seen[kind].node.start_mark.line + 1})")
        seen.setdefault(kind, action)
        if "drop" in seen and seen["drop"] is not action:
            chk.error(action.node, f"{ctx}{action.kind}: actions after drop never run")
        if action.kind == "set":
            _check_set(chk, rule, action, ctx, not_ip, family, protos, proto_node)
        if action.kind == "dec_ttl" and not_ip:
            chk.error(action.node, f"{ctx}dec_ttl makes no sense with eth_type: {eth.value}")
    if "python" in seen:
        if rule.actions[-1] is not seen["python"]:
            chk.error(seen["python"].node, f"{ctx}python: expected the hook to be the rule's last action "
                                           "(actions before it run first, in the engine)")
        for kind in NOT_WITH_HOOKS:
            if kind in seen:
                chk.error(seen[kind].node, f"{ctx}{kind} cannot go with a python hook in one rule: "
                                           "the hook's frames leave when it returns")
    if "reorder" in seen and "delay" not in seen:
        chk.error(seen["reorder"].node, f"{ctx}reorder needs a delay action in the same rule "
                                        "(frames are reordered by skipping the delay)")


def _check_set(chk, rule, action, ctx, not_ip, family, protos, proto_node) -> None:
    for key, value in action.params.items():
        if key in ("ip_src", "ip_dst", "dscp", "ecn", "ttl", "src_port", "dst_port") and not_ip:
            chk.error(action.node, f"{ctx}set.{key} makes no sense with eth_type: {rule.match('eth_type').value}")
        elif key in ("ip_src", "ip_dst") and family is not None and value.version != family:
            chk.error(action.node, f"{ctx}set.{key}: expected an IPv{family} address, as the rule matches "
                                   f"IPv{family} packets, got {value}")
        elif key in ("src_port", "dst_port") and protos is not None and not protos & set(L4_PORT_PROTOS):
            chk.error(action.node, f"{ctx}set.{key} needs ip_proto tcp or udp, not {_text(proto_node)}")


# ---- modes ----------------------------------------------------------------------------

L2_MATCH_FIELDS = ("eth_src", "eth_dst", "vlan", "vlan_pcp")
L2_SET_FIELDS = ("eth_src", "eth_dst", "vlan", "vlan_pcp")
MODES = ("ring", "nfqueue", "kernel")


def mode_problems(config: Config, mode: str) -> list[Diagnostic]:
    """What a mode cannot run in this configuration, each at its place in the file."""
    chk = _Checker(config.path)
    if mode == "kernel":
        for rule in config.rules:
            hook = rule.action("python")
            if hook is not None:
                chk.error(hook.node, f"rule {rule.name!r}: python hooks run in user space; the kernel module "
                                     "cannot call them (use --mode ring or nfqueue)")
        length = len(config.program)
        if length > KERNEL_MAX_PROGRAM_LEN:
            chk.error(config.rules_node, f"expected rules that compile to at most {KERNEL_MAX_PROGRAM_LEN} bytes for "
                                         f"the kernel module, these take {length} (the program goes in one netlink "
                                         "attribute; use --mode ring or nfqueue)")
        return chk.errors
    if mode != "nfqueue":
        return []
    why = "needs L2 access, and NFQUEUE sees packets from the IP header on (use --mode ring or kernel)"
    for rule in config.rules:
        ctx = f"rule {rule.name!r}: "
        for m in rule.matches:
            l2 = m.field in L2_MATCH_FIELDS
            l2 |= m.field == "eth_type" and m.value not in ("ipv4", "ipv6")
            l2 |= m.field == "bytes" and m.value["base"] == "l2"
            if l2:
                chk.error(m.node, f"{ctx}match.{m.field} {why}")
            elif m.field == "length":
                chk.error(m.node, f"{ctx}match.length counts frame bytes, and NFQUEUE sees packets from the "
                                  "IP header on (use --mode ring or kernel)")
        for a in rule.actions:
            l2 = a.kind in ("push_vlan", "pop_vlan")
            l2 |= a.kind == "set" and any(k in L2_SET_FIELDS for k in a.params)
            l2 |= a.kind == "payload" and a.params["base"] == "l2"
            if l2:
                chk.error(a.node, f"{ctx}{a.kind} {why}")
            elif a.kind == "duplicate":
                chk.error(a.node, f"{ctx}duplicate: a queue verdict passes one packet, NFQUEUE cannot send "
                                  "copies (use --mode ring or kernel)")
    return chk.errors
