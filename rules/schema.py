"""rules/schema.json, the JSON Schema of a rule file, generated from the field tables (rules/fields.py).

`python -m reshaper.rules.schema` (`make schema`) writes it; tests/test_schema.py
fails when the committed file differs from what this writes. Each kind of value
(rules/kinds.py) is rendered from the bounds and patterns its parser uses
(rules/values.py); each description is the table's, with the value's form and
default added here. What a schema cannot say (unique rule names, a mask as long
as its value, times and rates past their bounds, combinations) is left to
`reshaper check`.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import pathlib
from typing import Any

from reshaper.rules.fields import ETH_TYPES, ETHERTYPE_MIN, TOP_KEYS, VLAN_TPIDS, EthType, Tpid, tpid_names
from reshaper.rules.kinds import (ActionItem, Address, Bitrate, Bool, BytesSpec, Choice, Directories, Field, Flags, Hex,
                                  Int, Listed, Mac, Models, Network, OrNull, PortSpec, Probability, Ranges, Record,
                                  SetFields, Text, Time)
from reshaper.rules.values import HEX_BYTE, MAC, MAC_BITS, NUMBER, RANGE, RATE_UNITS, TIME, TIME_UNITS

PATH = pathlib.Path(__file__).with_name("schema.json")
PERCENT = r"(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)\s*%"  # 0% to 100%


def schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://reshaper.invalid/schema/config-v1.json",
        "title": "reshaper configuration, version 1",
        "description": "Rules that reshape frames between two VLAN ports. `reshaper check` checks what this "
                       "schema cannot say: rule names unique, ports a and b different, a mask as long as its "
                       "value, no host bits set in a network, times and bit rates within their bounds, "
                       "combinations of fields that make sense, and the engine's limits on the whole program.",
        **shape(Record(TOP_KEYS)),
    }


def text() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


# ---- descriptions ---------------------------------------------------------------------

def describe(field: Field) -> str:
    """The table's description, then the form of the value, then its default."""
    out = field.description
    if form := hint(field.value):
        out += f": {form}"
    if not field.required and field.default is not None:
        out += f" (default {show(field.value, field.default)})"
    return out


def prop(field: Field) -> dict[str, Any]:
    return {"description": describe(field), **shape(field.value)}


@functools.singledispatch
def hint(kind) -> str:
    """How a value of this kind is written, for a description; "" when the schema's enum says it."""
    return ""


@hint.register(Int)
def _(kind: Int) -> str:
    return str(kind.lo) if kind.lo == kind.hi else f"{kind.lo} to {kind.hi}"


@hint.register(Ranges)
def _(kind: Ranges) -> str:
    names = f"{', '.join(kind.names)}, " if kind.names else ""
    return f"{names}{kind.lo} to {kind.hi}, a range \"low-high\" or a list"


@hint.register(Time)
def _(kind: Time) -> str:
    return f"a time with a unit ({', '.join(TIME_UNITS)}) like 250us or 20ms, at most " \
           f"{kind.most_ns // TIME_UNITS['s']}s"


@hint.register(Probability)
def _(kind: Probability) -> str:
    return "a percentage like 1% or a fraction like 0.01"


@hint.register(Bitrate)
def _(kind: Bitrate) -> str:
    return f"a rate with a unit ({', '.join(RATE_UNITS)}) like 512kbit or 10mbit"


@hint.register(Mac)
def _(kind: Mac) -> str:
    mask = f", optionally /mask (a MAC or a prefix length 0 to {MAC_BITS}): 01:00:5e:00:00:00/25" if kind.mask else ""
    return f"like 02:00:00:00:00:01{mask}"


@hint.register(Network)
def _(kind: Network) -> str:
    return "an IPv4 or IPv6 address, or a CIDR network with no host bits set, like 10.0.0.0/24 or 2001:db8::/32"


@hint.register(Address)
def _(kind: Address) -> str:
    return "one IPv4 or IPv6 address"


@hint.register(Hex)
def _(kind: Hex) -> str:
    return f"1 to {kind.most} bytes in hex, like \"0x0800\""


