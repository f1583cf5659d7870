"""The value parsers of the rule language: what one YAML node may say, and what it stands for.

A parser takes a node (rules/loader.py composes them, with their marks) and
returns its value or raises Invalid saying what it expected. Bounds come in as
arguments (rules/kinds.py binds them), so nothing here knows the engine. The
patterns below are matched here and written into the schema by rules/schema.py.
"""
from __future__ import annotations

import decimal
import ipaddress
import re
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reshaper.rules.model import Invalid

TIME_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
# what the parsers match, and rules/schema.py writes into the schema's patterns
NUMBER = r"(\d+(?:\.\d+)?)"
TIME = NUMBER + rf"\s*({'|'.join(TIME_UNITS)})"
BITRATE = NUMBER + rf"\s*({'|'.join(RATE_UNITS)})"  # matched in lower case
RANGE = r"\s*(\d{1,10})\s*-\s*(\d{1,10})\s*"  # digits bounded: int() refuses thousands
MAC = r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}"
MAC_BITS = 48
HEX_BYTE = "[0-9a-fA-F]{2}"


# ---- nodes ------------------------------------------------------------------------

def node_value(node: Node) -> Any:
    """The Python value of a scalar node, as YAML's safe loader resolves it.

    Its text when the loader cannot make that value (a date like 2024-13-01, an
    integer of more digits than int() reads): the parsers then say what they expected.
    """
    if not isinstance(node, ScalarNode):
        raise Invalid(f"expected a single value, not a {node_kind(node)}")
    try:
        # a constructor per value: one kept across loads keeps every node it constructed, so every file loaded
        return SafeConstructor().construct_object(node)
    except Exception:
        return node_text(node)


def node_text(node: Node) -> str:
    """A scalar's text as written: 10:22:33:44:55:66 stays a MAC, not a base-60 int."""
    if not isinstance(node, ScalarNode):
        raise Invalid(f"expected a single value, not a {node_kind(node)}")
    return str(node.value).strip()


def node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return "value"


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag.endswith(":null")


# ---- parsers ----------------------------------------------------------------------

def parse_time(node: Node, most_ns: int) -> int:
    """'250us', '20ms', '1.5s' -> nanoseconds."""
    return time_ns(node_text(node), most_ns)


def time_ns(text: str, most_ns: int) -> int:
    """The text of a time with its unit -> nanoseconds (also for the command line's times)."""
    m = re.fullmatch(TIME, text)
    if not m:
        raise Invalid(f"expected a time with a unit (e.g. 250us, 20ms, 1s), got {text!r}")
    ns = float(m.group(1)) * TIME_UNITS[m.group(2)]
    if ns > most_ns:  # before round(): a number of hundreds of digits is an infinite float
        raise Invalid(f"expected a time of at most {most_ns // TIME_UNITS['s']}s, got {text!r}")
    return round(ns)


def parse_probability(node: Node) -> float:
    """'1%' or 0.01 -> 0.01."""
    text = node_text(node)
    return probability_of(text, None if re.fullmatch(NUMBER + r"\s*%", text) else node_value(node))