@hint.register(Flags)
def _(kind: Flags) -> str:
    return f"comma-separated, each once, ! for clear: \"syn,!ack\" (from {', '.join(kind.flags)})"


@hint.register(Text)
def _(kind: Text) -> str:
    return kind.expected


@hint.register(EthType)
def _(kind: EthType) -> str:
    return f"{', '.join(ETH_TYPES)}, vlan (the frame has an inner tag) or a number 0x{ETHERTYPE_MIN:04x} to 0xffff"


@hint.register(Tpid)
def _(kind: Tpid) -> str:
    return tpid_names()


@functools.singledispatch
def show(kind, value) -> str:
    """A default as a rule file would write it."""
    return str(value)


@show.register(Bool)
def _(kind: Bool, value: bool) -> str:
    return "true" if value else "false"


@show.register(Time)
def _(kind: Time, value: int) -> str:
    unit = next(u for u in ("s", "ms", "us", "ns") if value % TIME_UNITS[u] == 0)
    return f"{value // TIME_UNITS[unit]}{unit}"


@show.register(Probability)
def _(kind: Probability, value: float) -> str:
    return f"{value:.0%}"


@show.register(Tpid)
def _(kind: Tpid, value: int) -> str:
    return f"0x{value:04x}"


# ---- values ---------------------------------------------------------------------------

def _string(pattern: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{pattern}$"}


def _decimal_up_to(n: int) -> str:
    """A pattern of the decimal numbers 0 to n, without leading zeros."""
    digits, parts = str(n), []
    for width in range(1, len(digits)):
        parts.append("[0-9]" if width == 1 else "[1-9]" + "[0-9]" * (width - 1))
    for i, d in enumerate(map(int, digits)):  # n's first i digits, a smaller digit, any digits after
        last = i == len(digits) - 1
        lo, hi = (1 if i == 0 and not last else 0), (d if last else d - 1)
        if lo <= hi:
            parts.append(digits[:i] + (str(lo) if lo == hi else f"[{lo}-{hi}]") + "[0-9]" * (len(digits) - i - 1))
    return "|".join(parts)


def _any_case(word: str) -> str:
    """word in any mix of cases: a JSON Schema pattern has no flags."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


_OCTET = _decimal_up_to(255)
_IPV4 = rf"(({_OCTET})\.){{3}}({_OCTET})"
_IPV6 = "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"  # loose: the loader parses it
_IP_PREFIX = {4: _decimal_up_to(ipaddress.IPV4LENGTH), 6: _decimal_up_to(ipaddress.IPV6LENGTH)}


@functools.singledispatch
def shape(kind) -> dict[str, Any]:
    """The JSON Schema of a value of this kind."""
    raise TypeError(f"no schema for a {type(kind).__name__}")


@shape.register(Int)
def _(kind: Int) -> dict[str, Any]:
    if kind.lo == kind.hi:
        return {"const": kind.lo}
    return {"type": "integer", "minimum": kind.lo, "maximum": kind.hi}


@shape.register(Ranges)
def _(kind: Ranges) -> dict[str, Any]:
    one = [shape(Int(kind.lo, kind.hi)),
           {**_string(RANGE), "description": f"a range \"low-high\", {kind.lo} to {kind.hi}"}]
    if kind.names:
        one.append({"enum": list(kind.names)})
    return {"anyOf": [*one, {"type": "array", "minItems": 1, "maxItems": kind.most, "items": {"anyOf": one}}]}


@shape.register(Choice)
def _(kind: Choice) -> dict[str, Any]:
    return {"enum": list(kind.choices)}


@shape.register(Bool)
def _(kind: Bool) -> dict[str, Any]:
    return {"type": "boolean"}


@shape.register(Time)
def _(kind: Time) -> dict[str, Any]:
    return _string(TIME)


@shape.register(Probability)
def _(kind: Probability) -> dict[str, Any]:
    return {"anyOf": [_string(PERCENT), {"type": "number", "minimum": 0, "maximum": 1}]}


@shape.register(Bitrate)
def _(kind: Bitrate) -> dict[str, Any]:
    return _string(NUMBER + rf"\s*({'|'.join(map(_any_case, RATE_UNITS))})")


@shape.register(Mac)
def _(kind: Mac) -> dict[str, Any]:
    return _string(MAC + (f"(/({MAC}|{_decimal_up_to(MAC_BITS)}))?" if kind.mask else ""))


@shape.register(Network)
def _(kind: Network) -> dict[str, Any]:
    return {"anyOf": [_string(f"{_IPV4}(/({_IP_PREFIX[4]}))?"), _string(f"{_IPV6}(/({_IP_PREFIX[6]}))?")]}


@shape.register(Address)
def _(kind: Address) -> dict[str, Any]:
    return {"anyOf": [_string(_IPV4), _string(_IPV6)]}


@shape.register(Hex)
def _(kind: Hex) -> dict[str, Any]:
    return _string(f"0x({HEX_BYTE}){{1,{kind.most}}}")


@shape.register(Flags)
def _(kind: Flags) -> dict[str, Any]:
    flag = rf"!?({'|'.join(kind.flags)})\s*"
    return _string(rf"\s*{flag}(,\s*{flag})*,?\s*")


@shape.register(Text)
def _(kind: Text) -> dict[str, Any]:
    return _string(kind.pattern)


@shape.register(EthType)
def _(kind: EthType) -> dict[str, Any]:
    return {"anyOf": [{"enum": [*ETH_TYPES, "vlan"]}, {"type": "integer", "minimum": ETHERTYPE_MIN, "maximum": 0xFFFF}]}


@shape.register(Tpid)
def _(kind: Tpid) -> dict[str, Any]:
    return {"enum": list(VLAN_TPIDS)}


# ---- structures -----------------------------------------------------------------------

def _object(fields: dict[str, Field], **more) -> dict[str, Any]:
    out = {"type": "object", "properties": {key: prop(field) for key, field in fields.items()},
           "additionalProperties": False, **more}
    if required := [key for key, field in fields.items() if field.required]:
        out["required"] = required
    return out


@shape.register(Record)
def _(kind: Record) -> dict[str, Any]:
    return _object(kind.fields) if kind.fields else {"type": "null"}


@shape.register(BytesSpec)
def _(kind: BytesSpec) -> dict[str, Any]:
    return _object(kind.fields)


@shape.register(SetFields)
def _(kind: SetFields) -> dict[str, Any]:
    return _object(kind.fields, minProperties=1)


@shape.register(Models)
def _(kind: Models) -> dict[str, Any]:
    default = next(iter(kind.models))
    out = []
    for name, model in kind.models.items():
        said = f"{name} (the default)" if name == default else name
        one = _object(model.value.fields)
        one["properties"] = {"model": {"description": f"{said}: {model.description}", "const": name},
                             **one["properties"]}
        if name != default:
            one["required"] = ["model", *one.get("required", [])]
        out.append(one)
    return {"oneOf": out}


@shape.register(PortSpec)
def _(kind: PortSpec) -> dict[str, Any]:
    return {"anyOf": [prop(kind.interface), prop(kind.trunk)]}


@shape.register(Directories)
def _(kind: Directories) -> dict[str, Any]:
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}


@shape.register(Listed)
def _(kind: Listed) -> dict[str, Any]:
    out = {"type": "array", "items": shape(kind.item)}
    if kind.most is not None:
        out["maxItems"] = kind.most
    return out


@shape.register(OrNull)
def _(kind: OrNull) -> dict[str, Any]:
    return {"anyOf": [shape(kind.kind), {"type": "null"}]}


@shape.register(ActionItem)
def _(kind: ActionItem) -> dict[str, Any]:
    actions = {}
    for name, field in kind.actions.items():
        actions[name] = prop(field)
        if name in kind.bare:
            actions[name]["description"] += f" (also a bare word: - {name})"
    return {
        "description": f"an action: a bare word ({', '.join(kind.bare)}) or a mapping with one key",
        "anyOf": [{"enum": list(kind.bare)},
                  {"type": "object", "properties": actions, "additionalProperties": False,
                   "minProperties": 1, "maxProperties": 1}],
    }


if __name__ == "__main__":
    PATH.write_text(text(), encoding="utf-8")
    print(f"wrote {PATH}")