def probability_of(text: str, value: Any = None) -> float:
    """The probability a text says ('1%', '0.01'); value: what YAML made of it, if it did."""
    m = re.fullmatch(NUMBER + r"\s*%", text)
    if m:
        value = float(m.group(1)) / 100
    elif value is None and re.fullmatch(NUMBER, text):
        value = float(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a probability (e.g. 1% or 0.01), got {text!r}")
    if not 0.0 <= value <= 1.0:  # before float(): an integer of hundreds of digits is no float
        raise Invalid(f"expected a probability between 0% and 100%, got {text!r}")
    return float(value)


def parse_bitrate(node: Node, most: int) -> int:
    """'10mbit', '512kbit' -> bits per second."""
    text = node_text(node)
    m = re.fullmatch(BITRATE, text.lower())
    if not m:
        raise Invalid(f"expected a bit rate with a unit (e.g. 512kbit, 10mbit, 1gbit), got {text!r}")
    bps = decimal.Decimal(m.group(1)) * RATE_UNITS[m.group(2)]  # exact to the last bit, where a float rounds
    if bps > most:
        raise Invalid(f"expected a bit rate of at most {most}bit, got {text!r}")
    bps = round(bps)
    if bps <= 0:
        raise Invalid(f"expected a bit rate above 0, got {text!r}")
    return bps


def parse_int(node: Node, lo: int, hi: int, what: str = "an integer") -> int:
    value = node_value(node)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected {what} from {lo} to {hi}, got {node_text(node)!r}")
    if not lo <= value <= hi:  # the text: str() of a 0x... integer of thousands of digits raises
        raise Invalid(f"expected {what} from {lo} to {hi}, got {node_text(node)}")
    return value


def parse_ranges(node: Node, lo: int, hi: int, most: int,
                 names: dict[str, int] | None = None) -> list[tuple[int, int]]:
    """An integer, "1000-2000", a name, or a list of at most `most` of those -> [(lo, hi), ...]."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    if not items:
        raise Invalid("expected at least one value")
    if len(items) > most:
        raise Invalid(f"expected at most {most} values or ranges")
    ranges = []
    for item in items:
        try:
            ranges.append(_parse_range(item, lo, hi, names))
        except Invalid as exc:
            raise Invalid(str(exc), exc.node or item) from None
    return ranges


def _parse_range(node: Node, lo: int, hi: int, names: dict[str, int] | None) -> tuple[int, int]:
    value = node_value(node)
    named = f" or one of {', '.join(names)}" if names else ""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str) and names and value.lower() in names:
        first = last = names[value.lower()]
    elif isinstance(value, str) and (m := re.fullmatch(RANGE, value)):
        first, last = int(m.group(1)), int(m.group(2))
        if first > last:
            raise Invalid(f"expected a range low-high, got {value!r} (low above high)")
    else:
        raise Invalid(f"expected an integer from {lo} to {hi}, a range like \"{lo}-{hi}\"{named}, "
                      f"got {node_text(node)!r}")
    if not (lo <= first <= hi and lo <= last <= hi):
        raise Invalid(f"expected values from {lo} to {hi}, got {node_text(node)!r}")
    return first, last


def mac_bytes(text: str) -> bytes | None:
    if re.fullmatch(MAC, text):
        return bytes(int(x, 16) for x in re.split(r"[:-]", text))
    return None


def parse_mac(node: Node) -> tuple[bytes, bytes]:
    """'aa:bb:cc:dd:ee:ff' with an optional '/ff:ff:ff:00:00:00' or '/24' mask."""
    text = node_text(node)
    addr, _, mask = text.partition("/")
    mac = mac_bytes(addr)
    if mac is None:
        raise Invalid(f"expected a MAC address like 02:00:00:00:00:01 (optional /mask), got {text!r}")
    if not mask:
        return mac, b"\xff" * len(mac)
    if re.fullmatch(r"[0-9]{1,2}", mask) and int(mask) <= MAC_BITS:
        bits = (1 << MAC_BITS) - (1 << (MAC_BITS - int(mask)))
        return mac, bits.to_bytes(len(mac), "big")
    mask_bytes = mac_bytes(mask)
    if mask_bytes is None:
        raise Invalid(f"expected a MAC mask like ff:ff:ff:00:00:00 or a prefix length 0-{MAC_BITS}, got {mask!r}")
    return mac, mask_bytes


def parse_single_mac(node: Node) -> bytes:
    mac = mac_bytes(node_text(node))
    if mac is None:
        raise Invalid(f"expected a MAC address like 02:00:00:00:00:01, got {node_text(node)!r}")
    return mac


def parse_network(node: Node) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = node_text(node)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            net = ipaddress.ip_network(text, strict=False)
            raise Invalid(f"expected a network address: {text} has host bits set (did you mean {net}?)")
        raise Invalid(f"expected an IPv4 or IPv6 address or CIDR network, got {text!r}") from None


def parse_address(node: Node) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = node_text(node)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise Invalid(f"expected one IPv4 or IPv6 address, got {text!r}") from None


def parse_hex(node: Node, what: str, most: int) -> bytes:
    text = node_text(node)
    m = re.fullmatch(f"0x((?:{HEX_BYTE})+)", text)
    if not m:
        raise Invalid(f"expected {what} as hex bytes like \"0x0800\", got {text!r}")
    data = bytes.fromhex(m.group(1))
    if len(data) > most:
        raise Invalid(f"expected at most {most} bytes of {what}, got {len(data)}")
    return data


def parse_flags(node: Node, flags: dict[str, int]) -> tuple[int, int]:
    """'syn,!ack' -> (mask, value), each flag named in flags."""
    text = node_text(node)
    mask = value = 0
    for word in filter(None, (w.strip().lower() for w in text.split(","))):
        negate = word.startswith("!")
        flag = flags.get(word.lstrip("!"))
        if flag is None or flag & mask:
            raise Invalid(f"expected TCP flags like \"syn,!ack\" from {', '.join(flags)} "
                          f"(each once, ! to require it clear), got {text!r}")
        mask |= flag
        value |= 0 if negate else flag
    if not mask:
        raise Invalid("expected at least one TCP flag, like \"syn,!ack\"")
    return mask, value


def parse_choice(node: Node, choices: tuple[str, ...]) -> str:
    text = node_text(node)
    if text not in choices:
        raise Invalid(f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def parse_bool(node: Node) -> bool:
    value = node_value(node)
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {node_text(node)!r}")
    return value


def parse_text(node: Node, pattern: str, expected: str) -> str:
    text = node_text(node)
    if not re.fullmatch(pattern, text):
        raise Invalid(f"expected {expected}, got {text!r}")
    return text


# ---- mappings ---------------------------------------------------------------------

def read_mapping(node: Node, fields: dict, chk=None, context: str = "") -> dict[str, Node]:
    """Checks a mapping's keys against fields (name -> kinds.Field); returns name -> value node.

    Without chk (a model.Checker) the first problem raises at the offending node;
    with chk every unknown, repeated or missing key is recorded and the known keys
    returned, so that one pass reports them all.
    """
    if not isinstance(node, MappingNode):
        raise Invalid(f"expected a mapping with keys {', '.join(fields)}, got a {node_kind(node)}", node)
    out: dict[str, Node] = {}
    problems: list[Invalid] = []
    for key_node, value_node in node.value:
        key = node_text(key_node)
        if key not in fields:
            problems.append(Invalid(f"unknown key {key!r}; expected one of {', '.join(fields)}", key_node))
        elif key in out:
            problems.append(Invalid(f"key {key!r} given twice", key_node))
        else:
            out[key] = value_node
    problems += [Invalid(f"missing key {k!r}", node) for k, field in fields.items()
                 if field.required and k not in out]
    if problems and chk is None:
        raise problems[0]
    for problem in problems:
        chk.error(problem.node, f"{context}{problem}")
    return out


def parse_at(node: Node, parser, *args) -> Any:
    """parser(node, *args), with its error placed at node unless it names its own."""
    try:
        return parser(node, *args)
    except Invalid as exc:
        raise Invalid(str(exc), exc.node or node) from None
